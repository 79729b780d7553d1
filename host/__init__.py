"""natsedge hub: a NATS server in Python, wire-compatible with the Go nats-server."""
