"""The mark ``infer`` leaves in the images it writes, so that folder runs can skip them safely.

Re-running ``infer`` on a folder that also receives its results must not matte the mattes,
but a name alone proves nothing: ``the_dark_side.jpg`` is a photo, not a side-by-side view.
So every PNG result carries a ``tEXt`` chunk ``Software=modnet-tools`` right after its header,
and every JPEG result a comment segment ``modnet-tools`` right after its start marker: both
are standard metadata every viewer ignores, and both sit in the first bytes of the file, so
checking a candidate costs one small read. Video results carry ``modnet-tools`` in the
container's ``comment`` metadata when their writer sets it.

:func:`is_tool_output` is the whole rule (documented in the README): a file is this tool's
output when its stem ends in one of :data:`OUTPUT_SUFFIXES` and either it carries the mark, or
its source (the same stem without the suffix) sits in the same folder, or it is one of the pair
``X_alpha`` + ``X_rgba`` that every image run writes together (the last two for results
written before the mark existed, and for formats that cannot carry it).
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from pathlib import Path

#: Suffixes of the files ``infer`` writes (``<stem>_alpha.png`` ...).
OUTPUT_SUFFIXES = ("_alpha", "_rgba", "_composite", "_side")
MARK = b"modnet-tools"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT = b"Software\x00" + MARK
_JPEG_COMMENT = b"\xff\xfe" + struct.pack(">H", len(MARK) + 2) + MARK
_HEAD = 128


def mark_encoded(ext: str, data: bytes) -> bytes:
    """``data`` (an encoded PNG or JPEG) with the mark inserted; other formats unchanged."""
    ext = ext.lower()
    if ext == ".png" and data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR":
        end = 8 + 8 + struct.unpack(">I", data[8:12])[0] + 4  # signature + IHDR chunk
        chunk = (
            struct.pack(">I", len(_PNG_TEXT))
            + b"tEXt"
            + _PNG_TEXT
            + struct.pack(">I", zlib.crc32(b"tEXt" + _PNG_TEXT) & 0xFFFFFFFF)
        )
        return data[:end] + chunk + data[end:]
    if ext in (".jpg", ".jpeg") and data.startswith(b"\xff\xd8"):
        return data[:2] + _JPEG_COMMENT + data[2:]
    return data


def has_mark(path: Path) -> bool:
    """Whether ``path`` carries the mark (a cheap read of its first bytes; videos: metadata)."""
    try:
        with path.open("rb") as f:
            head = f.read(_HEAD)
    except OSError:
        return False
    if head.startswith(_PNG_SIGNATURE):
        return head[37:41] == b"tEXt" and head[41 : 41 + len(_PNG_TEXT)] == _PNG_TEXT
    if head.startswith(b"\xff\xd8"):
        return head[2 : 2 + len(_JPEG_COMMENT)] == _JPEG_COMMENT
    return _video_marked(path)


def _video_marked(path: Path) -> bool:
    from toolkit.matting.sniff import VIDEO_EXTENSIONS

    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        return False
    try:
        import av
    except ImportError:  # pragma: no cover - av is a base dependency
        return False
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            return MARK.decode() in str(container.metadata.get("comment", ""))
    except Exception:  # anything FFmpeg cannot open (it raises many types) is not ours
        return False


def output_source_stem(path: Path) -> str | None:
    """The stem of the input ``path`` would be the output of, by name, or None."""
    stem = path.stem
    for suffix in OUTPUT_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return None


def is_tool_output(path: Path, siblings: set[str] | None = None) -> bool:
    """The skip rule for folders and globs (see the module docstring).

    ``siblings`` are the lower-cased stems of the media files in ``path``'s folder (computed
    once per folder by the caller); None lists the folder here.
    """
    source = output_source_stem(path)
    if source is None:
        return False
    if has_mark(path):
        return True
    if siblings is None:
        from toolkit.matting.sniff import MEDIA_EXTENSIONS

        siblings = set()
        with contextlib.suppress(OSError):
            siblings = {
                p.stem.lower()
                for p in path.parent.iterdir()
                if p.suffix.lower() in MEDIA_EXTENSIONS and p != path
            }
    source = source.lower()
    pair = {f"{source}_alpha", f"{source}_rgba"}
    return source in siblings or (
        path.stem.lower() in pair and pair <= siblings | {path.stem.lower()}
    )
