"""IKE SA authentication (RFC 7296 2.15): one interface, one implementation per method.

    octets = signed_octets(prf, message, nonce, sk_p, id_body)   # whose AUTH it is
    method, data = authenticator.build(octets)                    # our AUTH payload
    authenticator.verify(octets, method, data)                    # the peer's, or raises

``psk`` implements pre-shared keys (AUTH method 2), with a key per direction; ``signature``
implements RFC 7427 digital signatures (AUTH method 14) with a private key and the peer's
public key in place of the shared secrets. Certificates (chains, identities, revocation:
the next issue) only have to hand ``SignatureAuthenticator`` the verified peer key.
"""

from espd.ike.auth.base import (
    AuthenticationFailed,
    Authenticator,
    SignedOctets,
    int_auth,
    int_auth_trailer,
    signed_octets,
)
from espd.ike.auth.psk import PskAuthenticator
from espd.ike.auth.signature import SignatureAuthenticator

__all__ = ["AuthenticationFailed", "Authenticator", "PskAuthenticator", "SignatureAuthenticator",
           "SignedOctets", "int_auth", "int_auth_trailer", "signed_octets"]
