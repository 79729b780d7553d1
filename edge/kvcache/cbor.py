# edge/kvcache/cbor.py — CBOR for structured KV values: `kv.put("cfg", cbor.dumps({...}))`,
# `cbor.loads(kv.get("cfg"))`.
#
# Uses the `cbor2` module when one is installed (CPython's cbor2, or micropython-lib's cbor2 on a device,
# `mpremote mip install cbor2`), else edge/kvcache/cborcodec.py, which reads and writes the same bytes for the
# types KV values use. Decoding errors are ValueError subclasses either way.

try:
    from cbor2 import dumps, loads
except ImportError:
    from edge.kvcache.cborcodec import dumps, loads

__all__ = ["dumps", "loads"]
