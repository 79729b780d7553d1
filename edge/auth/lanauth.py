# edge/auth/lanauth.py — LAN clients' credentials and permissions (the "authorization" config key).
#
# Imported by the runner only when the config has "authorization". Rules this file keeps, as nats-server's
# auth.go and client.go do for a client port:
# 1. login(): a token config takes CONNECT "auth_token" only; a user config takes "user" + "pass". Anything
#    else is refused (the listener then sends -ERR 'Authorization Violation' and closes). Secrets are compared
#    in time independent of where they differ.
# 2. Permissions are (pub allow, pub deny, sub allow, sub deny), each None (no list) or a list of subjects.
#    No allow list allows all; a deny match overrules an allow match (client.go pubAllowedFullCheck,
#    canSubscribeInternal). A subscription's subject is matched as a subject, its wildcards as plain
#    tokens: allow "a.*" admits SUB a.* and a.b, allow "a.b" does not admit SUB a.* (Sublist.Match).
# 3. A wildcard subscription may reach subjects its deny list names ("a.*" with deny "a.secret"): those
#    messages are not delivered to it (client.go loadMsgDenyFilter / checkDenySub).

from edge import subjects


def _same(a, b):
    # Equal bytes, compared without stopping at the first difference.
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


def _bytes(v):
    if isinstance(v, str):
        return v.encode()
    return v if isinstance(v, bytes) else None


class LanAuth:
    def __init__(self, token, users):
        self.token = token  # bytes or None
        self.users = users  # name bytes -> (password bytes, permissions or None)

    def login(self, opts):
        # CONNECT options -> (True, permissions or None) or (False, None)
        if self.token is not None:
            t = _bytes(opts.get("auth_token"))
            return (t is not None and _same(t, self.token)), None
        name = _bytes(opts.get("user"))
        entry = self.users.get(name) if name is not None else None
        pw = _bytes(opts.get("pass"))
        if entry is None or pw is None or not _same(pw, entry[0]):
            return False, None
        return True, entry[1]

    # Permission checks: None when allowed, else the -ERR to send (nats-server's texts), so that the listener
    # holds none of this code.

    def pub_denied(self, perms, subject):
        if _allowed(perms[0], perms[1], subject):
            return None
        return b"-ERR 'Permissions Violation for Publish to \"" + subject + b"\"'\r\n"

    def sub_denied(self, perms, subject, queue):
        if _allowed(perms[2], perms[3], subject):
            return None
        q = b"" if queue is None else b' using queue "' + queue + b'"'
        return b"-ERR 'Permissions Violation for Subscription to \"" + subject + b'"' + q + b"'\r\n"

    def delivery_denied(self, perms, subject):
        # A message on `subject` for a subscription that passed sub_denied (rule 3).
        return perms[3] is not None and _any(perms[3], subject)


def _any(patterns, subject):
    for p in patterns:
        if subjects.match(p, subject):
            return True
    return False


def _allowed(allow, deny, subject):
    return (allow is None or _any(allow, subject)) and (deny is None or not _any(deny, subject))


