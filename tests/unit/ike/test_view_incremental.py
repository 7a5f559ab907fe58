"""The engine's snapshot rebuilds only the views of the IKE SAs touched since the last
one (engine.touch, view.py): checked, at every loop turn of a whole life (establish,
Child SA rekey, IKE SA rekey, delete), against every view rebuilt from the SAs as they
are. A change that forgets to touch its IKE SA fails here."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

from support.ike_pair import real_pair, until

from espd.ike.engine.view import as_state, ike_sa_view, plain_ike_sa
from espd.ike.exchanges import create_child_sa
from espd.ike.sa.child_sa import ChildState


def full(engine) -> tuple:
    return tuple(ike_sa_view(sa, engine.settings.ike_lifetime)
                 for sa in sorted(engine.sas.values(), key=lambda s: s.ident))


def as_asdict(view, now: float) -> dict:
    """What plain_ike_sa must give: asdict, clock times turned into ages."""
    def aged(plain: dict, when: str, age: str) -> dict:
        return {(age if k == when else k): ((now - v if v else 0.0) if k == when else v)
                for k, v in plain.items()}

    plain = aged(asdict(view), "established", "active")
    # the SA's own values in the view, their text in the plain data
    plain.update(local=str(view.local), remote=str(view.remote), spi_i=view.spi_i.hex(),
                 spi_r=view.spi_r.hex(), peer_id=str(view.peer_id or ""))
    plain["children"] = [dict(aged(c, "created", "age"),
                              local_ts=tuple(map(str, child.local_ts)),
                              remote_ts=tuple(map(str, child.remote_ts)))
                         for c, child in zip(plain["children"], view.children, strict=True)]
    return plain


def test_incremental_views_match_a_full_rebuild_at_every_turn(tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        a, b = real_pair(loop, tmp_path)
        checked = {"turns": 0}
        stop = asyncio.Event()

        async def watch():
            while not stop.is_set():
                for side in (a, b):
                    shot = side.engine.snapshot()
                    assert shot.ike_sas == full(side.engine)
                    assert len(as_state(shot)) == len(side.engine.sas)
                    for view in shot.ike_sas:
                        assert plain_ike_sa(view, shot.taken) == as_asdict(view, shot.taken)
                checked["turns"] += 1
                await asyncio.sleep(0)

        watcher = asyncio.ensure_future(watch())
        sa = a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: a.owner.snapshot.sas and b.owner.snapshot.sas)
        [child] = sa.children.values()
        assert a.engine.snapshot().ike_sas[0].children[0].state == "installed"
        create_child_sa.start_rekey(a.engine, sa, child)
        await until(lambda: not sa.requests.busy and child.state == ChildState.DELETED)
        create_child_sa.start_ike_rekey(a.engine, sa)
        await until(lambda: sa.ident not in {v.tunnel_id for v in a.engine.snapshot().ike_sas}
                    and len(a.engine.sas) == 1)
        [new] = a.engine.sas.values()
        a.engine.delete_ike_sa(new)
        await until(lambda: not a.engine.sas and not b.engine.sas)
        assert a.engine.snapshot().ike_sas == () == b.engine.snapshot().ike_sas
        stop.set()
        await watcher  # re-raises a mismatch
        assert checked["turns"] > 10
        a.engine.close()
        b.engine.close()
    asyncio.run(asyncio.wait_for(main(), 20))
