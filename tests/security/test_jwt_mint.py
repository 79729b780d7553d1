"""tests/jwtmint.py mints what nats-server accepts: an operator-mode server loads its operator, system account and
preloaded accounts; a user's creds file connects and is held to its JWT permissions; a user of an account the
server does not know is refused. (Run on nats-server only: it checks the helper that the JWT tests rely on.)"""

from __future__ import annotations

import nats
import pytest

from tests.compat.harness import Server, async_wait_until, run
from tests.jwtmint import Operator, decode_claims


@pytest.fixture
def nats_server(tmp_path_factory, request):
    def start(config: str) -> Server:
        s = Server("nats", config=config, workdir=tmp_path_factory.mktemp("jwt-nats"))
        request.addfinalizer(s.stop)
        return s.start()

    return start


def test_minted_operator_account_and_user_work_on_nats_server(tmp_path, nats_server):
    op = Operator()
    known, unknown = op.account("A"), op.account("B")
    user = known.user("u", pub_allow=["ok.>", "_INBOX.>"], sub_allow=["ok.>", "_INBOX.>"])
    stranger = unknown.user("x")
    (tmp_path / "u.creds").write_text(user.creds())
    (tmp_path / "x.creds").write_text(stranger.creds())
    assert decode_claims(user.jwt)["iss"] == known.public and decode_claims(user.jwt)["sub"] == user.public
    srv = nats_server(op.server_conf([known]))

    async def body():
        errors = []

        async def on_error(e):
            errors.append(e)

        nc = await nats.connect(srv.url, user_credentials=str(tmp_path / "u.creds"), error_cb=on_error)
        sub = await nc.subscribe("ok.x")
        await nc.publish("ok.x", b"hi")
        assert (await sub.next_msg(timeout=2)).data == b"hi"
        await nc.publish("no.x", b"denied")
        await async_wait_until(lambda: any("permissions violation for publish" in str(e).lower() for e in errors),
                               msg="the publish permissions violation")
        await nc.close()
        with pytest.raises(Exception, match="Authorization Violation"):
            await nats.connect(srv.url, user_credentials=str(tmp_path / "x.creds"), allow_reconnect=False,
                               max_reconnect_attempts=0, error_cb=on_error)

    run(body())
