"""Previews of shared images, made with Pillow, guarded against decompression bombs.

`make_thumbnail` is plain CPU work on bytes: Previews runs it in an executor, never on the
event loop. An image's dimensions are read from its header before any pixel is
decoded, and one that claims more than MAX_PIXELS is refused: a 50 000 x 50 000 PNG of
a few kilobytes would otherwise need gigabytes. Pillow's own bomb check (which raises
above twice `Image.MAX_IMAGE_PIXELS`) stays on as a second line, and its
DecompressionBombError counts as a refusal like ours.
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps

THUMB_PX = 320  # the longest side of a preview
MAX_PIXELS = 40_000_000  # 40 megapixels: any camera's photo, not a bomb


class ThumbnailError(Exception):
    """No preview can be made; `code` says why (`image_too_large`, `bad_image`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def make_thumbnail(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[bytes, str]:
    """A preview of an image (its first frame), at most THUMB_PX on its longest side:
    JPEG for opaque images, PNG for ones with transparency. Returns (bytes, type)."""
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            width, height = img.size
            if width <= 0 or height <= 0 or width * height > max_pixels:
                raise ThumbnailError("image_too_large",
                                     f"the image is {width} x {height} pixels; previews are "
                                     f"made of images up to {max_pixels} pixels")
            img.draft("RGB", (THUMB_PX, THUMB_PX))  # JPEG: decode at a reduced scale
            img.load()
            preview = ImageOps.exif_transpose(img)
            preview.thumbnail((THUMB_PX, THUMB_PX))
            alpha = preview.mode in ("RGBA", "LA", "PA") or (
                preview.mode == "P" and "transparency" in preview.info)
            out = io.BytesIO()
            if alpha:
                preview.convert("RGBA").save(out, "PNG", optimize=True)
                return out.getvalue(), "image/png"
            preview.convert("RGB").save(out, "JPEG", quality=82)
            return out.getvalue(), "image/jpeg"
    except ThumbnailError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ThumbnailError("image_too_large", "the image is too large to preview") from None
    except Exception:
        # Truncated or corrupt data. Pillow's decoders mostly say so with OSError,
        # ValueError, SyntaxError or EOFError, but its parsers of untrusted bytes raise
        # others too (an empty iCCP chunk after the image data: IndexError), and any
        # failure here is one of this image, to be remembered, never a server error.
        raise ThumbnailError("bad_image", "the image cannot be decoded") from None
