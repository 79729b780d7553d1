"""Error texts and close reasons, equal to nats-server's because clients and tools compare them.

Two kinds, as in nats-server: the `-ERR` texts sent on the wire (`server/errors.go`, `client.go`),
and the reasons a connection was closed (`ClosedState` in `client.go`, shown by /connz?state=closed).
"""

from __future__ import annotations

from edge.proto import ERR_MAX_CONTROL_LINE, ERR_MAX_PAYLOAD, ERR_UNKNOWN_OP

__all__ = ["ERR_MAX_CONTROL_LINE", "ERR_MAX_PAYLOAD", "ERR_UNKNOWN_OP"]

# -ERR texts
ERR_AUTH_VIOLATION = "Authorization Violation"
ERR_AUTH_TIMEOUT = "Authentication Timeout"
ERR_AUTH_EXPIRED = "User Authentication Expired"  # a JWT user's `exp` passed while connected
ERR_AUTH_REVOKED = "User Authentication Revoked"  # an account update revoked a connected JWT user
ERR_STALE_CONNECTION = "Stale Connection"
ERR_BAD_CLIENT_PROTOCOL = "invalid client protocol"
ERR_NO_RESPONDERS_NEEDS_HEADERS = "no responders requires headers support"
ERR_MAX_CONNECTIONS = "maximum connections exceeded"
ERR_MAX_SUBSCRIPTIONS = "maximum subscriptions exceeded"
ERR_MAX_ACCOUNT_CONNECTIONS = "maximum account active connections exceeded"  # ErrTooManyAccountConnections
ERR_INVALID_SUBJECT = "Invalid Subject"
ERR_INVALID_PUB_SUBJECT = "Invalid Publish Subject"
# not on the wire: the `in` error of a traced message over the payload limit (nats-server ErrMaxPayload)
ERR_MAX_PAYLOAD_EXCEEDED = "maximum payload exceeded"


def err_pub_violation(subject: bytes) -> str:
    return f'Permissions Violation for Publish to "{subject.decode(errors="replace")}"'


def err_sub_violation(subject: bytes, queue: bytes | None) -> str:
    s = subject.decode(errors="replace")
    if queue:
        return f'Permissions Violation for Subscription to "{s}" using queue "{queue.decode(errors="replace")}"'
    return f'Permissions Violation for Subscription to "{s}"'


# Close reasons (ClosedState.String() in nats-server client.go)
CLIENT_CLOSED = "Client Closed"
AUTH_TIMEOUT = "Authentication Timeout"
AUTH_VIOLATION = "Authentication Failure"
AUTH_EXPIRED = "Authentication Expired"
REVOCATION = "Credentials Revoked"
TLS_HANDSHAKE_ERROR = "TLS Handshake Failure"
SLOW_CONSUMER_PENDING_BYTES = "Slow Consumer (Pending Bytes)"
SLOW_CONSUMER_WRITE_DEADLINE = "Slow Consumer (Write Deadline)"
WRITE_ERROR = "Write Error"
READ_ERROR = "Read Error"
PARSE_ERROR = "Parse Error"
STALE_CONNECTION = "Stale Connection"
PROTOCOL_VIOLATION = "Protocol Violation"
BAD_CLIENT_PROTOCOL_VERSION = "Bad Client Protocol Version"
MAX_CONNECTIONS_EXCEEDED = "Maximum Connections Exceeded"
MAX_ACCOUNT_CONNECTIONS_EXCEEDED = "Maximum Account Connections Exceeded"
MAX_PAYLOAD_EXCEEDED = "Maximum Message Payload Exceeded"
MAX_SUBSCRIPTIONS_EXCEEDED = "Maximum Subscriptions Exceeded"
MAX_CONTROL_LINE_EXCEEDED = "Maximum Control Line Exceeded"
SERVER_SHUTDOWN = "Server Shutdown"
LAME_DUCK_MODE = "Lame Duck Mode"
NO_RESPONDERS_REQUIRES_HEADERS = "No Responders Requires Headers"
DUPLICATE_ROUTE = "Duplicate Route"
DUPLICATE_SERVER_NAME = "Duplicate Server Name"
CLUSTER_NAME_CONFLICT = "Cluster Name Conflict"
ROUTE_REMOVED = "Route Removed"
WRONG_PORT = "Wrong Port"
WRONG_GATEWAY = "Wrong Gateway"
ERR_GATEWAY_PORT = "attempted to connect to gateway port"  # ErrClientOrRouteConnectedToGatewayPort
