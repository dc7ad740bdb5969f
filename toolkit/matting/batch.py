"""The runner behind ``modnet-tools infer``: a batch of images, videos and cameras through one
:class:`~toolkit.matting.session.MattingSession`, with decoding, inference and encoding overlapped.

Images flow through three stages at once: a background thread decodes the next files, the
session keeps several asynchronous inference requests busy, and a small thread pool encodes
and writes the results (PNG encoding of a cut-out costs about as much CPU as decoding a JPEG,
so doing it inline would idle the network). OpenCV, Pillow and OpenVINO release the GIL, so
plain threads give real overlap.

Guarantees: every output is written atomically; an output never replaces an input file; a
failing input is reported and the others go on; the summary says which failed.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from toolkit.errors import ToolkitError, UsageError
from toolkit.fsutil import FileSet, atomic_path, check_output
from toolkit.matting.camera import CameraReader
from toolkit.matting.images import DEFAULT_MAX_PIXELS, InputError, InputItem, load_image
from toolkit.matting.live import LiveStats
from toolkit.matting.marker import has_mark, mark_encoded
from toolkit.matting.overlap import prefetch
from toolkit.matting.prepost import (
    Background,
    NetworkSizeError,
    NonFiniteMatteError,
    composite,
    cutout,
    quantize_alpha,
    require_finite,
    side_by_side,
)
from toolkit.matting.session import MattingSession
from toolkit.matting.video import TimedFrame, VideoReader, probe_frame_count
from toolkit.matting.videojob import LiveSource, VideoSettings, matte_video
from toolkit.matting.videowriter import (
    VideoWriteError,
    check_crf,
    check_sequence_folder,
    container_extension,
    parse_codec,
)

U8Image = npt.NDArray[np.uint8]
F32Array = npt.NDArray[np.float32]

#: Formats OpenCV encodes; a composite of any other input (GIF, PNM...) is written as PNG.
_WRITABLE_IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
#: Default PNG compression. Level 1 here means zlib with run-length matching and the "sub" row
#: filter: a 1280x720 cut-out takes about 35 CPU-ms, about 60% of OpenCV's default settings,
#: for files about 10% larger. PNG encoding is the largest cost after inference, and on a
#: CPU-bound machine every millisecond of it is taken from the network (tests/perf/bench_infer.py).
#: Level 0 stores pixels uncompressed (about 7x cheaper, cut-outs 2.7x larger, mattes far
#: larger); levels 2-9 are plain zlib levels (smaller files, more CPU).
DEFAULT_PNG_COMPRESSION = 1


def _png_params(level: int) -> list[int]:
    strategy = cv2.IMWRITE_PNG_STRATEGY_RLE if level == 1 else cv2.IMWRITE_PNG_STRATEGY_DEFAULT
    row_filter = cv2.IMWRITE_PNG_FILTER_SUB if level else cv2.IMWRITE_PNG_FILTER_NONE
    return [
        cv2.IMWRITE_PNG_COMPRESSION,
        level,
        cv2.IMWRITE_PNG_STRATEGY,
        strategy,
        cv2.IMWRITE_PNG_FILTER,
        row_filter,
    ]


@dataclass
class InferOptions:
    """What to write and how. ``jobs`` is the number of encoding threads."""

    output_dir: Path
    background: Background | None = None
    side_by_side: bool = False
    rgba: bool = True
    alpha: bool = True
    ofd: bool = False
    ofd_tolerance: float = 0.1
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_frames: int | None = None
    jobs: int = 2
    png_compression: int = DEFAULT_PNG_COMPRESSION
    #: Video outputs: codec (h264, hevc, vp9, ffv1), CRF (None: the codec's default),
    #: container extension (None: the input's when it holds the codec, else the codec's),
    #: the transparent cut-out video (webm, mov, png or None), and whether audio is copied.
    video_codec: str = "h264"
    crf: int | None = None
    video_ext: str | None = None
    rgba_video: str | None = None
    audio: bool = True

    def video_settings(self) -> VideoSettings:
        """The video half of these options, validated (a :class:`UsageError` if not)."""
        codec = parse_codec(self.video_codec)
        return VideoSettings(
            codec=codec,
            crf=check_crf(codec, self.crf),
            audio=self.audio,
            rgba_format=self.rgba_video,
            background=self.background,
            ofd=self.ofd,
            ofd_tolerance=self.ofd_tolerance,
            png_compression=self.png_compression,
        )

    #: Files no result may be written over besides the inputs (the model, a background image).
    protected: tuple[Path, ...] = ()
    #: Cameras (and videos read as cameras, at their frame rate): matte the newest frame and
    #: drop those arriving while busy, so the delay stays constant (:mod:`toolkit.matting.live`).
    live: bool = False
    #: Skip an image or video whose outputs are all present and whole (see matting/resume.py).
    skip_existing: bool = False


@dataclass
class ItemResult:
    """The outcome of one input: the files written, or why it failed."""

    label: str
    outputs: list[Path] = field(default_factory=list)
    frames: int = 0
    error: str | None = None
    #: Lines the user should read although nothing failed (e.g. a pixel format change).
    notes: list[str] = field(default_factory=list)
    #: Live mode: frames seen and dropped, latency of each output.
    live: LiveStats | None = None
    #: Not run: ``--skip-existing`` found every output present and whole.
    skipped: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class InferSummary:
    results: list[ItemResult]
    seconds: float

    @property
    def failed(self) -> list[ItemResult]:
        return [r for r in self.results if not r.ok]

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.results)

    @property
    def skipped(self) -> list[ItemResult]:
        return [r for r in self.results if r.skipped]


class Reporter(Protocol):
    """Progress and per-item outcomes; the CLI renders them, tests and libraries may ignore them."""

    def start(self, total_frames: int | None) -> None: ...

    def advance(self, frames: int = 1) -> None: ...

    def item_done(self, result: ItemResult) -> None: ...

    def finish(self, summary: InferSummary) -> None: ...


class SilentReporter:
    """A reporter that reports nothing (the library default)."""

    def start(self, total_frames: int | None) -> None:
        pass

    def advance(self, frames: int = 1) -> None:
        pass

    def item_done(self, result: ItemResult) -> None:
        pass

    def finish(self, summary: InferSummary) -> None:
        pass


# --- output naming -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Where one input's results go."""

    item: InputItem
    stem: str

    def image_outputs(self, options: InferOptions) -> dict[str, Path]:
        ext = self.item.path.suffix.lower() if self.item.path else ".png"
        ext = ext if ext in _WRITABLE_IMAGE_EXTS else ".png"
        out = options.output_dir
        files = {"alpha": out / f"{self.stem}_alpha.png"} if options.alpha else {}
        if options.rgba:
            files["rgba"] = out / f"{self.stem}_rgba.png"
        if options.background is not None:
            files["composite"] = out / f"{self.stem}_composite{ext}"
        if options.side_by_side:
            files["side"] = out / f"{self.stem}_side{ext}"
        return files

    def video_outputs(self, options: InferOptions) -> dict[str, Path]:
        codec = parse_codec(options.video_codec)
        ext = container_extension(codec, options.video_ext, self.item.path)
        out = options.output_dir
        files = {"alpha": out / f"{self.stem}_alpha{ext}"} if options.alpha else {}
        if options.background is not None:
            files["composite"] = out / f"{self.stem}_composite{ext}"
        if options.side_by_side:
            files["side"] = out / f"{self.stem}_side{ext}"
        if options.rgba_video is not None:
            suffix = "" if options.rgba_video == "png" else f".{options.rgba_video}"
            files["rgba"] = out / f"{self.stem}_rgba{suffix}"  # png: a folder of frames
        return files

    def outputs(self, options: InferOptions) -> dict[str, Path]:
        if self.item.kind == "image":
            return self.image_outputs(options)
        return self.video_outputs(options)


def _name_key(name: str) -> str:
    """How a file system may compare two names: case-insensitively (macOS, Windows) and after
    Unicode normalisation (macOS stores NFD), so ``Photo.png`` and ``photo.png`` are one name."""
    return unicodedata.normalize("NFC", name).casefold()


def plan_outputs(items: list[InputItem], options: InferOptions | None = None) -> list[Plan]:
    """One stem per input whose output file names are unique against every name already
    planned: ``photo``, then ``photo-2``, ``photo-3``... whatever the inputs are called
    (``a/photo.jpg b/photo.png c/photo-2.jpg`` gives ``photo``, ``photo-2``, ``photo-2-2``),
    compared as a case-insensitive file system would."""
    planned: set[str] = set()
    stems: set[str] = set()
    plans = []
    for item in items:
        if item.kind == "error":
            plans.append(Plan(item, ""))
            continue
        base = item.path.stem if item.path is not None else f"camera{item.camera}"
        count = 1
        while True:
            plan = Plan(item, base if count == 1 else f"{base}-{count}")
            names = (
                {_name_key(p.name) for p in plan.outputs(options).values()}
                if options is not None
                else set()
            )
            if _name_key(plan.stem) not in stems and not names & planned:
                break
            count += 1
        stems.add(_name_key(plan.stem))
        planned |= names
        plans.append(plan)
    return plans


def _clobber_error(plan: Plan, options: InferOptions, inputs: FileSet) -> str | None:
    for kind, dest in plan.outputs(options).items():
        try:
            if kind == "rgba" and plan.item.kind != "image" and options.rgba_video == "png":
                check_sequence_folder(dest)  # a folder of frames, replaced only if ours
                continue
            check_output(dest, "image" if plan.item.kind == "image" else "video", inputs=inputs)
            if plan.item.kind == "image" and dest.is_file() and not has_mark(dest):
                # same kind, but not this tool's result: a user's own photo named like one
                # (image marks sit in the first bytes; some video containers drop theirs)
                raise UsageError(
                    f"{dest}: exists and was not written by modnet-tools; "
                    "choose another -o or move it away"
                )
        except UsageError as exc:
            return f"{plan.item.label}: {exc} ({kind} result)"
    return None


def triage(
    items: list[InputItem], options: InferOptions, reporter: Reporter
) -> tuple[list[ItemResult], list[Plan]]:
    """Plan every input's outputs and settle the inputs that need no work: those that fail
    before any (an unusable spec, an output that would overwrite an input) and, with
    ``skip_existing``, those already done. Returns their results (already reported) and the
    plans left to run. The local runner and the Ray runner both start here, so they name and
    skip outputs identically."""
    from toolkit.matting.resume import image_outputs_fit, outputs_whole, sweep_partials

    inputs = FileSet([i.path for i in items if i.path is not None] + list(options.protected))
    settled: list[ItemResult] = []
    runnable: list[Plan] = []
    plans = plan_outputs(items, options)
    if options.skip_existing:  # continuing a killed run: first clear what it left half-done
        sweep_partials(
            d for p in plans if p.item.kind != "error" for d in p.outputs(options).values()
        )
    for plan in plans:
        error = plan.item.error or _clobber_error(plan, options, inputs)
        if error is not None:
            result = ItemResult(plan.item.label, error=error)
        elif (
            options.skip_existing
            and plan.item.kind in ("image", "video")
            and outputs_whole(plan.outputs(options).values())
            and (
                plan.item.kind != "image"
                or plan.item.path is None
                or image_outputs_fit(plan.item.path, plan.outputs(options).values())
            )
        ):
            files = list(plan.outputs(options).values())
            result = ItemResult(plan.item.label, outputs=files, skipped=True)
        else:
            runnable.append(plan)
            continue
        settled.append(result)
        reporter.item_done(result)
    return settled, runnable


def total_frames(plans: list[Plan], options: InferOptions) -> int | None:
    """Frames the plans will produce, for the progress bar (None: a camera without an end)."""
    total = 0
    for plan in plans:
        if plan.item.kind == "image":
            total += 1
        elif plan.item.kind == "camera" and options.max_frames is None:
            return None
        elif plan.item.path is not None:  # from the container's frame count or duration
            total += probe_frame_count(plan.item.path, options.max_frames)
        else:
            total += options.max_frames or 0
    return total


# --- small concurrency helpers ----------------------------------------------------------------


class _BoundedPool:
    """A thread pool that blocks the submitter when ``limit`` tasks are pending, so a fast
    producer cannot pile up decoded frames in memory while the encoders catch up."""

    def __init__(self, workers: int, limit: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="modnet")
        self._slots = threading.BoundedSemaphore(max(1, limit))
        self.futures: deque[Future[ItemResult | None]] = deque()

    def submit(self, fn: Callable[[], ItemResult | None]) -> Future[ItemResult | None]:
        self._slots.acquire()
        future = self._pool.submit(fn)
        future.add_done_callback(lambda _: self._slots.release())
        self.futures.append(future)
        return future

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


# --- writing -----------------------------------------------------------------------------------


def encode_image(ext: str, image: U8Image, png_compression: int = DEFAULT_PNG_COMPRESSION) -> bytes:
    """The bytes ``infer`` writes for ``image`` as ``ext`` (``.png``, ``.jpg``...), marked as
    this tool's output; the server answers with the same bytes. OSError if OpenCV cannot."""
    ext = ext.lower()
    ok, encoded = cv2.imencode(ext, image, _png_params(png_compression) if ext == ".png" else [])
    if not ok:
        raise OSError(f"OpenCV could not encode a {ext} image")
    return mark_encoded(ext, encoded.tobytes())


def _write_image(dest: Path, image: U8Image, png_compression: int) -> None:
    encoded = encode_image(dest.suffix, image, png_compression)
    with atomic_path(dest) as tmp:  # marked so that folder runs know it for ours
        tmp.write_bytes(encoded)


def write_image_results(
    plan: Plan, frame: U8Image, alpha: F32Array, options: InferOptions
) -> ItemResult:
    """Quantise the matte and write every requested file for one image."""
    result = ItemResult(plan.item.label, frames=1)
    try:
        files = plan.image_outputs(options)
        level = options.png_compression
        alpha8 = quantize_alpha(alpha)
        view: U8Image = alpha8
        if "alpha" in files:
            _write_image(files["alpha"], alpha8, level)
            result.outputs.append(files["alpha"])
        if "rgba" in files:
            _write_image(files["rgba"], cutout(frame, alpha8), level)
            result.outputs.append(files["rgba"])
        if options.background is not None:
            view = composite(frame, alpha8, options.background.render(frame))
            _write_image(files["composite"], view, level)
            result.outputs.append(files["composite"])
        if "side" in files:
            _write_image(files["side"], side_by_side(frame, view), level)
            result.outputs.append(files["side"])
    except OSError as exc:
        result.error = f"{plan.item.label}: cannot write results: {exc.strerror or exc}"
    return result


# --- the runner --------------------------------------------------------------------------------


class Runner:
    """Runs a batch of inputs through one session; see :func:`run_infer`."""

    def __init__(
        self, session: MattingSession, options: InferOptions, reporter: Reporter | None = None
    ) -> None:
        self.session = session
        self.options = options
        self.reporter: Reporter = reporter or SilentReporter()

    def run(self, items: list[InputItem]) -> InferSummary:
        started = time.perf_counter()
        results, runnable = triage(items, self.options, self.reporter)
        images = [p for p in runnable if p.item.kind == "image"]
        streams = [p for p in runnable if p.item.kind in ("video", "camera")]
        self.reporter.start(total_frames(runnable, self.options))
        if images:
            results.extend(self.run_images(images))
        for plan in streams:
            result = self.run_stream(plan)
            results.append(result)
            self.reporter.item_done(result)
        summary = InferSummary(results, time.perf_counter() - started)
        self.reporter.finish(summary)
        return summary

    # --- images ----------------------------------------------------------------------------

    def run_images(
        self, plans: list[Plan], done: Callable[[int, ItemResult], None] | None = None
    ) -> list[ItemResult]:
        """Matte a run of images (decode, infer and encode overlapped); one result each.

        ``done(index, result)`` is called as each image is settled (the Ray workers record
        each one the moment its files are written)."""
        results: dict[int, ItemResult] = {}
        pool = _BoundedPool(self.options.jobs, limit=2 * max(1, self.options.jobs))

        def decoded() -> Iterator[tuple[int, U8Image]]:
            for index, plan in enumerate(plans):
                assert plan.item.path is not None
                try:
                    frame = load_image(plan.item.path, max_pixels=self.options.max_pixels)
                    self.session.network_size(*frame.shape[:2])  # refuse what would need GBs
                except (InputError, NetworkSizeError) as exc:
                    if isinstance(exc, NetworkSizeError):
                        exc = InputError(f"{plan.item.label}: {exc}")
                    results[index] = ItemResult(plan.item.label, error=str(exc))
                    if done is not None:
                        done(index, results[index])
                    self.reporter.item_done(results[index])
                    self.reporter.advance()
                    continue
                yield index, frame

        def finish(index: int, frame: U8Image, alpha: F32Array) -> ItemResult:
            try:
                require_finite(alpha)
            except NonFiniteMatteError as exc:
                result = ItemResult(
                    plans[index].item.label, error=f"{plans[index].item.label}: {exc}"
                )
            else:
                result = write_image_results(plans[index], frame, alpha, self.options)
            results[index] = result
            if done is not None:
                done(index, result)
            self.reporter.item_done(result)
            self.reporter.advance()
            return result

        try:
            stream = self.session.matte_stream(prefetch(decoded(), depth=4), check_finite=False)
            for index, frame, alpha in stream:
                pool.submit(functools.partial(finish, index, frame, alpha))
        finally:
            pool.shutdown()
        for future in pool.futures:
            future.result()  # surface bugs in the writers instead of losing them
        return [results[i] for i in sorted(results)]

    # --- video and cameras -----------------------------------------------------------------

    def run_stream(self, plan: Plan) -> ItemResult:
        """Matte one video or camera, frames in order, into its own writers."""
        return run_video(self.session, plan, self.options, self.reporter)


def run_video(
    session: MattingSession,
    plan: Plan,
    options: InferOptions,
    reporter: Reporter | None = None,
) -> ItemResult:
    """Matte one video file or camera and write its outputs: a function of (input, options)
    that a scheduler (a Ray task) can call on its own. Never raises for a bad input."""
    reporter = reporter or SilentReporter()
    item = plan.item
    result = ItemResult(item.label)
    try:
        settings = options.video_settings()
        files = plan.video_outputs(options)
        if not files:
            raise ToolkitError(
                f"{item.label}: nothing to write for a video with --no-alpha: "
                "add --background, --side-by-side or --rgba-video"
            )
        with contextlib.ExitStack() as stack:
            reader: VideoReader | CameraReader
            if item.path is not None:
                reader = VideoReader(
                    item.path,
                    max_frames=options.max_frames,
                    max_pixels=options.max_pixels,
                    audio=options.audio,
                    decode_audio=options.audio,
                )
            else:
                reader = CameraReader(int(item.camera or 0), max_frames=options.max_frames)
            stack.enter_context(reader)
            frames = reader.frames()
            if item.kind == "camera":
                frames = _stoppable(frames, stack)
            live = None
            if options.live:  # a file is read as a camera would deliver it: at its frame rate
                live = LiveSource(frames, reader.fps if item.kind == "video" else None)
                stack.callback(live.close)
                result.live, frames = live.stats, iter(())
            result.frames, result.notes = matte_video(
                session, reader, frames, files, settings, stack, reporter, live
            )
        result.outputs = list(files.values())
    except VideoWriteError as exc:
        result.error = f"{item.label}: cannot write results: {exc}"
        result.outputs = []
    except ToolkitError as exc:
        text = str(exc)
        result.error = text if text.startswith(item.label) else f"{item.label}: {text}"
        result.outputs = []
    except OSError as exc:
        result.error = f"{item.label}: cannot write results: {exc.strerror or exc}"
        result.outputs = []
    return result


def run_video_file(
    session: MattingSession,
    path: Path,
    options: InferOptions,
    reporter: Reporter | None = None,
    stem: str | None = None,
) -> ItemResult:
    """:func:`run_video` on a video file, its outputs named after ``stem`` (default: the
    file's own stem) in ``options.output_dir``."""
    item = InputItem(kind="video", label=str(path), path=path)
    return run_video(session, Plan(item, stem or path.stem), options, reporter)


def _stoppable(frames: Iterator[TimedFrame], stack: contextlib.ExitStack) -> Iterator[TimedFrame]:
    """Camera frames until Ctrl-C (handled as 'stop recording', so the video is kept).

    The handler is installed now, on the calling thread, not when the frames are first read:
    they are read in another thread (the prefetcher, or a live source's reader).
    """
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():

        def on_sigint(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = signal.signal(signal.SIGINT, on_sigint)
        stack.callback(signal.signal, signal.SIGINT, previous)

    def until_stopped() -> Iterator[TimedFrame]:
        for timed in frames:
            if stop.is_set():
                return
            yield timed

    return until_stopped()


def run_infer(
    session: MattingSession,
    items: list[InputItem],
    options: InferOptions,
    reporter: Reporter | None = None,
) -> InferSummary:
    """Matte every input and write the results; never raises for a bad input (see the summary)."""
    return Runner(session, options, reporter).run(items)
