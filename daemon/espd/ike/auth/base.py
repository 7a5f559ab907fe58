"""The authenticator interface and the octets every AUTH method signs (RFC 7296 2.15).

    InitiatorSignedOctets = RealMessage1 | NonceRData | MACedIDForI
    ResponderSignedOctets = RealMessage2 | NonceIData | MACedIDForR
    MACedIDForI = prf(SK_pi, RestOfInitIDPayload)      (and SK_pr, the responder's ID)

RealMessage1/2 are the IKE_SA_INIT messages as sent (the last one, after INVALID_KE_PAYLOAD
or COOKIE); RestOf...IDPayload is the ID payload's body: ID type, three reserved bytes, the
identification data. With IKE_INTERMEDIATE exchanges (RFC 9242 3.3.2) the octets end with
IntAuth = IntAuth_iN | IntAuth_rN | IKE_AUTH message ID, which the engine computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from espd.ike.crypto.prf import Prf

Bytes = bytes | bytearray


class AuthenticationFailed(Exception):
    """The peer's AUTH payload does not verify: answer AUTHENTICATION_FAILED. The message
    names what did not match, never a key."""


@dataclass(frozen=True)
class SignedOctets:
    """What one side's AUTH covers, with the IKE SA's PRF (PSK AUTH is a PRF over it)."""

    prf: Prf
    octets: bytes = field(repr=False)


def signed_octets(prf: Prf, message: Bytes, nonce: Bytes, sk_p: Bytes, id_body: Bytes,
                  int_auth: Bytes = b"") -> SignedOctets:
    """The signed octets of the side whose AUTH it is.

    For the initiator's AUTH: its IKE_SA_INIT request, the responder's nonce (Nr), SK_pi and
    the initiator's ID payload body. For the responder's AUTH: its IKE_SA_INIT response, Ni,
    SK_pr and the responder's ID payload body. Both sides compute both: one to build, one to
    verify. `int_auth` is RFC 9242's IntAuth, empty without IKE_INTERMEDIATE."""
    maced_id = prf(sk_p, id_body)
    return SignedOctets(prf, bytes(message) + bytes(nonce) + bytes(maced_id) + bytes(int_auth))


class Authenticator(Protocol):
    """One way to prove an identity (PSK, RSA/ECDSA/RFC 7427 signatures)."""

    def build(self, octets: SignedOctets) -> tuple[int, bytes]:
        """(AUTH method, authentication data) for our AUTH payload over our octets."""
        ...

    def verify(self, octets: SignedOctets, method: int, data: bytes) -> None:
        """Check the peer's AUTH payload over the peer's octets; raise AuthenticationFailed."""
        ...



def int_auth(prf: Prf, sk_p: Bytes, previous: Bytes, authenticated: Bytes,
             plaintext: Bytes = b"") -> bytes:
    """One step of RFC 9242 3.3.1 for an IKE_INTERMEDIATE message:

        IntAuth_[i|r]N = prf(SK_p[i|r], IntAuth_[i|r](N-1) | IntAuth_[i|r]N_A [| ..._P])

    `previous` is empty for the first exchange; `authenticated` is the message from the IKE
    header to the end of the Encrypted payload's header (A), `plaintext` the inner payloads
    (P); `sk_p` the SK_pi (initiator's messages) or SK_pr in force when the message was
    protected, i.e. before that exchange's key exchange updates the keys."""
    data = bytes(previous) + bytes(authenticated) + bytes(plaintext)
    return bytes(prf(sk_p, data))


def int_auth_trailer(int_auth_i: Bytes, int_auth_r: Bytes, auth_message_id: int) -> bytes:
    """IntAuth = IntAuth_iN | IntAuth_rN | IKE_AUTH_MID, appended to both sides' signed
    octets after IKE_INTERMEDIATE exchanges (RFC 9242 3.3.2)."""
    return bytes(int_auth_i) + bytes(int_auth_r) + auth_message_id.to_bytes(4, "big")
