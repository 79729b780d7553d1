"""The security suite runs as the parity suite does: every scenario once per server side (`nats`, `hub`), chosen
with NATSEDGE_COMPAT_SERVERS; the fixtures are tests/compat's."""

from __future__ import annotations

from tests.compat.conftest import _pool, fresh, jsrv, pytest_generate_tests, shared, srv

__all__ = ["_pool", "fresh", "jsrv", "pytest_generate_tests", "shared", "srv"]
