"""What both directions of the wire share: the version, limits, error codes, `ref`."""

from __future__ import annotations

import re
from typing import Any

PROTOCOL_VERSION = 2
ROOM_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# A shared file's id: 128 random bits, URL-safe base64 (22 characters).
FILE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")
MAX_ATTACHMENTS = 10  # files per message
MAX_BODY_CHARS = 4000
# Also a bound in bytes: 4000 characters of CJK text (3 bytes each) fit, 4000 emoji do not.
MAX_BODY_BYTES = 12000
# C0 control characters other than tab and newline: JSON escapes each into six bytes,
# and no client means to send them.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f]")
# What one page of history (`joined`, `history`, the REST route) may weigh: a page is
# cut to fit, with `has_more`, so that no page can pass a reader's slow-reader bound.
PAGE_BYTES = 256 * 1024
DEFAULT_LIMIT = 50
MAX_LIMIT = 100

# Error codes: the complete list, documented in docs/protocol.md.
BAD_REQUEST = "bad_request"
UNKNOWN_TYPE = "unknown_type"
NOT_FOUND = "not_found"
FORBIDDEN = "forbidden"
RATE_LIMITED = "rate_limited"
TOO_LARGE = "too_large"
UNAVAILABLE = "unavailable"

Ref = str | int | None


class ProtocolError(Exception):
    """A frame the server cannot accept; becomes an `error` frame with `code`."""

    def __init__(self, code: str, message: str, ref: Ref = None,
                 retry_after: float | None = None, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref
        self.retry_after = retry_after
        self.details = details  # more about a refusal: {"reason": "muted", "until": ms}
