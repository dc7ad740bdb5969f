"""File-system helpers shared by every writer: atomic replacement, confined paths, and the
check that an output never lands on an input or on a file of another kind.

Every output of the toolkit goes through :func:`atomic_path`, so an interrupted or failed run
never leaves a half-written file where a good one is expected; every command calls
:func:`check_output` for each path it will write before it does any work.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from toolkit.errors import ToolkitError, UsageError


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
    if not pure.parts:  # "." and "./" name the folder itself, not a file in it
        raise ToolkitError(f"unsafe file name {relative!r}: it names no file")
    if pure.is_absolute() or any(part in ("..", "") for part in pure.parts) or ":" in pure.parts[0]:
        raise ToolkitError(f"unsafe file name {relative!r}: it must stay inside the output folder")
    base_path = Path(base).resolve()
    joined = (base_path / pure).resolve()
    if joined != base_path and base_path not in joined.parents:
        raise ToolkitError(f"unsafe file name {relative!r}: it resolves outside {base_path}")
    return Path(base) / pure


# --- refusing to overwrite what the user owns ----------------------------------------------------

#: The kinds of file the toolkit writes, and what an existing file at the destination may be
#: for the write to go ahead (an earlier result of the same kind, or an empty file).
OUTPUT_KINDS: dict[str, frozenset[str]] = {
    "json": frozenset({"json"}),
    "image": frozenset({"png", "jpeg", "webp", "bmp", "tiff", "gif"}),
    "video": frozenset({"video"}),
    "checkpoint": frozenset({"checkpoint"}),
    "ir": frozenset({"ir-xml"}),
    # An IR's .bin has no signature: any bytes but a recognised other kind.
    "weights": frozenset({"other", "text", "onnx"}),
    "onnx": frozenset({"onnx", "other"}),
    "model-file": frozenset({"checkpoint", "other", "text"}),  # download: .pth, .py, ...
}

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"BM", "bmp"),
    (b"GIF8", "gif"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"\x1a\x45\xdf\xa3", "video"),  # Matroska / WebM
    (b"PK\x03\x04", "checkpoint"),  # torch.save's zip format (also any zip: refused as image)
    (b"\x80\x02", "checkpoint"),  # a legacy pickle, as the released checkpoints are
    (b"\x80\x04", "checkpoint"),
    (b"\x80\x05", "checkpoint"),
)


def sniff_kind(path: Path) -> str:
    """What an existing file holds, from its first bytes: ``folder``, ``empty``, ``png``,
    ``jpeg``, ``webp``, ``bmp``, ``gif``, ``tiff``, ``video``, ``checkpoint``, ``onnx``,
    ``ir-xml``, ``xml``, ``json``, ``text`` or ``other`` (unrecognised binary)."""
    if path.is_dir():
        return "folder"
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return "other"
    if not head:
        return "empty"
    for magic, kind in _SIGNATURES:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video"
    if head[4:8] == b"ftyp":
        return "video"  # MP4 / MOV (a HEIC photo too: never a file the toolkit writes over)
    if head[0] == 0x08 and 1 <= head[1] <= 15 and head[2:3] in (b"\x12", b"\x1a", b"\x3a"):
        return "onnx"  # protobuf field 1 (ir_version), then producer, domain or graph
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith((b"{", b"[")):
        return "json"
    if text.startswith(b"<"):
        return "ir-xml" if b"<net" in head else "xml"
    if any(b < 0x20 and b not in (0x09, 0x0A, 0x0D) for b in head):
        return "other"  # NUL and control bytes: binary, whatever decodes
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        # A cut multi-byte character at byte 512 is still text.
        try:
            head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return "other"
    return "text"


class FileSet:
    """A set of files compared by identity (device and inode) as well as by resolved path, so
    a symlink or hard link to an input is that input. Built once: a batch checks every output
    against every input, and a folder of 10 000 photos must not cost 10 000^2 ``stat`` calls."""

    def __init__(self, paths: Iterable[str | os.PathLike[str]] = ()) -> None:
        self._ids: dict[tuple[int, int], Path] = {}
        self._resolved: dict[Path, Path] = {}
        for p in paths:
            self.add(Path(p))

    def add(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            st = path.stat()
            self._ids[(st.st_dev, st.st_ino)] = path
        with contextlib.suppress(OSError, RuntimeError):
            self._resolved[path.resolve()] = path

    def find(self, path: Path) -> Path | None:
        """The member that ``path`` is (by identity or resolved path), if any."""
        with contextlib.suppress(OSError):
            st = path.stat()
            hit = self._ids.get((st.st_dev, st.st_ino))
            if hit is not None:
                return hit
        with contextlib.suppress(OSError, RuntimeError):
            return self._resolved.get(path.resolve())
        return None


def check_output(
    dest: str | os.PathLike[str],
    kind: str,
    *,
    inputs: FileSet | Iterable[str | os.PathLike[str]] = (),
    option: str = "",
) -> None:
    """Refuse, in one line and before any work, to write ``dest`` where that would destroy data.

    Three rules, the same for every command: ``dest`` is not one of the command's
    ``inputs`` (compared as files, so symlinks and hard links count); it is not a folder;
    and if it exists, it already holds a file of the ``kind`` about to be written (see
    :data:`OUTPUT_KINDS`) or nothing, so ``--json photo.png``, a report over the model's
    ``.xml``, or a checkpoint over a photo are refused however the paths are spelt.
    """
    path = Path(dest)
    label = f"{option} {path}" if option else str(path)
    known = inputs if isinstance(inputs, FileSet) else FileSet(inputs)
    source = known.find(path)
    if source is not None:
        also = "" if source == path else f" ({source})"
        raise UsageError(f"{label}: refusing to write there, which is an input file{also}")
    if not (path.exists() or path.is_symlink()):
        return
    found = sniff_kind(path)
    if found == "folder":
        raise UsageError(f"{label}: is a folder")
    if found != "empty" and found not in OUTPUT_KINDS[kind]:
        article = "an" if kind[0] in "aeiou" else "a"
        raise UsageError(
            f"{label}: refusing to overwrite an existing file that is not {article} {kind} "
            f"output (it looks like {found}); remove it or choose another name"
        )
