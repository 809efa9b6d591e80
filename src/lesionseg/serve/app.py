"""The FastAPI app: the page, ``POST /api/segment``, ``GET /api/models``, ``GET /healthz``.

A segmentation request costs the server nothing but a connection until its body has arrived: the body must arrive
within ``body_timeout`` seconds (else 408, connection closed) and stay under the upload limit (else 413, from its
Content-Length or while it streams). Only then is it admitted: past ``threads + queue_size`` jobs queued or running it
gets a 503 at once. Inference runs off the event loop in a bounded thread pool, on models loaded once at start, on at
most ``work_pixels`` of each image (see :mod:`lesionseg.serve.decode`). A client that goes away before its job starts
has the job dropped; a job already running finishes and is thrown away.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
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

from ..inference import LesionMeasurements, Predictor, apply_postprocessing, measure_lesion
from ..inference.trust import calibrated_threshold
from .decode import ACCEPTED_CONTENT_TYPES, UploadError, decode_upload
from .models import describe_model, load_models

__all__ = [
    "create_app",
    "SegmentResult",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MODEL",
    "DEFAULT_WORK_PIXELS",
    "PROBA_MAX_SIDE",
]

_logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000  # a 6688 x 4439 ISIC 2018 image is 29.7 M
# Images above this are reduced as they are decoded: the shipped models see 256 x 256, so 4 M (a 2448 x 1632 image)
# leaves the mask's border finer than the model's own output, and keeps a 40 M upload's post-processing near 0.3 s.
DEFAULT_WORK_PIXELS = 4_000_000
DEFAULT_BODY_TIMEOUT = 20.0  # seconds for a whole request body: 20 MB at 8 Mbit/s
DEFAULT_MODEL = "skin"  # the default when served, as for `lesionseg predict`
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
    measurements: dict[str, float | int] = Field(
        description="lesion measurements in the image's own pixels (mm with pixel_size)"
    )
    work_size: dict[str, int] = Field(
        description="width and height the mask was post-processed and measured at: the image's own size, or less for "
        "an image over the server's work limit (its measurements are then scaled to the image's own pixels)"
    )
    trust: dict[str, Any] = Field(
        default_factory=dict,
        description="how far to trust the mask: lesion_found, predicted_dice (estimate of the mask's Dice at the "
        "model's own threshold), low_confidence, ood_score and out_of_distribution (unlike the training images), and "
        "notes: the warnings in words ('unlike the training images', 'no lesion found', 'low confidence')",
    )
    pixel_size: float | None = Field(description="millimetres per pixel, when given")
    timings_ms: dict[str, float] = Field(description="queue, decode, inference, postprocess, encode, total")
    image_jpeg: str | None = Field(
        None, description="base64 JPEG of the decoded image (at work_size), when include_image is set"
    )


_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    499: "client_closed_request",
    500: "internal_error",
    503: "busy",
}
# Answers sent before the body has been read in full end the connection: its unread rest cannot start a next request.
_CLOSE = {"Connection": "close"}


def _error_body(status: int, message: str) -> dict[str, Any]:
    """Every error the API answers: ``{"error": short code, "message": what is wrong, "status": HTTP status}``."""
    return {"error": _ERROR_CODES.get(status, "error"), "message": message, "status": status}


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(_error_body(status, message), status_code=status, headers=headers)


class _ServerState:
    def __init__(
        self,
        models: dict[str, Predictor],
        threads: int,
        queue_size: int,
        max_upload_bytes: int,
        max_pixels: int,
        work_pixels: int,
        body_timeout: float,
    ) -> None:
        self.models = models
        self.default_model = DEFAULT_MODEL if DEFAULT_MODEL in models else next(iter(models))
        self.threads = threads
        self.capacity = threads + queue_size
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.work_pixels = work_pixels
        self.body_timeout = body_timeout
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lesionseg-infer")
        # Counters touched on the event loop only.
        self.busy = 0  # segmentation jobs queued or running
        self.served = 0
        self.refused_busy = 0
        self.timed_out = 0  # bodies that did not arrive within body_timeout
        self.dropped = 0  # jobs never started because their client had gone

    def release(self) -> None:
        self.busy -= 1


class _UploadGuard:
    """ASGI middleware in front of ``POST /api/segment``: the body size limit (413) and the body timeout (408).

    Admission (503) is the endpoint's, once the body has arrived: a client that sends headers and then nothing holds
    no place of the queue, only its connection, and that for ``body_timeout`` seconds at most.
    """

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
        length = dict(scope.get("headers", ())).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.body_limit:
            await self._send_error(
                send,
                413,
                f"request body of {int(length)} bytes is over the upload limit of {state.max_upload_bytes} bytes",
                _CLOSE,
            )
            return
        received = 0
        limit = self.body_limit
        timeout = state.body_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        body_done = False

        async def guarded_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # past the body, receive only waits for the client to disconnect
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:  # the builtin TimeoutError from Python 3.11 on, not on 3.10
                state.timed_out += 1
                # FastAPI re-raises an HTTPException met while reading the body; our handler makes it JSON.
                raise HTTPException(
                    408, f"the request body did not arrive within {timeout:g} s; send it again", _CLOSE
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(
                        413, f"request body is over the upload limit of {state.max_upload_bytes} bytes", _CLOSE
                    )
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        await self.app(scope, guarded_receive, send)


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


def _b64_png(array: np.ndarray, runs: bool = False) -> str:
    """Base64 of a fast PNG; ``runs`` for a mask, whose long runs of 0 and 255 RLE packs about 4x smaller as fast."""
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    if runs:
        params += [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    ok, buf = cv2.imencode(".png", array, params)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def _to_uint8(prob: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)


def _at_own_size(measurements: LesionMeasurements, scale: float) -> LesionMeasurements:
    """Measurements made on a mask reduced by ``scale`` (per side), in the image's own pixels."""
    lengths = {k: getattr(measurements, k) * scale for k in ("perimeter", "equivalent_diameter", "max_feret_diameter")}
    return dataclasses.replace(measurements, area=measurements.area * scale**2, **lengths)


def _segment_sync(
    predictor: Predictor,
    data: bytes,
    name: str,
    max_pixels: int,
    work_pixels: int,
    threshold: float,
    pixel_size: float | None,
    include_image: bool,
    submitted: float,
) -> dict[str, Any]:
    """Decode, predict, threshold, measure and encode one image (runs in a pool thread).

    Everything but the returned mask happens at the decoded size, at most ``work_pixels``; the mask is scaled up to
    the image's own size (nearest neighbour) and the measurements to its pixels.
    """
    t0 = time.perf_counter()
    decoded = decode_upload(data, name, max_pixels=max_pixels, channels=predictor.in_channels, work_pixels=work_pixels)
    image = decoded.image
    h, w = image.shape[:2]
    t1 = time.perf_counter()
    prediction = predictor.predict([image])[0]
    t2 = time.perf_counter()
    if threshold == predictor.prob_threshold:
        mask = prediction.mask.copy()  # the model's own threshold: the predictor's mask, cut at T = 1
    else:
        # The same cut on the calibrated probability, made on the T = 1 map (no full-size temperature pass).
        raw_threshold = calibrated_threshold(threshold, 1.0 / predictor.temperature)
        mask = apply_postprocessing((prediction.raw_prob > raw_threshold).astype(np.uint8), predictor.postprocess)
    # The one estimator `lesionseg predict` and `measure_lesion` use; its perimeter is measured at a scale relative to
    # the lesion, so measuring at the work size and scaling to the image's pixels gives the image's measurements.
    measured = measure_lesion(mask)
    if decoded.reduced:
        measured = _at_own_size(measured, math.sqrt(decoded.width * decoded.height / (w * h)))
    trust = prediction.trust.to_dict()
    trust["lesion_found"] = bool(mask.any())  # of the mask returned, whatever its threshold
    trust["notes"] = "; ".join(dataclasses.replace(prediction.trust, lesion_found=trust["lesion_found"]).notes())
    t3 = time.perf_counter()
    small = _to_uint8(prediction.small_prob(PROBA_MAX_SIDE))
    mask *= np.uint8(255)
    if decoded.reduced:
        mask = cv2.resize(mask, (decoded.width, decoded.height), interpolation=cv2.INTER_NEAREST)
    out: dict[str, Any] = {
        "image": {"name": name, "width": decoded.width, "height": decoded.height},
        "threshold": threshold,
        "temperature": predictor.temperature,
        "postprocess": list(predictor.postprocess),
        "mask_png": _b64_png(mask, runs=True),
        "probability": {"png": _b64_png(small), "width": int(small.shape[1]), "height": int(small.shape[0])},
        "measurements": measured.to_dict(pixel_size),
        "work_size": {"width": int(w), "height": int(h)},
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


async def _client_gone(request: Request) -> None:
    """Return when the client disconnects (the body has been read: the server's receive now waits for that only)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # a server that answers anything else here is not waited on in a busy loop


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
    work_pixels: int = DEFAULT_WORK_PIXELS,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    backend: str = "auto",
) -> FastAPI:
    """Build the app over models loaded once.

    Args:
        models: ``{id: Predictor}``, or shipped tags / checkpoint paths to load (see
            :func:`lesionseg.serve.models.load_models`); None serves every shipped model. The default model (for a
            request without ``model``, and the page's first choice) is ``skin`` when served, else the first.
        max_upload_bytes: largest image file accepted (413 above it, checked before the body is read in full).
        max_pixels: largest width x height accepted (413 above it, checked from the header before decoding).
        threads: inference threads (the pool that runs decode, model and measurements).
        queue_size: jobs that may wait for a thread; past ``threads + queue_size`` queued or running, 503 at once.
        cors_origins: origins allowed to call the API from other pages; None or empty: no CORS headers.
        device: torch device for models loaded here.
        work_pixels: an image with more pixels is reduced to at most this many as it is decoded; the model, the
            post-processing and the measurements work on that, the mask is returned at the image's own size.
        body_timeout: seconds a request's whole body may take to arrive (408 after them).
        backend: backend of models loaded here: ``auto`` (onnxruntime on the CPU where the model has an ONNX graph,
            so that the server never imports torch; else torch), ``torch`` or ``onnxruntime``.

    Raises:
        ValueError: a bad limit or no model to serve.
    """
    _check_limits(max_upload_bytes, max_pixels, work_pixels, threads, queue_size, body_timeout)
    if models is None or not isinstance(models, Mapping):
        # Each pool thread runs its own model call: the cores are split between them rather than oversubscribed.
        models = load_models(models, device=device, backend=backend, threads=max(1, (os.cpu_count() or 1) // threads))
    if not models:
        raise ValueError("no model to serve")
    state = _ServerState(
        dict(models), threads, queue_size, max_upload_bytes, max_pixels, work_pixels, float(body_timeout)
    )

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
    _add_error_handlers(app)
    app.add_middleware(_SecurityHeaders)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"], allow_headers=["*"]
        )
    # Added last, so it runs first: a refused request never reaches the form parser.
    app.add_middleware(_UploadGuard, state=state)
    _add_info_routes(app, state)
    _add_segment_route(app, state)
    return app


def _check_limits(
    max_upload_bytes: int, max_pixels: int, work_pixels: int, threads: int, queue_size: int, body_timeout: float
) -> None:
    """Refuse a limit of :func:`create_app` that is not a whole number in range (or a body timeout <= 0)."""
    for label, value, low in (
        ("max_upload_bytes", max_upload_bytes, 1),
        ("max_pixels", max_pixels, 1),
        ("work_pixels", work_pixels, 1),
        ("threads", threads, 1),
        ("queue_size", queue_size, 0),
    ):
        if int(value) != value or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
    if not (isinstance(body_timeout, int | float) and math.isfinite(body_timeout) and body_timeout > 0):
        raise ValueError(f"body_timeout must be a number of seconds > 0, got {body_timeout!r}")


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as JSON ``{"error", "message", "status"}``: HTTP errors, invalid fields, and anything unexpected
    (logged, answered 500, the server going on)."""

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


def _add_info_routes(app: FastAPI, state: _ServerState) -> None:
    """The page and its static files, ``/healthz`` (liveness and load) and ``/api/models``."""

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
            "timed_out": state.timed_out,
            "dropped": state.dropped,
        }

    @app.get("/api/models", summary="The models this server holds, and its upload limits")
    async def api_models() -> dict[str, Any]:
        return {
            "models": [describe_model(mid, p) for mid, p in state.models.items()],
            "default": state.default_model,
            "limits": {
                "max_upload_bytes": state.max_upload_bytes,
                "max_pixels": state.max_pixels,
                "work_pixels": state.work_pixels,
                "body_timeout_s": state.body_timeout,
            },
        }


async def _run_job(
    request: Request, state: _ServerState, args: tuple[Any, ...], name: str
) -> dict[str, Any] | JSONResponse:
    """``_segment_sync(*args)`` in the pool, holding one place until it is done; dropped if the client leaves first.

    Returns the result, or the error response (the client gone, a refused image, a failure).
    """
    loop = asyncio.get_running_loop()
    state.busy += 1
    job = state.executor.submit(_segment_sync, *args, time.perf_counter())
    # The place is held until the job is done or dropped, so the pool's queue stays bounded by the capacity.
    job.add_done_callback(lambda _: loop.call_soon_threadsafe(state.release))
    waiting = asyncio.wrap_future(job)
    # A job still running when its client leaves finishes unobserved: read its outcome so nothing is logged.
    waiting.add_done_callback(lambda f: f.cancelled() or f.exception())
    gone = asyncio.ensure_future(_client_gone(request))
    dropped = False
    try:
        await asyncio.wait((waiting, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not waiting.done():  # the client left (or the server stops): a queued job never starts
            dropped = job.cancel()
            state.dropped += dropped
    if not waiting.done():
        what = "its queued image was dropped" if dropped else "its image was being segmented"
        return _error(499, f"{name}: the client closed the connection; {what}")
    try:
        return waiting.result()
    except UploadError as err:
        return _error(err.status, err.message)
    except Exception as err:
        _logger.exception("segmentation of %s failed", name)
        return _error(500, f"{name}: segmentation failed ({type(err).__name__}: {err})")


def _add_segment_route(app: FastAPI, state: _ServerState) -> None:
    """``POST /api/segment``: check the fields, take a place in the bounded pool (or 503), segment, answer."""

    @app.post(
        SEGMENT_PATH,
        response_model=SegmentResult,
        response_model_exclude_none=True,
        summary="Segment one image: mask, probability map, measurements",
        responses={
            408: {"description": "the request body did not arrive within the server's body timeout"},
            413: {"description": "file over the byte limit, or image over the pixel limit"},
            415: {"description": "the upload is not declared as an image"},
            422: {"description": "empty, truncated, corrupt or non-image file; bad model, threshold or pixel size"},
            503: {"description": "all inference threads and queue places taken; retry"},
        },
    )
    async def segment(
        request: Request,
        image: Annotated[UploadFile, File(description="the image (PNG, JPEG, BMP, TIFF, GIF, WebP)")],
        model: Annotated[str | None, Form(description="model id (default: skin when served, else the first)")] = None,
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
        # The body is all here. A client that has already gone gets no job; else the job takes a place or gets a 503.
        if await request.is_disconnected():
            state.dropped += 1
            return _error(499, f"{name}: the client closed the connection before its image was queued")
        if state.busy >= state.capacity:
            state.refused_busy += 1
            return _error(
                503,
                f"server busy: {state.busy} images queued or being segmented (limit {state.capacity}); retry shortly",
                {"Retry-After": "1"},
            )
        job = (
            predictor,
            data,
            name,
            state.max_pixels,
            state.work_pixels,
            predictor.prob_threshold if threshold is None else float(threshold),
            pixel_size,
            include_image,
        )
        result = await _run_job(request, state, job, name)
        if isinstance(result, JSONResponse):
            return result
        result["model"] = mid
        result["timings_ms"]["total"] = round(1e3 * (time.perf_counter() - start), 2)
        state.served += 1
        return result
