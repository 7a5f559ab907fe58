"""An IKE SA: SPIs, roles, addresses, nonces, keys, message ID windows, Child SAs.

Roles: ``initiator`` is who sent IKE_SA_INIT of THIS SA (an IKE SA rekey swaps it for the
new SA when the peer started the rekey); the exchange initiator of any request is whoever
sends it. States in protocol order:

    INIT_SENT     initiator: IKE_SA_INIT request out, no keys yet
    INIT_DONE     responder: IKE_SA_INIT answered, keys derived, waiting for IKE_AUTH
    AUTH_SENT     initiator: IKE_AUTH request out
    ESTABLISHED   authenticated both ways
    REKEYING      our IKE SA rekey in flight
    DELETING      our DELETE in flight
    DELETED       gone: keys wiped, Child SAs retired

Invariant: key material lives only in ``keys`` (espd.ike.crypto.keymat.IkeKeys: SK_d,
SK_a*, SK_e*, SK_p* as wipeable Secrets) and in the crypto objects made from it; ``wipe``
zeroes all of them. Once established (``setup_done``) ``keys`` holds SK_d only: the SK
ciphers keep their own copies of SK_e/SK_a, and nothing else is needed again.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

from espd.ike.proposals import Proposal
from espd.ike.sa.child_sa import ChildSa
from espd.ike.sa.windows import RequestWindow, ResponseWindow

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class IkeState(enum.Enum):
    INIT_SENT = "init-sent"
    INIT_DONE = "init-done"
    AUTH_SENT = "auth-sent"
    ESTABLISHED = "established"
    REKEYING = "rekeying"
    DELETING = "deleting"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)  # slots: two per IKE SA
class Endpoint:
    address: IPAddress
    port: int

    def __str__(self) -> str:
        if self.address.version == 6:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


@dataclass(eq=False, slots=True)  # slots: one per IKE SA, thousands on a hub
class IkeSa:
    spi_i: bytes  # 8 bytes, chosen by the IKE_SA_INIT initiator
    spi_r: bytes  # 8 bytes; zeros until the responder answers
    initiator: bool
    local: Endpoint
    remote: Endpoint
    state: IkeState
    ident: int = 0  # a small number for show output and logs (IOS "tunnel id")
    proposal: Proposal | None = None
    nonce_i: bytes = b""
    nonce_r: bytes = b""
    keys: object | None = field(default=None, repr=False)  # crypto.keymat.IkeKeys
    prf: object | None = None  # PRF object of the suite (crypto), for AUTH and Child keys
    suite: object | None = None  # the negotiated algorithms (exchanges.ike_sa_init.Suite)
    sk_out: object | None = field(default=None, repr=False)  # SK cipher we seal with
    sk_in: object | None = field(default=None, repr=False)  # SK cipher we open with
    requests: RequestWindow = field(default_factory=RequestWindow)
    responses: ResponseWindow = field(default_factory=ResponseWindow)
    init_request: bytes = b""  # the IKE_SA_INIT request as sent (the last one: AUTH signs it)
    init_response: bytes = b""
    peer_id: object | None = None  # the peer's authenticated identity
    peer_certificate: object | None = None  # its verified end certificate (x509), if any
    nat_local: bool = False  # we are behind a NAT (NAT_DETECTION_DESTINATION_IP mismatch)
    nat_remote: bool = False  # the peer is behind a NAT
    fragmentation: bool = False  # both sent IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383)
    # RFC 7383 reassembly per direction: False = the peer's request, True = its response
    reassembly: dict[bool, object] = field(default_factory=dict, repr=False)
    children: dict[int, ChildSa] = field(default_factory=dict)  # by our inbound SPI
    created: float = 0.0  # loop time of IKE_SA_INIT
    established: float = 0.0
    last_heard: float = 0.0  # loop time of the last authenticated message from the peer
    timers: dict[str, object] = field(default_factory=dict)  # name -> TimerHandle
    rekeyed_by: IkeSa | None = None  # the new IKE SA after a rekey
    failure: str = ""  # why it ended, for the log line and show
    # --- negotiation state (cleared once ESTABLISHED) ---
    ke_private: object | None = field(default=None, repr=False)  # our KE half (initiator)
    ke_group: int = 0  # the group of ke_private
    half_open_key: tuple | None = None  # responder: its key in engine.half_open, while there
    cookie: bytes = b""  # the responder's COOKIE, echoed in the retried IKE_SA_INIT
    cookie_retries: int = 0
    ke_retries: int = 0  # INVALID_KE_PAYLOAD answers honoured
    policy: object | None = None  # the ChildPolicy that made us initiate (first Child SA)
    peer: object | None = None  # settings.Peer: keys and identities for this peer
    first_child: ChildSa | None = None  # the Child SA IKE_AUTH negotiates
    queue: list = field(default_factory=list)  # requests waiting for the window
    collision: object | None = None  # sa/collision.Collision: the peer's IKE SA rekey met ours
    reauth: object | None = None  # exchanges/reauth.Reauth in progress, old SA or new
    # --- RFC 9242/9370 (exchanges/ike_intermediate.py) ---
    additional_pending: list | tuple = ()  # KE methods still to run (a list while any)
    intermediates: int = 0  # IKE_INTERMEDIATE exchanges done
    int_auth_i: bytes = field(default=b"", repr=False)  # IntAuth_iN (RFC 9242 3.3.1)
    int_auth_r: bytes = field(default=b"", repr=False)
    key_exchanges: tuple[str, ...] = ()  # what keyed it, for show: "x25519 (IKE_SA_INIT)"
    followups: dict = field(default_factory=dict)  # link -> exchanges/followup_ke.Waiting
    # --- RFC 8784 PPK (exchanges/ppk.py) ---
    ppk_negotiated: bool = False  # both sent USE_PPK in IKE_SA_INIT
    ppk_pending: object | None = field(default=None, repr=False)  # initiator: mixed keys
    ppk_used: bool = False  # its keys descend from SK_d' (an IKE SA rekey inherits it)
    ppk_id: bytes = b""  # the PPK_ID used (public)

    @property
    def spis(self) -> tuple[bytes, bytes]:
        return self.spi_i, self.spi_r

    @property
    def local_spi(self) -> bytes:
        return self.spi_i if self.initiator else self.spi_r

    @property
    def nat(self) -> bool:
        return self.nat_local or self.nat_remote

    @property
    def nonces_i_r(self) -> bytes:
        return self.nonce_i + self.nonce_r

    def set_timer(self, name: str, handle: object) -> None:
        self.cancel_timer(name)
        self.timers[name] = handle

    def cancel_timer(self, name: str) -> None:
        handle = self.timers.pop(name, None)
        if handle is not None:
            handle.cancel()  # type: ignore[attr-defined]

    def cancel_timers(self) -> None:
        for name in list(self.timers):
            self.cancel_timer(name)
        self.requests.done()
        for child in self.children.values():
            child.cancel_timers()

    def setup_done(self) -> None:
        """Once IKE_AUTH is over (both sides authenticated, the first Child SA keyed):
        drop what only AUTH and the first KEYMAT needed. The IKE_SA_INIT messages, the
        IKE_SA_INIT nonces, IntAuth and SK_pi/SK_pr have no later use (RFC 7296: a
        CREATE_CHILD_SA, an IKE SA rekey and a reauthentication bring nonces of their own
        and key from SK_d alone); SK_ai/ar/ei/er live on in the SK ciphers. Keeps only
        SK_d in ``keys``."""
        self.init_request = self.init_response = b""
        self.nonce_i = self.nonce_r = b""
        self.int_auth_i = self.int_auth_r = b""
        self.first_child = None
        if self.keys is not None:
            self.keys = self.keys.only_sk_d()  # type: ignore[attr-defined]

    def wipe(self) -> None:
        """Zero every key this SA holds; the SA is unusable afterwards."""
        for keys in (self.keys, self.ppk_pending):
            if keys is not None:
                keys.wipe()  # type: ignore[attr-defined]
        self.keys = self.ppk_pending = None
        for cipher in (self.sk_out, self.sk_in, self.prf):
            wipe = getattr(cipher, "wipe", None)
            if wipe is not None:
                wipe()
        self.sk_out = self.sk_in = self.prf = None
        self.reassembly.clear()  # decrypted fragments
        for child in self.children.values():
            child.wipe()

    def __str__(self) -> str:
        return f"IKE SA #{self.ident} {self.spi_i.hex()}/{self.spi_r.hex()} {self.remote}"
