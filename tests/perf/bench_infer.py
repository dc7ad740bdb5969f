"""Benchmark: ``infer`` over a folder of 1280x720 images vs the IR's raw throughput, same run.

Run by hand (not collected by pytest: the name does not start with ``test_``)::

    .venv/bin/python tests/perf/bench_infer.py                      # converted model, or a random one
    .venv/bin/python tests/perf/bench_infer.py --model path/to.xml --images 48 --rounds 3

"Raw" is the IR alone: pre-made 1x3x512x512 tensors through the same asynchronous request
pool (THROUGHPUT hint), no decoding, resizing or encoding. "infer" is the full runner exactly
as ``modnet-tools infer FOLDER -o OUT`` runs it: JPEG decoding, stretch resize, inference,
alpha resize, 8-bit matte PNG and RGBA cut-out PNG encoding, atomic writes. The two alternate
for ``--rounds`` rounds so that a noisy shared machine affects both alike; the medians are
reported with their ratio (the goal: infer >= 0.8x raw).

With ``--precisions f32,bf16`` each inference precision is measured, and the matte difference
between them on the bundled photo is printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from toolkit.matting.batch import InferOptions, run_infer
from toolkit.matting.images import expand_inputs
from toolkit.matting.runtime import IRModel, parse_precision
from toolkit.matting.session import MattingSession, ModelNotFoundError, find_ir
from toolkit.paths import default_root, sample_image


def _model(xml: Path | None, work: Path) -> Path:
    if xml is not None:
        return xml
    try:
        return find_ir(default_root())
    except ModelNotFoundError:
        pass
    print("no converted model found: converting a random-weight checkpoint (same cost)")
    from toolkit.convert.pipeline import convert_checkpoint
    from toolkit.model.random_checkpoint import write_random_checkpoint

    ckpt = write_random_checkpoint(work / "random.ckpt", seed=1, profile="tame")
    return convert_checkpoint(ckpt, work / "public" / "m" / "FP32" / "m.xml")


def _images(folder: Path, count: int) -> None:
    """``count`` different 1280x720 JPEGs made from the bundled photo (pan and zoom)."""
    base = cv2.imread(str(sample_image()), cv2.IMREAD_COLOR)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        scale = 1.0 + 0.02 * (i % 10)
        canvas = cv2.resize(base, None, fx=2.5 * scale, fy=1.41 * scale)
        x, y = (7 * i) % 40, (5 * i) % 30
        frame = canvas[y : y + 720, x : x + 1280]
        cv2.imwrite(str(folder / f"frame_{i:04d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 92])


def _raw_fps(model: IRModel, frames: int) -> tuple[float, float]:
    """Frames/s and CPU milliseconds (all threads) per frame of the IR alone."""
    rng = np.random.default_rng(0)
    tensors = [rng.uniform(0, 255, (1, 3, 512, 512)).astype(np.float32) for _ in range(4)]
    list(model.run_ordered((i, tensors[i % 4]) for i in range(4)))  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    for _ in model.run_ordered((i, tensors[i % 4]) for i in range(frames)):
        pass
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return frames / wall, 1000 * cpu / frames


def _infer_fps(
    session: MattingSession, folder: Path, out: Path, options: argparse.Namespace
) -> tuple[float, float]:
    """Frames/s and CPU milliseconds per frame of the whole runner over the folder."""
    items = expand_inputs([str(folder)])
    settings = InferOptions(
        output_dir=out,
        jobs=options.jobs,
        rgba=not options.no_rgba,
        png_compression=options.png_compression,
    )
    start, cpu = time.perf_counter(), time.process_time()
    summary = run_infer(session, items, settings)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert not summary.failed, summary.failed[0].error
    return summary.frames / wall, 1000 * cpu / summary.frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="IR .xml (default: converted or random)")
    parser.add_argument("--images", type=int, default=40, help="1280x720 images in the folder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precisions", default="f32", help="comma-separated: f32,bf16")
    parser.add_argument("--jobs", type=int, default=2, help="encoding threads (infer -j)")
    parser.add_argument("--requests", type=int, default=0, help="inference requests (0: auto)")
    parser.add_argument("--png-compression", type=int, default=1, help="as infer's option")
    parser.add_argument("--no-rgba", action="store_true", help="as infer's option")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        work = Path(tmp)
        xml = _model(args.model, work)
        folder = work / "frames"
        _images(folder, args.images)
        print(
            f"IR {xml}\n{args.images} images 1280x720 JPEG, {args.rounds} rounds, -j {args.jobs}, "
            f"png compression {args.png_compression}{', no rgba' if args.no_rgba else ''}"
        )
        mattes = {}
        for name in args.precisions.split(","):
            precision = parse_precision(name.strip())
            session = MattingSession.from_xml(
                xml, precision=precision, performance="throughput", requests=args.requests
            )
            raw, full, raw_cpu, full_cpu = [], [], [], []
            for r in range(args.rounds):
                fps, cpu = _raw_fps(session.model, args.images)
                raw.append(fps)
                raw_cpu.append(cpu)
                fps, cpu = _infer_fps(session, folder, work / f"out_{precision}_{r}", args)
                full.append(fps)
                full_cpu.append(cpu)
            requests = session.model.optimal_requests((512, 512))
            raw_m, full_m = statistics.median(raw), statistics.median(full)
            raw_c, full_c = statistics.median(raw_cpu), statistics.median(full_cpu)
            print(
                f"{precision:>5}: raw IR {raw_m:6.2f} frames/s  infer {full_m:6.2f} frames/s  "
                f"ratio {full_m / raw_m:.2f}  (requests {requests}; rounds raw "
                f"{', '.join(f'{v:.2f}' for v in raw)}; infer {', '.join(f'{v:.2f}' for v in full)})"
            )
            # On a machine shared with other work the wall-clock ratio is noisy; CPU time per
            # frame is not, and for a CPU-bound run its ratio is the ratio an idle machine gives.
            print(
                f"       CPU per frame: raw {raw_c:.0f} ms, infer {full_c:.0f} ms -> CPU-bound "
                f"ratio {raw_c / full_c:.2f}"
            )
            mattes[precision] = MattingSession.from_xml(xml, precision=precision).matte(
                cv2.imread(str(sample_image()), cv2.IMREAD_COLOR)
            )
        if "f32" in mattes:
            for precision, matte in mattes.items():
                if precision != "f32":
                    diff = np.abs(matte - mattes["f32"])
                    print(
                        f"{precision} vs f32 matte on the sample photo: max abs {diff.max():.4f}, "
                        f"mean abs {diff.mean():.5f}"
                    )


if __name__ == "__main__":
    main()
