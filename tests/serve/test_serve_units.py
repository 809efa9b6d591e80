"""Pieces of the server without HTTP: the upload decoder, model ids, the ``serve`` command line."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

pytest.importorskip("fastapi")  # the serve package is the FastAPI app

from lesionseg.serve.decode import UploadError, decode_upload  # noqa: E402

from .conftest import blob_image, encode, png_bomb  # noqa: E402


def test_decode_gives_rgb_or_gray_uint8():
    image, _ = blob_image((30, 40))
    rgb = decode_upload(encode(image))
    np.testing.assert_array_equal(rgb.image, image)
    assert (rgb.width, rgb.height, rgb.reduced) == (40, 30, False)
    gray = decode_upload(encode(image), channels=1).image
    assert gray.shape == (30, 40, 1) and gray.dtype == np.uint8
    with pytest.raises(ValueError, match="channels"):
        decode_upload(encode(image), channels=2)


def test_pixel_limit_is_checked_before_any_pixel_is_decoded(monkeypatch):
    def no_load(self):
        raise AssertionError("pixel data decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    with pytest.raises(UploadError) as err:
        decode_upload(png_bomb(3000, 3000), "bomb.png", max_pixels=1_000_000)
    assert err.value.status == 413 and "bomb.png" in err.value.message and "9000000 pixels" in err.value.message


def _loaded_sizes(monkeypatch) -> list[tuple[int, int]]:
    """Record the size each image has when PIL decodes its pixels."""
    sizes: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def recording_load(self):
        sizes.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    return sizes


def test_a_flat_png_is_worked_on_at_most_work_pixels():
    flat = Image.new("RGB", (3000, 2000), (180, 120, 90))
    buf = io.BytesIO()
    flat.save(buf, "PNG", compress_level=9)
    assert len(buf.getvalue()) < 100_000  # 6 M pixels in a few kilobytes
    out = decode_upload(buf.getvalue(), "flat.png", max_pixels=10_000_000, work_pixels=500_000)
    assert (out.width, out.height) == (3000, 2000) and out.reduced
    h, w, c = out.image.shape
    assert h * w <= 500_000 and c == 3 and abs(w / h - 1.5) < 0.01
    assert (out.image == (180, 120, 90)).all()


def test_a_big_jpeg_is_decoded_reduced(monkeypatch):
    image, _ = blob_image((1200, 1600), seed=1)
    data = encode(image, "JPEG")
    sizes = _loaded_sizes(monkeypatch)
    out = decode_upload(data, "big.jpg", work_pixels=200_000)
    # The decoder itself produced 1/4 of each side: the full-size pixels never existed.
    assert set(sizes) == {(400, 300)} and out.image.shape == (300, 400, 3) and (out.width, out.height) == (1600, 1200)


@pytest.mark.parametrize("mode", ["P", "1", "I;16", "LA", "RGBA"])
def test_reduction_in_every_mode(mode):
    image, _ = blob_image((300, 500), seed=2)
    pil = Image.fromarray(image[..., 0].astype(np.uint16) * 257) if mode == "I;16" else Image.fromarray(image)
    if mode != "I;16":
        pil = pil.convert(mode)
    buf = io.BytesIO()
    pil.save(buf, "PNG")
    out = decode_upload(buf.getvalue(), f"{mode}.png", work_pixels=20_000)
    assert out.image.dtype == np.uint8 and out.image.shape[2] == 3
    assert out.image.shape[0] * out.image.shape[1] <= 20_000 and (out.width, out.height) == (500, 300)


def test_exif_rotation_gives_the_turned_size_when_reduced():
    image, _ = blob_image((600, 1000), seed=3)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter clockwise
    out = decode_upload(encode(image, "JPEG", exif=exif.tobytes()), "turned.jpg", work_pixels=100_000)
    assert (out.width, out.height) == (600, 1000)
    h, w, _ = out.image.shape
    assert h > w and h * w <= 100_000


@pytest.mark.parametrize(
    ("spec", "tag", "expected"),
    [
        ("skin", "skin", "skin"),
        ("runs/polyp_v2/best", None, "polyp_v2"),
        ("runs/polyp_v2/best.json", None, "polyp_v2"),
        ("ckpts/my_model", None, "my_model"),
    ],
)
def test_model_ids(spec, tag, expected):
    from lesionseg.models.hub import ModelRecord, ShippedInfo
    from lesionseg.serve import model_id

    shipped = ShippedInfo(tag=tag, title="", dataset="", test_metrics={}, latency_ms={}, trained_with="", date="")
    record = ModelRecord(
        model="unet_small", image_size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3, pretrained=shipped if tag else None
    )
    assert model_id(spec, record) == expected


def test_serve_command_binds_loopback_by_default(monkeypatch, model_stem, capsys):
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    import torch

    from lesionseg.cli import main

    calls = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(app=app, **kw))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.update(torch_threads=n))
    assert main(["serve", "--model", model_stem, "--workers-threads", "1", "--port", "8123"]) == 0
    assert calls["host"] == "127.0.0.1" and calls["port"] == 8123 and calls["torch_threads"] >= 1
    state = calls["app"].state.lesionseg
    assert list(state.models) == ["skin"] and state.threads == 1 and state.capacity == 17
    assert state.body_timeout == 20.0 and state.work_pixels == 4_000_000 and state.max_pixels == 40_000_000
    assert main(["serve", "--model", model_stem, "--body-timeout", "5", "--work-megapixels", "2.5"]) == 0
    state = calls["app"].state.lesionseg
    assert state.body_timeout == 5.0 and state.work_pixels == 2_500_000
    assert "no authentication" not in capsys.readouterr().err
    assert main(["serve", "--model", model_stem, "--host", "0.0.0.0", "--cors-origin", "http://lab.example"]) == 0
    assert calls["host"] == "0.0.0.0" and "no authentication" in capsys.readouterr().err


def test_serve_command_refuses_bad_threads(capsys):
    pytest.importorskip("fastapi")
    from lesionseg.cli import main

    with pytest.raises(SystemExit) as stop:  # refused while the arguments are read, before any model loads
        main(["serve", "--workers-threads", "0"])
    assert stop.value.code == 2
    assert "--workers-threads" in capsys.readouterr().err
