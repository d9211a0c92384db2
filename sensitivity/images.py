"""Robust image reading: any JPEG/PNG a user has becomes an upright 8-bit RGB image, or a clear error.

Handled: EXIF orientation, grayscale, palette, CMYK, RGBA/LA (composited on white), 16-bit and 32-bit
integer images (scaled, not clipped) and very large JPEGs (decoded at reduced size when the caller only
needs a small image). Unreadable, truncated or empty files raise `ImageReadError` naming the file.

One pixel limit counts: `MAX_PIXELS` (or the caller's `max_pixels`). PIL's own decompression-bomb limit
(`PIL.Image.MAX_IMAGE_PIXELS`, about 89 MP, a global) is replaced by it only while a file is read here and
restored afterwards; reads here take turns under a lock for that, and other code that opens an image at
that moment in another thread would see our limit.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

#: Refuse images above this many pixels (a 20000 x 20000 image; 1.2 GB decoded as RGB). PIL's own, lower
#: limit does not apply to images read here.
MAX_PIXELS = 400_000_000

_PIL_LIMIT_LOCK = threading.Lock()


class ImageReadError(OSError):
    """An image file that cannot be used, with the file and the reason in the message."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB without clipping high bit depths or keeping alpha."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        scaled = np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(scaled, mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


@contextmanager
def _pil_limit_set_here() -> Iterator[None]:
    """Hold the lock under which PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) may be changed,
    with PIL's bomb warning made an error; the limit is restored on exit."""
    with _PIL_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        previous = Image.MAX_IMAGE_PIXELS
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def read_image(path: str | Path, max_side: int | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Read an image file as an upright RGB PIL image.

    `max_side`, when given, lets JPEG decoding skip detail the caller will resize away anyway: the
    result is then at least `max_side` pixels on its shorter side where the file has that many (the
    aspect ratio, and so normalised box coordinates, are unchanged). An image of more than `max_pixels`
    pixels is refused from its header, before decoding.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(path, "file is empty (0 bytes)")
        with _pil_limit_set_here():
            Image.MAX_IMAGE_PIXELS = None  # the header's size is checked against max_pixels below
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageReadError(path, f"image is {width}x{height} = {width * height} pixels, above the "
                                               f"limit of {max_pixels} (max_pixels, --max-pixels)")
                Image.MAX_IMAGE_PIXELS = max_pixels  # PIL checks the frames and tiles it decodes against it
                if max_side is not None and image.format == "JPEG":
                    image.draft("RGB", (max_side, max_side))
                image.load()
                image = ImageOps.exif_transpose(image)
                return _to_rgb(image)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise ImageReadError(path, f"cannot decode image ({error})") from error


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image as displayed (after EXIF rotation), reading only the header."""
    path = Path(path)
    try:
        with _pil_limit_set_here():
            Image.MAX_IMAGE_PIXELS = None  # nothing is decoded: PIL's bomb check does not apply
            with Image.open(path) as image:
                width, height = image.size
                orientation = image.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageReadError(path, f"cannot read image header ({error})") from error
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
