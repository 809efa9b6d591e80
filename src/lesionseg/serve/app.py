"""The FastAPI app: the page, ``POST /api/segment``, ``GET /api/models``, ``GET /healthz``.

Requests are admitted at the ASGI level before their body is read: past ``threads + queue_size`` requests in flight a
segmentation request gets a 503 at once, and a body over the upload limit a 413 (from its Content-Length, or while
it streams). Inference runs off the event loop in a bounded thread pool, on models loaded once at start.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..inference import Predictor, apply_postprocessing, measure_lesion
from .decode import ACCEPTED_CONTENT_TYPES, UploadError, decode_upload
from .models import describe_model, load_models

__all__ = ["create_app", "SegmentResult", "DEFAULT_MAX_UPLOAD_BYTES", "DEFAULT_MAX_PIXELS", "PROBA_MAX_SIDE"]

_logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000  # a 6688 x 4439 ISIC 2018 image is 29.7 M
PROBA_MAX_SIDE = 256  # longest side of the probability map returned for re-thresholding in the browser
SEGMENT_PATH = "/api/segment"
# Multipart framing and the small form fields ride on top of the file itself.
_FORM_OVERHEAD = 64 * 1024
_PAGE_HEADERS = {
    # The page loads nothing from elsewhere; images are shown from data: and blob: URLs made in the page.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
}


class SegmentResult(BaseModel):
    """Answer of ``POST /api/segment``."""

    model: str = Field(description="id of the model that segmented the image (see GET /api/models)")
    image: dict[str, Any] = Field(description="name, width and height of the decoded image")
    threshold: float = Field(
        description="cut on the (temperature-calibrated) probability map the mask was made with; the model's default "
        "gives the mask of its own threshold"
    )
    temperature: float = Field(1.0, description="calibration temperature applied to the logits (1 = none)")
    postprocess: list[str] = Field(description="post-processing steps applied to the mask")
    mask_png: str = Field(description="base64 PNG, 8-bit, 255 = lesion, at the image's own size")
    probability: dict[str, Any] = Field(
        description="base64 8-bit PNG of the lesion probability (0-255) at a reduced size, with its width and height"
    )
    measurements: dict[str, float | int] = Field(description="lesion measurements (pixels; mm with pixel_size)")
    trust: dict[str, Any] = Field(
        default_factory=dict,
        description="how far to trust the mask: lesion_found, predicted_dice (estimate of the mask's Dice at the "
        "model's own threshold), low_confidence, ood_score and out_of_distribution (unlike the training images), and "
        "notes: the warnings in words ('unlike the training images', 'no lesion found', 'low confidence')",
    )
    pixel_size: float | None = Field(description="millimetres per pixel, when given")
    timings_ms: dict[str, float] = Field(description="queue, decode, inference, postprocess, encode, total")
    image_jpeg: str | None = Field(None, description="base64 JPEG of the decoded image, when include_image is set")


_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    500: "internal_error",
    503: "busy",
}


def _error_body(status: int, message: str) -> dict[str, Any]:
    """Every error the API answers: ``{"error": short code, "message": what is wrong, "status": HTTP status}``."""
    return {"error": _ERROR_CODES.get(status, "error"), "message": message, "status": status}


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(_error_body(status, message), status_code=status, headers=headers)


class _Slot:
    """One admitted request; released when both the request and its inference job (if any) are done.

    A client that disconnects while its job waits in the pool frees its request hold but not the job's, so the pool
    queue stays bounded by the admission limit.
    """

    def __init__(self, state: _ServerState) -> None:
        self.state = state
        self.holds = 1

    def hold(self) -> None:
        self.holds += 1

    def release(self) -> None:
        self.holds -= 1
        if self.holds == 0:
            self.state.busy -= 1


class _ServerState:
    def __init__(
        self,
        models: dict[str, Predictor],
        threads: int,
        queue_size: int,
        max_upload_bytes: int,
        max_pixels: int,
    ) -> None:
        self.models = models
        self.default_model = next(iter(models))
        self.threads = threads
        self.capacity = threads + queue_size
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lesionseg-infer")
        self.busy = 0  # admitted segmentation requests; touched on the event loop only
        self.served = 0
        self.refused_busy = 0


class _UploadGuard:
    """ASGI middleware in front of ``POST /api/segment``: admission (503) and the body size limit (413)."""

    def __init__(self, app: ASGIApp, state: _ServerState) -> None:
        self.app = app
        self.state = state
        self.body_limit = state.max_upload_bytes + _FORM_OVERHEAD

    async def _send_error(self, send: Send, status: int, message: str, headers: Mapping[str, str] | None = None):
        body = json.dumps(_error_body(status, message)).encode()
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != SEGMENT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        state = self.state
        if state.busy >= state.capacity:
            state.refused_busy += 1
            await self._send_error(
                send,
                503,
                f"server busy: {state.busy} requests in flight (limit {state.capacity}); retry shortly",
                {"Retry-After": "1"},
            )
            return
        length = dict(scope.get("headers", ())).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.body_limit:
            await self._send_error(
                send,
                413,
                f"request body of {int(length)} bytes is over the upload limit of {state.max_upload_bytes} bytes",
            )
            return
        received = 0
        limit = self.body_limit

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI re-raises an HTTPException met while reading the body; our handler makes it JSON.
                    raise HTTPException(413, f"request body is over the upload limit of {state.max_upload_bytes} bytes")
            return message

        slot = _Slot(state)
        state.busy += 1
        scope["lesionseg.slot"] = slot
        try:
            await self.app(scope, limited_receive, send)
        finally:
            slot.release()


class _SecurityHeaders:
    """ASGI middleware: ``nosniff`` everywhere; a strict content policy on the page and its files.

    Pure ASGI (not ``BaseHTTPMiddleware``) so that an error raised while the body streams reaches FastAPI as is.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        extra = {"x-content-type-options": "nosniff"}
        if path == "/" or path.startswith("/static/"):
            extra.update({k.lower(): v for k, v in _PAGE_HEADERS.items()})

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                added = [(k.encode(), v.encode()) for k, v in extra.items() if k.encode() not in present]
                message = {**message, "headers": list(message.get("headers", [])) + added}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _b64_png(array: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def _small_proba(prob: np.ndarray, max_side: int) -> np.ndarray:
    h, w = prob.shape
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        prob = cv2.resize(prob, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)


def _segment_sync(
    predictor: Predictor,
    data: bytes,
    name: str,
    max_pixels: int,
    threshold: float,
    pixel_size: float | None,
    include_image: bool,
    submitted: float,
) -> dict[str, Any]:
    """Decode, predict, threshold, measure and encode one image (runs in a pool thread)."""
    t0 = time.perf_counter()
    image = decode_upload(data, name, max_pixels=max_pixels, channels=predictor.in_channels)
    t1 = time.perf_counter()
    prediction = predictor.predict([image])[0]
    prob = prediction.prob
    t2 = time.perf_counter()
    mask = (
        prediction.mask
        if threshold == predictor.prob_threshold
        else apply_postprocessing((prob > threshold).astype(np.uint8), predictor.postprocess)
    )
    measurements = measure_lesion(mask).to_dict(pixel_size)
    trust = prediction.trust.to_dict()
    trust["lesion_found"] = bool(mask.any())  # of the mask returned, whatever its threshold
    trust["notes"] = "; ".join(replace(prediction.trust, lesion_found=trust["lesion_found"]).notes())
    t3 = time.perf_counter()
    small = _small_proba(prob, PROBA_MAX_SIDE)
    out: dict[str, Any] = {
        "image": {"name": name, "width": int(image.shape[1]), "height": int(image.shape[0])},
        "threshold": threshold,
        "temperature": predictor.temperature,
        "postprocess": list(predictor.postprocess),
        "mask_png": _b64_png(mask * np.uint8(255)),
        "probability": {"png": _b64_png(small), "width": int(small.shape[1]), "height": int(small.shape[0])},
        "measurements": measurements,
        "trust": trust,
        "pixel_size": pixel_size,
    }
    if include_image:
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.shape[2] == 3 else image
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        out["image_jpeg"] = base64.b64encode(buf.tobytes()).decode("ascii") if ok else None
    t4 = time.perf_counter()
    out["timings_ms"] = {
        "queue": round(1e3 * (t0 - submitted), 2),
        "decode": round(1e3 * (t1 - t0), 2),
        "inference": round(1e3 * (t2 - t1), 2),
        "postprocess": round(1e3 * (t3 - t2), 2),
        "encode": round(1e3 * (t4 - t3), 2),
    }
    return out


def _clean_name(filename: str | None) -> str:
    """The base name of an uploaded file, printable and short, for messages."""
    name = os.path.basename((filename or "").replace("\\", "/")) or "upload"
    name = "".join(c if c.isprintable() else "?" for c in name)
    return name[:120]


def create_app(
    models: Mapping[str, Predictor] | Sequence[str | Path] | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    threads: int = 2,
    queue_size: int = 16,
    cors_origins: Sequence[str] | None = None,
    device: str = "cpu",
) -> FastAPI:
    """Build the app over models loaded once.

    Args:
        models: ``{id: Predictor}``, or shipped tags / checkpoint paths to load (see
            :func:`lesionseg.serve.models.load_models`); None serves every shipped model. The first is the default.
        max_upload_bytes: largest image file accepted (413 above it, checked before the body is read in full).
        max_pixels: largest width x height accepted (413 above it, checked from the header before decoding).
        threads: inference threads (the pool that runs decode, model and measurements).
        queue_size: requests that may wait for a thread; past ``threads + queue_size`` in flight, 503 at once.
        cors_origins: origins allowed to call the API from other pages; None or empty: no CORS headers.
        device: torch device for models loaded here.

    Raises:
        ValueError: a bad limit or no model to serve.
    """
    for label, value, low in (
        ("max_upload_bytes", max_upload_bytes, 1),
        ("max_pixels", max_pixels, 1),
        ("threads", threads, 1),
        ("queue_size", queue_size, 0),
    ):
        if int(value) != value or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
    if models is None or not isinstance(models, Mapping):
        models = load_models(models, device=device)
    if not models:
        raise ValueError("no model to serve")
    state = _ServerState(dict(models), threads, queue_size, max_upload_bytes, max_pixels)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        state.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="lesionseg",
        summary="Lesion segmentation (skin lesions, polyps) with measurements.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.lesionseg = state

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
            parts.append(f"{loc or 'request'}: {err.get('msg', 'invalid')}")
        return _error(422, "invalid request: " + "; ".join(parts))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        _logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); the server is still running")

    app.add_middleware(_SecurityHeaders)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"], allow_headers=["*"]
        )
    # Added last, so it runs first: a refused request never reaches the form parser.
    app.add_middleware(_UploadGuard, state=state)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/healthz", summary="Liveness and load")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "models": list(state.models),
            "busy": state.busy,
            "capacity": state.capacity,
            "threads": state.threads,
            "served": state.served,
            "refused_busy": state.refused_busy,
        }

    @app.get("/api/models", summary="The models this server holds, and its upload limits")
    async def api_models() -> dict[str, Any]:
        return {
            "models": [describe_model(mid, p) for mid, p in state.models.items()],
            "default": state.default_model,
            "limits": {"max_upload_bytes": state.max_upload_bytes, "max_pixels": state.max_pixels},
        }

    @app.post(
        SEGMENT_PATH,
        response_model=SegmentResult,
        response_model_exclude_none=True,
        summary="Segment one image: mask, probability map, measurements",
        responses={
            413: {"description": "file over the byte limit, or image over the pixel limit"},
            415: {"description": "the upload is not declared as an image"},
            422: {"description": "empty, truncated, corrupt or non-image file; bad model, threshold or pixel size"},
            503: {"description": "all inference threads and queue places taken; retry"},
        },
    )
    async def segment(
        request: Request,
        image: Annotated[UploadFile, File(description="the image (PNG, JPEG, BMP, TIFF, GIF, WebP)")],
        model: Annotated[str | None, Form(description="model id (default: the server's first)")] = None,
        threshold: Annotated[float | None, Form(description="probability threshold in (0, 1)")] = None,
        pixel_size: Annotated[float | None, Form(description="millimetres per pixel, for mm measurements")] = None,
        include_image: Annotated[bool, Form(description="also return the decoded image as JPEG")] = False,
    ) -> Any:
        start = time.perf_counter()
        name = _clean_name(image.filename)
        mid = model or state.default_model
        if mid not in state.models:
            return _error(422, f"unknown model {mid[:80]!r}; this server holds: {', '.join(state.models)}")
        predictor = state.models[mid]
        if threshold is not None and not (0.0 < threshold < 1.0):
            return _error(422, f"threshold must be in (0, 1), got {threshold}")
        if pixel_size is not None and not (0.0 < pixel_size < 1e3):
            return _error(422, f"pixel_size must be a positive number of millimetres per pixel, got {pixel_size}")
        content_type = (image.content_type or "").split(";")[0].strip().lower()
        if content_type and not content_type.startswith(ACCEPTED_CONTENT_TYPES):
            return _error(415, f"{name}: only image files are accepted (the upload is declared as {content_type})")
        data = await image.read(state.max_upload_bytes + 1)
        if len(data) > state.max_upload_bytes:
            return _error(413, f"{name}: file is over the upload limit of {state.max_upload_bytes} bytes")
        slot: _Slot | None = request.scope.get("lesionseg.slot")
        loop = asyncio.get_running_loop()
        job = state.executor.submit(
            _segment_sync,
            predictor,
            data,
            name,
            state.max_pixels,
            predictor.prob_threshold if threshold is None else float(threshold),
            pixel_size,
            include_image,
            time.perf_counter(),
        )
        if slot is not None:
            slot.hold()
            job.add_done_callback(lambda _: loop.call_soon_threadsafe(slot.release))
        try:
            result = await asyncio.wrap_future(job)
        except UploadError as err:
            return _error(err.status, err.message)
        except Exception as err:
            _logger.exception("segmentation of %s failed", name)
            return _error(500, f"{name}: segmentation failed ({type(err).__name__}: {err})")
        result["model"] = mid
        result["timings_ms"]["total"] = round(1e3 * (time.perf_counter() - start), 2)
        state.served += 1
        return result

    return app
