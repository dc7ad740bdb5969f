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


#: The longest file name (in bytes) when the file system will not say: Linux, macOS and
#: Windows all allow 255.
_DEFAULT_NAME_MAX = 255


def name_max(folder: Path) -> int:
    """The longest file name ``folder``'s file system accepts, in bytes."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return _DEFAULT_NAME_MAX


def fitted_name(name: str, extra: int, limit: int) -> str:
    """``name`` cut (at a character boundary) so that it plus ``extra`` bytes fit in ``limit``.

    Temporary, partial and lock files are named after the file they stand for, plus a few
    characters; for a final name near the limit (a 240-character stem) that made the helper's
    name too long and failed a write the final name allowed. The cut part only helps a human
    recognise the file; uniqueness comes from the random or hashed part the caller adds.
    """
    room = max(1, limit - extra)
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) <= room:
        return name
    return encoded[:room].decode("utf-8", "ignore") or "f"


def sibling(dest: Path, prefix: str, suffix: str) -> Path:
    """``<dest's folder>/<prefix><dest's name, shortened if needed><suffix>``, within NAME_MAX."""
    extra = len(prefix.encode()) + len(suffix.encode())
    return dest.with_name(prefix + fitted_name(dest.name, extra, name_max(dest.parent)) + suffix)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only if the block succeeds.

    The temporary file lives in the destination's folder so the final ``os.replace`` is a
    same-filesystem rename (atomic on POSIX). ``suffix`` keeps the extension for writers that
    pick the format from the name (OpenCV, OpenVINO); it defaults to the destination's own.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tail = (dest.suffix if suffix is None else suffix) + ".part"
    if len(tail) > 40:  # a "suffix" that is most of a long name is no format hint: drop it
        tail = ".part"
    # mkstemp adds 8 random characters between prefix and suffix; the name of the temporary
    # file must fit wherever the final name does, so the copy of dest's name in it is cut.
    extra = len(b"..") + 8 + len(tail.encode("utf-8", "surrogateescape"))
    shown = fitted_name(dest.name, extra, name_max(dest.parent))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{shown}.", suffix=tail, dir=dest.parent)
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
