"""The SA owner: the one object that creates, installs, replaces and retires SAs.

Manual keys (keying/manual.py) and IKE (espd.ike) are its two clients; the control socket
and the metrics only read what it publishes. Concurrency rules, enforced here (and written
down in docs/architecture.md, "Tables and threads"):

  1. One thread changes SA state: the thread that runs the daemon's asyncio event loop
     (the main thread). Every method that changes something checks it
     (`OwnerThreadError`); data-plane events, timers, reloads and IKE all run there.
  2. SaOwner is the only caller of the data plane's mutating functions (create_sa,
     publish, reserve, reclaim, events, punted datagrams, send_ike).
  3. Other threads (control-socket handlers, the metrics exporter) read `owner.snapshot`:
     an immutable Snapshot, replaced by one reference assignment after every change. The
     SA handles in it keep their C objects alive, and the counters read through them are
     atomics. Its SAs are a CowTable (keying/cow_table.py) that shares structure with the
     one before: a change costs O(what changed), not O(SAs); the tuple of every SA is
     made only when a reader asks for it (`Snapshot.sas`), on the reader's thread. To
     change anything another thread posts a request to the loop
     (`loop.call_soon_threadsafe` / `asyncio.run_coroutine_threadsafe`) and waits on it.
  4. Nonce safety: an outbound manual SA may use sequence numbers only up to a limit
     already persisted (SequenceStore, which never lowers a limit on disk). An IKE Child
     SA's keys are new (derived from fresh nonces), were never used before and die with
     this process, so it may use its whole sequence space and nothing is persisted (the
     data plane never wraps a counter: sequence numbers used up is a hard expiry). An SA
     that was handed over (a successor with the same peer, SPI and key took its place) is capped: no
     `seq_reserve` event, retry or later change lifts its limit again. Only `abort` of
     the change that capped it, whose successor therefore never sent, restores it.
  5. A change is built in a `Change`: new SAs are created, their reservations persisted
     and their predecessors capped; nothing the workers see moves until `commit` swaps in
     one complete table set. `abort` undoes the caps and drops the new SAs.

The IKE engine's calls (TEAM.md's contract), all on the loop:

  - ``install_child(keys) -> ChildHandle``: the inbound SA, then the outbound SA bound to
    the rules of its crypto map entry (an entry without manual keys: its rules had an
    empty slot, so their packets were dropped as ``no_sa`` until now).
  - ``rekey_child(old, keys, switch=True) -> ChildHandle``: make-before-break: the new
    inbound SA is published first, then the entry's outbound slot switches to the new
    outbound SA; the old pair stays installed (its inbound still accepts) until
    ``retire_child(old)``. With ``switch=False`` (the responder of the rekey, RFC 7296
    2.8: the initiator may not have the new inbound SA yet) only the new inbound SA goes
    live and the slot keeps the old outbound SA until the first of: ``switch_child(new)``,
    ``retire_child(old)`` (the peer's DELETE), packets arriving on the new inbound SA, or
    SWITCH_FALLBACK seconds (both checked at ``housekeeping``). A pending successor only
    ever takes the slot from its own predecessor: once another SA holds it, it never does.
  - ``retire_child(handle, linger=0)``: removes both SAs of the pair; if its outbound held
    the entry's slot, a successor pending its switch takes it, or else the slot is empty
    again (fail closed: traffic dropped, ``no_sa``). ``linger`` (a rekeyed pair): once its
    outbound serves no rule, the inbound SA keeps accepting packets still in flight for
    that many seconds more (retired at the first ``housekeeping`` after); a pair whose
    outbound still holds the slot is retired at once, never left sending.
  - ``move_child(handle, peer, port) -> bool``: the IKE SA followed its peer (RFC 7296
    2.23): the pair's outbound SA sends to `peer`:`port` from now on, and its inbound SA
    expects packets from there (``Dataplane.set_remote``, in place).
  - ``child_usage(handle) -> dict``: bytes/packets in and out, and ``last_in``: the
    monotonic time at which inbound packets were last seen to move (found by comparing
    counters at each call, so as fine as the caller polls), or None if none came yet.
  - ``subscribe(client)``: the client's methods, each optional, are called on the loop:
    ``on_peer_moved(handle, peer, port)`` (authenticated ESP from a new address or port
    on a Child SA made with ``follow_peer``: the owner moved the pair there already),
    ``on_acquire(entry, src, dst, proto, sport, dport)`` (a PROTECT rule of `entry`
    without an SA met a packet; the data plane rate-limits them per rule),
    ``on_soft_expired(handle, what)``, ``on_hard_expired(handle)`` (a hard lifetime, or
    sequence numbers used up), ``on_ike_datagram(local, lport, remote, rport, data)``
    (punted from UDP 4500, non-ESP marker stripped), or, preferred when present,
    ``on_ike_datagrams([(local, lport, remote, rport, data), ...])``: one loop turn's
    batch. A client that raises is logged, never stops the owner.
  - ``send_ike(local, peer, port, data)``: an IKE message out of the data plane's NAT-T
    socket (UDP 500 is the engine's own socket).

A reload (manual keys) publishes a whole table set; a Child SA's install, rekey and retire
change the live set in place (Dataplane.install/replace/retire: O(1) at any number of
SAs, never a half-built policy), and the owner's records follow either way.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from espd.config.model import peer_source_check
from espd.dataplane import SA, Dataplane, Event, Lifetime
from espd.keying.cow_table import EMPTY as EMPTY_TABLE
from espd.keying.cow_table import CowTable
from espd.keying.sequence_store import RESERVE_BLOCK, SequenceStore
from espd.policy.plan import RuleSpec, SaSpec, fingerprint_keys

log = logging.getLogger("espd")

HANDOVER = 1 << 16  # sequence numbers an SA being replaced may still send meanwhile
SWITCH_FALLBACK = 10.0  # seconds a rekey responder's new outbound SA waits for a sign
EVENT_BATCH = 1024  # data-plane events handled per loop turn (the queue holds 1024)
Slot = tuple[str, int]  # a crypto map entry: (map name, seq)


class OwnerError(Exception):
    """A change the owner refuses; the message says why."""


class OwnerThreadError(RuntimeError):
    """SA state changed from a thread other than the event loop's (rule 1)."""


# --- what clients hand in and get back -------------------------------------------------


@dataclass(frozen=True)
class ChildSaKeys:
    """A negotiated Child SA pair. Key fields are bytearrays, wiped once installed."""

    entry: Slot
    ike_sa: str  # the IKE SA's id, for show
    transform: str  # an espd ESP transform name, as Dataplane.create_sa takes
    mode: str
    encap: str  # "esp" | "udp"
    local: str
    peer: str
    spi_in: int
    key_in: bytearray = field(repr=False)
    auth_key_in: bytearray | None = field(repr=False)
    spi_out: int
    key_out: bytearray = field(repr=False)
    auth_key_out: bytearray | None = field(repr=False)
    esn: bool = False
    replay_window: int = 1024
    soft: Lifetime = Lifetime()
    hard: Lifetime = Lifetime()
    local_port: int = 4500
    remote_port: int = 4500
    traffic_selectors: tuple = ()  # as negotiated (local TS, remote TS), for show
    nat_detected: bool = False  # IKE saw a NAT: over UDP the peer's port may change
    peer_source: str = "auto"  # the entry's setting (CryptoMapEntry.peer_source)
    # RFC 7296 2.23: the peer is behind a NAT and we are not: follow it when it moves
    follow_peer: bool = False
    nat_keepalive: bool = False  # we are behind a NAT: send RFC 3948 keepalives to the peer

    def wipe(self) -> None:
        for key in (self.key_in, self.auth_key_in, self.key_out, self.auth_key_out):
            if isinstance(key, bytearray):
                key[:] = bytes(len(key))


@dataclass(frozen=True, slots=True)
class ChildHandle:
    """A Child SA pair installed by install_child/rekey_child; opaque to its client."""

    id: int
    entry: Slot
    ike_sa: str
    spi_in: int
    spi_out: int


@dataclass(frozen=True, slots=True)
class SaView:
    """One SA as readers see it: its spec (no keys: wiped) and its data-plane handle."""

    spec: SaSpec
    sa: SA
    origin: str  # "manual" | "ike"
    ike_sa: str | None = None
    capped: bool = False
    ports: tuple[int, int] = (4500, 4500)  # UDP: (local, the peer's as it stands now)
    keepalive: bool = False  # outbound: NAT keepalives go to the peer (manual UDP, or IKE
    #                          behind a NAT)


@dataclass(frozen=True, eq=False)
class Snapshot:
    """What the owner runs, immutable: replaced whole after every change (rule 3).

    `table` holds the SA views by cookie (creation order), sharing structure with the
    snapshots before it; `sas` is that table as a tuple, made on first use by whoever
    reads it (show, metrics: O(SAs) on the reader's side, once per snapshot), never by
    the change that made the snapshot."""

    generation: int
    table: CowTable[SaView]
    rules: tuple[RuleSpec, ...]

    @functools.cached_property
    def sas(self) -> tuple[SaView, ...]:
        # a race between two readers makes the same tuple twice: the table never changes
        return self.table.values()

    def outbound(self) -> list[SaView]:
        return [v for v in self.sas if v.spec.direction == "out"]


EMPTY = Snapshot(0, EMPTY_TABLE, ())


# --- the owner's own records ----------------------------------------------------------


@dataclass(eq=False, slots=True)  # slots: one per SA, two per Child SA, thousands on a hub
class _Installed:
    spec: SaSpec
    sa: SA
    origin: str
    ports: tuple[int, int] = (4500, 4500)
    ike_sa: str | None = None
    child: int | None = None  # ChildHandle.id
    limit: int = 0  # outbound: the highest sequence number persisted and granted
    capped: bool = False  # outbound: handed over; its limit never rises again (rule 4)
    reserve_failing: bool = False
    never_bound: bool = False  # outbound: a rekey responder's, not yet switched to
    keepalive: bool = False  # outbound IKE: we are behind a NAT (SaView.keepalive)
    view: SaView | None = None  # what readers see of it; replaced when `capped`, the
    #                             peer or its port change

    @property
    def handover_key(self) -> tuple[str, int, str]:
        return (self.spec.peer, self.spec.spi, self.spec.fingerprint)

    def refresh_view(self) -> None:
        keepalive = self.spec.encap == "udp" and self.spec.direction == "out" and (
            self.origin == "manual" or self.keepalive)
        self.view = SaView(self.spec, self.sa, self.origin, self.ike_sa, self.capped,
                           self.ports, keepalive)


class Change:
    """SAs to add and remove and the rules to run, applied together by SaOwner.commit.

    Creating an SA here already persists its sequence reservation and caps the live SA it
    replaces (same peer, SPI and key): until commit the workers run the old tables; abort
    restores every cap and drops what was created."""

    def __init__(self, owner: SaOwner) -> None:
        self._owner = owner
        self.added: list[_Installed] = []
        self.removed: set[_Installed] = set()
        self.capped: list[tuple[_Installed, int]] = []  # (live SA, its limit before)
        self.rules: tuple[RuleSpec, ...] | None = None  # None: unchanged
        self.slots: dict[Slot, _Installed | None] = {}
        self.outbound_added: dict[tuple[str, int, str], _Installed] = {}
        self.done = False

    def add(self, spec: SaSpec, origin: str, *, ports: tuple[int, int] = (4500, 4500),
            ike_sa: str | None = None, child: int | None = None,
            keys: tuple[bytes | bytearray, bytes | bytearray | None] | None = None
            ) -> _Installed:
        """Create `spec`'s SA with `keys` (key, auth_key), or the spec's own (they stay
        the caller's to wipe)."""
        return self._owner._create(self, spec, origin, ports, ike_sa, child, keys)

    def remove(self, installed: _Installed) -> None:
        self.removed.add(installed)

    def set_rules(self, rules: Iterable[RuleSpec]) -> None:
        self.rules = tuple(rules)

    def bind(self, slot: Slot, outbound: _Installed | None) -> None:
        """Let the PROTECT rules of crypto map entry `slot` send through `outbound`."""
        self.slots[slot] = outbound

    def outbound(self) -> list[_Installed]:
        """The outbound SAs live once this change commits."""
        live = [i for i in self._owner._sas if i not in self.removed]  # O(SAs): reloads only
        return [i for i in live + self.added if i.spec.direction == "out"]


class SaOwner:
    """Sole owner of SA lifecycle; see the module docstring for the rules it keeps."""

    def __init__(self, dp: Dataplane, seqstore: SequenceStore,
                 reserve_block: int = RESERVE_BLOCK) -> None:
        self.dp = dp
        self.seqstore = seqstore
        self.reserve_block = reserve_block
        self.snapshot: Snapshot = EMPTY  # rule 3: the only attribute other threads read
        self._thread = threading.get_ident()
        # Every record is reached through a dict or an index, so that one Child SA change
        # costs the same at 10 or 10,000 SAs (only a reload walks them all).
        self._sas: dict[_Installed, SaView] = {}  # insertion-ordered, each with its view
        self._table: CowTable[SaView] = EMPTY_TABLE  # the same views by cookie (rule 3)
        self._outbound: dict[tuple[str, int, str], _Installed] = {}  # handover_key -> live
        self._rules: tuple[RuleSpec, ...] = ()
        self._entry_policy: dict[Slot, int] = {}  # crypto map entry -> its rules' policy
        self._policy_entry: dict[int, Slot] = {}  # and back (acquire events name a policy)
        self._slots: dict[Slot, _Installed] = {}  # entry -> its outbound SA
        self._by_cookie: dict[int, _Installed] = {}
        self._cookies = itertools.count(1)
        self._children: dict[int, tuple[_Installed, _Installed]] = {}
        self._child_ids = itertools.count(1)
        self._inbound_seen: dict[int, tuple[int, float | None]] = {}  # child -> (pkts, when)
        # successor child -> (its predecessor child, when the fallback switches it):
        # installed inbound-only by rekey_child(switch=False), its outbound not yet bound
        self._pending_switch: dict[int, tuple[int, float]] = {}
        self._lingering: dict[int, float] = {}  # retired child -> when its inbound goes
        self._failing: dict[_Installed, None] = {}  # reservations to retry (reserve_failing)
        self._clients: list[object] = []
        self._generation = 0
        self.on_change: Callable[[Snapshot], None] | None = None

    # --- rule 1 ---

    def bind_thread(self) -> None:
        """Make the calling thread the owner's (the loop's thread, if it was built elsewhere)."""
        self._thread = threading.get_ident()

    def _owned(self) -> None:
        if threading.get_ident() != self._thread:
            raise OwnerThreadError(
                f"SA state changed from thread {threading.current_thread().name}; only the "
                "event loop's thread may (post a request to the loop instead)")

    # --- changes ---

    def begin(self) -> Change:
        self._owned()
        return Change(self)

    def _create(self, change: Change, spec: SaSpec, origin: str, ports: tuple[int, int],
                ike_sa: str | None, child: int | None,
                keys: tuple[bytes | bytearray, bytes | bytearray | None] | None = None
                ) -> _Installed:
        self._owned()
        if change.done:
            raise OwnerError("internal: this change was committed or aborted already")
        key, auth_key = (spec.key, spec.auth_key) if keys is None else keys
        cookie = next(self._cookies)
        sa = self.dp.create_sa(
            spi=spec.spi, direction=spec.direction, transform=spec.transform, key=key,
            auth_key=auth_key, mode=spec.mode, local=spec.local, peer=spec.peer,
            encap=spec.encap, source_check=spec.source_check, follow_peer=spec.follow_peer,
            sport=ports[0], dport=ports[1],
            replay_window=spec.replay_window, esn=spec.esn, soft=spec.soft, hard=spec.hard,
            policy=spec.policy, cookie=cookie)
        installed = _Installed(spec, sa, origin, ports, ike_sa, child)
        installed.refresh_view()
        if spec.direction == "out" and origin == "ike":  # fresh keys: rule 4
            installed.limit = seq_max = 2**64 - 1 if spec.esn else 2**32 - 1
            self.dp.reserve(sa, resume_after=0, limit=seq_max, warn_at=seq_max)
        elif spec.direction == "out":
            resume_after = self._hand_over(change, spec)
            if resume_after is None:
                resume_after = self.seqstore.last(spec.peer, spec.spi)
            installed.limit = resume_after
            self._reserve(installed, resume_after)  # a failure here fails the change
        change.added.append(installed)
        if spec.direction == "out":
            change.outbound_added[installed.handover_key] = installed
        self._by_cookie[cookie] = installed
        return installed

    def _hand_over(self, change: Change, spec: SaSpec) -> int | None:
        """A live outbound SA with the same peer, SPI and key is capped HANDOVER numbers
        above where it stands (or at its limit); its successor resumes above the cap."""
        key = (spec.peer, spec.spi, spec.fingerprint)
        for old in (change.outbound_added.get(key), self._outbound.get(key)):
            if old is None:
                continue
            if old.capped:  # capped already, by this change or an earlier one
                return old.limit
            cap = min(self.dp.stats(old.sa)["seq"] + HANDOVER, old.limit)
            change.capped.append((old, old.limit))
            old.capped, old.limit = True, cap
            self._refresh(old)
            self.dp.reserve(old.sa, resume_after=0, limit=cap, warn_at=cap)
            return cap
        return None

    def commit(self, change: Change) -> Snapshot:
        """Swap in the table set `change` leads to (rule 5). On a data-plane error the
        change is aborted, the live tables untouched, and the error raised."""
        return self._finish(change, None)

    def _finish(self, change: Change, in_place: Callable[[], None] | None) -> Snapshot:
        """Make `change` live: one full publish (O(SAs): a reload), or `in_place`, the data
        plane's incremental calls that do the same to the live set (install, replace,
        retire; the owner's bookkeeping then costs O(the change), the snapshot's too).
        An SA removed in place must have been unbound from its slot by the change."""
        self._owned()
        rules = self._rules if change.rules is None else change.rules
        try:
            if in_place is None:
                slots = {s: i for s, i in self._slots.items() if i not in change.removed}
                self._bind(slots, change)
                sas = [i for i in self._sas if i not in change.removed] + change.added
                self._publish(sas, rules, slots)
            else:
                in_place()
                slots = self._slots
                self._bind(slots, change)  # in place: after the data plane took it
                self.dp.reclaim()
        except BaseException:
            self.abort(change)
            raise
        change.done = True
        for gone in change.removed:
            self._by_cookie.pop(gone.sa.cookie, None)
            if self._sas.pop(gone, None) is not None:
                self._table = self._table.remove(gone.sa.cookie)
            self._failing.pop(gone, None)
            if self._outbound.get(gone.handover_key) is gone:
                del self._outbound[gone.handover_key]
        for added in change.added:
            self._sas[added] = added.view
            self._table = self._table.set(added.sa.cookie, added.view)
            if added.spec.direction == "out":
                self._outbound[added.handover_key] = added
        if change.rules is not None:
            self._entry_policy = {}
            for r in rules:
                self._entry_policy.setdefault((r.map_name, r.seq), r.rule.policy)
            self._policy_entry = {p: e for e, p in self._entry_policy.items()}
        self._rules, self._slots = rules, slots
        return self._announce()

    def _refresh(self, installed: _Installed) -> None:
        installed.refresh_view()
        if installed in self._sas:
            self._sas[installed] = installed.view
            self._table = self._table.set(installed.sa.cookie, installed.view)

    @staticmethod
    def _bind(slots: dict[Slot, _Installed], change: Change) -> None:
        for slot, installed in change.slots.items():
            if installed is None:
                slots.pop(slot, None)
            else:
                slots[slot] = installed

    def abort(self, change: Change) -> None:
        """Undo `change`: its predecessors get their limits back (their successors never
        went live, so never sent), and the SAs it created are dropped unused."""
        self._owned()
        if change.done:
            return
        change.done = True
        for old, limit in reversed(change.capped):
            old.capped, old.limit = False, limit
            self._refresh(old)
            self.dp.reserve(old.sa, resume_after=0, limit=limit,
                            warn_at=max(0, limit - self.reserve_block // 2))
        for installed in change.added:
            self._by_cookie.pop(installed.sa.cookie, None)

    def _publish(self, sas: list[_Installed], rules: tuple[RuleSpec, ...],
                 slots: dict[Slot, _Installed]) -> None:
        self.dp.publish([i.sa for i in sas], [
            (r.rule, slots[(r.map_name, r.seq)].sa
             if r.protects and (r.map_name, r.seq) in slots else None)
            for r in rules])
        self.dp.reclaim()

    def _announce(self) -> Snapshot:
        self._generation += 1
        # O(1): the table was updated change by change (rule 3)
        self.snapshot = Snapshot(self._generation, self._table, self._rules)
        if self.on_change is not None:
            self.on_change(self.snapshot)
        return self.snapshot

    # --- what clients look up ---

    def installed(self, origin: str) -> list[_Installed]:
        self._owned()
        return [i for i in self._sas if i.origin == origin]

    def slot_holder(self, slot: Slot) -> _Installed | None:
        self._owned()
        return self._slots.get(slot)

    # --- sequence-number reservations (rule 4) ---

    def _reserve(self, installed: _Installed, resume_after: int) -> None:
        """Persist the next block of sequence numbers, then let the SA use it."""
        if installed.capped:
            return
        seq_max = 2**64 - 1 if installed.spec.esn else 2**32 - 1
        limit = min(installed.limit + self.reserve_block, seq_max)
        limit = self.seqstore.reserve(installed.spec.peer, installed.spec.spi, limit)
        self.dp.reserve(installed.sa, resume_after=resume_after, limit=limit,
                        warn_at=max(resume_after, limit - self.reserve_block // 2))
        installed.limit = limit

    def _extend(self, installed: _Installed) -> None:
        if installed.capped or installed.origin == "ike" or \
                self._by_cookie.get(installed.sa.cookie) is not installed:
            return  # capped for good, granted all at once (rule 4), or no longer installed
        try:
            self._reserve(installed, 0)
        except OSError as e:
            if not installed.reserve_failing:
                log.error("%s: cannot persist sequence reservation (%s); it stops sending at "
                          "%d until this succeeds", installed.spec.label, e, installed.limit)
            installed.reserve_failing = True
            self._failing[installed] = None
            return
        if installed.reserve_failing:
            log.info("%s: sequence reservation persisted again", installed.spec.label)
        installed.reserve_failing = False
        self._failing.pop(installed, None)

    def retry_reservations(self) -> None:
        """Retry every reservation that failed to persist (the service's 1 s timer)."""
        self._owned()
        for installed in list(self._failing):  # O(failing), not O(SAs): a 1 s timer
            if installed.capped or self._by_cookie.get(installed.sa.cookie) is not installed:
                del self._failing[installed]  # never extended again (see _extend)
            else:
                self._extend(installed)

    def housekeeping(self) -> None:
        """The loop's periodic turn: failed reservations again, pending rekey switches that
        are due, retired tables freed."""
        self._owned()
        self.retry_reservations()
        self._switch_due()
        now = time.monotonic()
        for child, when in list(self._lingering.items()):
            if now >= when:
                self._retire_pair(child)
        self.dp.reclaim()

    def record_last_used(self) -> None:
        """With no worker running (shutdown), lower each outbound SA's stored limit to the
        last number it used, so a clean restart resumes right after it. Only a limit this
        process wrote itself and still stands on disk is lowered (SequenceStore.release)."""
        self._owned()
        for i in self._sas:
            if i.spec.direction != "out" or i.capped or i.origin == "ike":
                continue  # (an IKE Child SA persisted nothing: rule 4)
            try:
                self.seqstore.release(i.spec.peer, i.spec.spi, used=self.dp.stats(i.sa)["seq"],
                                      granted=i.limit)
            except OSError as e:
                log.warning("%s: last sequence number not recorded (%s); the next start skips "
                            "to the reservation instead", i.spec.label, e)

    # --- data-plane events ---

    def drain_events(self) -> None:
        """Handle the queued data-plane events (the loop's reader on dp.event_fd()), at
        most EVENT_BATCH per loop turn: the workers can queue events as fast as they are
        handled, and the rest of the loop must not wait on that; the others wait in the
        queue, whose fd stays readable."""
        self._owned()
        for event in self.dp.events(EVENT_BATCH):
            self._event(event)

    def _event(self, event: Event) -> None:
        installed = self._by_cookie.get(event.cookie)
        what = installed.spec.label if installed else \
            f"SPI 0x{event.spi:08X} {event.direction}"
        handle = self._handle_of(installed)
        if event.kind == "seq_reserve":
            if installed:
                self._extend(installed)
        elif event.kind == "soft_expired":
            if handle is None:
                log.warning("%s: soft lifetime reached; rekey soon (new SPI and key)", what)
            self._tell("on_soft_expired", handle, "lifetime")
        elif event.kind == "hard_expired":
            log.error("%s: hard lifetime reached; its traffic is dropped until rekeyed", what)
            self._tell("on_hard_expired", handle)
        elif event.kind == "seq_cycled":
            log.error("%s: sequence numbers used up; its traffic is dropped until rekeyed", what)
            self._tell("on_hard_expired", handle)
        elif event.kind == "peer_moved":
            # only an inbound IKE SA made with follow_peer raises it: its peer is behind a
            # NAT and we are not (RFC 7296 2.23), and the packet was authenticated and new
            if installed is not None and installed.child is not None and \
                    self._move_pair(installed.child, event.src, event.sport):
                log.info("%s: peer moved to %s port %d (authenticated ESP; RFC 7296 2.23)",
                         what, event.src, event.sport)
                self._tell("on_peer_moved", handle, event.src, event.sport)
        elif event.kind == "acquire":
            # by its policy, not its rule index: an event from a table set replaced since
            # may name an index another entry's rule holds now, never another's policy id
            entry = self._policy_entry.get(event.policy)
            if entry is not None:  # else: its entry is gone
                self._tell("on_acquire", entry, event.src, event.dst,
                           event.proto, event.sport, event.dport)
        else:
            log.warning("data plane event %s (%d)", event.kind, event.value)

    # --- IKE's Child SAs (the contract in the module docstring) ---

    def subscribe(self, client: object) -> None:
        self._owned()
        self._clients.append(client)

    def drain_punted(self) -> None:
        """Hand the IKE datagrams punted from UDP 4500 to the clients (the loop's reader
        on dp.punt_fd()), one batch per loop turn: a client with ``on_ike_datagrams``
        gets the batch whole (the IKE engine orders and budgets it), others one by one.
        With no client listening they are dropped."""
        self._owned()
        batch = [(d.dst, d.dport, d.src, d.sport, d.data) for d in self.dp.punted()]
        if not batch:
            return
        for client in list(self._clients):
            if hasattr(client, "on_ike_datagrams"):
                self._call(client, "on_ike_datagrams", batch)
            elif hasattr(client, "on_ike_datagram"):
                for datagram in batch:
                    self._call(client, "on_ike_datagram", *datagram)

    def send_ike(self, local: str, peer: str, port: int, data: bytes) -> None:
        """Send an IKE message on the data plane's NAT-T socket (same source port as ESP,
        so the peer's NAT mapping holds); the non-ESP marker is added."""
        self._owned()
        self.dp.send_ike(local, peer, port, data)

    def _tell(self, method: str, *args: object) -> None:
        if method in ("on_soft_expired", "on_hard_expired") and args[0] is None:
            return  # about a manual SA: no client negotiates it
        for client in list(self._clients):
            if hasattr(client, method):
                self._call(client, method, *args)

    @staticmethod
    def _call(client: object, method: str, *args: object) -> None:
        try:
            getattr(client, method)(*args)
        except Exception:
            log.exception("SA owner client %r failed in %s", client, method)

    def _handle_of(self, installed: _Installed | None) -> ChildHandle | None:
        if installed is None or installed.child is None:
            return None
        inbound, outbound = self._children[installed.child]
        return ChildHandle(installed.child, (inbound.spec.map_name, inbound.spec.seq),
                           installed.ike_sa or "", inbound.spec.spi, outbound.spec.spi)

    def _child_specs(self, keys: ChildSaKeys) -> tuple[SaSpec, SaSpec]:
        policy = self._entry_policy.get(keys.entry)
        if policy is None:
            raise OwnerError(f"crypto map {keys.entry[0]} {keys.entry[1]} has no rules: "
                             "nothing would send through this Child SA")
        holder = self._slots.get(keys.entry)
        if holder is not None and holder.origin == "manual":
            raise OwnerError(f"crypto map {keys.entry[0]} {keys.entry[1]} is manually keyed")
        specs = []
        for direction, spi, key, auth in (
                ("in", keys.spi_in, keys.key_in, keys.auth_key_in),
                ("out", keys.spi_out, keys.key_out, keys.auth_key_out)):
            specs.append(SaSpec(
                map_name=keys.entry[0], seq=keys.entry[1], direction=direction, spi=spi,
                transform=keys.transform, mode=keys.mode, local=keys.local, peer=keys.peer,
                encap=keys.encap, replay_window=keys.replay_window, esn=keys.esn,
                # no keys in the spec that is kept: the negotiated ones go to the data
                # plane through _add_pair and are wiped by the caller (the fingerprint
                # stands in for them)
                hard=keys.hard, soft=keys.soft, policy=policy, key=b"", auth_key=None,
                fingerprint=fingerprint_keys(key, auth),
                source_check=peer_source_check(keys.peer_source, keys.encap, keys.nat_detected),
                follow_peer=(direction == "in" and keys.follow_peer and keys.encap == "udp"
                             and keys.replay_window > 0)))
        return specs[0], specs[1]

    def _add_pair(self, change: Change, keys: ChildSaKeys, child: int
                  ) -> tuple[_Installed, _Installed]:
        spec_in, spec_out = self._child_specs(keys)
        ports = (keys.local_port, keys.remote_port)
        inbound = change.add(spec_in, "ike", ports=ports, ike_sa=keys.ike_sa, child=child,
                             keys=(keys.key_in, keys.auth_key_in))
        outbound = change.add(spec_out, "ike", ports=ports, ike_sa=keys.ike_sa, child=child,
                              keys=(keys.key_out, keys.auth_key_out))
        outbound.keepalive = keys.nat_keepalive and keys.encap == "udp"
        outbound.refresh_view()
        return inbound, outbound

    def install_child(self, keys: ChildSaKeys) -> ChildHandle:
        self._owned()
        try:
            child = next(self._child_ids)
            change = self.begin()
            try:
                inbound, outbound = self._add_pair(change, keys, child)
                holder = self._slots.get(keys.entry)
                change.bind(keys.entry, outbound)
                self._children[child] = (inbound, outbound)
                if holder is None:  # the inbound SA, then the rules' empty slot
                    self._finish(change, lambda: self.dp.install(inbound.sa, outbound.sa))
                else:  # a second child for the entry: it takes over the slot
                    self._finish(change, lambda: self.dp.replace(inbound.sa, outbound.sa))
            except BaseException:
                self._children.pop(child, None)
                self.abort(change)
                raise
        finally:
            keys.wipe()
        return ChildHandle(child, keys.entry, keys.ike_sa, keys.spi_in, keys.spi_out)

    def rekey_child(self, old: ChildHandle, keys: ChildSaKeys, *, switch: bool = True
                    ) -> ChildHandle:
        self._owned()
        try:
            if old.id not in self._children:
                raise OwnerError(f"Child SA {old} is not installed")
            if keys.entry != old.entry:
                raise OwnerError(f"a rekey of {old.entry} cannot move to {keys.entry}")
            child = next(self._child_ids)
            change = self.begin()
            try:
                inbound, outbound = self._add_pair(change, keys, child)
                self._children[child] = (inbound, outbound)
                if switch:
                    # make-before-break in the data plane: the new inbound SA is live
                    # before the rules switch to the new outbound; the old pair stays
                    # until retired
                    change.bind(keys.entry, outbound)
                    self._finish(change, lambda: self.dp.replace(inbound.sa, outbound.sa))
                else:  # only the inbound SA now; the outbound waits (_switch)
                    outbound.never_bound = True
                    self._finish(change, lambda: self.dp.install(inbound.sa, None))
                    self._pending_switch[child] = (old.id,
                                                   time.monotonic() + SWITCH_FALLBACK)
            except BaseException:
                self._children.pop(child, None)
                self.abort(change)
                raise
        finally:
            keys.wipe()
        return ChildHandle(child, keys.entry, keys.ike_sa, keys.spi_in, keys.spi_out)

    def switch_child(self, handle: ChildHandle) -> bool:
        """Bind a pending successor's outbound SA now (the rekey responder saw the sign
        RFC 7296 2.8 waits for). False if nothing was pending or its predecessor no
        longer holds the slot (another SA took it: the successor stays inbound-only)."""
        self._owned()
        return self._switch(handle.id)

    def _switch(self, child: int) -> bool:
        pending = self._pending_switch.pop(child, None)
        pair = self._children.get(child)
        if pending is None or pair is None:
            return False
        before = self._children.get(pending[0])
        entry = (pair[1].spec.map_name, pair[1].spec.seq)
        holder = self._slots.get(entry)
        if holder is not None and (before is None or holder is not before[1]):
            return False  # the slot moved on without it: never take it back
        outbound = pair[1]
        change = self.begin()
        change.bind(entry, outbound)
        if holder is None:  # the predecessor is gone: the rules' slot is empty
            self._finish(change, lambda: self.dp.install(None, outbound.sa))
        else:
            self._finish(change, lambda: self.dp.replace(None, outbound.sa))
        outbound.never_bound = False
        return True

    def _switch_due(self) -> None:
        """Pending successors whose peer has sent on them, or whose fallback time came."""
        now = time.monotonic()
        for child, (_, deadline) in list(self._pending_switch.items()):
            pair = self._children.get(child)
            if pair is None:
                self._pending_switch.pop(child, None)
            elif now >= deadline or self.dp.stats(pair[0].sa)["packets"] > 0:
                try:
                    self._switch(child)
                except Exception:
                    log.exception("%s: could not switch to the rekeyed outbound SA",
                                  pair[1].spec.label)

    def retire_child(self, handle: ChildHandle, linger: float = 0.0) -> None:
        self._owned()
        pair = self._children.get(handle.id)
        if pair is None or handle.id in self._lingering:
            return  # retired already
        self._pending_switch.pop(handle.id, None)
        if self._slots.get(handle.entry) is pair[1]:
            successor = next((c for c, (before, _) in self._pending_switch.items()
                              if before == handle.id), None)
            if successor is not None:
                self._switch(successor)  # the peer's DELETE: the rekey is complete
        for child, (before, _) in list(self._pending_switch.items()):
            if before == handle.id:  # its predecessor leaves without holding the slot
                del self._pending_switch[child]
        if linger > 0 and self._slots.get(handle.entry) is not pair[1]:
            self._lingering[handle.id] = time.monotonic() + linger
            return
        self._retire_pair(handle.id)

    def _retire_pair(self, child: int) -> None:
        self._lingering.pop(child, None)
        pair = self._children.get(child)
        if pair is None:
            return
        entry = (pair[1].spec.map_name, pair[1].spec.seq)
        change = self.begin()
        for installed in pair:
            change.remove(installed)
        if self._slots.get(entry) is pair[1]:
            change.bind(entry, None)  # fail closed until a new child arrives

        def retire() -> None:
            for installed in pair:  # the inbound SA leaves the SAD; the outbound, its rules
                if not installed.never_bound:  # (one never bound is not in the live set)
                    self.dp.retire(installed.sa)

        self._finish(change, retire)
        del self._children[child]
        self._inbound_seen.pop(child, None)

    def move_child(self, handle: ChildHandle, peer: str, port: int) -> bool:
        """The IKE SA of `handle` followed its peer to `peer`:`port` (RFC 7296 2.23): its
        outbound SA sends there from now on, its inbound SA expects packets from there.
        False if the pair is there already or not installed."""
        self._owned()
        return self._move_pair(handle.id, peer, port)

    def _move_pair(self, child: int, peer: str, port: int) -> bool:
        pair = self._children.get(child)
        if pair is None or all((i.spec.peer, i.ports[1]) == (peer, port) for i in pair):
            return False
        for installed in pair:
            self.dp.set_remote(installed.sa, peer, port)
        for installed in pair:  # records after the data plane took both (it validates)
            if self._outbound.get(installed.handover_key) is installed:
                del self._outbound[installed.handover_key]
                installed.spec = dataclasses.replace(installed.spec, peer=peer)
                self._outbound[installed.handover_key] = installed
            else:
                installed.spec = dataclasses.replace(installed.spec, peer=peer)
            installed.ports = (installed.ports[0], port)
            self._refresh(installed)
        self._announce()
        return True

    def child_usage(self, handle: ChildHandle) -> dict:
        self._owned()
        pair = self._children.get(handle.id)
        if pair is None:
            raise OwnerError(f"Child SA {handle} is not installed")
        stats_in, stats_out = (self.dp.stats(i.sa) for i in pair)
        seen, when = self._inbound_seen.get(handle.id, (0, None))
        if stats_in["packets"] != seen:
            seen, when = stats_in["packets"], time.monotonic()
            self._inbound_seen[handle.id] = (seen, when)
        return {"bytes_in": stats_in["bytes"], "packets_in": stats_in["packets"],
                "bytes_out": stats_out["bytes"], "packets_out": stats_out["packets"],
                "last_in": when}
