from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import case_image, case_mask, write_image, write_mask
from PIL import Image

from lesionseg.data import Case, ImageReadError, load_case, read_image, read_mask
from lesionseg.data.io import DEFAULT_MAX_PIXELS, decode_image_bytes, decode_mask_bytes, read_mask_values

H, W = 8, 10


def test_rgb(tmp_path) -> None:
    arr = case_image(0)
    p = write_image(tmp_path / "a.png", arr)
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, arr)
    gray = read_image(p, channels=1)
    assert gray.shape == (H, W, 1)
    np.testing.assert_array_equal(gray[..., 0], np.asarray(Image.fromarray(arr).convert("L")))


def test_rgba_drops_alpha(tmp_path) -> None:
    arr = case_image(1)
    rgba = np.concatenate([arr, np.zeros((H, W, 1), np.uint8)], axis=2)  # fully transparent: alpha ignored
    p = write_image(tmp_path / "a.png", rgba)
    assert Image.open(p).mode == "RGBA"
    np.testing.assert_array_equal(read_image(p), arr)


def test_grayscale(tmp_path) -> None:
    arr = case_image(2)[..., 0]
    p = write_image(tmp_path / "g.png", arr)
    assert Image.open(p).mode == "L"
    rgb = read_image(p)
    assert rgb.shape == (H, W, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], arr)
    np.testing.assert_array_equal(read_image(p, channels=1)[..., 0], arr)


def test_16_bit(tmp_path) -> None:
    arr16 = (np.arange(H * W, dtype=np.uint32).reshape(H, W) * 65535 // (H * W - 1)).astype(np.uint16)
    p = tmp_path / "x16.png"
    Image.fromarray(arr16).save(p)
    assert Image.open(p).mode.startswith("I")
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    np.testing.assert_allclose(out[..., 0].astype(float), arr16 / 257.0, atol=1)
    assert read_image(p, channels=1).shape == (H, W, 1)


def test_palette(tmp_path) -> None:
    idx = (np.arange(H * W).reshape(H, W) % 3).astype(np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    p = tmp_path / "p.png"
    img.save(p)
    out = read_image(p)
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    np.testing.assert_array_equal(out, colours[idx])


def test_exif_orientation_is_applied(tmp_path) -> None:
    arr = np.zeros((H, W, 3), np.uint8)
    arr[:, :3] = 255  # bright left columns
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(p, exif=exif.tobytes(), quality=95)
    out = read_image(p)
    assert out.shape == (W, H, 3)  # transposed
    assert out[:3].mean() > 200 and out[4:].mean() < 50  # the left columns are now the top rows
    mask = read_mask(p, 127)
    assert mask.shape == (W, H) and mask[:3].all() and not mask[4:].any()


def test_mask_any_nonzero_is_lesion(tmp_path) -> None:
    arr = np.zeros((H, W), np.uint8)
    arr[0, :5] = [1, 2, 50, 128, 255]
    p = write_image(tmp_path / "m.png", arr)
    out = read_mask(p)
    assert out.dtype == np.uint8 and out.shape == (H, W)
    assert out.sum() == 5 and out[0, :5].all()
    assert read_mask(p, 127)[0, :5].tolist() == [0, 0, 0, 1, 1]


def test_palette_mask_read_by_index(tmp_path) -> None:
    idx = case_mask(3)
    img = Image.fromarray(idx, mode="P")
    img.putpalette([0, 0, 0, 0, 0, 0] + [0] * (256 * 3 - 6))  # index 1 is also black: must still be lesion
    p = tmp_path / "pm.png"
    img.save(p)
    np.testing.assert_array_equal(read_mask(p), idx)


@pytest.mark.parametrize("mode", ["RGB", "1", "L"])
def test_binary_masks(tmp_path, mode) -> None:
    m = case_mask(4)
    p = write_mask(tmp_path / f"m_{mode}.png", m, mode=mode)
    out = read_mask(p)
    assert set(np.unique(out)) <= {0, 1}
    np.testing.assert_array_equal(out, m)


def test_jpeg_mask_threshold(tmp_path) -> None:
    m = np.zeros((32, 32), np.uint8)
    m[8:24, 10:20] = 1
    p = write_mask(tmp_path / "m.jpg", m)
    noisy = read_mask(p, 0)
    clean = read_mask(p, 127)
    assert (clean == m).mean() > 0.98
    assert noisy.sum() >= clean.sum()


def test_corrupt_file_names_the_path(tmp_path) -> None:
    p = tmp_path / "x.png"
    p.write_bytes(b"\x89PNG this is not an image at all")
    for reader in (read_image, read_mask):
        with pytest.raises(ImageReadError) as err:
            reader(p)
        assert str(p) in str(err.value)


def test_truncated_file(tmp_path) -> None:
    p = write_image(tmp_path / "t.png", case_image(5))
    p.write_bytes(p.read_bytes()[:60])
    with pytest.raises(ImageReadError, match="t.png"):
        read_image(p)


def test_missing_file(tmp_path) -> None:
    p = tmp_path / "absent.png"
    with pytest.raises(ImageReadError, match="no such file") as err:
        read_image(p)
    assert str(p) in str(err.value)
    with pytest.raises(ImageReadError):
        read_mask(p)


def test_bad_channels(tmp_path) -> None:
    p = write_image(tmp_path / "a.png", case_image(0))
    with pytest.raises(ValueError, match="channels"):
        read_image(p, channels=2)


def test_load_case_size_mismatch_names_both(tmp_path: Path) -> None:
    image = write_image(tmp_path / "img.png", case_image(0))
    mask = write_mask(tmp_path / "msk.png", np.ones((H + 1, W), np.uint8))
    with pytest.raises(ImageReadError) as err:
        load_case(Case("a", image, mask))
    assert str(image) in str(err.value) and str(mask) in str(err.value)


def test_load_case_without_mask(tmp_path: Path) -> None:
    image = write_image(tmp_path / "img.png", case_image(0))
    out, mask = load_case(Case("a", image))
    assert out.shape == (H, W, 3) and mask is None


def test_load_case_extra_masks_are_or_combined(tmp_path: Path) -> None:
    image = write_image(tmp_path / "img.png", case_image(0))
    a, b = np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8)
    a[:2] = 1
    b[-3:] = 1
    pa, pb = write_mask(tmp_path / "a.png", a), write_mask(tmp_path / "b.png", b)
    _, mask = load_case(Case("a", image, pa, meta={"extra_masks": (pb,)}))
    np.testing.assert_array_equal(mask, a | b)
    assert set(np.unique(mask)) == {0, 1}


# ------------------------------------------------------------------------------------------- hostile and odd files
def _png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header (correct CRCs) declaring ``width x height`` pixels, with a few rows of data."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1) * 4))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(("width", "height"), [(30000, 30000), (10000, 9000)])
def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path, width: int, height: int) -> None:
    # 30000^2 is over Pillow's own hard limit (Pillow refuses in Image.open); 10000x9000 is between Pillow's warning
    # threshold and twice it, where Pillow alone would decode 270 MB; both must end as our error naming the file.
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_declaring(width, height))
    assert p.stat().st_size < 2000
    for reader in (read_image, read_mask, read_mask_values):
        with pytest.raises(ImageReadError) as err:
            reader(p)
        msg = str(err.value)
        assert str(p) in msg and f"{width * height:,} pixels" in msg and f"{DEFAULT_MAX_PIXELS:,}" in msg
    with pytest.raises(ImageReadError, match="upload.png"):
        decode_image_bytes(p.read_bytes(), "upload.png")


def test_max_pixels_is_configurable(tmp_path: Path) -> None:
    p = write_image(tmp_path / "a.png", case_image(0))  # 8 x 10 = 80 pixels
    assert read_image(p, max_pixels=80).shape == (H, W, 3)
    with pytest.raises(ImageReadError, match=r"10x8 = 80 pixels, over the limit of 79 pixels"):
        read_image(p, max_pixels=79)
    with pytest.raises(ImageReadError, match="limit of 79"):
        read_mask(p, max_pixels=79)
    with pytest.raises(ValueError, match="max_pixels"):
        read_image(p, max_pixels=0)


def test_bytes_entry_matches_the_file_reader(tmp_path: Path) -> None:
    arr = case_image(3)
    for ext in (".png", ".bmp", ".tif", ".webp", ".gif", ".jpg"):
        p = write_image(tmp_path / f"a{ext}", arr)
        np.testing.assert_array_equal(decode_image_bytes(p.read_bytes(), p.name), read_image(p))
        np.testing.assert_array_equal(decode_image_bytes(p.read_bytes(), p.name, 1), read_image(p, 1))
        np.testing.assert_array_equal(decode_mask_bytes(p.read_bytes(), p.name, 127), read_mask(p, 127))
    with pytest.raises(ImageReadError, match="up.png: empty file"):
        decode_image_bytes(b"", "up.png")
    with pytest.raises(TypeError):
        decode_image_bytes("not bytes", "x")  # type: ignore[arg-type]


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "e.png"
    p.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty file"):
        read_image(p)


def test_format_outside_the_list_is_refused(tmp_path: Path) -> None:
    # A PPM is a valid image, but not one of the formats the readers accept (decoders are limited by content).
    p = tmp_path / "x.png"
    Image.fromarray(case_image(0)).save(p, format="PPM")
    with pytest.raises(ImageReadError, match="x.png"):
        read_image(p)


@pytest.mark.parametrize(
    "exc", [struct.error("unpack"), EOFError(), MemoryError(), SyntaxError("bad"), IndexError("i"), KeyError("k")]
)
def test_any_decoder_exception_becomes_image_read_error(tmp_path: Path, monkeypatch, exc: Exception) -> None:
    p = write_image(tmp_path / "a.png", case_image(0))

    def broken_load(self):
        raise exc

    monkeypatch.setattr(Image.Image, "load", broken_load)
    for reader in (read_image, read_mask):
        with pytest.raises(ImageReadError) as err:
            reader(p)
        assert str(p) in str(err.value) and type(exc).__name__ in str(err.value)
        assert err.value.__cause__ is exc


def test_mask_values_before_threshold(tmp_path: Path) -> None:
    arr = np.zeros((H, W), np.uint8)
    arr[0, :3] = [1, 128, 255]
    p = write_image(tmp_path / "m.png", arr)
    np.testing.assert_array_equal(read_mask_values(p), arr)


# ------------------------------------------------------------------------------------------------ OpenCV JPEG path
def _pillow_reference(path: Path, mode: str) -> np.ndarray:
    """What Pillow alone makes of a file: decoded, EXIF-transposed, converted."""
    from PIL import ImageOps

    with Image.open(path) as img:
        return np.asarray(ImageOps.exif_transpose(img).convert(mode))


def _photo(shape: tuple[int, ...]) -> np.ndarray:
    """Smooth random content, photograph-like: where decoders' rounding differences would show."""
    import cv2

    return cv2.GaussianBlur(np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8), (0, 0), 2)


@pytest.fixture
def imdecode_calls(monkeypatch) -> list[int]:
    """Counts OpenCV decodes, so that a test knows which decoder read its file."""
    import cv2

    import lesionseg.data.io as io_module

    calls: list[int] = []
    real = cv2.imdecode

    def counting(buf, flags):
        calls.append(flags)
        return real(buf, flags)

    monkeypatch.setattr(io_module.cv2, "imdecode", counting)
    return calls


@pytest.mark.parametrize("orientation", range(1, 9))
def test_opencv_jpeg_has_pillows_pixels_in_every_exif_orientation(tmp_path, orientation, imdecode_calls) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(_photo((37, 53, 3))).save(p, exif=exif.tobytes(), quality=90)
    out = read_image(p)
    assert imdecode_calls, "the JPEG was not decoded by OpenCV"
    np.testing.assert_array_equal(out, _pillow_reference(p, "RGB"))
    np.testing.assert_array_equal(decode_image_bytes(p.read_bytes()), out)
    np.testing.assert_array_equal(read_mask_values(p), _pillow_reference(p, "RGB").max(axis=2))


@pytest.mark.parametrize("channels", [3, 1])
def test_opencv_grayscale_jpeg_has_pillows_pixels(tmp_path, channels, imdecode_calls) -> None:
    p = tmp_path / "g.jpg"
    Image.fromarray(_photo((31, 45))).save(p, quality=85)
    out = read_image(p, channels)
    assert imdecode_calls
    np.testing.assert_array_equal(out, _pillow_reference(p, "RGB" if channels == 3 else "L").reshape(out.shape))
    np.testing.assert_array_equal(read_mask_values(p), _pillow_reference(p, "L"))


def test_colour_jpeg_read_as_grayscale_uses_pillows_conversion(tmp_path, imdecode_calls) -> None:
    # OpenCV's grayscale JPEG decode keeps the luma plane, which differs from Pillow's RGB -> L conversion.
    p = tmp_path / "c.jpg"
    Image.fromarray(_photo((31, 45, 3))).save(p, quality=85)
    np.testing.assert_array_equal(read_image(p, 1)[..., 0], _pillow_reference(p, "L"))
    assert not imdecode_calls


def test_truncated_or_trailed_jpeg_goes_to_pillow(tmp_path, imdecode_calls) -> None:
    p = tmp_path / "t.jpg"
    Image.fromarray(_photo((40, 40, 3))).save(p, quality=90)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageReadError, match="t.jpg"):
        read_image(p)  # OpenCV would return a grey-filled image without complaint
    p.write_bytes(data + b"trailer")
    np.testing.assert_array_equal(read_image(p), _pillow_reference(p, "RGB"))
    assert not imdecode_calls
