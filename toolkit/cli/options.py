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
