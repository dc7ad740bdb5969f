"""``evaluate``: the model card's MAD / MSE, computed as OMZ's accuracy check does, and the
drift that FP16, INT8 or bf16 inference costs.

The command only parses, picks the IRs, wires the progress bar and prints; the semantics live
in :mod:`toolkit.evaluate.metrics`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from toolkit.cli.app import app
from toolkit.cli.options import DEFAULT_MAX_PIXELS, Device, JsonFile, MaxPixels, OutputDir
from toolkit.errors import ToolkitError, UsageError

if TYPE_CHECKING:  # the evaluation core pulls in OpenCV: import it only when the command runs
    from toolkit.evaluate.metrics import Evaluation, Pair, Predictor, Skip

#: What ``--compare`` looks for under the output dir, in table order (the first found is the
#: reference the others' drift is measured against).
COMPARE_PRECISIONS = ("FP32", "FP16", "FP16-INT8", "FP32-INT8")


@dataclass(frozen=True)
class Variant:
    """One row of the results: an IR run at one inference precision."""

    label: str
    xml: Path
    inference_precision: str


def _ir_choices(
    models: list[Path],
    name: str | None,
    precisions: list[str],
    root: Path,
    compare: bool,
) -> list[tuple[str, Path]]:
    """The IRs to run, as (label, xml): explicit files, else ``<root>/public/<name>/<PREC>/``."""
    from toolkit.download.config import DEFAULT_MODEL, KNOWN_PRECISIONS
    from toolkit.paths import ir_xml, model_dir

    if models and (name is not None or precisions):
        raise UsageError("use either --model or --name/--precision, not both")
    if models:
        return [(str(m), m) for m in models]
    model_name = name or DEFAULT_MODEL
    if "/" in model_name or "\\" in model_name or model_name in (".", ".."):
        raise UsageError(f"--name takes a model name, not a path: {model_name!r} (use --model)")
    precisions = [p.strip().upper() for p in precisions]  # fp32 is FP32
    unknown = [p for p in precisions if p not in KNOWN_PRECISIONS]
    if unknown:
        raise UsageError(
            f"unknown precision {unknown[0]!r}: use one of {', '.join(sorted(KNOWN_PRECISIONS))}"
        )
    if precisions:
        chosen = precisions
    elif compare:
        chosen = [p for p in COMPARE_PRECISIONS if ir_xml(root, model_name, p).is_file()]
        if not chosen:
            raise ToolkitError(
                f"no converted IR of {model_name} under {model_dir(root, model_name).absolute()}"
                ": point at one with --model, -o DIR (the folder `convert -o` wrote) or "
                "$MODNET_TOOLS_HOME, or run 'modnet-tools convert' first"
            )
    else:
        chosen = ["FP32"]
    picked = []
    for precision in chosen:
        xml = ir_xml(root, model_name, precision)
        if not xml.is_file():
            raise ToolkitError(
                f"no {precision} IR of {model_name} at {xml.absolute()}: point at it with "
                "--model path/to/<name>.xml, -o DIR (the folder `convert -o` wrote) or "
                f"$MODNET_TOOLS_HOME, or run 'modnet-tools convert --name {model_name} "
                f"--precision {precision}' first"
            )
        picked.append((precision, xml))
    return picked


def plan_variants(
    irs: list[tuple[str, Path]],
    inference_precisions: list[str],
    compare: bool,
    device: str = "CPU",
) -> list[Variant]:
    """Every IR at every inference precision asked for.

    With ``--compare`` and no explicit ``--inference-precision``, every IR runs at f32 and the
    first one also at bf16 (what this CPU runs by default) when the CPU has bf16, so one table
    shows what FP16, INT8 and bf16 each cost against FP32 at f32. A precision the CPU cannot
    run is replaced by f32 with one line saying so (never a bf16 label on f32 figures).
    """
    from toolkit.evaluate.metrics import INFERENCE_PRECISIONS

    for ip in inference_precisions:
        if ip not in INFERENCE_PRECISIONS:
            raise UsageError(
                f"--inference-precision must be one of {', '.join(INFERENCE_PRECISIONS)}, "
                f"not {ip!r}"
            )
    from toolkit.matting.runtime import cpu_capabilities, effective_precision, parse_precision

    asked = list(dict.fromkeys(inference_precisions)) or ["f32"]
    precisions: list[str] = []
    for ip in asked:
        runs, note = effective_precision(parse_precision(ip), device)
        if note is not None:  # what really runs is shown, never a bf16 label on f32 figures
            typer.echo(f"note: {note}", err=True)
        if runs not in precisions:
            precisions.append(runs)
    variants = [Variant(f"{label} @ {ip}", xml, ip) for label, xml in irs for ip in precisions]
    if compare and not inference_precisions:
        label, xml = irs[0]
        if cpu_capabilities(device).bf16:
            variants.append(Variant(f"{label} @ bf16", xml, "bf16"))
        else:
            typer.echo("note: this CPU has no bf16: --compare leaves out the bf16 row", err=True)
    return variants


def _fmt(value: float) -> str:
    return f"{value:.6f}"


def _print_single(evaluation: Evaluation, variant: Variant, device: str) -> None:
    result = evaluation.variants[0]
    typer.echo(f"model   {variant.xml} ({device}, {variant.inference_precision})")
    typer.echo(f"images  {_images_line(evaluation)}")
    typer.echo(f"MAD     mean {_fmt(result.mad.mean)}  std {_fmt(result.mad.std)}")
    typer.echo(f"MSE     mean {_fmt(result.mse.mean)}  std {_fmt(result.mse.std)}")
    typer.echo("(0..255 units; std over images is the population std, as OMZ's accuracy checker)")


def _images_line(evaluation: Evaluation) -> str:
    counts = evaluation.skipped_counts()
    text = f"{evaluation.images} evaluated of {evaluation.considered}"
    if evaluation.skipped:
        parts = [f"{n} {kind.replace('_', ' ')}" for kind, n in counts.items() if n]
        text += f", {len(evaluation.skipped)} skipped ({', '.join(parts)})"
    return text


def _print_table(evaluation: Evaluation, device: str) -> None:
    from rich.console import Console
    from rich.table import Table

    first = evaluation.variants[0]
    table = Table(
        title=f"{_images_line(evaluation)}; device {device}; drift vs the first row",
        title_justify="left",
    )
    for column in ("model", "MAD mean", "MAD std", "MSE mean", "MSE std", "dMAD", "dMSE"):
        table.add_column(column, justify="left" if column == "model" else "right")
    table.add_column("matte |d| mean", justify="right")
    table.add_column("matte |d| max", justify="right")
    for v in evaluation.variants:
        table.add_row(
            v.label,
            _fmt(v.mad.mean),
            _fmt(v.mad.std),
            _fmt(v.mse.mean),
            _fmt(v.mse.std),
            f"{v.mad.mean - first.mad.mean:+.6f}",
            f"{v.mse.mean - first.mse.mean:+.6f}",
            _fmt(v.drift_mean),
            str(v.drift_max),
        )
    console = Console()
    if not console.is_terminal:  # piped to a file: keep each row on one line, not 80 columns
        console = Console(width=200)
    console.print(table)
    typer.echo(
        "(0..255 units; std over images is the population std, as OMZ's accuracy checker; "
        "matte |d|: per-pixel difference of the 8-bit mattes from the first row's)"
    )


@app.command("evaluate")
def evaluate(
    images: Annotated[
        Path,
        typer.Option(
            "--images", metavar="DIR", help="Folder of *.jpg images (HumanMatting layout)."
        ),
    ],
    mattes: Annotated[
        Path | None,
        typer.Option(
            "--mattes",
            metavar="DIR",
            help="Folder of NAME.png ground-truth mattes (alpha channel, or single-channel); "
            "default: the --images folder.",
        ),
    ] = None,
    model: Annotated[
        list[Path] | None,
        typer.Option(
            "--model",
            metavar="XML",
            help="An IR .xml to evaluate (repeatable: compared in a table).",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            metavar="NAME",
            help="Model whose converted IR to use (default modnet-webcam-portrait-matting).",
        ),
    ] = None,
    precision: Annotated[
        list[str] | None,
        typer.Option(
            "--precision",
            metavar="PREC",
            help="IR precision folder under the output dir: FP32 (default), FP16, FP16-INT8... "
            "(repeatable).",
        ),
    ] = None,
    output_dir: OutputDir = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", metavar="N", min=1, max=10_000_000, help="Evaluate only the first N images."
        ),
    ] = None,
    json_file: JsonFile = None,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="Compare precisions in one table: every converted IR found (FP32, FP16, "
            "FP16-INT8, FP32-INT8) at f32, plus the first at bf16; drift vs the first row.",
        ),
    ] = False,
    inference_precision: Annotated[
        list[str] | None,
        typer.Option(
            "--inference-precision",
            metavar="f32|bf16",
            help="OpenVINO INFERENCE_PRECISION_HINT: f32 (default) or bf16 (repeatable).",
        ),
    ] = None,
    device: Device = "CPU",
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
) -> None:
    """Measure MAD / MSE on a matting dataset exactly as Open Model Zoo's accuracy check does.

    Each image is read as BGR and stretched to 512x512 (bilinear), the ground truth (the PNG's
    alpha) is resized to 512x512 with Pillow's nearest neighbour, the prediction is
    uint8(trunc(alpha * 255)); MAD and MSE per image in 0..255 units, then their mean and
    std over the images. Pairs that cannot be read, and images without a matte, are reported,
    skipped and counted (exit code 1 if any).
    """
    from toolkit.evaluate.metrics import find_pairs, openvino_predictor
    from toolkit.fsutil import atomic_path, check_output
    from toolkit.paths import default_root

    root = output_dir if output_dir is not None else default_root()
    irs = _ir_choices(list(model or []), name, list(precision or []), root, compare)
    variants = plan_variants(irs, list(inference_precision or []), compare, device)
    pairs = find_pairs(images, mattes if mattes is not None else images, limit)
    if json_file is not None:  # never over a photo, a ground-truth matte or the model
        ir_files = [f for _, xml in irs for f in (xml, xml.with_suffix(".bin"))]
        data = [f for p in pairs for f in (p.image, p.matte) if f is not None]
        check_output(json_file, "json", inputs=[*ir_files, *data], option="--json")
    predictors = [
        (
            v.label,
            openvino_predictor(v.xml, device=device, inference_precision=v.inference_precision),
        )
        for v in variants
    ]
    evaluation = _run_with_progress(pairs, predictors, max_pixels)
    if evaluation.images == 0:
        raise ToolkitError(f"none of the {len(pairs)} image(s) could be evaluated")
    if len(variants) == 1:
        _print_single(evaluation, variants[0], device)
    else:
        _print_table(evaluation, device)
    if json_file is not None:
        doc = evaluation.to_json()
        doc["device"] = device
        for entry, v in zip(doc["variants"], variants, strict=True):
            entry["xml"] = str(v.xml)
            entry["inference_precision"] = v.inference_precision
        try:
            with atomic_path(json_file) as tmp:
                tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise ToolkitError(f"cannot write {json_file}: {exc.strerror or exc}") from exc
        typer.echo(f"wrote {json_file}")
    if evaluation.skipped:
        raise typer.Exit(1)


def _run_with_progress(
    pairs: list[Pair], predictors: list[tuple[str, Predictor]], max_pixels: int
) -> Evaluation:
    """Run the evaluation under a rich progress bar on stderr; skips are printed above it."""
    from rich.markup import escape

    from toolkit.cli.progress import count_progress
    from toolkit.evaluate.metrics import evaluate

    with count_progress("evaluating") as progress:
        task = progress.add_task("evaluate", total=len(pairs))

        def on_item(pair: Pair, skip: Skip | None) -> None:
            if skip is not None:
                progress.console.print(
                    escape(f"skipped {skip.name}: {skip.kind.replace('_', ' ')}: {skip.detail}"),
                    highlight=False,
                )
            progress.advance(task)

        return evaluate(pairs, predictors, on_item=on_item, max_pixels=max_pixels)
