"""The Typer application object every command module registers on."""

from __future__ import annotations

from typing import Annotated

import typer

from toolkit import __version__

app = typer.Typer(
    name="modnet-tools",
    help=(
        "MODNet portrait matting: download the released checkpoint, convert it to a verified "
        "OpenVINO IR, and run it on images and video."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


class State:
    """Process-wide CLI settings set by the top-level callback."""

    verbose: bool = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"modnet-tools {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks and debug details on errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """MODNet portrait matting tools."""
    State.verbose = verbose
