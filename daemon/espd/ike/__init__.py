"""IKEv2 (RFC 7296) for espd: codec (wire format), crypto, auth, SA state and exchanges.

Each concern is a subpackage; import from them directly (``espd.ike.codec``,
``espd.ike.crypto``). This module stays empty on purpose so that importing one part does
not pull in the others.
"""
