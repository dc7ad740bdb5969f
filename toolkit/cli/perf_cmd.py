"""``benchmark`` and ``quantize``: speed measurements and the INT8 IR.

Thin wrappers: options are parsed here; the work is :mod:`toolkit.perf.benchmark` and
:mod:`toolkit.perf.quantize`. NNCF, ONNX Runtime and torch are imported only inside the commands
that use them (and torch only when it is installed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli.app import app
from toolkit.cli.options import DEFAULT_MAX_PIXELS, Device, JsonFile, MaxPixels, OutputDir, finite
from toolkit.errors import ToolkitError, UsageError

DEFAULT_MODEL = "modnet-webcam-portrait-matting"


def _check_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise UsageError(f"--name takes a model name, not a path: {name!r}")
    return name


def _check_writable(dest: Path, inputs: list[Path | None]) -> None:
    """Fail before minutes of work, not after, when the report cannot be written there or
    would replace one of the command's inputs or a file that is not a JSON report."""
    from toolkit.fsutil import check_output

    check_output(dest, "json", inputs=[p for p in inputs if p is not None], option="--json")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolkitError(f"--json {dest}: cannot write: {exc.strerror or exc}") from None


def _model_files(root: Path, name: str) -> list[Path | None]:
    """Every file of the model's tree (checkpoint, ONNX, each IR's .xml and .bin): a report
    written over any of them would destroy the model the command just measured."""
    from toolkit.paths import model_dir

    folder = model_dir(root, name)
    if not folder.is_dir():
        return []
    return [p for p in folder.rglob("*") if p.is_file()]


@app.command("quantize")
def quantize(
    output_dir: OutputDir = None,
    name: Annotated[
        str, typer.Option("--name", metavar="NAME", help="Model whose FP32 IR to quantize.")
    ] = DEFAULT_MODEL,
    calibration: Annotated[
        Path | None,
        typer.Option(
            "--calibration",
            metavar="DIR",
            help="Folder of calibration images (your own frames are best). Default: a "
            "generated set (augmented sample photo + synthetic portraits).",
        ),
    ] = None,
    subset_size: Annotated[
        int,
        typer.Option(
            "--subset-size", metavar="N", min=1, max=10_000, help="Calibration images used."
        ),
    ] = 64,
    max_drift: Annotated[
        str,
        typer.Option(
            "--max-drift",
            metavar="D",
            help="Accuracy budget: the mean |matte difference| from the FP32 IR at f32 on "
            "held-out images (0..1: 0.004, 1/255 or 0.4%). Finds the fastest INT8 IR within it "
            "by putting the most sensitive stages back in float; writes nothing when no INT8 IR "
            "fits and is faster.",
        ),
    ] = "1/255",
    max_drift_p99: Annotated[
        str,
        typer.Option(
            "--max-drift-p99", metavar="D", help="The budget's bound on the 99th percentile."
        ),
    ] = "8/255",
    ignore: Annotated[
        str | None,
        typer.Option(
            "--ignore",
            metavar="SCOPE",
            help="Instead of a budget, keep these layers in float: fusion+norm (the final "
            "conv_f layers and IBNorm's instance-norm halves), fusion, norm, "
            "image-inputs+norm, none.",
        ),
    ] = None,
    holdout: Annotated[
        Path | None,
        typer.Option(
            "--holdout",
            metavar="DIR",
            help="Images to measure the drift on (default: a generated held-out set, never "
            "used for calibration).",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Quantize again even if the INT8 IR is up to date.")
    ] = False,
    json_file: JsonFile = None,
    device: Device = "CPU",
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
) -> None:
    """Make an FP16-INT8 IR with NNCF post-training quantization from the FP32 IR that
    `convert` wrote: <output-dir>/public/<name>/FP16-INT8/<name>.xml. Prints the matte drift
    against the FP32 IR (at f32) on images not used for calibration."""

    from toolkit.errors import require
    from toolkit.matting.runtime import cpu_capabilities
    from toolkit.paths import default_root
    from toolkit.perf.budget import Budget, parse_drift
    from toolkit.perf.calibration import load_folder
    from toolkit.perf.quantize import parse_ignore, quantize_model

    _check_name(name)
    budget = Budget(
        parse_drift(max_drift, "--max-drift"), parse_drift(max_drift_p99, "--max-drift-p99")
    )
    if ignore is not None:
        parse_ignore(ignore)
    root = output_dir if output_dir is not None else default_root()
    if json_file is not None:
        _check_writable(json_file, [*_model_files(root, name), calibration, holdout])
    require("nncf", "quantize")
    held = (
        [image for _, image in load_folder(holdout, max_pixels=max_pixels, option="--holdout")]
        if holdout is not None
        else None
    )
    typer.echo(f"========== Quantizing {name} (FP32 -> FP16-INT8)")
    if ignore is None:
        budgeted = quantize_model(
            root,
            name,
            budget=budget,
            calibration=calibration,
            subset_size=subset_size,
            holdout=held,
            device=device,
            max_pixels=max_pixels,
            progress=lambda text: typer.echo(f"  {text}", err=True),
        )
        typer.echo(f"  wrote {budgeted.xml} ({budgeted.seconds:.0f} s; budget {budget.describe()})")
        typer.echo(
            f"  {len(budgeted.reverted)} of {budgeted.groups} stages kept in float"
            + (f" ({', '.join(budgeted.reverted)})" if budgeted.reverted else "")
        )
        typer.echo(
            f"  matte of the INT8 IR at f32 vs the FP32 IR at f32 on held-out images: "
            f"{budgeted.holdout.describe()}"
        )
        typer.echo(
            f"  speed measured here side by side: {budgeted.int8_fps:.2f} vs "
            f"{budgeted.fp32_fps:.2f} frames/s ({budgeted.speedup:.2f}x the FP32 IR at f32)"
        )
        if json_file is not None:
            _write_json(json_file, budgeted.to_dict())
        return
    result = quantize_model(
        root,
        name,
        calibration=calibration,
        subset_size=subset_size,
        ignore=ignore,
        holdout=held,
        drift_precisions=("f32", "bf16") if cpu_capabilities(device).bf16 else ("f32",),
        force=force,
        device=device,
        max_pixels=max_pixels,
    )
    if result.skipped:
        typer.echo(f"  up to date: {result.xml} (use --force to quantize again)")
    else:
        typer.echo(
            f"  wrote {result.xml} ({result.seconds:.1f} s; calibration: {result.calibration}; "
            f"kept in float: {ignore})"
        )
    for drift in result.drift:
        typer.echo(
            f"  matte of the INT8 IR at {drift.inference_precision} vs the FP32 IR at f32: "
            f"{drift.describe()}"
        )
    if json_file is not None:
        _write_json(json_file, result.to_dict())


def _write_json(dest: Path, data: dict[str, object]) -> None:
    import json

    from toolkit.fsutil import atomic_path

    try:
        with atomic_path(dest) as tmp:
            tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    except OSError as exc:
        raise ToolkitError(f"--json {dest}: cannot write: {exc.strerror or exc}") from None


class _Progress:
    """One dim line per step on stderr, so stdout holds only the tables."""

    def message(self, text: str) -> None:
        typer.echo(f"  {text}", err=True)


@app.command("benchmark")
def benchmark(
    output_dir: OutputDir = None,
    name: Annotated[
        str, typer.Option("--name", metavar="NAME", help="Model whose converted IRs to measure.")
    ] = DEFAULT_MODEL,
    precision: Annotated[
        list[str] | None,
        typer.Option(
            "--precision",
            metavar="PREC",
            help="IRs to measure: FP32, FP16, FP16-INT8 (repeatable; default: every one found).",
        ),
    ] = None,
    inference_precision: Annotated[
        list[str] | None,
        typer.Option(
            "--inference-precision",
            metavar="f32|bf16",
            help="OpenVINO inference precisions (repeatable; default: f32 and bf16).",
        ),
    ] = None,
    onnx: Annotated[
        Path | None,
        typer.Option("--onnx", metavar="FILE", help="ONNX for ONNX Runtime (default: convert's)."),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            metavar="FILE",
            help="Checkpoint for the PyTorch row (default: the downloaded one).",
        ),
    ] = None,
    no_pytorch: Annotated[bool, typer.Option("--no-pytorch", help="Skip PyTorch eager.")] = False,
    no_onnxruntime: Annotated[
        bool, typer.Option("--no-onnxruntime", help="Skip ONNX Runtime.")
    ] = False,
    no_fast: Annotated[bool, typer.Option("--no-fast", help="Skip the infer --fast row.")] = False,
    explore: Annotated[
        bool,
        typer.Option(
            "--explore",
            help="Also run the fast mode's IR the other ways considered for it (u8 NHWC "
            "input, one stream, four requests).",
        ),
    ] = False,
    rounds: Annotated[
        int, typer.Option("--rounds", metavar="N", min=1, max=1000, help="Round-robin rounds.")
    ] = 10,
    seconds: Annotated[
        float,
        typer.Option(
            "--seconds",
            metavar="S",
            min=0.0,
            max=600.0,
            callback=finite,
            help="Throughput window per candidate and round (latency gets half).",
        ),
    ] = 1.0,
    video_frames: Annotated[
        int,
        typer.Option(
            "--video-frames",
            metavar="N",
            min=0,
            max=100_000,
            help="Frames of the generated 720p video (0: no video measurement).",
        ),
    ] = 40,
    video: Annotated[
        Path | None,
        typer.Option("--video", metavar="FILE", help="Measure on this video instead."),
    ] = None,
    drift_images: Annotated[
        int,
        typer.Option(
            "--drift-images",
            metavar="N",
            min=0,
            max=1000,
            help="Held-out images for the matte difference from the FP32 IR at f32.",
        ),
    ] = 8,
    network_size: Annotated[
        list[str] | None,
        typer.Option(
            "--network-size",
            metavar="WxH",
            help="Network sizes to measure the FP32 IR at (repeatable; default 384x384, "
            "320x192, 256x256; 'none' for none), each against 512x512: speed and drift.",
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="About two minutes: FP32 and INT8 IRs, the fast path, the network sizes and "
            "ONNX Runtime; 3 short rounds, 4 drift images, no FP16, PyTorch or video.",
        ),
    ] = False,
    json_file: JsonFile = None,
    device: Device = "CPU",
) -> None:
    """Latency and throughput of every IR (FP32, FP16, FP16-INT8) at f32 and bf16, the
    infer --fast mode, ONNX Runtime and PyTorch, measured side by side in one run, plus 720p
    video end to end through infer; ratios, matte drift and the CPU's arithmetic limit."""
    import sys

    from rich.console import Console

    from toolkit.matting.prepost import parse_network_size
    from toolkit.paths import default_root
    from toolkit.perf.benchmark import (
        INFERENCE_PRECISIONS,
        IR_PRECISIONS,
        plan,
        results_table,
        run_benchmark,
        summary_lines,
        video_file,
        video_table,
    )

    _check_name(name)
    sizes_asked = network_size or ["384x384", "320x192", "256x256"]
    sizes = [] if sizes_asked == ["none"] else [parse_network_size(v) for v in sizes_asked]
    if quick:  # explicit options still win where given
        precision = precision or ["FP32", "FP16-INT8"]
        rounds, seconds, drift_images = min(rounds, 3), min(seconds, 0.5), min(drift_images, 4)
        video_frames, no_pytorch = (0 if video is None else video_frames), True
    irs = list(dict.fromkeys(p.strip().upper() for p in (precision or IR_PRECISIONS)))
    for p in irs:
        if p not in IR_PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(IR_PRECISIONS)}, not {p!r}")
    hints = list(dict.fromkeys(inference_precision or INFERENCE_PRECISIONS))
    for h in hints:
        if h not in INFERENCE_PRECISIONS:
            raise UsageError(
                f"--inference-precision must be one of {', '.join(INFERENCE_PRECISIONS)}, not {h!r}"
            )
    if "f32" not in hints:
        hints.insert(0, "f32")  # the FP32 IR at f32 is every row's accuracy reference
    root = output_dir if output_dir is not None else default_root()
    if json_file is not None:
        _check_writable(json_file, [*_model_files(root, name), onnx, checkpoint, video])
    settings = {
        "root": str(root),
        "name": name,
        "command": " ".join(["modnet-tools", *sys.argv[1:]]),
        "quick": quick,
    }
    with video_file(video_frames, video) as clip:
        bench = plan(
            root,
            name,
            ir_precisions=irs,
            inference_precisions=hints,
            onnx=onnx,
            checkpoint=checkpoint,
            pytorch=not no_pytorch,
            onnxruntime=not no_onnxruntime,
            fast=not no_fast,
            explore=explore,
            video=clip,
            device=device,
            network_sizes=sizes,
            onnxruntime_configs=1 if quick else None,
        )
        report = run_benchmark(
            bench,
            rounds=rounds,
            seconds=seconds,
            drift_images=drift_images,
            progress=_Progress(),
            settings=settings,
        )
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(results_table(report))
    if report.video:
        console.print(video_table(report))
    for line in summary_lines(report):
        console.print(line, markup=False, highlight=False)
    if json_file is not None:
        report.write_json(json_file)
