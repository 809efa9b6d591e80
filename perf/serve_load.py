"""Load on ``lesionseg serve``: N concurrent clients for T seconds each against 127.0.0.1.

Each client is a thread with one keep-alive connection posting the same image to ``/api/segment`` in a loop, bounded
by the phase's duration and a total request cap. A 503 (server busy) is counted apart from errors; the client waits
``--busy-wait`` seconds before trying again. After the phases, ``/healthz`` is read to show the server still answers.

Prints, per phase: requests/s (answered 200), p50/p95/p99 latency of the 200s, the 503 count (and their p95 latency, to
show they are quick), and the error count (any other status, timeouts, broken connections).

    # start a server on a free port with the given model, then 8 clients for 60 s and 32 clients for 30 s:
    python perf/serve_load.py --model skin --phase 8:60 --phase 32:30
    # or against a running server:
    python perf/serve_load.py --url http://127.0.0.1:8000 --phase 8:60
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PH2 = REPO.parent / "shared" / "data" / "ph2"


def _default_image() -> Path:
    found = sorted(PH2.glob("**/IMD*_Dermoscopic_Image/IMD*.*"))
    if not found:
        sys.exit(f"no PH2 image under {PH2}; pass --image PATH")
    return found[0]


def _multipart(path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    ctype = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp"}.get(
        path.suffix.lower(), "application/octet-stream"
    )
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
        f"Content-Type: {ctype}\r\n\r\n"
    ).encode()
    return head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(host: str, port: int, path: str, timeout: float = 10.0) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        res = conn.getresponse()
        return res.status, json.loads(res.read() or b"{}")
    finally:
        conn.close()


def start_server(
    host: str, port: int, models: list[str], threads: int, queue_size: int, extra: list[str] | tuple[str, ...] = ()
) -> subprocess.Popen:
    """Start ``lesionseg serve`` (the sources on this interpreter's path) and wait until /healthz answers."""
    cmd = [sys.executable, "-m", "lesionseg", "serve", "--host", host, "--port", str(port), "--no-access-log"]
    cmd += [f"--model={m}" for m in models]
    cmd += ["--workers-threads", str(threads), "--queue-size", str(queue_size), *extra]
    print("server:", " ".join(cmd), flush=True)
    # The log goes to a file, not a pipe: a server that logs much would block on a full pipe.
    with tempfile.TemporaryFile(mode="w+") as log:
        server = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log, text=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                if _get(host, port, "/healthz", timeout=2)[0] == 200:
                    return server
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                stop_server(server)
                log.seek(0)
                sys.exit(f"server did not start:\n{log.read()}")
            time.sleep(0.2)


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(15)


def _client(host, port, body, ctype, deadline, budget, timeout, busy_wait, out, lock):
    conn = None
    while time.monotonic() < deadline:
        with lock:
            if budget[0] <= 0:
                return
            budget[0] -= 1
        if conn is None:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/api/segment", body=body, headers={"Content-Type": ctype})
            res = conn.getresponse()
            res.read()
            status = res.status
            # A refused request's body is left unread by the server: start the next one on a fresh connection.
            if status != 200 or res.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException):
            status = -1  # timeout or broken connection
            conn.close()
            conn = None
        out.append((status, time.perf_counter() - t0))
        if status == 503:
            time.sleep(busy_wait)
    if conn is not None:
        conn.close()


def run_phase(host, port, body, ctype, clients, seconds, max_requests, timeout, busy_wait) -> dict:
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    budget = [max_requests]
    start = time.monotonic()
    deadline = start + seconds
    threads = [
        threading.Thread(
            target=_client, args=(host, port, body, ctype, deadline, budget, timeout, busy_wait, results, lock)
        )
        for _ in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + timeout + 5)
    elapsed = time.monotonic() - start
    ok = np.array([lat for s, lat in results if s == 200]) * 1e3
    busy = np.array([lat for s, lat in results if s == 503]) * 1e3
    errors = [s for s, _ in results if s not in (200, 503)]

    def pct(a, q):
        return round(float(np.percentile(a, q)), 1) if len(a) else None

    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": len(results),
        "ok": len(ok),
        "requests_per_s": round(len(ok) / elapsed, 2),
        "p50_ms": pct(ok, 50),
        "p95_ms": pct(ok, 95),
        "p99_ms": pct(ok, 99),
        "max_ms": round(float(ok.max()), 1) if len(ok) else None,
        "busy_503": len(busy),
        "busy_503_p95_ms": pct(busy, 95),
        "errors": len(errors),
        "error_statuses": sorted(set(errors)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="a running server (default: start one with --model)")
    p.add_argument("--model", action="append", default=[], help="model(s) for the server started here (default skin)")
    p.add_argument("--workers-threads", type=int, default=2, help="inference threads of the server started here")
    p.add_argument("--queue-size", type=int, default=16, help="queue of the server started here")
    p.add_argument(
        "--phase", action="append", default=[], metavar="CLIENTS:SECONDS", help="repeatable (default 8:60 32:30)"
    )
    p.add_argument("--max-requests", type=int, default=20000, help="cap on requests per phase")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    p.add_argument("--busy-wait", type=float, default=0.1, help="seconds a client waits after a 503")
    p.add_argument("--image", type=Path, help="image to post (default: the first PH2 image)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    phases = [tuple(int(x) for x in ph.split(":")) for ph in (args.phase or ["8:60", "32:30"])]
    image = args.image or _default_image()
    body, ctype = _multipart(image)

    server = None
    if args.url:
        parsed = urllib.parse.urlparse(args.url)
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    else:
        host, port = "127.0.0.1", _free_port()
        server = start_server(host, port, args.model or ["skin"], args.workers_threads, args.queue_size)
    try:
        print(f"image {image} ({len(body)} bytes posted), server {host}:{port}")
        # One warm-up request so that the first phase does not time the model's first call.
        run_phase(host, port, body, ctype, 1, 60, 2, args.timeout, args.busy_wait)
        rows = []
        for clients, seconds in phases:
            row = run_phase(host, port, body, ctype, clients, seconds, args.max_requests, args.timeout, args.busy_wait)
            rows.append(row)
            print(
                f"{clients:3d} clients {row['seconds']:5.1f} s: {row['ok']:5d} ok, {row['requests_per_s']:6.2f} req/s, "
                f"p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms, p99 {row['p99_ms']} ms, max {row['max_ms']} ms; "
                f"503: {row['busy_503']} (p95 {row['busy_503_p95_ms']} ms); errors: {row['errors']} "
                f"{row['error_statuses'] or ''}",
                flush=True,
            )
        status, health = _get(host, port, "/healthz")
        print(f"after: GET /healthz -> {status} {json.dumps(health)}")
        if args.json:
            args.json.write_text(json.dumps({"image": str(image), "phases": rows, "healthz": health}, indent=1) + "\n")
        return 0 if status == 200 else 1
    finally:
        if server is not None:
            stop_server(server)


if __name__ == "__main__":
    sys.exit(main())
