"""Pieces of the server without HTTP: the upload decoder, model ids, the ``serve`` command line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import ImageFile

pytest.importorskip("fastapi")  # the serve package is the FastAPI app

from lesionseg.serve.decode import UploadError, decode_upload  # noqa: E402

from .conftest import blob_image, encode, png_bomb  # noqa: E402


def test_decode_gives_rgb_or_gray_uint8():
    image, _ = blob_image((30, 40))
    rgb = decode_upload(encode(image))
    np.testing.assert_array_equal(rgb, image)
    gray = decode_upload(encode(image), channels=1)
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
    assert "no authentication" not in capsys.readouterr().err
    assert main(["serve", "--model", model_stem, "--host", "0.0.0.0", "--cors-origin", "http://lab.example"]) == 0
    assert calls["host"] == "0.0.0.0" and "no authentication" in capsys.readouterr().err


def test_serve_command_refuses_bad_threads(capsys):
    pytest.importorskip("fastapi")
    from lesionseg.cli import main

    assert main(["serve", "--workers-threads", "0"]) == 2
    assert "--workers-threads" in capsys.readouterr().err
