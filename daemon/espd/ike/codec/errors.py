"""The one exception the codec raises while parsing."""

from __future__ import annotations

from .constants import NotifyType


class ParseError(ValueError):
    """A received message or payload is malformed; nothing else escapes a decode call.

    ``notify`` is the notification RFC 7296 names for this fault (INVALID_SYNTAX by default,
    UNSUPPORTED_CRITICAL_PAYLOAD with the one-octet payload type as ``data``,
    INVALID_MAJOR_VERSION), or None when the message must be dropped without an answer
    (e.g. SK framing that cannot be authenticated). Whether to send it is the engine's
    call: RFC 7296 answers unauthenticated messages sparingly. The text names the field
    and the sizes involved, never payload bytes, so it is safe to log.
    """

    def __init__(
        self,
        reason: str,
        notify: NotifyType | None = NotifyType.INVALID_SYNTAX,
        data: bytes = b"",
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.notify = notify
        self.data = data
