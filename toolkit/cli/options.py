"""Option types shared by several commands, so that every command spells them alike."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

Name = Annotated[
    str | None,
    typer.Option(
        "--name",
        help="Comma-separated model names or shell wildcards (default: "
        "modnet-webcam-portrait-matting).",
    ),
]
All = Annotated[bool, typer.Option("--all", help="Select every known model.")]
ListFile = Annotated[
    Path | None, typer.Option("--list", help="File with one model pattern a line (# comments).")
]
PrintAll = Annotated[
    bool, typer.Option("--print-all", help="Print every known model name and exit.")
]
ModelsDir = Annotated[
    list[Path] | None,
    typer.Option(
        "--models-dir",
        help="Extra folder of model configs (<dir>/<name>.yml or <dir>/<name>/model.yml); "
        "repeatable. Also $MODNET_TOOLS_MODELS_DIR.",
    ),
]
OutputDir = Annotated[
    Path | None,
    typer.Option(
        "--output-dir",
        "-o",
        help="Root of the public/<name>/ tree (default $MODNET_TOOLS_HOME, else ./cache).",
    ),
]
Device = Annotated[
    str, typer.Option("--device", metavar="DEVICE", help="OpenVINO device (CPU, GPU, AUTO...).")
]
JsonFile = Annotated[
    Path | None,
    typer.Option("--json", metavar="FILE", help="Also write the figures to this JSON file."),
]
DownloadDir = Annotated[
    Path | None,
    typer.Option(
        "--download-dir",
        "-d",
        help="Where `download` put the checkpoints (default $MODNET_TOOLS_HOME, else ./cache).",
    ),
]

#: The same default as :data:`toolkit.matting.images.DEFAULT_MAX_PIXELS` (not imported here so
#: that ``--help`` stays light; tests/cli checks that they agree).
DEFAULT_MAX_PIXELS = 70_000_000
MaxPixels = Annotated[
    int,
    typer.Option(
        "--max-pixels",
        min=1,
        max=1_000_000_000,  # a bound of its own: 1 GP is 3 GB decoded
        metavar="N",
        help="Refuse any image or video frame with more pixels than this, from its header, "
        "before decoding it.",
    ),
]


def finite(value: float | None) -> float | None:
    """Option callback: refuse ``nan`` and ``inf``, which Click's float ranges let through
    (every comparison with NaN is false, so ``min=``/``max=`` cannot catch it)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, not {value}")
    return value


# --- which converted model to run: infer and serve find it alike ---------------------------------

ModelXml = Annotated[
    Path | None,
    typer.Option("--model", "-m", help="The IR .xml to run (default: the converted model)."),
]
ModelName = Annotated[
    str,
    typer.Option("--name", help="Model whose converted IR to use (with --model-root)."),
]
ModelPrecision = Annotated[
    str | None,
    typer.Option(
        "--precision", help="Which converted IR: FP32 or FP16 (default: FP32, else FP16)."
    ),
]
ModelRoot = Annotated[
    Path | None,
    typer.Option(
        "--model-root",
        help="Where `convert` wrote public/<name>/<PREC>/ (its -o; default: --download-dir, "
        "else $MODNET_TOOLS_HOME, else ./cache).",
    ),
]
InferencePrecisionOption = Annotated[
    str,
    typer.Option(
        "--inference-precision",
        help="f32 (exact, default), bf16 (about 2x faster on CPUs with bf16, mattes differ "
        "slightly) or f16.",
    ),
]
NetworkSize = Annotated[
    str | None,
    typer.Option(
        "--network-size",
        metavar="WxH",
        help="Run the network at this size (multiples of 32, e.g. 320x192 or 256x256) "
        "instead of the IR's 512x512: several times faster for live video, the matte "
        "resized back to the frame (`benchmark` shows each size's speed and drift).",
    ),
]
