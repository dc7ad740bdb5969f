"""``--skip-existing``: is an input already done? Its outputs must all be present and whole.

An archive run of hundreds of thousands of photos gets interrupted (a Ctrl-C, a lost node, a
reboot); re-running it with ``--skip-existing`` should do only the rest. Every output is written
through :func:`toolkit.fsutil.atomic_path`, so a file at its final name was whole when it was
published; the check here still reads each file back cheaply, because a file at that name may
come from elsewhere (a copy cut short, a disk that filled, a user's own file): a PNG's every
chunk CRC is checked and the image's last row decoded; other images are decoded; a video must
open and yield its last frame. An input with any output missing or damaged is done again, all
of it, and its outputs are replaced atomically.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from pathlib import Path

import cv2
from PIL import Image

from toolkit.matting.images import VIDEO_EXTENSIONS


def image_whole(path: Path) -> bool:
    """True when ``path`` is an image that decodes to its last row."""
    try:
        with Image.open(path) as probe:
            probe.verify()  # PNG: every chunk's CRC; cheap, no pixel decoding
        with Image.open(path) as image:
            image.load()  # raises on a truncated file (Pillow's default)
        return True
    except Exception:  # Pillow raises a dozen types for damaged files
        return False


def video_whole(path: Path) -> bool:
    """True when ``path`` opens as a video and its last frame decodes.

    A video cut short loses its index (MP4's moov atom is written last) or its last frames;
    seeking to the last frame the container announces and reading it catches both.
    """
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return False
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if count <= 0:
            return False
        if count > 1:
            cap.set(cv2.CAP_PROP_POS_FRAMES, count - 1)
        ok, frame = cap.read()
        return bool(ok) and frame is not None
    finally:
        cap.release()


def output_whole(path: Path) -> bool:
    """True when one output file is present, not empty, and decodes."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return False
    except OSError:
        return False
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return video_whole(path)
    return image_whole(path)


def outputs_whole(paths: Iterable[Path]) -> bool:
    """True when there is at least one output and every one is present and whole."""
    listed = list(paths)
    return bool(listed) and all(output_whole(p) for p in listed)


def image_outputs_fit(source: Path, outputs: Iterable[Path]) -> bool:
    """True when every image output has the size this source's results have.

    Output names are planned per run, so a file that is present and whole may be another
    input's result (``a.jpg``'s ``a_alpha.png``, later the name ``a.png`` is given): an image
    result is the source's size (upright or not, for EXIF-rotated photos), a side-by-side
    twice its width. Only headers are read.
    """
    from toolkit.matting.images import image_size

    try:
        w, h = image_size(source, max_pixels=2**62, min_side=1)
    except Exception:  # the source itself is unreadable: let the run report it
        return False
    fits = {(w, h), (h, w), (2 * w, h), (2 * h, w)}
    for out in outputs:
        if out.suffix.lower() in VIDEO_EXTENSIONS:
            continue
        try:
            with Image.open(out) as image:
                if image.size not in fits:
                    return False
        except Exception:
            return False
    return True


def _partial_pattern(dest: Path) -> re.Pattern[str]:
    """Names :func:`toolkit.fsutil.atomic_path` gives ``dest``'s temporaries (``.<name>.<8
    random characters><suffix>.part``) and a video writer's inner file (the same without
    ``.part``)."""
    name = re.escape(dest.name)
    return re.compile(rf"^\.{name}\.[A-Za-z0-9_]{{8}}{re.escape(dest.suffix)}(\.part)?$")


def sweep_partials(dests: Iterable[Path]) -> list[Path]:
    """Remove the temporaries a killed writer left beside ``dests`` (a worker killed mid-write
    cannot clean up after itself); only names this toolkit's writers give those outputs.

    Call it only when no writer of this run is still working on ``dests``.
    """
    removed: list[Path] = []
    by_folder: dict[Path, list[re.Pattern[str]]] = {}
    for dest in dests:
        by_folder.setdefault(dest.parent, []).append(_partial_pattern(dest))
    for folder, patterns in by_folder.items():
        try:
            names = [n for n in (e.name for e in folder.iterdir()) if n.startswith(".")]
        except OSError:
            continue
        for name in names:
            if any(p.match(name) for p in patterns):
                with contextlib.suppress(FileNotFoundError):
                    (folder / name).unlink()
                    removed.append(folder / name)
    return removed
