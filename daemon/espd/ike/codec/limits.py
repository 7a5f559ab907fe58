"""Implementation limits of the codec (the specification's own limits live with the field
they bound). Every count a peer controls is bounded here, so the work and memory one
message can cost is bounded too."""

MAX_MESSAGE_SIZE = 65535  # bytes of one IKE message (UDP payload, without the non-ESP marker)
MAX_PAYLOADS = 64  # payloads in one chain (the outer one, or the one inside SK)
MAX_ELEMENTS = 512  # payloads + proposals + transforms + selectors decoded from one chain
MAX_PROPOSALS = 64  # proposals in one SA payload
MAX_TRANSFORMS = 128  # transforms in one proposal (charon's default offer is about 40)
MAX_SA_TRANSFORMS = 256  # transforms in all proposals of one SA payload (decoding cost)
MAX_ATTRIBUTES = 8  # attributes in one transform (RFC 7296 defines one: Key Length)
MAX_SELECTORS = 64  # traffic selectors in one TS payload
MAX_DELETE_SPIS = 1024  # SPIs in one Delete payload
MAX_FRAGMENTS = 64  # RFC 7383 fragments of one message
MAX_REASSEMBLY_SIZE = 65535  # decrypted bytes held for one fragmented message
