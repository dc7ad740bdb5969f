"""Benchmark: images/s of ``infer`` locally and on Ray with one and two one-CPU workers, one run.

Not collected by pytest (the name does not start with ``test_``). On one machine Ray must stay
on loopback, so run it as root in a private network namespace::

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python tests/cluster/bench_ray.py'

It makes 200 different 640x480 JPEGs (or takes ``--images DIR``), converts a random-weight
checkpoint if no model is given, starts a Ray cluster of a head with no CPUs and two worker
nodes of one CPU each (``ray.cluster_utils.Cluster``), and runs the real CLI four times, side
by side: local ``infer`` (every core), local ``infer`` pinned to one core, ``--ray
--ray-workers 1`` and ``--ray --ray-workers 2``. Each row is the command's own summary
(images over the run's seconds, model compilation and worker start-up included) and its wall
time; the ratios show Ray's overhead (one worker vs one local core) and its scaling (two
workers vs one).

On a real cluster (``ray start`` on each node; the images, the IR and the output folder on a
filesystem every node mounts at the same path), skip the local cluster with ``--address``::

    .venv/bin/python tests/cluster/bench_ray.py --address auto --images /shared/bench \\
        --model /shared/m.xml --work /shared/bench-out --workers 1,2,4,8
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.perf.bench_infer import _model  # noqa: E402
from toolkit.paths import sample_image  # noqa: E402

_SUMMARY = re.compile(r"(\d+) frames from (\d+) inputs in ([\d.]+) s \(([\d.]+) frames/s\)")


def make_images(folder: Path, count: int) -> None:
    """``count`` different 640x480 JPEGs of the bundled photo (pan and zoom): the network runs
    at 512x512 whatever the size, so this keeps decoding and encoding from dominating."""
    import cv2

    base = cv2.imread(str(sample_image()), cv2.IMREAD_COLOR)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        scale = 1.3 + 0.02 * (i % 10)
        canvas = cv2.resize(base, None, fx=scale, fy=scale)
        x, y = (7 * i) % 40, (5 * i) % 30
        frame = canvas[y : y + 480, x : x + 640]
        cv2.imwrite(str(folder / f"photo_{i:04d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 92])


def run(
    label: str, args: list[str], work: Path, pin: Callable[[], None] | None = None
) -> tuple[str, float, float, int]:
    """One CLI run into a fresh folder: (label, images/s from its summary, wall s, images)."""
    out = work / re.sub(r"\W+", "_", label)
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "toolkit", "infer", *args, "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=pin,
    )
    wall = time.perf_counter() - started
    match = _SUMMARY.search(proc.stderr)
    if proc.returncode != 0 or match is None:
        raise SystemExit(f"{label} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    print(f"  {label}: {match.group(0)}; wall {wall:.1f} s", flush=True)
    return label, float(match.group(4)), wall, int(match.group(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="IR .xml (default: a random-weight one)")
    parser.add_argument("--images", type=Path, help="folder of images (default: 200 made here)")
    parser.add_argument("--count", type=int, default=200, help="images to make")
    parser.add_argument("--address", help="an existing cluster (default: start a local one)")
    parser.add_argument("--workers", default="1,2", help="Ray worker counts to measure")
    parser.add_argument("--work", type=Path, help="output folder (default: a temporary one)")
    ns = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        work = ns.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        xml = _model(ns.model, work).resolve()
        images = ns.images
        if images is None:
            images = work / "images"
            make_images(images, ns.count)
        common = [str(images.resolve()), "-m", str(xml)]
        print(f"{os.cpu_count()} CPUs; model {xml}; images {images}", flush=True)

        cluster = None
        address = ns.address
        if address is None:
            from ray.cluster_utils import Cluster

            store = 200 * 1024 * 1024
            cluster = Cluster(
                initialize_head=True,
                head_node_args={
                    "num_cpus": 0,
                    "object_store_memory": store,
                    "include_dashboard": False,
                },
            )
            for _ in range(2):
                cluster.add_node(num_cpus=1, object_store_memory=store)
            cluster.wait_for_nodes()
            address = cluster.address
        try:
            rows = [run("local infer", common, work)]
            if ns.address is None:
                rows.append(
                    run("local infer, 1 core", common, work, lambda: os.sched_setaffinity(0, {0}))
                )
            for count in [int(c) for c in ns.workers.split(",")]:
                rows.append(
                    run(
                        f"ray, {count} worker(s) x 1 CPU",
                        [*common, "--ray", address, "--ray-workers", str(count)],
                        work,
                    )
                )
        finally:
            if cluster is not None:
                cluster.shutdown()

    base = rows[0][1]
    print()
    print("| run | images | images/s | vs local infer | wall s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, rate, wall, count in rows:
        print(f"| {label} | {count} | {rate:.2f} | {rate / base:.2f}x | {wall:.1f} |")
    by = {label: rate for label, rate, _, _ in rows}
    one, two = by.get("ray, 1 worker(s) x 1 CPU"), by.get("ray, 2 worker(s) x 1 CPU")
    core = by.get("local infer, 1 core")
    if one and core:
        print(f"\nRay overhead: 1 worker / local on 1 core = {one / core:.2f}x")
    if one and two:
        print(f"Scaling: 2 workers / 1 worker = {two / one:.2f}x")


if __name__ == "__main__":
    main()
