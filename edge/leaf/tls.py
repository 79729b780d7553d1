# edge/leaf/tls.py — TLS for the hub link, imported only when the config asks for it.
#
# nats-server's leafnode port sends its INFO in plain text, then expects the TLS handshake; so the
# uplink reads INFO first and upgrades the same connection here. CPython upgrades the stream
# (StreamWriter.start_tls); MicroPython wraps the stream's socket and makes a new Stream.
# MicroPython's mbedtls loads CA certificates as DER (a PEM buffer would need a NUL at its end), so
# a PEM bundle is converted here, one certificate at a time.

import asyncio
import binascii
import ssl


def der_certs(path):
    # A CA file (PEM bundle, or one DER certificate) -> list of DER certificates.
    with open(path, "rb") as f:
        data = f.read()
    if b"-----BEGIN" not in data:
        return [data]
    out = []
    for part in data.split(b"-----BEGIN CERTIFICATE-----")[1:]:
        b64 = part.split(b"-----END", 1)[0].replace(b"\r", b"").replace(b"\n", b"")
        out.append(binascii.a2b_base64(b64))
    return out


async def start_tls(r, w, host, tls):
    # tls: (CA file or None, verify[, name to verify when host is an address learned from the hub]).
    # Returns the (reader, writer) to use from now on.
    ca, verify = tls[0], tls[1]
    if len(tls) > 2:
        host = tls[2]
    cpython = hasattr(w, "start_tls")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.verify_mode = ssl.CERT_REQUIRED
        if ca and cpython:
            ctx.load_verify_locations(cafile=ca)
        elif ca:
            for der in der_certs(ca):
                ctx.load_verify_locations(cadata=der)
        elif hasattr(ctx, "load_default_certs"):
            ctx.load_default_certs()
    else:
        if hasattr(ctx, "check_hostname"):
            ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cpython:
        await w.start_tls(ctx, server_hostname=host)
        return r, w
    s = ctx.wrap_socket(r.s, server_hostname=host, do_handshake_on_connect=False)
    s.setblocking(False)
    st = asyncio.StreamReader(s)  # MicroPython: one Stream class for both directions
    return st, st
