"""IKEv2 wire format (RFC 7296, RFC 7383 fragments, RFC 9242/9370 exchanges).

Everything the engine needs is importable from here:

    msg = decode_message(udp_payload)               # ParseError is the only exception
    msg = decrypt_message(udp_payload, cipher)      # SK: + the cipher's IntegrityError
    wire = encode_message(Message(header, (sa, ke, nonce, *notifies)))
    wire = encrypt_message(header, (idi, auth, sa, tsi, tsr), cipher)

Payloads are frozen dataclasses; ``encode_body``/``decode_body`` are symmetric. The codec
never imports ``cryptography``: SK sealing goes through the cipher object of TEAM.md
(``SkCipher``).
"""

from .auth import Authentication
from .cert import Certificate, CertificateRequest
from .chain import decode_chain, encode_chain
from .constants import (
    AuthMethod,
    CertEncoding,
    EncrId,
    EsnId,
    ExchangeType,
    HashAlgorithm,
    HeaderFlags,
    IdType,
    IntegId,
    KeGroup,
    NotifyType,
    PayloadType,
    PrfId,
    ProtocolId,
    TransformAttr,
    TransformType,
    TsType,
    is_error_notify,
)
from .delete import Delete
from .encrypted import Encrypted, EncryptedFragment, SkCipher
from .errors import ParseError
from .fragments import (
    Fragment,
    Reassembly,
    decrypt_fragment,
    encrypt_fragments,
    reassemble,
)
from .header import Header, SpiPair, request_header
from .ident import IdInitiator, IdResponder
from .ke import KeyExchange
from .message import (
    Message,
    decode_message,
    decrypt_message,
    encode_message,
    encrypt_message,
    intermediate_auth_data,
)
from .nonce import Nonce
from .notify import (
    Notify,
    invalid_ke_payload,
    requested_group,
    signature_hash_algorithms,
    u16_list,
)
from .payload import Payload, UnknownPayload
from .sa import Attribute, Proposal, SecurityAssociation, Transform
from .ts import OpaqueSelector, TrafficSelector, TsInitiator, TsResponder
from .vendor import VendorId

__all__ = [
    "Attribute",
    "AuthMethod",
    "Authentication",
    "CertEncoding",
    "Certificate",
    "CertificateRequest",
    "Delete",
    "EncrId",
    "Encrypted",
    "EncryptedFragment",
    "EsnId",
    "ExchangeType",
    "Fragment",
    "HashAlgorithm",
    "Header",
    "HeaderFlags",
    "IdInitiator",
    "IdResponder",
    "IdType",
    "IntegId",
    "KeGroup",
    "KeyExchange",
    "Message",
    "Nonce",
    "Notify",
    "NotifyType",
    "OpaqueSelector",
    "ParseError",
    "Payload",
    "PayloadType",
    "PrfId",
    "Reassembly",
    "Proposal",
    "ProtocolId",
    "SecurityAssociation",
    "SkCipher",
    "SpiPair",
    "TrafficSelector",
    "Transform",
    "TransformAttr",
    "TransformType",
    "TsInitiator",
    "TsResponder",
    "TsType",
    "UnknownPayload",
    "VendorId",
    "decode_chain",
    "decode_message",
    "decrypt_fragment",
    "decrypt_message",
    "encode_chain",
    "encode_message",
    "encrypt_fragments",
    "encrypt_message",
    "intermediate_auth_data",
    "invalid_ke_payload",
    "is_error_notify",
    "reassemble",
    "request_header",
    "requested_group",
    "signature_hash_algorithms",
    "u16_list",
]
