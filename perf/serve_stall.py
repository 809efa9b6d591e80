"""Stalled, abandoned and flat-but-huge uploads against ``lesionseg serve``, on 127.0.0.1 only.

Each probe starts its own server (``lesionseg serve --model skin --workers-threads 2 --queue-size 16`` plus
``--server-arg`` options, from the sources on this interpreter's path) so that its memory peak is its own, and every
loop is bounded by time and stops by itself:

- ``stall``: N connections send the headers of an upload and then nothing, while 2 clients post a PH2 image for
  ``--seconds``: 200s and 503s and the 200s' latency; then when (and with what) each stalled connection was answered.
- ``slow``: one upload sends half its body and stalls: how long the server holds it, and whether a place is held.
- ``abandon``: N clients each send a flat 36-megapixel PNG and close the connection (at once, or ``--abandon-after``
  seconds later, when their images are queued): the server's CPU seconds and memory until it is idle again, and how
  long that takes.
- ``flat``: one flat 36-megapixel PNG, waited for: time, server CPU seconds and the server's peak memory.

Server CPU and memory are read from /proc (Linux). Run from the repository root:

    python perf/serve_stall.py                                 # all four probes
    python perf/serve_stall.py --probe stall --server-arg=--body-timeout=5
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import select
import socket
import sys
import threading
import time
from pathlib import Path

from PIL import Image
from serve_load import _default_image, _free_port, _get, _multipart, run_phase, start_server, stop_server

PROBES = ("stall", "slow", "abandon", "flat")
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS since the process started) in MB."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def _flat_png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (181, 122, 94)).save(buf, "PNG", compress_level=9)
    return buf.getvalue()


def _head(host: str, port: int, ctype: str, length: int) -> bytes:
    return (
        f"POST /api/segment HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _await_answers(socks: list[socket.socket], opened: float, wait: float) -> list[tuple[str, float | None]]:
    """(status line or 'no answer', seconds from opening to the answer) per socket, waiting at most ``wait`` s."""
    answers: list[tuple[str, float | None]] = [("no answer", None)] * len(socks)
    pending = dict(enumerate(socks))
    deadline = opened + wait
    while pending and time.monotonic() < deadline:
        ready, _, _ = select.select(list(pending.values()), [], [], max(0.0, deadline - time.monotonic()))
        for sock in ready:
            i = next(k for k, s in pending.items() if s is sock)
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            line = data.split(b"\r\n", 1)[0].decode("latin-1") if data else "closed without an answer"
            answers[i] = (line, round(time.monotonic() - opened, 1))
            del pending[i]
    return answers


def _summary(answers: list[tuple[str, float | None]]) -> str:
    counts: dict[str, list[float]] = {}
    for line, at in answers:
        counts.setdefault(line, []).append(at if at is not None else float("nan"))
    parts = []
    for line, times in sorted(counts.items()):
        when = f" after {min(times):.1f}-{max(times):.1f} s" if times[0] == times[0] else ""
        parts.append(f"{len(times)} x {line!r}{when}")
    return "; ".join(parts)


def probe_stall(host, port, server, args, body, ctype) -> dict:
    socks = []
    opened = time.monotonic()
    for _ in range(args.stalled):
        sock = socket.create_connection((host, port), timeout=10)
        sock.sendall(_head(host, port, ctype, len(body)))  # headers, then silence
        socks.append(sock)
    time.sleep(0.5)
    busy_during = _get(host, port, "/healthz")[1].get("busy")
    row = run_phase(host, port, body, ctype, 2, args.seconds, 100_000, 30.0, 0.1)
    answers = _await_answers(socks, opened, args.stall_wait)
    for sock in socks:
        sock.close()
    health = _get(host, port, "/healthz")[1]
    print(
        f"stall: {args.stalled} connections sent headers and stalled; meanwhile 2 clients for {row['seconds']} s: "
        f"{row['ok']} x 200 (p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms, max {row['max_ms']} ms), "
        f"{row['busy_503']} x 503, {row['errors']} other; /healthz busy {busy_during} while they stalled\n"
        f"  stalled connections (watched {args.stall_wait:g} s): {_summary(answers)}\n"
        f"  after: busy {health.get('busy')}, timed_out {health.get('timed_out', '-')}",
        flush=True,
    )
    return {"normal": row, "busy_while_stalled": busy_during, "stalled_answers": answers, "healthz": health}


def probe_slow(host, port, server, args, body, ctype) -> dict:
    sock = socket.create_connection((host, port), timeout=10)
    opened = time.monotonic()
    sock.sendall(_head(host, port, ctype, len(body)) + body[: len(body) // 2])
    time.sleep(1.0)
    busy_held = _get(host, port, "/healthz")[1].get("busy")
    (answer,) = _await_answers([sock], opened, args.stall_wait)
    sock.close()
    time.sleep(0.2)
    health = _get(host, port, "/healthz")[1]
    print(
        f"slow: one upload sent half its body and stalled: /healthz busy {busy_held} after 1 s; "
        f"answer: {_summary([answer])} (watched {args.stall_wait:g} s); after: busy {health.get('busy')}",
        flush=True,
    )
    return {"busy_held": busy_held, "answer": answer, "healthz": health}


def probe_abandon(host, port, server, args, body, ctype) -> dict:
    pid = server.pid
    cpu0, (rss0, _) = _cpu_seconds(pid), _memory_mb(pid)
    start = time.monotonic()
    socks = []
    for _ in range(args.abandoned):
        sock = socket.create_connection((host, port), timeout=10)
        sock.sendall(_head(host, port, ctype, len(body)) + body)  # the whole upload, then gone
        socks.append(sock)
    sent = time.monotonic() - start
    time.sleep(args.abandon_after)
    for sock in socks:
        sock.close()
    peak_rss, last_cpu, last_change, idle_at = rss0, cpu0, time.monotonic(), None
    while time.monotonic() - start < args.idle_wait:
        time.sleep(0.2)
        cpu, (rss, _) = _cpu_seconds(pid), _memory_mb(pid)
        peak_rss = max(peak_rss, rss)
        if cpu - last_cpu > 0.05:
            last_cpu, last_change = cpu, time.monotonic()
        elif time.monotonic() - last_change > 1.0 and _get(host, port, "/healthz")[1].get("busy") == 0:
            idle_at = last_change - start
            break
    cpu = _cpu_seconds(pid) - cpu0
    health = _get(host, port, "/healthz")[1]
    idle = (
        f"idle {idle_at:.1f} s after the first upload" if idle_at is not None else f"not idle after {args.idle_wait} s"
    )
    print(
        f"abandon: {args.abandoned} uploads of a {len(body) // 1024} KB flat {args.flat_mp:g}-MP PNG sent in "
        f"{sent:.2f} s and abandoned {args.abandon_after:g} s later: server {idle}, {cpu:.1f} CPU s, "
        f"RSS {rss0:.0f} MB before, peak {peak_rss:.0f} MB; /healthz served {health.get('served')}, "
        f"dropped {health.get('dropped', '-')}, busy {health.get('busy')}",
        flush=True,
    )
    return {"idle_after_s": idle_at, "cpu_s": round(cpu, 2), "rss_before_mb": rss0, "rss_peak_mb": peak_rss, **health}


def probe_flat(host, port, server, args, body, ctype) -> dict:
    pid = server.pid
    cpu0, (rss0, hwm0) = _cpu_seconds(pid), _memory_mb(pid)
    result: dict = {}

    def post() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        t0 = time.perf_counter()
        conn.request("POST", "/api/segment", body=body, headers={"Content-Type": ctype})
        res = conn.getresponse()
        result.update(status=res.status, body=json.loads(res.read()), seconds=time.perf_counter() - t0)
        conn.close()

    worker = threading.Thread(target=post)
    worker.start()
    peak = hwm0
    while worker.is_alive():
        worker.join(0.05)
        peak = max(peak, _memory_mb(pid)[0])
    status, answer, seconds = result["status"], result["body"], result["seconds"]
    cpu = _cpu_seconds(pid) - cpu0
    hwm = _memory_mb(pid)[1]
    mask = answer.get("mask_png", "")
    mask_size = Image.open(io.BytesIO(base64.b64decode(mask))).size if mask else None
    print(
        f"flat: one flat {args.flat_mp:g}-MP PNG of {len(body) // 1024} KB: {status} in {seconds:.2f} s, server "
        f"{cpu:.2f} CPU s, RSS {rss0:.0f} MB before, peak {max(peak, hwm):.0f} MB (+{max(peak, hwm) - rss0:.0f}); "
        f"timings_ms {answer.get('timings_ms')}; work_size {answer.get('work_size', '-')}; mask {mask_size}",
        flush=True,
    )
    return {
        "status": status,
        "seconds": round(seconds, 2),
        "cpu_s": round(cpu, 2),
        "rss_before_mb": rss0,
        "rss_peak_mb": max(peak, hwm),
        "timings_ms": answer.get("timings_ms"),
        "mask_size": mask_size,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--probe", action="append", choices=PROBES, help="repeatable (default: all four)")
    p.add_argument("--server-arg", action="append", default=[], help="extra `lesionseg serve` option (repeatable)")
    p.add_argument("--stalled", type=int, default=18, help="stalled connections (default 18: the 2 + 16 places)")
    p.add_argument("--seconds", type=float, default=15.0, help="normal traffic while they stall (default 15)")
    p.add_argument("--stall-wait", type=float, default=45.0, help="seconds to watch a stalled connection (45)")
    p.add_argument("--abandoned", type=int, default=18, help="abandoned uploads (default 18)")
    p.add_argument(
        "--abandon-after", type=float, default=0.0, help="seconds between sending and closing (default 0: at once)"
    )
    p.add_argument("--idle-wait", type=float, default=90.0, help="longest wait for the server to be idle (90)")
    p.add_argument("--flat-mp", type=float, default=36.0, help="megapixels of the flat PNG (default 36: 6000 x 6000)")
    p.add_argument("--image", type=Path, help="image for the normal requests (default: the first PH2 image)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    image = args.image or _default_image()
    normal, normal_type = _multipart(image)
    side = round((args.flat_mp * 1e6) ** 0.5)
    flat_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"lesionseg_flat_{side}.png"
    flat_path.write_bytes(_flat_png(side, side))
    flat, flat_type = _multipart(flat_path)
    print(f"normal image {image} ({len(normal)} bytes), flat PNG {side} x {side} ({flat_path.stat().st_size} bytes)")
    results = {}
    for name in args.probe or PROBES:
        host, port = "127.0.0.1", _free_port()
        server = start_server(host, port, ["skin"], 2, 16, args.server_arg)
        try:
            run_phase(host, port, normal, normal_type, 1, 60, 2, 60.0, 0.1)  # warm-up: the model's first calls
            body, ctype = (flat, flat_type) if name in ("abandon", "flat") else (normal, normal_type)
            fn = {"stall": probe_stall, "slow": probe_slow, "abandon": probe_abandon, "flat": probe_flat}[name]
            results[name] = fn(host, port, server, args, body, ctype)
        finally:
            stop_server(server)
    flat_path.unlink(missing_ok=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
