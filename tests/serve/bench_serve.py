"""Load test: 16 concurrent clients on ``modnet-tools serve`` for 60 s vs the IR's raw throughput.

Run by hand (not collected by pytest: the name does not start with ``test_``)::

    .venv/bin/python tests/serve/bench_serve.py                       # converted model, or a random one
    .venv/bin/python tests/serve/bench_serve.py --clients 16 --seconds 60 --performance latency,throughput

For each ``--performance`` mode the real server is started (``python -m toolkit serve --port 0``
in a subprocess, on 127.0.0.1). Then, one after the other so that they do not share the CPU:
"raw" is the IR alone in this process, compiled as the server compiles it (same hint,
precision and number of requests), pre-made 1x3x512x512 tensors through its asynchronous pool;
"served" is ``--clients`` threads each POSTing a 1280x720 JPEG to ``/v1/matte`` (a PNG matte
back) in a loop for ``--seconds``. Raw is measured before and after the load and averaged, and
the served images/s is given as a ratio of it, with the p50 and p99 latency of the answers.

Every answer is counted: 200s, 503s (the documented "queue full, retry after"; the client
waits ``Retry-After`` and retries, as a well-behaved client would), and anything else, which is
an error. The script exits 1 if there was any error.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import httpx
import numpy as np
import openvino as ov

from tests.perf.bench_infer import _model
from tests.serve.fixtures import start_server
from toolkit.matting.runtime import IRModel, parse_precision
from toolkit.paths import sample_image


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    busy: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _photo() -> bytes:
    base = cv2.imread(str(sample_image()), cv2.IMREAD_COLOR)
    canvas = cv2.resize(base, None, fx=2.5, fy=1.41)[:720, :1280]
    ok, data = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return data.tobytes()


def _raw(xml: Path, performance: str, precision: str, requests: int, seconds: float) -> float:
    """Images/s of the IR alone, compiled as the server compiles it."""
    model = IRModel(xml, precision=parse_precision(precision), performance=performance)  # type: ignore[arg-type]
    compiled = model.compiled(model.fixed_size or (512, 512))
    pool = ov.AsyncInferQueue(compiled, requests)
    h, w = model.fixed_size or (512, 512)
    tensors = [
        np.random.default_rng(i).uniform(0, 255, (1, 3, h, w)).astype(np.float32) for i in range(4)
    ]
    for t in tensors:  # warm-up
        pool.start_async({0: t})
    pool.wait_all()
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        pool.start_async({0: tensors[done % 4]})
        done += 1
    pool.wait_all()
    return done / (time.perf_counter() - start)


def _client(url: str, photo: bytes, until: float, tally: Tally) -> None:
    with httpx.Client(timeout=120) as client:
        while time.perf_counter() < until:
            started = time.perf_counter()
            try:
                r = client.post(
                    f"{url}/v1/matte", content=photo, headers={"Content-Type": "image/jpeg"}
                )
            except httpx.HTTPError as exc:
                with tally.lock:
                    tally.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            elapsed = time.perf_counter() - started
            with tally.lock:
                if r.status_code == 200 and r.content.startswith(b"\x89PNG"):
                    tally.latencies.append(elapsed)
                elif r.status_code == 503:
                    tally.busy += 1
                else:
                    tally.errors.append(f"{r.status_code}: {r.text[:200]}")
            if r.status_code == 503:
                time.sleep(float(r.headers.get("retry-after", "1")))


def _load(url: str, clients: int, seconds: float) -> tuple[Tally, float]:
    photo = _photo()
    httpx.post(
        f"{url}/v1/matte", content=photo, headers={"Content-Type": "image/jpeg"}, timeout=120
    )
    tally = Tally()
    start = time.perf_counter()
    until = start + seconds
    threads = [
        threading.Thread(target=_client, args=(url, photo, until, tally)) for _ in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="IR .xml (default: converted or random)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--raw-seconds", type=float, default=15.0, help="each raw measurement")
    parser.add_argument("--performance", default="latency,throughput")
    parser.add_argument("--precision", default="f32", help="inference precision")
    parser.add_argument("--max-queue", type=int, default=32, help="the server's --max-queue")
    args = parser.parse_args()

    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        xml = _model(args.model, work)
        print(
            f"IR {xml}\n{args.clients} clients x {args.seconds:.0f} s, 1280x720 JPEG in, PNG matte "
            f"out, --max-queue {args.max_queue}, inference precision {args.precision}"
        )
        for performance in args.performance.split(","):
            server = start_server(
                work,
                work,
                "--model",
                str(xml),
                "--performance",
                performance,
                "--inference-precision",
                args.precision,
                "--max-queue",
                str(args.max_queue),
                "--request-timeout",
                "120",
            )
            try:
                requests = int(server.output().split(" requests in flight")[0].rsplit(", ", 1)[1])
                raw_before = _raw(xml, performance, args.precision, requests, args.raw_seconds)
                tally, wall = _load(server.url, args.clients, args.seconds)
                raw_after = _raw(xml, performance, args.precision, requests, args.raw_seconds)
            finally:
                code = server.stop()
            raw = (raw_before + raw_after) / 2
            served = len(tally.latencies) / wall
            lat = sorted(tally.latencies)
            p50 = statistics.median(lat) if lat else float("nan")
            p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
            print(
                f"{performance:>10}: raw IR {raw:6.2f} img/s (before {raw_before:.2f}, after "
                f"{raw_after:.2f}, {requests} requests)  served {served:6.2f} img/s  ratio "
                f"{served / raw:.2f}  p50 {1000 * p50:.0f} ms  p99 {1000 * p99:.0f} ms  "
                f"answers {len(lat)} ok, {tally.busy} 503, {len(tally.errors)} errors  "
                f"(server exit {code})"
            )
            for error in tally.errors[:5]:
                print(f"   error: {error}")
            failed = failed or bool(tally.errors) or code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
