"""The API under a real uvicorn, over raw sockets: stalled bodies, clients that leave, the default model.

What a test client cannot show: a connection that sends its headers and then nothing, and a client that closes its
socket while its image waits for a thread.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import uuid

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from lesionseg.serve import create_app  # noqa: E402

from .conftest import blob_image, encode, live_server  # noqa: E402


def _multipart(data: bytes, name: str = "lesion.png") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _request_head(port: int, ctype: str, length: int) -> bytes:
    return (
        f"POST /api/segment HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _post(host: str, port: int, body: bytes, ctype: str, timeout: float = 60) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/api/segment", body=body, headers={"Content-Type": ctype})
        res = conn.getresponse()
        return res.status, json.loads(res.read())
    finally:
        conn.close()


def _health(host: str, port: int) -> dict:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def _wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class _Gated:
    """A predictor whose model call waits for a gate and counts the images that reach it."""

    def __init__(self, inner, gate: threading.Event) -> None:
        self._inner, self._gate = inner, gate
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def predict(self, images):
        self.calls += 1
        if not self._gate.wait(30):
            raise TimeoutError("gate never opened")
        return self._inner.predict(images)


def test_stalled_bodies_hold_no_place_and_time_out(predictor):
    # One place in all: before the fix, the first stalled body took it and every other request got a 503.
    app = create_app({"skin": predictor}, threads=1, queue_size=0, body_timeout=2.0)
    body, ctype = _multipart(encode(blob_image()[0]))
    with live_server(app) as (host, port):
        stalled = []
        for _ in range(3):
            sock = socket.create_connection((host, port), timeout=15)
            sock.sendall(_request_head(port, ctype, len(body)) + body[:100])  # headers and a little, then silence
            stalled.append(sock)
        try:
            time.sleep(0.3)
            t0 = time.monotonic()
            status, answer = _post(host, port, body, ctype)
            assert status == 200, answer
            assert time.monotonic() - t0 < 1.9, "the normal request waited for the stalled ones"
            assert _health(host, port)["busy"] == 0
            for sock in stalled:  # each is answered 408 once its body timeout has passed, and its connection closed
                raw = b""
                while chunk := sock.recv(65536):
                    raw += chunk
                head, _, payload = raw.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 408"), raw[:200]
                assert b"connection: close" in head.lower()
                message = json.loads(payload)
                assert message["status"] == 408 and "did not arrive within 2 s" in message["message"]
        finally:
            for sock in stalled:
                sock.close()
        health = _health(host, port)
        assert health["timed_out"] == 3 and health["busy"] == 0 and health["served"] == 1


def test_queued_work_of_a_client_that_left_never_starts(predictor):
    gate = threading.Event()
    gated = _Gated(predictor, gate)
    app = create_app({"skin": gated}, threads=1, queue_size=4)
    body, ctype = _multipart(encode(blob_image()[0]))
    with live_server(app) as (host, port):
        first: list[int] = []
        holder = threading.Thread(target=lambda: first.append(_post(host, port, body, ctype)[0]))
        holder.start()
        try:
            assert _wait_for(lambda: gated.calls == 1), "the first image never reached the model"
            # A second client sends its whole upload, waits until it is queued behind the first, and leaves.
            sock = socket.create_connection((host, port), timeout=15)
            sock.sendall(_request_head(port, ctype, len(body)) + body)
            assert _wait_for(lambda: _health(host, port)["busy"] == 2), "the second image was never queued"
            sock.close()
            _wait_for(lambda: _health(host, port).get("dropped") == 1, timeout=5)  # checked below, after the gate
        finally:
            gate.set()
            holder.join(60)
        assert first == [200]
        assert _wait_for(lambda: _health(host, port)["busy"] == 0)
        time.sleep(0.3)  # room for a wrongly started job to reach the model
        assert gated.calls == 1, "the departed client's image was segmented"
        health = _health(host, port)
        assert health["served"] == 1 and health["dropped"] == 1 and health["busy"] == 0


def test_default_model_is_skin_when_served(predictor):
    image = encode(blob_image()[0])
    body, ctype = _multipart(image)
    # Shipped models load in tag order (polyp before skin): the default must still be skin, as README and predict say.
    with live_server(create_app({"polyp": predictor, "skin": predictor})) as (host, port):
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("GET", "/api/models")
        assert json.loads(conn.getresponse().read())["default"] == "skin"
        conn.close()
        status, answer = _post(host, port, body, ctype)
        assert status == 200 and answer["model"] == "skin"
    with live_server(create_app({"polyp": predictor, "mine": predictor})) as (host, port):
        status, answer = _post(host, port, body, ctype)
        assert status == 200 and answer["model"] == "polyp"
