"""IANA "Internet Key Exchange Version 2 (IKEv2) Parameters" registries used by espd.

Values are the registry's; names follow the registry with the "ENCR_"/"PRF_"/... prefixes
dropped where the enum name says it. A value a peer sends that is missing here stays a
plain int in decoded payloads (see ``known``), so unknown transforms, notifies and
exchanges survive decoding and re-encoding unchanged.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import TypeVar

IKE_VERSION = 0x20  # major 2, minor 0 (RFC 7296 3.1)
IKE_MAJOR_VERSION = 2


E = TypeVar("E", bound=IntEnum)


_MEMBERS: dict[type[IntEnum], dict[int, IntEnum]] = {}


def known(enum: type[E], value: int) -> E | int:
    """``value`` as a member of ``enum`` when the registry subset here names it, else the
    int unchanged (a dict lookup: decoding calls this for every typed field)."""
    members = _MEMBERS.get(enum)
    if members is None:
        members = _MEMBERS[enum] = {member.value: member for member in enum}
    return members.get(value, value)  # type: ignore[return-value]


class ExchangeType(IntEnum):
    IKE_SA_INIT = 34
    IKE_AUTH = 35
    CREATE_CHILD_SA = 36
    INFORMATIONAL = 37
    IKE_SESSION_RESUME = 38  # RFC 5723
    GSA_AUTH = 39  # RFC 9838 (G-IKEv2)
    GSA_REGISTRATION = 40
    GSA_REKEY = 41
    GSA_INBAND_REKEY = 42
    IKE_INTERMEDIATE = 43  # RFC 9242
    IKE_FOLLOWUP_KE = 44  # RFC 9370


class HeaderFlags(IntFlag):
    """IKE header flags (RFC 7296 3.1); the other bits are reserved and kept as received."""

    INITIATOR = 0x08  # sent by the original initiator of the IKE SA
    VERSION = 0x10  # the sender could speak a higher major version
    RESPONSE = 0x20  # this message answers a request with the same message ID


class PayloadType(IntEnum):
    NONE = 0  # "No Next Payload"
    SA = 33
    KE = 34
    IDi = 35
    IDr = 36
    CERT = 37
    CERTREQ = 38
    AUTH = 39
    NONCE = 40
    NOTIFY = 41
    DELETE = 42
    VENDOR_ID = 43
    TSi = 44
    TSr = 45
    SK = 46  # Encrypted and Authenticated
    CP = 47  # Configuration
    EAP = 48
    GSPM = 49  # RFC 6467
    IDg = 50  # G-IKEv2
    GSA = 51
    KD = 52
    SKF = 53  # Encrypted and Authenticated Fragment (RFC 7383)
    PS = 54  # Puzzle Solution (RFC 8019)


class NotifyType(IntEnum):
    """Notify Message Types: errors below 16384 (8192-16383 private), status above."""

    # Errors
    UNSUPPORTED_CRITICAL_PAYLOAD = 1
    INVALID_IKE_SPI = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_SYNTAX = 7
    INVALID_MESSAGE_ID = 9
    INVALID_SPI = 11
    NO_PROPOSAL_CHOSEN = 14
    INVALID_KE_PAYLOAD = 17
    AUTHENTICATION_FAILED = 24
    SINGLE_PAIR_REQUIRED = 34
    NO_ADDITIONAL_SAS = 35
    INTERNAL_ADDRESS_FAILURE = 36
    FAILED_CP_REQUIRED = 37
    TS_UNACCEPTABLE = 38
    INVALID_SELECTORS = 39
    UNACCEPTABLE_ADDRESSES = 40
    UNEXPECTED_NAT_DETECTED = 41
    USE_ASSIGNED_HoA = 42
    TEMPORARY_FAILURE = 43
    CHILD_SA_NOT_FOUND = 44
    INVALID_GROUP_ID = 45
    AUTHORIZATION_FAILED = 46
    STATE_NOT_FOUND = 47  # RFC 9370
    TS_MAX_QUEUE = 48
    # Status
    INITIAL_CONTACT = 16384
    SET_WINDOW_SIZE = 16385
    ADDITIONAL_TS_POSSIBLE = 16386
    IPCOMP_SUPPORTED = 16387
    NAT_DETECTION_SOURCE_IP = 16388
    NAT_DETECTION_DESTINATION_IP = 16389
    COOKIE = 16390
    USE_TRANSPORT_MODE = 16391
    HTTP_CERT_LOOKUP_SUPPORTED = 16392
    REKEY_SA = 16393
    ESP_TFC_PADDING_NOT_SUPPORTED = 16394
    NON_FIRST_FRAGMENTS_ALSO = 16395
    MOBIKE_SUPPORTED = 16396
    ADDITIONAL_IP4_ADDRESS = 16397
    ADDITIONAL_IP6_ADDRESS = 16398
    NO_ADDITIONAL_ADDRESSES = 16399
    UPDATE_SA_ADDRESSES = 16400
    COOKIE2 = 16401
    NO_NATS_ALLOWED = 16402
    AUTH_LIFETIME = 16403
    MULTIPLE_AUTH_SUPPORTED = 16404
    ANOTHER_AUTH_FOLLOWS = 16405
    REDIRECT_SUPPORTED = 16406
    REDIRECT = 16407
    REDIRECTED_FROM = 16408
    TICKET_LT_OPAQUE = 16409
    TICKET_REQUEST = 16410
    TICKET_ACK = 16411
    TICKET_NACK = 16412
    TICKET_OPAQUE = 16413
    LINK_ID = 16414
    USE_WESP_MODE = 16415
    ROHC_SUPPORTED = 16416
    EAP_ONLY_AUTHENTICATION = 16417
    CHILDLESS_IKEV2_SUPPORTED = 16418
    QUICK_CRASH_DETECTION = 16419
    IKEV2_MESSAGE_ID_SYNC_SUPPORTED = 16420
    IPSEC_REPLAY_COUNTER_SYNC_SUPPORTED = 16421
    IKEV2_MESSAGE_ID_SYNC = 16422
    IPSEC_REPLAY_COUNTER_SYNC = 16423
    SECURE_PASSWORD_METHODS = 16424
    PSK_PERSIST = 16425
    PSK_CONFIRM = 16426
    ERX_SUPPORTED = 16427
    IFOM_CAPABILITY = 16428
    SENDER_REQUEST_ID = 16429
    IKEV2_FRAGMENTATION_SUPPORTED = 16430  # RFC 7383
    SIGNATURE_HASH_ALGORITHMS = 16431  # RFC 7427
    CLONE_IKE_SA_SUPPORTED = 16432
    CLONE_IKE_SA = 16433
    PUZZLE = 16434
    USE_PPK = 16435  # RFC 8784
    PPK_IDENTITY = 16436
    NO_PPK_AUTH = 16437
    INTERMEDIATE_EXCHANGE_SUPPORTED = 16438  # RFC 9242
    IP4_ALLOWED = 16439
    IP6_ALLOWED = 16440
    ADDITIONAL_KEY_EXCHANGE = 16441  # RFC 9370
    USE_AGGFRAG = 16442

    @property
    def is_error(self) -> bool:
        return is_error_notify(self)


def is_error_notify(notify_type: int) -> bool:
    """True for error types (RFC 7296 3.10.1: 0-16383), known or not: an unknown error in
    a response means the request failed, an unknown status is ignored."""
    return notify_type < 16384


class TransformType(IntEnum):
    ENCR = 1
    PRF = 2
    INTEG = 3
    KE = 4  # "Diffie-Hellman Group" before RFC 9370
    ESN = 5  # "Sequence Numbers" in RFC 9370
    ADDITIONAL_KEY_EXCHANGE_1 = 6  # RFC 9370
    ADDITIONAL_KEY_EXCHANGE_2 = 7
    ADDITIONAL_KEY_EXCHANGE_3 = 8
    ADDITIONAL_KEY_EXCHANGE_4 = 9
    ADDITIONAL_KEY_EXCHANGE_5 = 10
    ADDITIONAL_KEY_EXCHANGE_6 = 11
    ADDITIONAL_KEY_EXCHANGE_7 = 12


class EncrId(IntEnum):
    DES_IV64 = 1
    DES = 2
    TRIPLE_DES = 3
    RC5 = 4
    IDEA = 5
    CAST = 6
    BLOWFISH = 7
    TRIPLE_IDEA = 8
    DES_IV32 = 9
    NULL = 11
    AES_CBC = 12
    AES_CTR = 13
    AES_CCM_8 = 14
    AES_CCM_12 = 15
    AES_CCM_16 = 16
    AES_GCM_8 = 18
    AES_GCM_12 = 19
    AES_GCM_16 = 20
    NULL_AUTH_AES_GMAC = 21
    CAMELLIA_CBC = 23
    CAMELLIA_CTR = 24
    CAMELLIA_CCM_8 = 25
    CAMELLIA_CCM_12 = 26
    CAMELLIA_CCM_16 = 27
    CHACHA20_POLY1305 = 28
    AES_CCM_8_IIV = 29
    AES_GCM_16_IIV = 30
    CHACHA20_POLY1305_IIV = 31


class PrfId(IntEnum):
    HMAC_MD5 = 1
    HMAC_SHA1 = 2
    HMAC_TIGER = 3
    AES128_XCBC = 4
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7
    AES128_CMAC = 8


class IntegId(IntEnum):
    NONE = 0
    HMAC_MD5_96 = 1
    HMAC_SHA1_96 = 2
    DES_MAC = 3
    KPDK_MD5 = 4
    AES_XCBC_96 = 5
    HMAC_MD5_128 = 6
    HMAC_SHA1_160 = 7
    AES_CMAC_96 = 8
    AES_128_GMAC = 9
    AES_192_GMAC = 10
    AES_256_GMAC = 11
    HMAC_SHA2_256_128 = 12
    HMAC_SHA2_384_192 = 13
    HMAC_SHA2_512_256 = 14


class KeGroup(IntEnum):
    """Key Exchange Method transform ids (transform types 4 and 6-12)."""

    NONE = 0
    MODP_768 = 1
    MODP_1024 = 2
    MODP_1536 = 5
    MODP_2048 = 14
    MODP_3072 = 15
    MODP_4096 = 16
    MODP_6144 = 17
    MODP_8192 = 18
    ECP_256 = 19
    ECP_384 = 20
    ECP_521 = 21
    MODP_1024_160 = 22
    MODP_2048_224 = 23
    MODP_2048_256 = 24
    ECP_192 = 25
    ECP_224 = 26
    BRAINPOOL_P224R1 = 27
    BRAINPOOL_P256R1 = 28
    BRAINPOOL_P384R1 = 29
    BRAINPOOL_P512R1 = 30
    CURVE25519 = 31
    CURVE448 = 32
    ML_KEM_512 = 35
    ML_KEM_768 = 36
    ML_KEM_1024 = 37


class EsnId(IntEnum):
    NO_ESN = 0
    ESN = 1


TRANSFORM_IDS: dict[int, type[IntEnum]] = {
    TransformType.ENCR: EncrId,
    TransformType.PRF: PrfId,
    TransformType.INTEG: IntegId,
    TransformType.KE: KeGroup,
    TransformType.ESN: EsnId,
    **{t: KeGroup for t in range(TransformType.ADDITIONAL_KEY_EXCHANGE_1, 13)},
}


class TransformAttr(IntEnum):
    KEY_LENGTH = 14  # TV format, bits


class ProtocolId(IntEnum):
    """Security Protocol Identifiers (SA proposals, Notify, Delete)."""

    NONE = 0  # Notify/Delete about the IKE SA without an SPI
    IKE = 1
    AH = 2
    ESP = 3


class IdType(IntEnum):
    IPV4_ADDR = 1
    FQDN = 2
    RFC822_ADDR = 3
    IPV6_ADDR = 5
    DER_ASN1_DN = 9
    DER_ASN1_GN = 10
    KEY_ID = 11
    FC_NAME = 12
    NULL = 13  # RFC 7619


class AuthMethod(IntEnum):
    RSA_SIG = 1
    SHARED_KEY_MIC = 2
    DSS_SIG = 3
    ECDSA_SHA256_P256 = 9
    ECDSA_SHA384_P384 = 10
    ECDSA_SHA512_P521 = 11
    GENERIC_SECURE_PASSWORD = 12
    NULL = 13  # RFC 7619
    DIGITAL_SIGNATURE = 14  # RFC 7427


class HashAlgorithm(IntEnum):
    """RFC 7427 hash algorithm identifiers (SIGNATURE_HASH_ALGORITHMS notify data)."""

    SHA1 = 1
    SHA2_256 = 2
    SHA2_384 = 3
    SHA2_512 = 4
    IDENTITY = 5  # RFC 8420 (Ed25519)


class TsType(IntEnum):
    IPV4_ADDR_RANGE = 7
    IPV6_ADDR_RANGE = 8
    FC_ADDR_RANGE = 9
    SECLABEL = 10  # RFC 9478


class CertEncoding(IntEnum):
    PKCS7_X509 = 1
    PGP = 2
    DNS_SIGNED_KEY = 3
    X509_SIGNATURE = 4
    KERBEROS_TOKEN = 6
    CRL = 7
    ARL = 8
    SPKI = 9
    X509_ATTRIBUTE = 10
    RAW_RSA_KEY = 11
    HASH_URL_X509 = 12
    HASH_URL_X509_BUNDLE = 13
    OCSP_CONTENT = 14
    RAW_PUBLIC_KEY = 15
