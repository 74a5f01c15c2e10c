"""A file's media type, decided from its content, never from its name or the
Content-Type the uploader claimed.

A dozen signatures cover what a chat shares; anything else that is valid UTF-8 without
NUL bytes is `text/plain`, the rest `application/octet-stream`. A table of magic numbers
this short reads better than a dependency (and `filetype` would still leave text to
us). The type only ever decides how a download is labelled: whatever it says, the
bytes are served with `nosniff`, a sandboxing CSP, and as an attachment unless they are
one of the SAFE_IMAGES.
"""

from __future__ import annotations

import codecs

OCTETS = "application/octet-stream"
TEXT = "text/plain; charset=utf-8"
# Shown inline (and given thumbnails); never SVG, which is a document with scripts.
SAFE_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
HEAD = 64  # bytes of the start that the signatures need


def _signature(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "application/zip"
    if head.startswith(b"\x1f\x8b"):
        return "application/gzip"
    if head[4:8] == b"ftyp":
        return "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: WebM, or Matroska in general
        return "video/webm" if b"webm" in head else OCTETS
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF
                                   and head[1] & 0xE0 == 0xE0 and head[1] & 0x06):
        return "audio/mpeg"  # an ID3 tag, or an MPEG audio frame header (layer set)
    return None


class Sniffer:
    """Fed a file's bytes in order, as they arrive; then says what they are."""

    def __init__(self) -> None:
        self._head = b""
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._text = True

    def feed(self, data: bytes) -> None:
        if len(self._head) < HEAD:
            self._head += data[:HEAD - len(self._head)]
        if self._text:
            if b"\x00" in data:
                self._text = False
                return
            try:
                self._utf8.decode(data)
            except UnicodeDecodeError:
                self._text = False

    def result(self) -> str:
        found = _signature(self._head)
        if found is not None:
            return found
        if self._text:
            try:
                self._utf8.decode(b"", final=True)  # a sequence cut off at the end
            except UnicodeDecodeError:
                return OCTETS
            return TEXT
        return OCTETS


def sniff(data: bytes) -> str:
    """The type of a whole (small) file."""
    sniffer = Sniffer()
    sniffer.feed(data)
    return sniffer.result()
