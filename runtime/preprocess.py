"""Image file -> model input, from the ONNX file's metadata alone (Pillow + numpy, no torch).

The arithmetic is the training pipeline's: uint8 pixels * scale, then (x - mean) / std per channel,
in float32. Decoding and mode conversion are what a user's file needs to look like the training data.
`Preprocessor` is the one path every consumer takes: infer (and its decode workers), serve, Ray and
evaluate, through `Classifier.preprocess`.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile

from edgecls.metadata import ModelInfo

from . import jpeg

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a half-grey image


class ImageError(Exception):
    """A file that is not a readable image; infer reports it and goes on with the others."""


class TooLarge(Exception):
    """A file over the caller's pixel budget (load_image words it as an ImageError)."""


def load_image(
    source: str | BinaryIO,
    max_pixels: int | None = None,
    draft: tuple[int, int] | None = None,
    seen: list | None = None,
) -> Image.Image:
    """Decode a file path or a binary file object. `max_pixels` (the server's budget) refuses, before
    decoding, a file over that many pixels or over Pillow's MAX_IMAGE_PIXELS, where Pillow itself only
    warns up to twice that; None: Pillow's own rules. `draft` (w, h): a JPEG
    at least twice that size decodes at 1/2, 1/4 or 1/8 scale, never below it (libjpeg's DCT scaling:
    a 4000x3000 photo for a 32x32 model decodes as 500x375, several times faster). `seen`: the file's
    own mode and size (before any reduction) are appended to it, for fit_note."""
    try:
        with warnings.catch_warnings():
            if max_pixels is not None:
                warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                if max_pixels is not None and im.width * im.height > max_pixels:
                    raise TooLarge(
                        f"image of {im.width}x{im.height} pixels is over this server's budget of "
                        f"{max_pixels:,} pixels (--max-image-pixels); send it scaled down"
                    )
                if seen is not None:
                    seen.append((im.mode, im.size))
                if draft is not None and im.format in ("JPEG", "MPO"):  # MPO: a phone's JPEG with extras
                    im.draft(im.mode, draft)
                im.load()
                return im.copy() if im.mode != "P" else im.convert("RGBA")
    except TooLarge as exc:
        raise ImageError(str(exc)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image too large, refused as a possible decompression bomb ({str(exc)[:160]})") from None
    except Exception as exc:  # Pillow raises many types for bad files
        kind = "not an image" if "cannot identify" in str(exc) else f"unreadable image ({str(exc)[:120]})"
        raise ImageError(kind) from None


GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")


def _colourful(im: Image.Image) -> bool:
    """Does the image hold colour (not only its mode: a grey picture saved as RGB is grey)?"""
    thumb = np.asarray(im.convert("RGB").resize((16, 16)), dtype=np.int16)
    return bool((thumb.max(axis=2) - thumb.min(axis=2) > 24).mean() > 0.02)


def fit_note(colourful: bool, size: tuple[int, int], info: ModelInfo) -> str | None:
    """Why an image does not fit the model, or None: colour into a grey model, grey into a colour one,
    or a size far from the input (under half of it, or another shape by more than 2x; larger images
    are only downscaled, as a photo for a 32x32 model is)."""
    c, h, w = info.input_shape
    grey_model = info.color_mode == "L"
    if colourful and grey_model:
        return f"a colour image, but {info.model} takes grey {w}x{h} images"
    if not colourful and not grey_model:
        return f"a grey image, but {info.model} takes colour {w}x{h} images"
    width, height = size
    if width < w / 2 or height < h / 2:
        return f"{width}x{height} pixels, under half of {info.model}'s {w}x{h} input"
    if max(width / height, height / width) > 2 * max(w / h, h / w):
        return f"{width}x{height} pixels, far from the shape of {info.model}'s {w}x{h} input"
    return None


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit and 32-bit grey modes -> 8-bit 'L' by scaling (Pillow's own conversion clips instead)."""
    arr = np.asarray(im).astype(np.float64)
    if im.mode.startswith("I;16"):
        arr = arr / 257.0
    elif im.mode == "F" and arr.max(initial=0) <= 1.0:
        arr = arr * 255.0
    elif im.mode == "I" and arr.max(initial=0) > 255:
        arr = arr / 257.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def convert_mode(im: Image.Image, mode: str) -> Image.Image:
    """Any Pillow mode -> "L" or "RGB". Transparency is composited onto black: the background of
    MNIST-style data (and a neutral choice for photos)."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        im = _to_8bit(im)
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = im.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        im = Image.alpha_composite(black, rgba)
    return im if im.mode == mode else im.convert(mode)


def image_to_uint8(im: Image.Image | np.ndarray, info: ModelInfo) -> np.ndarray:
    """Decoded image (or uint8 pixels already in the model's mode) -> uint8 [C, H, W] in the model's
    color mode and size."""
    c, h, w = info.input_shape
    if isinstance(im, np.ndarray) and im.shape[:2] == (h, w) and im.ndim == (2 if c == 1 else 3):
        arr = im
    else:
        im = convert_mode(Image.fromarray(im) if isinstance(im, np.ndarray) else im, info.color_mode)
        if im.size != (w, h):
            im = im.resize((w, h), Image.BILINEAR)  # Pillow's resize filters antialias when shrinking
        arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def file_to_uint8(
    source: str | Path | BinaryIO,
    info: ModelInfo,
    draft: tuple[int, int] | None = None,
    max_pixels: int | None = None,
    fast_jpeg: bool = True,
    fit: list | None = None,
) -> np.ndarray:
    """An image file -> uint8 [C, H, W]: JPEGs through libjpeg-turbo directly where that gives
    Pillow's pixels (jpeg.py), everything else through load_image. Raises ImageError. `fit`: gets the
    file's fit_note (None where it fits) appended."""
    if fast_jpeg and jpeg.available():
        try:
            if hasattr(source, "read"):
                data = source.read()
            else:
                with open(source, "rb") as fh:  # only a JPEG is read whole here: a folder may hold videos
                    data = fh.read(len(jpeg.SOI))
                    data += fh.read() if data == jpeg.SOI else b""
        except OSError:  # unreadable: load_image words the error as for any other file
            pass
        else:
            pixels = jpeg.decode(data, info.color_mode, draft, max_pixels)
            if pixels is not None:
                if fit is not None:  # this path takes colour files only for a colour model (jpeg.py)
                    height, width, space = jpeg.header(data)
                    fit.append(fit_note(space != "Gray", (width, height), info))
                return image_to_uint8(pixels, info)
            if hasattr(source, "read"):
                source = io.BytesIO(data)  # Pillow decodes the bytes already read
    seen: list = []
    image = load_image(str(source) if isinstance(source, Path) else source, max_pixels, draft, seen)
    if fit is not None:
        mode, size = seen[0]
        # the pixels are looked at only for a colour-mode file meant for a grey model (grey saved as RGB is fine)
        colourful = mode not in GREY_MODES and (info.color_mode == "RGB" or _colourful(image))
        fit.append(fit_note(colourful, size, info))
    return image_to_uint8(image, info)


def normalize(batch: np.ndarray, info: ModelInfo) -> np.ndarray:
    """uint8 [N, C, H, W] -> float32 model input, the same arithmetic as edgecls.data.normalize."""
    mean = np.asarray(info.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(info.std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((batch.astype(np.float32) * np.float32(info.scale) - mean) / std).astype(np.float32)


@dataclass(frozen=True)
class Preprocessor:
    """A model's preprocessing, bound to its metadata. Picklable: decode worker processes run it.

    `draft` (w, h): JPEG files at least twice that size decode at a reduced scale (load_image); None
    decodes at full size. `fast_jpeg`: JPEG files decode through libjpeg-turbo directly, to the same
    pixels as Pillow (jpeg.py); False decodes every file with Pillow (the earlier path, for comparisons)."""

    info: ModelInfo
    draft: tuple[int, int] | None = None
    fast_jpeg: bool = True

    @classmethod
    def for_model(cls, info: ModelInfo, draft: bool = True, fast_jpeg: bool = True) -> Preprocessor:
        c, h, w = info.input_shape
        return cls(
            info, (2 * w, 2 * h) if draft else None, fast_jpeg
        )  # never below twice the input: resize antialiases

    def to_uint8(self, image, max_pixels: int | None = None) -> np.ndarray:
        """A path, a binary file object, a Pillow image, or a uint8 array (H×W, H×W×C or C×H×W)
        -> uint8 [C, H, W]. Files are decoded with file_to_uint8 (`max_pixels`: the server's budget)."""
        if isinstance(image, (str, Path)) or hasattr(image, "read"):
            return file_to_uint8(image, self.info, self.draft, max_pixels, self.fast_jpeg)
        if isinstance(image, np.ndarray):
            if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
                image = image.transpose(1, 2, 0)
            image = Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image)
        return image_to_uint8(image, self.info)

    def decode(self, sources: list, max_pixels: int | None = None, with_fit: bool = False) -> list:
        """Per file (a path, or the bytes of an upload): uint8 [C, H, W], or the reason (str) it is not a
        usable image. `with_fit`: per file (that, fit_note or None) instead."""
        out = []
        for source in sources:
            fit: list = []
            try:
                file = io.BytesIO(source) if isinstance(source, bytes) else source
                out.append(file_to_uint8(file, self.info, self.draft, max_pixels, self.fast_jpeg, fit))
            except ImageError as exc:
                out.append(str(exc))
            if with_fit:
                out[-1] = (out[-1], fit[0] if fit else None)
        return out

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """uint8 [N, C, H, W] -> the model's float32 input."""
        return normalize(batch, self.info)
