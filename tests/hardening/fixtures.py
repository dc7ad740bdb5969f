"""Shared tools for the hardening tests: the CLI under faults, and media made bad on purpose.

The hardening suite attacks the real commands in real subprocesses, so a fault that kills or
starves the process (a signal, a file-size limit, a missing permission) hits exactly what a
user runs. This module holds what several of its test files need:

* :func:`spawn` / :func:`run_tool`: ``python -m toolkit`` with an optional ``preexec_fn``
  (resource limits, dropped privileges) and an environment safe for tests;
* :func:`limit_file_size` and the ``unprivileged`` fixture: the two ways a test makes the disk
  say no: ``RLIMIT_FSIZE`` (the "disk full" a process sees as ``EFBIG``) and dropping the
  capabilities that let root ignore file permissions (the suite runs as root in CI);
* :func:`assert_clean_failure` and :func:`leftovers`: "a clear error, nothing half-written";
* :func:`bad_images` / :func:`bad_videos`: a corpus of truncated, bit-flipped, mislabelled,
  empty and absurdly sized files, each with the outcome the product must give.

Every helper builds real files and real processes; nothing is mocked.
"""

from __future__ import annotations

import ctypes
import io
import os
import resource
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from toolkit.paths import sample_image

REPO = Path(__file__).resolve().parents[2]

PreExec = Callable[[], None]

# --- running the CLI ---------------------------------------------------------------------------


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI run: unbuffered, wide, no proxy for 127.0.0.1, fast retries,
    and no ``MODNET_TOOLS_HOME`` leaking in from the developer's shell."""
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "MODNET_TOOLS_RETRY_DELAY": "0.01",
        "PYTHONPATH": str(REPO),
        # A hung child asked to abort (see finish()) prints every thread's stack.
        "PYTHONFAULTHANDLER": "1",
    }
    env.pop("MODNET_TOOLS_HOME", None)
    env.update(extra or {})
    return env


def spawn(
    *args: str | os.PathLike[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    preexec_fn: PreExec | None = None,
) -> subprocess.Popen[str]:
    """Start ``modnet-tools ARGS`` without waiting (for signals sent mid-work)."""
    return subprocess.Popen(
        [sys.executable, "-m", "toolkit", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",  # decoders print raw bytes from corrupt files on stderr
        env=cli_env(env),
        cwd=cwd,
        preexec_fn=preexec_fn,
    )


@dataclass
class Logged:
    """A spawned CLI process whose stdout and stderr go to files, so a test can watch its
    progress lines (to signal it at a chosen step) without draining a pipe."""

    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler dumps the threads' stacks
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            raise AssertionError(f"the process hung; stderr: {self.stderr[-6000:]}") from None


def spawn_logged(
    *args: str | os.PathLike[str], cwd: Path, logs: Path, env: dict[str, str] | None = None
) -> Logged:
    """Start ``modnet-tools ARGS`` with its output in ``logs/stdout.txt`` and ``stderr.txt``."""
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / "stdout.txt", logs / "stderr.txt"
    with open(out, "wb") as out_fh, open(err, "wb") as err_fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "toolkit", *map(str, args)],
            stdout=out_fh,
            stderr=err_fh,
            env=cli_env(env),
            cwd=cwd,
        )
    return Logged(proc, out, err)


def run_tool(
    *args: str | os.PathLike[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    preexec_fn: PreExec | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``modnet-tools ARGS`` to the end; a hang fails the test at ``timeout``."""
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *map(str, args)],
        capture_output=True,
        text=True,
        errors="replace",  # decoders print raw bytes from corrupt files on stderr
        env=cli_env(env),
        cwd=cwd,
        preexec_fn=preexec_fn,
        timeout=timeout,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[str, str]:
    """Collect a spawned process's output; kill it if it outlives ``timeout`` (a hang)."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler dumps the stacks of every thread
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        raise AssertionError(f"the process hung for {timeout} s; stderr: {err[-6000:]}") from None


def wait_until(
    predicate: Callable[[], bool],
    proc: subprocess.Popen[str] | Logged | None = None,
    timeout: float = 120,
    what: str = "condition",
) -> None:
    """Poll ``predicate`` until true; fail at once if ``proc`` ends first (it did not get
    to the state the test wanted to interrupt)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        popen = proc.proc if isinstance(proc, Logged) else proc
        if popen is not None and popen.poll() is not None:
            err = proc.stderr if isinstance(proc, Logged) else (popen.communicate()[1] or "")
            raise AssertionError(
                f"the process ended (exit {popen.returncode}) before the {what}: {err[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s")
        time.sleep(0.01)


# --- faults a process runs under --------------------------------------------------------------


def limit_file_size(max_bytes: int) -> PreExec:
    """A ``preexec_fn`` for a full disk: no file may grow past ``max_bytes``.

    SIGXFSZ is ignored so that a write past the limit fails with ``EFBIG`` ("File too large")
    instead of killing the process: the product must then report it like any other full
    disk. (CPython ignores SIGXFSZ itself at start-up; doing it here too keeps the test's
    premise explicit.)
    """

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2


def _drop_permission_bypass() -> None:
    """Remove the capabilities with which root ignores file modes from the bounding set, so
    that the program exec'd next, although uid 0, gets EACCES like any user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))


@pytest.fixture(scope="session")
def unprivileged() -> PreExec | None:
    """A ``preexec_fn`` under which file permissions apply (``None`` when they already do).

    Tests run as root in CI, and root reads and writes through any mode bits. Dropping
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH makes ``chmod 000`` and read-only folders bite
    again. Skipped, with the reason, where the capabilities cannot be dropped.
    """
    if os.geteuid() != 0:
        return None
    probe = subprocess.run(
        ["cat", "/proc/self/status"],
        preexec_fn=_drop_permission_bypass,
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(
            "running as root and the file-permission capabilities cannot be dropped "
            f"(prctl PR_CAPBSET_DROP failed: {probe.stderr.strip()[:200]}), so modes do not apply"
        )
    return _drop_permission_bypass


# --- what must hold afterwards ------------------------------------------------------------------


def assert_clean_failure(
    proc: subprocess.CompletedProcess[str], *needles: str, code: int = 1
) -> None:
    """Exit ``code``, no traceback, no ``error: unexpected`` (the CLI's words for a bug), a last
    stderr line ``error: ...`` holding every needle (case-insensitive)."""
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "error: unexpected" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle.lower() in proc.stderr.lower(), (needle, proc.stderr)


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error: ")]


def leftovers(root: Path) -> list[Path]:
    """Temporary files and folders the toolkit's writers use, anywhere under ``root``:
    ``*.part`` (atomic writes, partial downloads), ``.staging.*`` (IR staging)."""
    if not root.exists():
        return []
    return sorted(
        p for p in root.rglob("*") if p.name.endswith(".part") or p.name.startswith(".staging.")
    )


def visible_files(root: Path) -> list[Path]:
    """Regular files under ``root`` with no hidden component below ``root``: the final paths.

    A file inside a hidden staging folder (``.staging.*``) is a temporary, not a result.
    """
    if not root.exists():
        return []
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


# --- media made bad on purpose -----------------------------------------------------------------

U8Image = npt.NDArray[np.uint8]
Expect = Literal["output", "error", "either"]


@dataclass(frozen=True)
class BadFile:
    """One file of the corpus and what the product must do with it.

    ``output``: it is a readable picture (perhaps mislabelled) and must be processed;
    ``error``: it must be refused with one line naming it; ``either``: decoders may or may
    not make sense of it (bit flips in compressed data), but it must be one or the other.
    ``needle`` is a word the error must contain, when one is required.
    """

    name: str
    data: bytes
    expect: Expect
    needle: str = ""


def small_photo(width: int = 96, height: int = 80) -> U8Image:
    """The sample photo shrunk (BGR uint8): real image statistics, tiny files."""
    image = cv2.imread(str(sample_image()), cv2.IMREAD_COLOR)
    assert image is not None
    return np.asarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA), np.uint8)


def encode(image: U8Image, fmt: str) -> bytes:
    """``image`` (BGR) encoded by Pillow as ``fmt`` (JPEG, PNG, BMP, GIF, TIFF, WEBP, PPM)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image[..., ::-1])).save(buf, fmt)
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A well-formed PNG header (valid CRCs) declaring ``width`` x ``height``, with a few
    bytes of image data: a decoder that trusts the header allocates width*height*3 bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real JPEG whose SOF0 frame header is patched to say ``width`` x ``height``."""
    data = bytearray(encode(small_photo(), "JPEG"))
    sof = data.find(b"\xff\xc0")
    assert sof > 0, "Pillow's baseline JPEG has an SOF0 marker"
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def bmp_declaring(width: int, height: int) -> bytes:
    """A real BMP whose BITMAPINFOHEADER is patched to say ``width`` x ``height``."""
    data = bytearray(encode(small_photo(), "BMP"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def gif_declaring(width: int, height: int) -> bytes:
    """A real GIF whose logical screen and first image descriptor say ``width`` x ``height``."""
    data = bytearray(encode(small_photo(), "GIF"))
    struct.pack_into("<HH", data, 6, width, height)
    desc = data.find(b"\x2c", 13)
    struct.pack_into("<HH", data, desc + 5, width, height)
    return bytes(data)


def flip_bits(data: bytes, positions: list[int]) -> bytes:
    out = bytearray(data)
    for bit in positions:
        out[(bit // 8) % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


def _flip_positions(data: bytes, seed: int, count: int) -> list[int]:
    """``count`` bit positions past the first 16 bytes (so the format is still recognised)."""
    rng = np.random.default_rng(seed)
    return [int(b) for b in rng.integers(16 * 8, len(data) * 8, size=count)]


IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP")
_EXT = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "GIF": "gif", "TIFF": "tif", "WEBP": "webp"}
TRUNCATIONS = (0.05, 0.5, 0.95)
HUGE_SIZES = ((65_000, 65_000), (100_000, 1_000), (1, 4_000_000))


def bad_images(video_bytes: bytes | None = None) -> list[BadFile]:
    """The image corpus: every format truncated and bit-flipped, mislabelled files, empty and
    random files, and headers declaring absurd sizes. Deterministic (seeded)."""
    photo = small_photo()
    rng = np.random.default_rng(8)
    cases: list[BadFile] = []
    for fmt in IMAGE_FORMATS:
        data, ext = encode(photo, fmt), _EXT[fmt]
        for frac in TRUNCATIONS:
            cut = data[: max(1, int(len(data) * frac))]
            cases.append(BadFile(f"trunc{int(frac * 100):02d}_{fmt.lower()}.{ext}", cut, "error"))
        for seed in range(3):
            flipped = flip_bits(data, _flip_positions(data, seed, 1 + 7 * seed))
            cases.append(BadFile(f"flip{seed}_{fmt.lower()}.{ext}", flipped, "either"))
        cases.append(BadFile(f"empty_{fmt.lower()}.{ext}", b"", "error", "empty"))
    png, jpeg = encode(photo, "PNG"), encode(photo, "JPEG")
    cases += [
        BadFile("png_named.jpg", png, "output"),
        BadFile("jpeg_named.png", jpeg, "output"),
        BadFile("jpeg_named.bmp", jpeg, "output"),
        BadFile("text_named.png", b"hello, I am not a picture\n" * 20, "error", "not an image"),
        BadFile("html_named.jpg", b"<!doctype html><html><title>404</title></html>", "error"),
        BadFile("random.jpg", rng.bytes(5000), "error"),
        BadFile("random.png", rng.bytes(5000), "error"),
        BadFile("jpeg_magic_then_noise.jpg", b"\xff\xd8\xff\xe0" + rng.bytes(3000), "error"),
        BadFile("png_magic_only.png", b"\x89PNG\r\n\x1a\n", "error"),
    ]
    if video_bytes is not None:
        # Still or video is decided by content: a video named .jpg is processed as a video.
        cases.append(BadFile("video_named.jpg", video_bytes, "output"))
    for width, height in HUGE_SIZES:
        tag = f"{width}x{height}"
        cases += [
            BadFile(f"huge_{tag}.png", png_declaring(width, height), "error", "pixels"),
            BadFile(f"huge_{tag}.bmp", bmp_declaring(width, height), "error", "pixels"),
        ]
        if max(width, height) < 65_536:  # JPEG and GIF store 16-bit sizes
            cases += [
                BadFile(f"huge_{tag}.jpg", jpeg_declaring(width, height), "error", "pixels"),
                BadFile(f"huge_{tag}.gif", gif_declaring(width, height), "error", "pixels"),
            ]
    cases.append(BadFile("negative_size.bmp", bmp_declaring(-5, -7), "either"))
    cases.append(BadFile("zero_size.png", png_declaring(0, 0), "error"))
    return cases


def bad_videos(good: bytes) -> list[BadFile]:
    """The video corpus, built from a good MJPG AVI's bytes: truncated, bit-flipped, empty,
    random, and files of other kinds under video names."""
    rng = np.random.default_rng(9)
    cases = [
        BadFile("trunc_header.avi", good[:200], "error"),
        BadFile("trunc_half.avi", good[: len(good) // 2], "either"),
        BadFile("trunc_end.avi", good[: len(good) - 500], "either"),
        BadFile("empty.mp4", b"", "error", "empty"),
        BadFile("random.mp4", rng.bytes(20_000), "error"),
        BadFile("random.avi", b"RIFF" + rng.bytes(20_000), "error"),
        BadFile("text.mkv", b"not a video at all\n" * 50, "error"),
    ]
    for seed in range(3):
        cases.append(
            BadFile(
                f"flip{seed}.avi",
                flip_bits(good, _flip_positions(good, seed, 4 + 40 * seed)),
                "either",
            )
        )
    return cases


def write_corpus(folder: Path, cases: list[BadFile]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for case in cases:
        path = folder / case.name
        path.write_bytes(case.data)
        paths[case.name] = path
    return paths


def avi_bytes(frames: int = 6, width: int = 96, height: int = 64) -> bytes:
    """A small real MJPG AVI of the sample photo, panning."""
    import tempfile

    base = small_photo(width + frames * 4, height + frames * 4)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (width, height))
        assert writer.isOpened()
        for i in range(frames):
            writer.write(np.ascontiguousarray(base[4 * i : 4 * i + height, 4 * i : 4 * i + width]))
        writer.release()
        return path.read_bytes()


@pytest.fixture
def watchdog() -> Iterator[None]:
    """Fail loudly instead of hanging: a test still running after 240 s dumps its stacks and
    exits (faulthandler), so a decoder stuck on a hostile file is a red test, not a stuck CI."""
    import faulthandler

    faulthandler.dump_traceback_later(240, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
