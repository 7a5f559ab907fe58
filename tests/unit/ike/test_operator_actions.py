"""The operator's IKE actions (service/ike_actions.py: espd initiate, clear ike sa, clear
sa) on two real engines exchanging IKEv2 over loopback UDP (tests/support/ike_pair.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from support.ike_pair import pair, until

from espd.service import ike_actions
from espd.service.ike_actions import ActionError


def test_initiate_clear_sa_and_clear_ike_sa():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = pair(loop)  # start = "manual": nothing happens until the operator says so
        daemon = SimpleNamespace(ike=a.engine)
        assert a.owner.live() == []
        (line,) = ike_actions.run(daemon, "initiate", {"map": "vpn", "seq": 10})["done"]
        assert line.startswith("crypto map vpn 10: initiating IKE SA #1 to ")
        await until(lambda: len(a.owner.live()) == 1 and len(b.owner.live()) == 1)
        again = ike_actions.run(daemon, "initiate", {"map": "vpn", "seq": 10})["done"]
        assert "has a Child SA already" in again[0]

        (line,) = ike_actions.run(daemon, "clear_sa", {"peer": "127.0.0.2"})["done"]
        assert "Child SA vpn 10" in line and "deleted" in line
        await until(lambda: a.owner.live() == [] and b.owner.live() == [])
        assert len(a.engine.sas) == 1  # the IKE SA stays (IOS clear crypto sa)

        other = ike_actions.run(daemon, "clear_ike_sa", {"peer": "192.0.2.99"})["done"]
        assert other == ["no IKE SA to 192.0.2.99"]
        (line,) = ike_actions.run(daemon, "clear_ike_sa", {})["done"]
        assert line.startswith("IKE SA #1 to ") and "deleted" in line
        await until(lambda: not a.engine.sas and not b.engine.sas)

    asyncio.run(main())


@pytest.mark.parametrize(("daemon", "action", "args", "message"), [
    (SimpleNamespace(ike=None), "initiate", {"map": "vpn", "seq": 10},
     "no crypto map entry is keyed by IKE"),
    (None, "initiate", {"map": "vpn", "seq": 99}, "crypto map vpn 99 is not keyed by IKE; "
     "IKE-keyed entries: vpn 10"),
    (None, "clear_sa", {"peer": "not-an-address"}, "'not-an-address' is not a peer address"),
    (None, "reboot", {}, "unknown action 'reboot'"),
])
def test_refusals_say_what_to_do(daemon, action, args, message):
    async def main():
        a, _ = pair(asyncio.get_running_loop())
        with pytest.raises(ActionError) as e:
            ike_actions.run(daemon or SimpleNamespace(ike=a.engine), action, args)
        assert str(e.value).startswith(message)

    asyncio.run(main())
