"""The JSON API over FastAPI's TestClient: valid images, every kind of bad upload, limits, admission, CORS, the page."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from lesionseg.inference import apply_postprocessing, measure_lesion  # noqa: E402
from lesionseg.serve import DEFAULT_BODY_TIMEOUT, DEFAULT_WORK_PIXELS, PROBA_MAX_SIDE, create_app  # noqa: E402
from lesionseg.serve.app import STATIC_DIR  # noqa: E402

from .conftest import blob_image, encode, png_bomb  # noqa: E402

MAX_UPLOAD = 2 * 1024 * 1024
MAX_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def client(predictor):
    app = create_app({"skin": predictor}, max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS, threads=2, queue_size=4)
    with TestClient(app) as c:
        yield c


def _png_decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def _post(client, data: bytes, name: str = "lesion.png", ctype: str = "image/png", **fields):
    form = {k: str(v) for k, v in fields.items()}
    return client.post("/api/segment", files={"image": (name, data, ctype)}, data=form)


# ---------------------------------------------------------------------------------------------------------- valid
def test_models_health_and_docs(client, predictor):
    body = client.get("/api/models").json()
    assert [m["id"] for m in body["models"]] == ["skin"]
    assert body["default"] == "skin"
    assert body["models"][0]["threshold"] == predictor.threshold
    assert body["limits"] == {
        "max_upload_bytes": MAX_UPLOAD,
        "max_pixels": MAX_PIXELS,
        "work_pixels": DEFAULT_WORK_PIXELS,
        "body_timeout_s": DEFAULT_BODY_TIMEOUT,
    }
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["models"] == ["skin"] and health["capacity"] == 6
    assert "/api/segment" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_segment_png_matches_predictor(client, predictor):
    image, _ = blob_image((90, 120), seed=3)
    res = _post(client, encode(image), pixel_size=0.05)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["model"] == "skin" and body["image"] == {"name": "lesion.png", "width": 120, "height": 90}
    mask = _png_decode(body["mask_png"])
    assert mask.shape == (90, 120) and set(np.unique(mask)) <= {0, 255}
    expected = predictor.predict_mask([image])[0]
    np.testing.assert_array_equal(mask // 255, expected)
    want = measure_lesion(expected).to_dict(0.05)
    assert body["measurements"] == want
    assert body["measurements"]["area_mm2"] == pytest.approx(want["area"] * 0.05**2, rel=1e-3)
    prob = _png_decode(body["probability"]["png"])
    assert prob.shape == (body["probability"]["height"], body["probability"]["width"]) == (90, 120)
    full = predictor.predict_proba([image])[0]
    assert np.abs(prob.astype(np.float64) / 255 - full).max() <= 1 / 255 + 1e-6
    assert set(body["timings_ms"]) == {"queue", "decode", "inference", "postprocess", "encode", "total"}
    assert body["work_size"] == {"width": 120, "height": 90}
    assert body["threshold"] == predictor.threshold and "image_jpeg" not in body


def test_probability_map_is_reduced_for_big_images(client):
    image, _ = blob_image((300, 700), seed=1)
    body = _post(client, encode(image)).json()
    p = body["probability"]
    assert max(p["width"], p["height"]) == PROBA_MAX_SIDE and p["width"] > p["height"]
    assert _png_decode(body["mask_png"]).shape == (300, 700)


@pytest.mark.parametrize(
    ("fmt", "mode", "ctype"),
    [
        ("JPEG", "RGB", "image/jpeg"),
        ("BMP", "RGB", "image/bmp"),
        ("TIFF", "RGB", "image/tiff"),
        ("GIF", "P", "image/gif"),
        ("WEBP", "RGB", "image/webp"),
        ("PNG", "L", "image/png"),
        ("PNG", "RGBA", "image/png"),
        ("PNG", "I;16", "application/octet-stream"),
        ("PNG", "RGB", ""),
    ],
)
def test_image_formats_and_modes(client, fmt, mode, ctype):
    image, _ = blob_image((50, 70), seed=2)
    if mode == "I;16":
        pil = Image.fromarray(image[..., 0].astype(np.uint16) * 257)
    else:
        pil = Image.fromarray(image).convert(mode)
    buf = io.BytesIO()
    pil.save(buf, format=fmt)
    res = _post(client, buf.getvalue(), name=f"x.{fmt.lower()}", ctype=ctype)
    assert res.status_code == 200, res.text
    assert res.json()["image"]["width"] == 70 and res.json()["image"]["height"] == 50


def test_exif_orientation_applied_and_image_returned_on_request(client):
    image, _ = blob_image((40, 64), seed=4)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(image, "JPEG", exif=exif.tobytes())
    body = _post(client, data, name="rotated.jpg", ctype="image/jpeg", include_image="true").json()
    assert (body["image"]["width"], body["image"]["height"]) == (40, 64)
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["image_jpeg"]))))
    assert shown.shape == (64, 40, 3)


def test_threshold_and_model_fields(client):
    data = encode(blob_image((64, 64), seed=5)[0])
    low = _post(client, data, threshold=0.02).json()
    high = _post(client, data, threshold=0.98).json()
    assert low["threshold"] == 0.02 and high["threshold"] == 0.98
    assert low["measurements"]["area"] >= high["measurements"]["area"]
    assert _post(client, data, model="skin").status_code == 200


def test_custom_threshold_cuts_the_calibrated_probability(client, predictor):
    # The API cuts a request's threshold on the T = 1 map (no full-size temperature pass); it must give the mask of
    # that threshold on the calibrated probability, as cutting predict_proba does.
    image, _ = blob_image((90, 120), seed=8)
    prob = predictor.predict_proba([image])[0]
    for threshold in (0.3, float(np.quantile(prob, 0.6)), 0.7):
        body = _post(client, encode(image), threshold=threshold).json()
        want = apply_postprocessing((prob > threshold).astype(np.uint8), predictor.postprocess)
        np.testing.assert_array_equal(_png_decode(body["mask_png"]) // 255, want)


def test_segment_says_how_far_to_trust_the_mask(client, predictor):
    image, _ = blob_image((90, 120), seed=3)
    body = _post(client, encode(image)).json()
    assert body["trust"] == predictor.predict([image])[0].trust.to_dict()
    assert body["temperature"] == predictor.temperature
    assert set(body["trust"]) == {
        "lesion_found",
        "predicted_dice",
        "low_confidence",
        "ood_score",
        "out_of_distribution",
        "notes",
    }
    # An empty mask says so in words, whatever threshold cut it.
    empty = _post(client, encode(np.zeros((64, 64, 3), np.uint8)), threshold=0.999).json()
    assert empty["measurements"]["area"] == 0
    assert empty["trust"]["lesion_found"] is False and "no lesion found" in empty["trust"]["notes"]


class _Spy:
    """A predictor that records the size of every image the model is asked about."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.shapes: list[tuple[int, ...]] = []

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def predict(self, images):
        self.shapes += [im.shape for im in images]
        return self._inner.predict(images)


@pytest.mark.parametrize(("fmt", "ctype"), [("PNG", "image/png"), ("JPEG", "image/jpeg")])
def test_work_is_bounded_by_decoded_pixels(predictor, fmt, ctype):
    # 1600 x 1200 = 1.92 M pixels, under the 4 M accepted, over the 0.25 M worked on: a flat-file attack in small.
    image, _ = blob_image((1200, 1600), seed=8)
    spy = _Spy(predictor)
    app = create_app({"skin": spy}, max_pixels=4_000_000, work_pixels=250_000)
    with TestClient(app) as client:
        res = _post(client, encode(image, fmt), name=f"big.{fmt.lower()}", ctype=ctype, include_image="true")
    assert res.status_code == 200, res.text
    body = res.json()
    assert len(spy.shapes) == 1 and spy.shapes[0][0] * spy.shapes[0][1] <= 250_000
    work = body["work_size"]
    assert (work["height"], work["width"]) == spy.shapes[0][:2] and work["width"] * work["height"] <= 250_000
    assert body["image"] == {"name": f"big.{fmt.lower()}", "width": 1600, "height": 1200}
    mask = _png_decode(body["mask_png"])
    assert mask.shape == (1200, 1600) and set(np.unique(mask)) <= {0, 255}
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["image_jpeg"]))))
    assert shown.shape[:2] == (work["height"], work["width"])
    # The measurements are in the image's own pixels: close to those of the whole image segmented at its size.
    full = measure_lesion(predictor.predict_mask([image])[0]).to_dict()
    got = body["measurements"]
    assert full["area"] > 0
    assert got["area"] == pytest.approx(full["area"], rel=0.05)
    assert abs(int(np.count_nonzero(mask)) - got["area"]) <= 0.05 * got["area"]
    for key in ("equivalent_diameter", "max_feret_diameter", "perimeter", "compactness"):
        assert got[key] == pytest.approx(full[key], rel=0.05), key


# ---------------------------------------------------------------------------------------------------------- bad input
def _truncated_png() -> bytes:
    data = encode(blob_image((64, 64), seed=6)[0])
    return data[: len(data) // 2]


def _corrupt_jpeg() -> bytes:
    data = bytearray(encode(blob_image((64, 64), seed=7)[0], "JPEG"))
    data[200:400] = b"\xff" * 200
    return bytes(data[:600])


BAD_UPLOADS = [
    # (label, bytes, file name, declared type, extra fields, status, words the message must hold)
    ("empty", b"", "empty.png", "image/png", {}, 422, ["empty.png", "empty"]),
    ("truncated", _truncated_png(), "cut.png", "image/png", {}, 422, ["cut.png", "truncated"]),
    ("corrupt jpeg", _corrupt_jpeg(), "bad.jpg", "image/jpeg", {}, 422, ["bad.jpg"]),
    ("not an image", b"hello, this is text\n" * 50, "notes.png", "image/png", {}, 422, ["notes.png", "not a readable"]),
    ("png magic then junk", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "magic.png", "image/png", {}, 422, ["magic.png"]),
    ("wrong type", b"%PDF-1.4\n", "paper.pdf", "application/pdf", {}, 415, ["paper.pdf", "only image files"]),
    ("text type", b"a,b\n1,2\n", "t.csv", "text/csv", {}, 415, ["t.csv", "text/csv"]),
    ("unsupported format", b"P5\n4 4\n255\n" + b"\x10" * 16, "x.pgm", "image/x-pgm", {}, 422, ["PPM", "not accepted"]),
    ("bomb over our limit", png_bomb(2000, 2000), "bomb.png", "image/png", {}, 413, ["bomb.png", "4000000 pixels"]),
    ("bomb over PIL's limit", png_bomb(15000, 15000), "big.png", "image/png", {}, 413, ["big.png", "too large"]),
    ("too large", b"\x00" * (MAX_UPLOAD + 1), "huge.png", "image/png", {}, 413, ["upload limit"]),
    ("far too large", b"\x00" * (2 * MAX_UPLOAD), "huger.png", "image/png", {}, 413, ["upload limit"]),
    ("unknown model", b"x", "a.png", "image/png", {"model": "liver"}, 422, ["liver", "skin"]),
    ("threshold out of range", b"x", "a.png", "image/png", {"threshold": "1.5"}, 422, ["threshold", "1.5"]),
    ("threshold not a number", b"x", "a.png", "image/png", {"threshold": "high"}, 422, ["threshold"]),
    ("bad pixel size", b"x", "a.png", "image/png", {"pixel_size": "-1"}, 422, ["pixel_size"]),
]


@pytest.mark.parametrize(
    ("data", "name", "ctype", "fields", "status", "words"),
    [case[1:] for case in BAD_UPLOADS],
    ids=[case[0] for case in BAD_UPLOADS],
)
def test_bad_uploads_get_4xx_with_a_message(client, data, name, ctype, fields, status, words):
    res = _post(client, data, name=name, ctype=ctype, **fields)
    assert res.status_code == status, res.text
    body = res.json()
    assert body["status"] == status and body["error"]
    for word in words:
        assert word in body["message"], body["message"]
    assert client.get("/healthz").json()["status"] == "ok"


def test_missing_file_field(client):
    res = client.post("/api/segment", data={"model": "skin"})
    assert res.status_code == 422 and "image" in res.json()["message"]
    res = client.post("/api/segment", content=b"not multipart", headers={"content-type": "text/plain"})
    assert res.status_code in (400, 422) and res.json()["message"]


def test_body_limit_while_streaming_without_content_length(client):
    boundary = "lesionsegboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="stream.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()

    def body():
        yield head
        for _ in range(4):
            yield b"\x00" * (MAX_UPLOAD // 2)
        yield f"\r\n--{boundary}--\r\n".encode()

    res = client.post(
        "/api/segment", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert res.status_code == 413 and "upload limit" in res.json()["message"]


def test_server_healthy_and_answering_after_every_bad_upload(client):
    for _, data, name, ctype, fields, _, _ in BAD_UPLOADS:
        _post(client, data, name=name, ctype=ctype, **fields)
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["busy"] == 0
    assert _post(client, encode(blob_image()[0])).status_code == 200


# ---------------------------------------------------------------------------------------------------------- admission
class _Gated:
    """A predictor whose model call waits for a gate, to hold the pool busy."""

    def __init__(self, inner, gate: threading.Event, fail: bool = False) -> None:
        self._inner, self._gate, self._fail = inner, gate, fail

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def predict(self, images):
        if not self._gate.wait(30):
            raise TimeoutError("gate never opened")
        if self._fail:
            raise RuntimeError("model exploded")
        return self._inner.predict(images)


def test_requests_beyond_the_queue_get_a_quick_503(predictor):
    gate = threading.Event()
    app = create_app({"skin": _Gated(predictor, gate)}, threads=1, queue_size=1)
    data = encode(blob_image()[0])
    with TestClient(app) as client:
        results: list[int] = []
        workers = [threading.Thread(target=lambda: results.append(_post(client, data).status_code)) for _ in range(2)]
        for w in workers:
            w.start()
        deadline = time.monotonic() + 20
        while client.get("/healthz").json()["busy"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.get("/healthz").json()["busy"] == 2
        refused = _post(client, data)  # the gate is still shut: this answer cannot have waited for inference
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "busy" in refused.json()["message"]
        assert not gate.is_set()
        gate.set()
        for w in workers:
            w.join(30)
        assert sorted(results) == [200, 200]
        health = client.get("/healthz").json()
        assert health["busy"] == 0 and health["refused_busy"] == 1 and health["served"] == 2


def test_inference_failure_is_a_500_and_the_server_lives_on(predictor):
    gate = threading.Event()
    gate.set()
    app = create_app({"bad": _Gated(predictor, gate, fail=True), "skin": predictor})
    with TestClient(app, raise_server_exceptions=False) as client:
        res = _post(client, encode(blob_image()[0]), model="bad")
        assert res.status_code == 500 and "model exploded" in res.json()["message"]
        assert client.get("/healthz").json()["busy"] == 0
        assert _post(client, encode(blob_image()[0]), model="skin").status_code == 200


# ---------------------------------------------------------------------------------------------------------- page, CORS
def test_page_is_self_contained(client):
    res = client.get("/")
    assert res.status_code == 200 and "text/html" in res.headers["content-type"]
    assert "default-src 'self'" in res.headers["content-security-policy"]
    for name in ("index.html", "app.js", "style.css", "favicon.svg"):
        text = (STATIC_DIR / name).read_text()
        assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text
        assert client.get(f"/static/{name}").status_code == 200
    assert client.get("/static/../app.py").status_code == 404


def test_no_cors_unless_asked(predictor):
    origin = {"Origin": "http://elsewhere.example"}
    with TestClient(create_app({"skin": predictor})) as plain:
        assert "access-control-allow-origin" not in plain.get("/api/models", headers=origin).headers
    with TestClient(create_app({"skin": predictor}, cors_origins=["http://elsewhere.example"])) as cors:
        headers = cors.get("/api/models", headers=origin).headers
        assert headers["access-control-allow-origin"] == "http://elsewhere.example"
        assert "access-control-allow-origin" not in cors.get("/api/models", headers={"Origin": "http://x.y"}).headers


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threads": 0},
        {"queue_size": -1},
        {"max_upload_bytes": 0},
        {"max_pixels": 0},
        {"threads": 1.5},
        {"work_pixels": 0},
        {"body_timeout": 0},
        {"body_timeout": float("nan")},
    ],
)
def test_bad_settings_are_refused(predictor, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        create_app({"skin": predictor}, **kwargs)


def test_unknown_model_spec_is_refused():
    with pytest.raises(ValueError, match="no-such-model"):
        create_app(["no-such-model"])


def test_cli_api_and_python_measure_one_image_alike(client, predictor, model_stem, tmp_path, capsys):
    # An image well above the model's working size: the CLI used to measure it with a border tolerance of the resize
    # factor that the API and measure_lesion did not use, and its perimeter came out 13 % shorter.
    from lesionseg.cli import main

    image, _ = blob_image((400, 700), seed=5)
    path = tmp_path / "lesion.png"
    path.write_bytes(encode(image))
    python = measure_lesion(predictor.predict_mask([image])[0]).to_dict(0.02)
    api = _post(client, path.read_bytes(), pixel_size=0.02).json()["measurements"]
    assert (
        main(["predict", str(path), "--model", model_stem, "--out", str(tmp_path / "out"), "--pixel-size", "0.02"]) == 0
    )
    cli = json.loads((tmp_path / "out" / "measurements.json").read_text())["images"][0]
    assert python["area"] > 0
    assert api == python
    assert {k: cli[k] for k in python} == python
