"""The libjpeg-turbo path (runtime/jpeg.py) must give Pillow's pixels, or hand the file to Pillow."""

import io

import numpy as np
import pytest
from PIL import Image

from edgecls.locations import shipped_onnx
from edgecls.runtime import Classifier, jpeg
from edgecls.runtime.preprocess import ImageError, file_to_uint8

pytestmark = pytest.mark.skipif(not jpeg.available(), reason="simplejpeg has no wheel for this platform")


@pytest.fixture(scope="module")
def infos():
    return {name: Classifier(shipped_onnx(name), "cpu", split=False).info for name in ("cnn", "gru")}


def both_paths(source, info, draft=None):
    """(fast path, Pillow path) of one file; bytes are read afresh for each."""
    if isinstance(source, bytes):
        return (
            file_to_uint8(io.BytesIO(source), info, draft),
            file_to_uint8(io.BytesIO(source), info, draft, fast_jpeg=False),
        )
    return file_to_uint8(source, info, draft), file_to_uint8(source, info, draft, fast_jpeg=False)


def jpeg_bytes(image: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", **save)
    return buf.getvalue()


def test_every_cifar10_test_jpeg_decodes_to_pillows_pixels(data_root, infos):
    from edgecls.data import load_split

    test = load_split("cifar10", "test")
    if test.files is None:
        pytest.skip("CIFAR-10 came as torchvision's pickles here: no JPEG files to compare")
    fast_used = different = 0
    for path in test.files:
        data = open(path, "rb").read()
        fast_used += jpeg.decode(data, "RGB") is not None
        fast, pillow = both_paths(path, infos["cnn"])
        different += not np.array_equal(fast, pillow)
    assert fast_used == len(test.files) == 10000, "the fast path must take every plain JPEG"
    assert different == 0


def test_grey_colour_progressive_and_draft_files(infos):
    rng = np.random.default_rng(0)
    colour = Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)).resize((400, 300), Image.BICUBIC)
    grey = colour.convert("L")
    cases = {
        "grey file, grey model": (jpeg_bytes(grey), "gru", True),
        "grey file, colour model": (jpeg_bytes(grey), "cnn", True),
        "colour file, colour model": (jpeg_bytes(colour, quality=85), "cnn", True),
        "colour file, 4:4:4": (jpeg_bytes(colour, subsampling=0), "cnn", True),
        "progressive": (jpeg_bytes(colour, progressive=True), "cnn", True),
        # Pillow's luma weights are not libjpeg's Y channel: Pillow must convert
        "colour file, grey model": (jpeg_bytes(colour), "gru", False),
        "CMYK": (jpeg_bytes(colour.convert("CMYK")), "cnn", False),
    }
    for case, (data, model, fast) in cases.items():
        info = infos[model]
        assert (jpeg.decode(data, info.color_mode) is not None) == fast, case
        for draft in (None, (2 * info.input_shape[2], 2 * info.input_shape[1])):
            a, b = both_paths(data, info, draft)
            assert a.shape == b.shape == info.input_shape and np.array_equal(a, b), (case, draft)


@pytest.mark.parametrize("size", [(4000, 3000), (3000, 4000), (257, 129), (64, 64), (70, 700)])
def test_reduced_scale_decoding_picks_pillows_scale(size):
    data = jpeg_bytes(Image.new("RGB", size, (90, 140, 30)))
    for draft in ((64, 64), (56, 56), (8, 8)):
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", draft)
            im.load()
            expected = im.size
        got = jpeg.decode(data, "RGB", draft)
        assert (got.shape[1], got.shape[0]) == expected, (size, draft)


def test_bad_files_get_pillows_verdict(tmp_path, infos):
    info = infos["cnn"]
    good = jpeg_bytes(Image.new("RGB", (64, 64), (1, 2, 3)))
    for name, data in {
        "truncated": good[: len(good) // 2],
        "garbage after SOI": b"\xff\xd8\xff" + b"x" * 50,
        "empty": b"",
        "png": b"\x89PNG\r\n\x1a\n" + b"\0" * 20,
    }.items():
        assert jpeg.decode(data, "RGB") is None, name
        errors = []
        for fast in (True, False):
            with pytest.raises(ImageError) as exc:
                file_to_uint8(io.BytesIO(data), info, fast_jpeg=fast)
            errors.append(str(exc.value))
        assert errors[0] == errors[1], name
    with pytest.raises(ImageError, match="unreadable image"):
        file_to_uint8(tmp_path / "missing.jpg", info)


def test_pillows_pixel_limit_still_applies(monkeypatch, infos):
    data = jpeg_bytes(Image.new("RGB", (200, 100), (5, 6, 7)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200 * 100 // 3)  # the file is 3x over: Pillow refuses it
    assert jpeg.decode(data, "RGB") is None
    with pytest.raises(ImageError, match="decompression bomb"):
        file_to_uint8(io.BytesIO(data), infos["cnn"])


def test_a_big_file_that_is_no_jpeg_is_not_read_whole(tmp_path, infos):
    import tracemalloc

    video = tmp_path / "clip.jpg"  # a folder may hold anything under any name
    with open(video, "wb") as fh:
        fh.truncate(64 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="not an image"):
            file_to_uint8(video, infos["cnn"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak / 2**20:.1f} MiB held for a 64 MiB file that is no image"
