"""File-system helpers shared by every writer: atomic replacement and confined paths.

Every output of the toolkit goes through :func:`atomic_path`, so an interrupted or failed run
never leaves a half-written file where a good one is expected.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from toolkit.errors import ToolkitError


def _current_umask() -> int:
    """The process umask, read once at import (setting it to probe is not thread-safe later)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only if the block succeeds.

    The temporary file lives in the destination's folder so the final ``os.replace`` is a
    same-filesystem rename (atomic on POSIX). ``suffix`` keeps the extension for writers that
    pick the format from the name (OpenCV, OpenVINO); it defaults to the destination's own.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{dest.name}.",
        suffix=(dest.suffix if suffix is None else suffix) + ".part",
        dir=dest.parent,
    )
    # mkstemp makes the file 0600; give it the mode a plain open() would (0666 & ~umask).
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:  # flush to disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def confined_path(base: str | os.PathLike[str], relative: str) -> Path:
    """Join a relative name from a config onto ``base``, refusing anything that escapes it.

    Config file names may contain folders (``src/models/x.py``) but never absolute paths,
    drive letters, backslashes or ``..`` components: a model.yml is data, not a licence to
    write anywhere on disk.
    """
    if not relative or "\x00" in relative or "\\" in relative:
        raise ToolkitError(f"unsafe file name {relative!r}")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or any(part in ("..", "") for part in pure.parts) or ":" in pure.parts[0]:
        raise ToolkitError(f"unsafe file name {relative!r}: it must stay inside the output folder")
    base_path = Path(base).resolve()
    joined = (base_path / pure).resolve()
    if joined != base_path and base_path not in joined.parents:
        raise ToolkitError(f"unsafe file name {relative!r}: it resolves outside {base_path}")
    return Path(base) / pure
