"""IKEv2 cryptography: key exchange groups, PRFs, SK ciphers, key derivation, suites.

One module per concern, in the order an IKE SA meets them:

- ``dh``      key exchange methods (groups 31, 19/20/21, 14/15; ML-KEM as an additional KE)
- ``prf``     PRF_HMAC_SHA2_* and prf+
- ``keymat``  SKEYSEED, SK_*, Child SA KEYMAT (RFC 7296 2.13-2.18, RFC 9370)
- ``cipher``  SK payload ciphers (the codec's ``seal``/``open`` contract), ``IntegrityError``
- ``suites``  negotiated transform ids and config names -> the above; RFC 8247 refusals
- ``secret``  wipeable key bytes that never print themselves

The codec never imports this package; the engine passes it an SK cipher object.
"""

from espd.ike.crypto.cipher import IntegrityError, SkCipher
from espd.ike.crypto.secret import Secret

__all__ = ["IntegrityError", "Secret", "SkCipher"]
