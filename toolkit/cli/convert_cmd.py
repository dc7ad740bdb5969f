"""``convert``: checkpoint -> ONNX -> OpenVINO IR with the preprocessing built in, verified.

Thin wrapper: options are parsed here, the plan and the work live in
:mod:`toolkit.convert.plan` (torch is imported only once a real conversion starts).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from toolkit.cli.app import app
from toolkit.cli.options import All, DownloadDir, ListFile, ModelsDir, Name, PrintAll
from toolkit.errors import ToolkitError, UsageError, require

if TYPE_CHECKING:
    from toolkit.convert.verify import VerifyReport
    from toolkit.download.config import ModelConfig


class _Printer:
    """The CLI's reporter: OMZ-style ``==========`` headings, rich table for verification."""

    def heading(self, text: str) -> None:
        typer.echo(f"========== {text}")

    def info(self, text: str) -> None:
        typer.echo(text)

    def verify_report(self, report: VerifyReport) -> None:
        from rich.console import Console

        Console(width=120).print(report.table())


def _download_dir(
    given: Path | None, output_dir: Path | None, config: ModelConfig, checkpoint: Path | None
) -> Path:
    """``-d`` if given; else the default root, unless only ``-o`` was given and the checkpoint
    is already there (``download -o X`` then ``convert -o X`` just works)."""
    from toolkit.paths import default_root

    if given is not None:
        return given
    if output_dir is not None and checkpoint is None:
        candidate = output_dir / "public" / config.name / config.checkpoint_file.name
        if candidate.is_file():
            return output_dir
    return default_root()


@app.command("convert")
def convert(
    name: Name = None,
    all_models: All = False,
    list_file: ListFile = None,
    print_all: PrintAll = False,
    models_dir: ModelsDir = None,
    download_dir: DownloadDir = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            "-o",
            help="Root of the converted public/<name>/ tree (default: the download dir).",
        ),
    ] = None,
    precision: Annotated[
        list[str] | None,
        typer.Option("--precision", help="FP16 or FP32; repeatable (default: both)."),
    ] = None,
    precisions: Annotated[
        str | None,
        typer.Option("--precisions", help="Comma-separated, e.g. FP16,FP32 (default: both)."),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="Convert this local or fine-tuned checkpoint instead of the downloaded one "
            "(written under the selected model's name, or --model-name).",
        ),
    ] = None,
    model_name: Annotated[
        str | None,
        typer.Option(
            "--model-name", help="Name for the output folder and IR files (default: the model's)."
        ),
    ] = None,
    input_shape: Annotated[
        str | None,
        typer.Option(
            "--input-shape",
            help="N,3,H,W with H and W multiples of 32 (default 1,3,512,512), or 'dynamic' "
            "(1,3,?,?) for any multiple of 32 at run time.",
        ),
    ] = None,
    add_mo_arg: Annotated[
        list[str] | None,
        typer.Option(
            "--add-mo-arg",
            help="Extra Model Optimizer flag, as omz_converter's --add_mo_arg; repeatable.",
        ),
    ] = None,
    exporter: Annotated[
        str, typer.Option("--exporter", help="ONNX exporter: legacy (fast, default) or dynamo.")
    ] = "legacy",
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print each step and the omz_converter command it replaces; write nothing.",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Redo every step even if the outputs are up to date.")
    ] = False,
    no_verify: Annotated[
        bool,
        typer.Option(
            "--no-verify", help="Skip comparing PyTorch, ONNX Runtime and the IRs after converting."
        ),
    ] = False,
    verify_image: Annotated[
        Path | None,
        typer.Option(
            "--verify-image", help="Photo for the verification (default: the bundled astronaut)."
        ),
    ] = None,
) -> None:
    """Convert MODNet to OpenVINO IR (FP16 and FP32) with the preprocessing inside, and verify it.

    Paths as omz_converter: <output-dir>/public/<name>/<name_with_underscores>.onnx and <output-dir>/public/<name>/<PREC>/<name>.xml|.bin.

    The IR takes BGR pixels 0..255 (float32, NCHW, input `input`) and returns the matte in `output`.
    """
    from toolkit.convert.plan import (
        check_options,
        describe,
        plan_job,
        resolve_precisions,
        run_job,
    )
    from toolkit.download.config import discover, select
    from toolkit.paths import default_root

    known = discover(models_dir or [])
    if print_all:
        for model in known:
            typer.echo(model)
        return
    if exporter not in ("legacy", "dynamo"):
        raise UsageError(f"--exporter must be legacy or dynamo, not {exporter!r}")
    configs = select(known, names=name, all_models=all_models, list_file=list_file)
    if (checkpoint is not None or model_name is not None) and len(configs) > 1:
        raise UsageError("--checkpoint and --model-name convert one model; select it with --name")
    chosen = resolve_precisions(precision, precisions)
    jobs = [
        plan_job(
            config,
            download_dir=_download_dir(download_dir, output_dir, config, checkpoint),
            output_dir=output_dir or download_dir or default_root(),
            precisions=chosen,
            checkpoint=checkpoint,
            model_name=model_name,
            input_shape=input_shape,
            extra_mo_args=add_mo_arg or [],
            exporter="dynamo" if exporter == "dynamo" else "legacy",
        )
        for config in configs
    ]
    printer = _Printer()
    if dry_run:
        for job in jobs:
            describe(job, printer, force=force, verify=not no_verify)
        return
    require("torch", "convert")
    require("onnx", "convert")
    for job in jobs:  # every option of every model checked before the first export
        check_options(job, verify=not no_verify, verify_image=verify_image)
    failed: list[tuple[str, ToolkitError]] = []
    for job in jobs:
        try:
            run_job(job, printer, force=force, verify=not no_verify, verify_image=verify_image)
        except ToolkitError as exc:
            if len(jobs) == 1:
                raise
            typer.echo(f"error: {job.name}: {exc}", err=True)
            failed.append((job.name, exc))
    if failed:
        names = ", ".join(n for n, _ in failed)
        sys.stdout.flush()
        raise ToolkitError(f"FAILED: {names}")
