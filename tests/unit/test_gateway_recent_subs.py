"""An account's recent subscriptions in a super-cluster (host/accounts.py gw_recent): a reply that matches one goes to
other clusters mapped (`_GR_.<cluster>.<server>.<reply>`) for GW_RECENT_SUB seconds, and then they are forgotten, so
that delivery plans to gateways (host/delivery.py learn_plan) are made again."""

from __future__ import annotations

import time

from host.accounts import GW_RECENT_SUB, Account

PREFIX = b"_GR_.AAAAAA.BBBBBB."


def test_a_recent_subscription_maps_replies_until_it_expires():
    acc = Account("A")
    acc.note_recent_sub(b"_INBOX.r1")
    assert acc.map_gateway_reply(b"_INBOX.r1", PREFIX) == PREFIX + b"_INBOX.r1"
    assert acc.map_gateway_reply(b"_INBOX.other", PREFIX) == b"_INBOX.other"
    gen = acc.sublist.gen

    acc.expire_recent_subs(time.monotonic())  # not yet expired: kept
    assert acc.gw_recent and acc.sublist.gen == gen

    acc.expire_recent_subs(time.monotonic() + GW_RECENT_SUB + 0.01)  # the server's once-a-second housekeeping
    assert acc.gw_recent == {}
    assert acc.sublist.gen != gen  # the parsers drop their plans and make them again, gateways included
    assert acc.map_gateway_reply(b"_INBOX.r1", PREFIX) == b"_INBOX.r1"
