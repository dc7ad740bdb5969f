"""``download`` and ``info``: fetch model files like omz_downloader, print omz_info_dumper's JSON.

Thin wrappers: option parsing and printing here, the work in :mod:`toolkit.download` and
:mod:`toolkit.download.config`.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit.cli.app import app
from toolkit.cli.options import All, ListFile, ModelsDir, Name, OutputDir, PrintAll, finite
from toolkit.download.config import ModelConfig, discover, parse_precisions, select
from toolkit.errors import UsageError
from toolkit.paths import default_root


class ProgressFormat(str, Enum):
    text = "text"
    json = "json"


def _models(
    models_dir: list[Path] | None,
    name: str | None,
    all_models: bool,
    list_file: Path | None,
    print_all: bool,
) -> list[ModelConfig] | None:
    """The selected configs, or None after ``--print-all`` printed every name."""
    known = discover(models_dir or [])
    if print_all:
        for model_name in known:
            typer.echo(model_name)
        return None
    return select(known, names=name, all_models=all_models, list_file=list_file)


def _check_outputs(configs: list[ModelConfig], root: Path, list_file: Path | None) -> None:
    """Before any request: no file this run would write is one of its inputs (the
    ``--list`` file, a model.yml), e.g. ``-o`` pointing into the models folder."""
    from toolkit.download.runner import model_file_path
    from toolkit.fsutil import FileSet

    inputs = FileSet([*(c.path for c in configs), *([list_file] if list_file else [])])
    for config in configs:
        for model_file in config.files:
            dest = model_file_path(config, root, model_file.name)
            source = inputs.find(dest)
            if source is not None:
                raise UsageError(
                    f"-o {root}: {config.name}'s file {dest} would be written over {source}, "
                    "an input of this command"
                )


def _check_mirror(mirror: str | None) -> str | None:
    if not mirror:
        return None
    if not mirror.startswith(("http://", "https://")):
        raise UsageError(f"--mirror must be an http:// or https:// URL, got {mirror!r}")
    return mirror


@app.command("download")
def download(
    name: Name = None,
    all_models: All = False,
    list_file: ListFile = None,
    print_all: PrintAll = False,
    models_dir: ModelsDir = None,
    output_dir: OutputDir = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            help="omz_downloader-compatible cache (format 1): files are copied from it when "
            "present and added to it after they are verified.",
        ),
    ] = None,
    num_attempts: Annotated[
        int,
        typer.Option(
            "--num-attempts",
            min=1,
            max=100,
            help="Attempts per source for network errors, timeouts, 5xx, 429 and short "
            "bodies (with backoff, resuming with Range).",
        ),
    ] = 3,
    progress_format: Annotated[
        ProgressFormat,
        typer.Option(
            "--progress-format",
            help="text: bars on a terminal, plain lines otherwise; json: omz_downloader's "
            "event objects, one a line.",
        ),
    ] = ProgressFormat.text,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=1, max=64, help="Models downloaded in parallel.")
    ] = 1,
    precisions: Annotated[
        str | None,
        typer.Option(
            "--precisions",
            help="Comma-separated precisions whose files to fetch (files in <PRECISION>/ "
            "folders; default all).",
        ),
    ] = None,
    mirror: Annotated[
        str | None,
        typer.Option(
            "--mirror",
            envvar="MODNET_TOOLS_MIRROR",
            help="Base URL tried before each file's own sources, laid out like an output "
            "folder: <mirror>/public/<name>/<file>.",
        ),
    ] = None,
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Use only files already present, the cache and the mirror."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Download again even when a verified file is present or cached."
        ),
    ] = False,
    connect_timeout: Annotated[
        float,
        typer.Option(
            "--connect-timeout",
            min=0.1,
            max=3600.0,
            callback=finite,
            help="Seconds to wait for a connection.",
        ),
    ] = 30.0,
    read_timeout: Annotated[
        float,
        typer.Option(
            "--read-timeout",
            min=0.1,
            max=3600.0,
            callback=finite,
            help="Seconds of silence from a server before retrying.",
        ),
    ] = 120.0,
    retry_delay: Annotated[
        float,
        typer.Option(
            "--retry-delay",
            min=0.0,
            max=600.0,
            callback=finite,
            envvar="MODNET_TOOLS_RETRY_DELAY",
            hidden=True,
            help="First backoff wait in seconds (doubles per attempt, with jitter).",
        ),
    ] = 2.0,
) -> None:
    """Download model files (default: modnet-webcam-portrait-matting) and verify them.

    Writes <output-dir>/public/<name>/<file> as omz_downloader does. A file is renamed into place only after its size and sha384 match; a verified file already there is kept.
    """
    from toolkit.download import (
        DownloadOptions,
        FetchSettings,
        RetryPolicy,
        Timeouts,
        fetch_models,
    )
    from toolkit.download.reporters import make_reporter
    from toolkit.download.runner import usable_cache

    configs = _models(models_dir, name, all_models, list_file, print_all)
    if configs is None:
        return
    wanted = parse_precisions(precisions)
    mirror = _check_mirror(mirror)
    _check_outputs(configs, output_dir if output_dir is not None else default_root(), list_file)
    if cache_dir is not None and not usable_cache(cache_dir):
        typer.echo(
            f"warning: --cache-dir {cache_dir} is not a folder; downloading without the cache",
            err=True,
        )
        cache_dir = None
    options = DownloadOptions(
        cache_dir=cache_dir,
        mirror=mirror,
        precisions=frozenset(wanted),
        settings=FetchSettings(
            num_attempts=num_attempts,
            timeouts=Timeouts(connect=connect_timeout, read=read_timeout),
            retry=RetryPolicy(base=retry_delay),
            force=force,
            offline=offline,
        ),
    )
    reporter = make_reporter(progress_format.value)
    try:
        results = fetch_models(
            configs,
            output_dir if output_dir is not None else default_root(),
            options,
            jobs=jobs,
            reporter=reporter,
        )
    finally:
        reporter.close()
    failed = [r.name for r in results if not r.ok]
    reporter.finish(failed)
    if failed:
        raise typer.Exit(1)


def model_info(config: ModelConfig) -> dict[str, Any]:
    """One model as omz_info_dumper describes it, with its keys in the same order."""
    accuracy: Path | None = None
    if config.accuracy_config:
        accuracy = config.path.parent / config.accuracy_config
    elif config.path.name == "model.yml" and (config.path.parent / "accuracy-check.yml").is_file():
        accuracy = config.path.parent / "accuracy-check.yml"
    return {
        "name": config.name,
        "composite_model_name": None,
        "description": config.description,
        "framework": config.framework,
        "license_url": config.license,
        "accuracy_config": str(accuracy) if accuracy is not None else None,
        "model_config": str(config.path),
        "precisions": sorted(config.precisions),
        "subdirectory": config.subdirectory,
        "task_type": config.task_type,
        "input_info": [
            {"name": i.name, "shape": list(i.shape), "layout": i.layout} for i in config.input_info
        ],
        "model_stages": [],
    }


@app.command("info")
def info(
    name: Name = None,
    all_models: All = False,
    list_file: ListFile = None,
    print_all: PrintAll = False,
    models_dir: ModelsDir = None,
) -> None:
    """Print omz_info_dumper's JSON for the selected models (default: the webcam model)."""
    configs = _models(models_dir, name, all_models, list_file, print_all)
    if configs is None:
        return
    typer.echo(json.dumps([model_info(c) for c in configs], indent=4))


__all__ = ["download", "info", "model_info"]
