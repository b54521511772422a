"""JPEG files decoded by libjpeg-turbo straight from their bytes (simplejpeg), skipping Pillow's
Python-level file parsing: on the 10,000 CIFAR-10 test JPEGs a 32x32 file took about 26 us against
Pillow's 220 us (docs/guide/results.md, "Streaming infer"). Pillow's wheels carry libjpeg-turbo too, with the same
default IDCT and upsampling, so the pixels are the same; a test holds both paths to that on every
CIFAR-10 test JPEG, on grey files and on reduced-scale (draft) decoding.

Anything this path is not sure to decode as Pillow would goes back to Pillow (None): other formats,
CMYK/YCCK JPEGs, colour files for a grey model (Pillow's luma conversion differs from libjpeg's),
files over Pillow's pixel limit (its decompression-bomb rules apply), and files libjpeg complains of.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

try:
    import simplejpeg
except ImportError:  # no wheel for this platform: Pillow decodes everything, as before
    simplejpeg = None

# The model's colour mode -> JPEG colour spaces libjpeg turns into it exactly as Pillow's path does.
_SPACES = {"RGB": ("YCbCr", "RGB", "Gray"), "L": ("Gray",)}
SOI = b"\xff\xd8\xff"  # every JPEG starts so


def available() -> bool:
    return simplejpeg is not None


def draft_scale(width: int, height: int, draft: tuple[int, int] | None) -> int:
    """The reduction Pillow's JpegImageFile.draft picks: the largest of 8, 4, 2, 1 that keeps the
    image at least `draft` in both directions."""
    if draft is None:
        return 1
    fits = min(width // draft[0], height // draft[1])
    return next((s for s in (8, 4, 2) if fits >= s), 1)


def header(data: bytes) -> tuple[int, int, str]:
    """(height, width, colour space) of a JPEG that decode() took."""
    height, width, space, _ = simplejpeg.decode_jpeg_header(data)
    return height, width, space


def decode(
    data: bytes, mode: str, draft: tuple[int, int] | None = None, max_pixels: int | None = None
) -> np.ndarray | None:
    """uint8 H x W (mode "L") or H x W x 3 ("RGB"), or None where Pillow must decode the file (or
    refuse it: files over `max_pixels` are left to Pillow's path, which words the refusal)."""
    if simplejpeg is None or data[:3] != SOI or mode not in _SPACES:
        return None
    try:
        height, width, space, _ = simplejpeg.decode_jpeg_header(data)
        limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels) if max_pixels else Image.MAX_IMAGE_PIXELS
        if space not in _SPACES[mode] or (limit and width * height > limit):
            return None
        scale = draft_scale(width, height, draft)
        sized = (
            {}
            if scale == 1
            else {"min_factor": scale, "min_width": -(-width // scale), "min_height": -(-height // scale)}
        )
        pixels = simplejpeg.decode_jpeg(data, "GRAY" if mode == "L" else "RGB", **sized)
    except ValueError:  # truncated, corrupt, or unsupported: Pillow gives its own verdict
        return None
    return pixels[..., 0] if mode == "L" else pixels
