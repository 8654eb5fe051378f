"""Image decoding and encoding for models. Runs in worker processes only.

Formats are recognised by their first bytes, never by a file name; anything else is
refused with a message that names what is allowed.
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image, ImageOps

from watchkeeper.errors import PayloadTooLarge
from watchkeeper.protocol.blob import Blob

__all__ = ["np", "ALLOWED_FORMATS", "MAX_PIXELS", "sniff_format", "decode", "png"]

ALLOWED_FORMATS = ("PNG", "JPEG", "WebP")
#: Largest image decoded (width x height); above it the request gets 413.
MAX_PIXELS = 40_000_000


def sniff_format(data: bytes) -> str | None:
    """The image format named by the first bytes of ``data``, or None when not allowed."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def decode(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode PNG/JPEG/WebP bytes to an RGB uint8 array (EXIF orientation applied).

    Raises ValueError (a 422 naming the field) for unknown or broken data and
    PayloadTooLarge (413) for images over ``max_pixels``.
    """
    if sniff_format(data) is None:
        raise ValueError(f"not a supported image (allowed: {', '.join(ALLOWED_FORMATS)})")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                raise PayloadTooLarge(
                    f"image is {img.width}x{img.height} pixels; the limit is {max_pixels:,}",
                    suggestion="Downscale the image before sending it.",
                )
            upright = ImageOps.exif_transpose(img)
            return np.array(upright.convert("RGB"))  # a writable copy (asarray's is read-only)
    except PayloadTooLarge:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own limit, above ours: also a 413
        raise PayloadTooLarge(
            str(exc), suggestion="Downscale the image before sending it."
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = re.sub(r" ?<[^>]* at 0x[0-9a-f]+>", "", str(exc))  # no object reprs
        raise ValueError(f"the image could not be decoded: {reason}") from None


def png(array: np.ndarray, compress_level: int = 1) -> Blob:
    """Encode an RGB/RGBA/grey uint8 array as PNG (fast compression by default)."""
    if array.dtype != np.uint8:
        raise TypeError(f"png() takes uint8 arrays, got {array.dtype}")
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=compress_level)
    return Blob(buf.getvalue(), "image/png")
