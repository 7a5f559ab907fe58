"""IKE SA authentication (RFC 7296 2.15): one interface, one implementation per method.

    octets = signed_octets(prf, message, nonce, sk_p, id_body)   # whose AUTH it is
    method, data = authenticator.build(octets)                    # our AUTH payload
    authenticator.verify(octets, method, data)                    # the peer's, or raises

``psk`` implements pre-shared keys (AUTH method 2), with a key per direction; certificate
authenticators (RFC 7427 digital signatures, the next issue) implement the same two calls
with a private key and the peer's certificate in place of the shared secrets.
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

__all__ = ["AuthenticationFailed", "Authenticator", "PskAuthenticator", "SignedOctets",
           "int_auth", "int_auth_trailer", "signed_octets"]
