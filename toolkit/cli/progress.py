"""The progress bar the counting commands share (infer, evaluate): one look, on stderr."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported only when a bar is shown
    from rich.progress import Progress, ProgressColumn


def count_progress(label: str, *extra: ProgressColumn | str, transient: bool = False) -> Progress:
    """``label [bar] done/total <extra...> elapsed remaining`` on stderr, so that stdout stays
    free for results; ``extra`` columns (or format strings) go after the count."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        *(TextColumn(c) if isinstance(c, str) else c for c in extra),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=transient,
    )
