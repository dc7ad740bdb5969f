"""The Typer application object every command module registers on."""

from __future__ import annotations

from typing import Annotated

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

from toolkit import __version__

#: The order ``--help`` lists commands in: the workflow's, then the helpers.
WORKFLOW = (
    "download",
    "convert",
    "infer",
    "evaluate",
    "quantize",
    "benchmark",
    "serve",
    "cluster",
    "info",
    "random-checkpoint",
    "check-checkpoint",
)


class WorkflowGroup(TyperGroup):
    """Lists commands in :data:`WORKFLOW` order (Typer's is the order modules were imported)."""

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        names = super().list_commands(ctx)
        rank = {name: i for i, name in enumerate(WORKFLOW)}
        return sorted(names, key=lambda n: (rank.get(n, len(WORKFLOW)), names.index(n)))


def _plain_help() -> None:
    """Help text as users read it: a flag shows no ``<bool>`` (it takes no value), and a usage
    line names arguments the classic way, ``INPUTS...`` rather than Typer's ``{inputs}``.

    Typer 0.29 has no setting for either, so its two display methods are wrapped here, once,
    for every command of this application (and only their help text changes).
    """
    option_type = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: typer.Context) -> str | None:
        if self.is_flag and not self.count:
            return None
        return option_type(self, ctx)

    def usage_name(self: TyperArgument) -> str:
        name = self.metavar or (self.name or "arg").upper()
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    setattr(TyperOption, "display_type_rich", display_type_rich)  # noqa: B010
    setattr(TyperArgument, "_usage_display_name", usage_name)  # noqa: B010


_plain_help()

app = typer.Typer(
    cls=WorkflowGroup,
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
