"""The security suite runs as the parity suite does: every scenario once per server side (`nats`, `hub`), chosen
with NATSEDGE_COMPAT_SERVERS; the fixtures are tests/compat's."""

from __future__ import annotations

import base64
import json

import pytest

from tests.compat.conftest import _pool, fresh, jsrv, pytest_generate_tests, shared, srv
from tests.compat.harness import Raw, run
from tests.jwtmint import Operator

__all__ = ["_pool", "fresh", "jsrv", "pushed", "pytest_generate_tests", "shared", "srv"]


@pytest.fixture
def pushed(fresh, tmp_path):
    """An operator-mode server with the directory resolver, and `push(account)`: the account's JWT as it is now, sent
    to $SYS.REQ.ACCOUNT.<acc>.CLAIMS.UPDATE by a system user."""
    op = Operator()
    acc = op.account("Q", limits={"conn": 3, "subs": 5})
    jwt_dir = tmp_path / "jwt"
    jwt_dir.mkdir()
    for a in (acc, op.system):
        (jwt_dir / f"{a.public}.jwt").write_text(a.jwt)
    srv = fresh(config=f"operator: {op.jwt}\nsystem_account: {op.system.public}\n"
                       f"resolver {{ type: full, dir: \"{jwt_dir}\" }}\n", monitor=True)
    admin = tmp_path / "admin.creds"
    admin.write_text(op.system.user("admin").creds())

    def push() -> None:
        acc.sign()

        async def send():
            nc = await srv.nc(user_credentials=str(admin))
            try:
                r = await nc.request(f"$SYS.REQ.ACCOUNT.{acc.public}.CLAIMS.UPDATE", acc.jwt.encode(), timeout=5)
            finally:
                await nc.close()
            assert json.loads(r.data)["data"]["message"] == "jwt updated"

        run(send())

    def connect(name: str, **user_claims) -> Raw:
        user = acc.user(name, **user_claims)
        r = Raw(srv.port)
        nonce_sig = base64.urlsafe_b64encode(user.key.sign(r.info["nonce"].encode())).rstrip(b"=").decode()
        r.handshake(jwt=user.jwt, sig=nonce_sig)
        return r

    srv.acc, srv.push, srv.connect = acc, push, connect
    return srv
