"""``random-checkpoint`` and ``check-checkpoint``: try the pipeline without the real weights,
and inspect a checkpoint safely."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from toolkit.cli.app import app
from toolkit.errors import require


@app.command("random-checkpoint")
def random_checkpoint(
    output: Annotated[Path, typer.Argument(help="Where to write the .ckpt file.")],
    seed: Annotated[
        int, typer.Option(min=0, max=2**32 - 1, help="Random seed (same seed, same weights).")
    ] = 0,
    profile: Annotated[
        str, typer.Option(help="'tame' (calm numerics) or 'touchy' (sensitive to small changes).")
    ] = "tame",
    fmt: Annotated[
        str, typer.Option("--format", help="'legacy' (as released) or 'zip' (torch.save default).")
    ] = "legacy",
) -> None:
    """Write a MODNet checkpoint with random weights in the released format.

    The mattes it gives are meaningless, but every command runs on it exactly as on the real
    weights, which is how the tests exercise the whole pipeline offline.
    """
    require("torch", "convert")
    from toolkit.errors import UsageError
    from toolkit.model.random_checkpoint import write_random_checkpoint

    if profile not in ("tame", "touchy"):
        raise UsageError(f"--profile must be tame or touchy, not {profile!r}")
    if fmt not in ("legacy", "zip"):
        raise UsageError(f"--format must be legacy or zip, not {fmt!r}")
    from toolkit.fsutil import check_output

    check_output(output, "checkpoint", option="random-checkpoint")
    prof: Literal["tame", "touchy"] = "tame" if profile == "tame" else "touchy"
    form: Literal["legacy", "zip"] = "legacy" if fmt == "legacy" else "zip"
    write_random_checkpoint(output, seed=seed, profile=prof, fmt=form)
    typer.echo(f"wrote {output} (random weights, {profile}, {fmt} format)")


@app.command("check-checkpoint")
def check_checkpoint(
    checkpoint: Annotated[Path, typer.Argument(help="The .ckpt / .pth file to inspect.")],
) -> None:
    """Load a checkpoint safely (weights_only) and validate every key against MODNet."""
    require("torch", "convert")
    from toolkit.hashing import file_digest
    from toolkit.model.checkpoint import load_state_dict, sniff

    kind = sniff(checkpoint)
    state = load_state_dict(checkpoint)
    params = sum(v.numel() for k, v in state.items() if not k.startswith("lr_branch.backbone."))
    typer.echo(
        f"{checkpoint}: valid MODNet checkpoint ({kind} format, {len(state)} entries, "
        f"{params:,} values)\nsha384 {file_digest(checkpoint)}"
    )
