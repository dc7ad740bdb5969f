"""``infer``: matting on images, folders, globs, video files and cameras.

Thin wrapper: options are parsed here; the work is :class:`toolkit.matting.session.MattingSession`
(the Python API) driven by :func:`toolkit.matting.batch.run_infer`. Nothing imported here imports
torch; ``--verify`` imports :mod:`toolkit.convert.verify` (which needs torch) only when asked.

Where things are: ``-o/--output-dir`` is where the results go (as in the design's command
contract), so the converted model is looked up under ``--model-root`` (the folder ``convert``
wrote its ``public/<name>/<PREC>/`` tree into; default ``$MODNET_TOOLS_HOME``, else ``./cache``)
unless ``--model`` names the IR directly.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from toolkit.cli.app import app
from toolkit.cli.options import (
    DEFAULT_MAX_PIXELS,
    Device,
    DownloadDir,
    InferencePrecisionOption,
    MaxPixels,
    ModelName,
    ModelPrecision,
    ModelRoot,
    ModelXml,
    NetworkSize,
    finite,
)
from toolkit.errors import ToolkitError, UsageError, redact
from toolkit.perf.fastpath import FAST_HELP

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from toolkit.matting.batch import InferSummary, ItemResult
    from toolkit.matting.session import MattingSession


class _CliReporter:
    """Progress bar with frames/s on stderr (only on a terminal), one stdout line per input
    written, one ``error:`` line on stderr per input that failed."""

    def __init__(self, show_progress: bool, live: bool = False) -> None:
        self._show = show_progress
        self._live = live
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self.failures: list[str] = []

    def start(self, total_frames: int | None) -> None:
        if not self._show:
            return
        from toolkit.cli.progress import count_progress

        self._progress = count_progress("matting", "frames", "{task.fields[fps]}", transient=True)
        self._progress.start()
        self._task = self._progress.add_task("matting", total=total_frames, fps="")

    def advance(self, frames: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, frames)
            task = self._progress.tasks[0]
            speed = task.finished_speed or task.speed
            if speed and not self._live:
                self._progress.update(self._task, fps=f"{speed:.1f} frames/s")

    def status(self, text: str) -> None:
        """Live mode: frames/s, latency and drops replace the bar's own frames/s."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, fps=text)

    def item_done(self, result: ItemResult) -> None:
        # While the bar is live, rich redirects stdout and stderr to print above it.
        for note in result.notes:
            typer.echo(f"note: {result.label}: {note}", err=True)
        if result.live is not None:
            typer.echo(f"{result.label}: {result.live.summary()}", err=True)
        if result.skipped:
            typer.echo(redact(f"{result.label}: skipped, outputs present and whole"))
        elif result.ok:
            written = ", ".join(str(p) for p in result.outputs)
            typer.echo(redact(f"{result.label} -> {written}"))
        else:
            self.failures.append(result.error or "failed")
            typer.echo(redact(f"error: {result.error or 'failed'}"), err=True)

    def finish(self, summary: InferSummary) -> None:
        if self._progress is not None:
            self._progress.stop()


def _protected_files(xml: Path, *others: str | Path | None) -> tuple[Path, ...]:
    """Files no result may land on besides the inputs: the IR and its weights, a background
    image, the checkpoint and ONNX that --verify reads."""
    found = [xml, xml.with_suffix(".bin")]
    found += [Path(p) for p in others if p is not None and Path(p).is_file()]
    return tuple(found)


def _resolve_model(
    model: Path | None, name: str, precision: str | None, model_root: Path | None
) -> Path:
    from toolkit.matting.session import ModelNotFoundError, find_ir
    from toolkit.paths import default_root

    if model is not None:
        if model.is_dir():
            raise UsageError(f"--model {model}: expected the IR's .xml file, not a folder")
        if not model.is_file():
            raise ModelNotFoundError(
                f"--model {model}: no such file (run `modnet-tools download` and "
                "`modnet-tools convert` first, or pass the path of an existing .xml)"
            )
        return model
    return find_ir(
        model_root if model_root is not None else default_root(),
        name,
        precision,
        how="--model path/to/<name>.xml, or --model-root DIR (the folder `convert -o` wrote)",
    )


def _verify(
    session: MattingSession,
    inputs: list[str],
    name: str,
    checkpoint: Path | None,
    download_dir: Path | None,
    model_root: Path | None,
    onnx: Path | None,
    max_pixels: int,
) -> None:
    """``--verify``: PyTorch, ONNX Runtime and the IR on the first image input; exit 1 on a
    disagreement. Imports torch (through toolkit.convert.verify) only here."""
    from toolkit.errors import require

    require("torch", "verify")
    from rich.console import Console

    from toolkit.convert.verify import verify_ir
    from toolkit.matting.images import expand_inputs, load_image
    from toolkit.paths import default_root, model_dir

    # The checkpoint sits where `download` put it: -d if given, else beside the IR's tree
    # (convert writes into its download dir by default), else the default root.
    xml_root = session.xml.parent.parent.parent.parent  # <root>/public/<name>/<PREC>/<x>.xml
    fallback = default_root() if download_dir is None else None
    candidates = (download_dir, model_root, xml_root, fallback)
    roots = list(dict.fromkeys(r for r in candidates if r is not None))
    if checkpoint is None:
        looked = [_checkpoint_path(r, name) for r in roots]
        checkpoint = next((p for p in looked if p.is_file()), None)
        if checkpoint is None:
            raise ToolkitError(
                f"--verify needs the PyTorch checkpoint; none at {' or '.join(map(str, looked))} "
                "(run `modnet-tools download` first, or pass --checkpoint)"
            )
    elif not checkpoint.is_file():
        raise ToolkitError(f"--verify: checkpoint {checkpoint} does not exist")
    if onnx is None:
        guess = session.xml.parent.parent / f"{session.xml.stem.replace('-', '_')}.onnx"
        fallbacks = [model_dir(r, name) / f"{name.replace('-', '_')}.onnx" for r in roots]
        onnx = next((p for p in (guess, *fallbacks) if p.is_file()), None)
    images = [i for i in expand_inputs(inputs) if i.kind == "image" and i.path is not None]
    if not images:
        raise UsageError("--verify needs at least one image input")
    assert images[0].path is not None
    image = load_image(images[0].path, max_pixels=max_pixels)
    report = verify_ir(checkpoint, session.xml, image, onnx_path=onnx, device=session.model.device)
    Console(width=120).print(f"verification on {images[0].path}:")
    Console(width=120).print(report.table())
    report.raise_for_failures()


def _checkpoint_path(root: Path, name: str) -> Path:
    from toolkit.download.config import discover
    from toolkit.paths import model_dir

    config = discover().get(name)
    if config is not None:
        return model_dir(root, name) / config.checkpoint_file.name
    return model_dir(root, name) / f"{name.replace('-', '_')}.ckpt"


def _option_like(inputs: list[str]) -> list[str]:
    """Inputs that start with '-': a negative camera index (``-1``, which fails alone as an
    input) stays; anything else is an option Click did not know, refused as bad usage.

    ``infer`` lets unknown options through as arguments so that ``-1`` reaches the batch as
    one failing input instead of aborting it with "no such option"."""
    for spec in inputs:
        numeric = spec[1:2].isdigit()  # -1, -0x1: a would-be camera, failed by expand()
        if spec.startswith("-") and spec != "-" and not numeric and not Path(spec).exists():
            raise UsageError(
                f"no such option: {spec.split('=')[0]} (see 'modnet-tools infer --help')"
            )
    return inputs


@app.command("infer", context_settings={"ignore_unknown_options": True})
def infer(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Images, folders, globs ('photos/*.jpg'), video files, or a camera index (0).",
            show_default=False,
        ),
    ],
    output_dir: Annotated[
        Path,
        typer.Option("--output-dir", "-o", help="Where the results are written."),
    ] = Path("."),
    model: ModelXml = None,
    name: ModelName = "modnet-webcam-portrait-matting",
    precision: ModelPrecision = None,
    model_root: ModelRoot = None,
    device: Device = "CPU",
    inference_precision: InferencePrecisionOption = "f32",
    fast: Annotated[bool, typer.Option("--fast", help=FAST_HELP)] = False,
    max_drift: Annotated[
        str,
        typer.Option(
            "--max-drift",
            metavar="D",
            help="--fast's budget: mean |matte difference| from the FP32 IR at f32 (0..1; "
            "1/255 default; 0.004 or 1/255 or 0.4%).",
        ),
    ] = "1/255",
    resize: Annotated[
        str,
        typer.Option(
            "--resize",
            help="stretch: to the IR's input size, as OMZ's demo does; keep-aspect: the "
            "authors' rule (short side 512, multiples of 32; the IR is reshaped).",
        ),
    ] = "stretch",
    network_size: NetworkSize = None,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Cameras (and videos read as a camera, at their frame rate): matte the newest "
            "frame and drop the frames that arrive while the network is busy, so the delay "
            "from camera to output stays constant; reports frames/s, latency and drops.",
        ),
    ] = False,
    background: Annotated[
        str | None,
        typer.Option(
            "--background",
            "-b",
            help="Also write a composite over: a colour (#RRGGBB, R,G,B, bgr:B,G,R, omz, "
            "green, white...), blur:K (the frame box-blurred, K x K), or an image file.",
        ),
    ] = None,
    side_by_side: Annotated[
        bool,
        typer.Option(
            "--side-by-side",
            help="Also write <stem>_side.<ext>: the input next to the composite (or the matte).",
        ),
    ] = False,
    no_rgba: Annotated[
        bool, typer.Option("--no-rgba", help="Do not write the <stem>_rgba.png cut-outs.")
    ] = False,
    no_alpha: Annotated[
        bool,
        typer.Option(
            "--no-alpha",
            help="Do not write the <stem>_alpha matte (e.g. only the composite, as OMZ's demo; "
            "for video this saves a whole second encode).",
        ),
    ] = False,
    background_fit: Annotated[
        str,
        typer.Option(
            "--background-fit",
            help="How an image or video background fits the frame: cover (fill, crop the "
            "overflow; default), contain (whole, black bars) or stretch (OMZ's demo).",
        ),
    ] = "cover",
    video_codec: Annotated[
        str,
        typer.Option(
            "--video-codec",
            help="Video outputs: h264 (default; browsers, phones), hevc, vp9 or ffv1 (lossless).",
        ),
    ] = "h264",
    crf: Annotated[
        int | None,
        typer.Option(
            "--crf",
            min=0,
            max=63,
            help="Video quality, lower is better (default: h264 18, hevc 20, vp9 30; "
            "h264/hevc 0-51, vp9 0-63).",
            show_default=False,
        ),
    ] = None,
    video_ext: Annotated[
        str | None,
        typer.Option(
            "--video-ext",
            help="Container of video outputs: mp4, mkv, mov or webm (default: the input's "
            "when it holds the codec, else the codec's usual one).",
            show_default=False,
        ),
    ] = None,
    rgba_video: Annotated[
        str | None,
        typer.Option(
            "--rgba-video",
            help="Also write the transparent cut-out of a video: webm (VP9 with alpha), mov "
            "(ProRes 4444) or png (a <stem>_rgba folder of PNG frames).",
            show_default=False,
        ),
    ] = None,
    no_audio: Annotated[
        bool,
        typer.Option("--no-audio", help="Video outputs without the input's audio."),
    ] = False,
    ofd: Annotated[
        bool,
        typer.Option("--ofd", help="Video: one-frame-delay smoothing against flicker (paper)."),
    ] = False,
    ofd_tolerance: Annotated[
        float,
        typer.Option(
            "--ofd-tolerance",
            min=0.0,
            max=1.0,
            callback=finite,
            help="Alpha difference OFD treats as 'the same'.",
        ),
    ] = 0.1,
    max_frames: Annotated[
        int | None,
        typer.Option(
            "--max-frames",
            min=1,
            max=100_000_000,
            help="Stop each video or camera after this many frames.",
        ),
    ] = None,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    jobs: Annotated[
        int,
        typer.Option("--jobs", "-j", min=1, max=64, help="Threads encoding and writing results."),
    ] = 2,
    requests: Annotated[
        int,
        typer.Option(
            "--requests",
            min=0,
            max=64,
            help="Asynchronous inference requests in flight (0: OpenVINO's optimum).",
        ),
    ] = 0,
    png_compression: Annotated[
        int,
        typer.Option(
            "--png-compression",
            min=0,
            max=9,
            help="PNG compression: 1 (default) fast run-length zlib; 0 uncompressed (least "
            "CPU, much larger files); 2-9 plain zlib levels (smaller files, more CPU).",
        ),
    ] = 1,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="First compare the IR with ONNX Runtime and PyTorch on the first image "
            "(needs torch and the checkpoint); exit 1 if the IR is out of tolerance.",
        ),
    ] = False,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint", help="--verify: the PyTorch checkpoint (default: downloaded)."
        ),
    ] = None,
    download_dir: DownloadDir = None,
    onnx: Annotated[
        Path | None,
        typer.Option("--onnx", help="--verify: the exported ONNX (default: convert's)."),
    ] = None,
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing",
            help="Skip inputs whose outputs are all present and whole (continue an "
            "interrupted run); locally and with --ray.",
        ),
    ] = False,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="[ADDRESS]",
            help="Run on a Ray cluster: auto, HOST:PORT, ray://HOST:PORT, or nothing for a "
            "local cluster. Inputs, outputs and the IR must be at the same paths on every node.",
            show_default=False,
        ),
    ] = None,
    ray_workers: Annotated[
        int | None,
        typer.Option(
            "--ray-workers",
            min=1,
            max=4096,
            help="--ray: image workers (default: as many as the cluster's CPUs allow).",
        ),
    ] = None,
    ray_cpus: Annotated[
        int,
        typer.Option(
            "--ray-cpus", min=1, max=1024, help="--ray: CPUs each worker reserves and uses."
        ),
    ] = 1,
) -> None:
    """Cut out people: writes <stem>_alpha.png (8-bit matte at the input's size) and
    <stem>_rgba.png per image, <stem>_composite.<ext> with --background; for a video,
    <stem>_alpha.<ext> (and the composite) with the same frames and size."""
    import cv2
    from PIL import Image

    from toolkit.matting.batch import InferOptions, run_infer
    from toolkit.matting.images import classify_file, expand, load_image
    from toolkit.matting.prepost import (
        parse_background,
        parse_fit,
        parse_network_size,
        parse_resize,
    )
    from toolkit.matting.runtime import parse_precision
    from toolkit.matting.session import MattingSession, RandomWeightsWarning
    from toolkit.matting.video import open_clip
    from toolkit.matting.videowriter import (
        RGBA_VIDEO_CHOICES,
        check_crf,
        container_extension,
        parse_codec,
    )

    mode = parse_resize(resize)
    hint = parse_precision(inference_precision)
    net_size = parse_network_size(network_size) if network_size is not None else None
    if net_size is not None and mode != "stretch":
        raise UsageError("--network-size stretches every frame to that size: drop --resize")
    if live and ofd:
        raise UsageError("--ofd needs every frame in a row; --live drops frames: use one")
    if no_alpha and no_rgba and background is None and not side_by_side:
        raise UsageError("--no-alpha with --no-rgba leaves nothing to write: add --background")
    if not 0.0 < ofd_tolerance < 1.0:
        raise UsageError(f"--ofd-tolerance must be between 0 and 1, not {ofd_tolerance}")
    codec = parse_codec(video_codec)
    check_crf(codec, crf)
    container_extension(codec, video_ext, None)  # an unknown or unfit --video-ext: usage error
    if rgba_video is not None and rgba_video.lower() not in RGBA_VIDEO_CHOICES:
        choices = ", ".join(RGBA_VIDEO_CHOICES)
        raise UsageError(f"--rgba-video must be one of {choices}, not {rgba_video!r}")
    fit = parse_fit(background_fit)
    # Our --max-pixels replaces Pillow's own bomb guard (which would warn or refuse first),
    # and OpenCV's warnings ("can't open camera by index") would duplicate our one-line errors.
    Image.MAX_IMAGE_PIXELS = None
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    # FFmpeg logs on its own ("moov atom not found", "[mjpeg @ ...] error count") for every
    # corrupt video; read when OpenCV first opens a video, so setting it here is in time.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    bg = (
        parse_background(
            background,
            lambda p: load_image(p, max_pixels=max_pixels),
            fit=fit,
            load_clip=lambda p: (
                open_clip(p, max_pixels=max_pixels) if classify_file(p) == "video" else None
            ),
        )
        if background is not None
        else None
    )
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"--output-dir {output_dir}: exists and is not a folder")

    expansion = expand(_option_like(inputs))
    items = expansion.items
    many = len(items) > 1 or any(i.kind in ("video", "camera") for i in items)
    if fast:  # chosen on this CPU, by measurement, within the budget: toolkit/perf/fastpath.py
        from toolkit.paths import default_root
        from toolkit.perf.budget import Budget, parse_drift
        from toolkit.perf.fastpath import check_fast_options, choose_fast

        check_fast_options(precision, inference_precision)
        budget = Budget(parse_drift(max_drift, "--max-drift"))
        choice = choose_fast(
            model_root or download_dir or default_root(),
            name,
            model=model,
            device=device,
            budget=budget,
            progress=lambda text: typer.echo(text, err=True),
        )
        typer.echo(choice.describe(), err=True)
        model, hint = choice.xml, choice.precision
    # convert writes under its -o, which defaults to its -d: mirror that here.
    xml = _resolve_model(model, name, precision, model_root or download_dir)
    if ray is not None:
        from toolkit.cluster.connect import check_address

        check_address(ray)
        if live:
            raise UsageError("--live mattes frames as a camera delivers them, here: drop --ray")
    # Cheap: the IR is read and checked here, compiled on first use (on a cluster, by each
    # worker; this one is then used only by --verify).
    with warnings.catch_warnings():  # said once below, as one line, not as a Python warning
        warnings.simplefilter("ignore", RandomWeightsWarning)
        session = MattingSession.from_xml(
            xml,
            device=device,
            precision=hint,
            resize=mode,
            performance="throughput" if many and not live else "latency",
            requests=requests,
            network_size=net_size,
        )
    if session.model.precision_note:
        typer.echo(f"note: {session.model.precision_note}", err=True)
    if session.weights_warning is not None:
        typer.echo(f"warning: {session.weights_warning}", err=True)
    if verify:
        _verify(session, inputs, name, checkpoint, download_dir, model_root, onnx, max_pixels)

    options = InferOptions(
        output_dir=output_dir,
        background=bg,
        side_by_side=side_by_side,
        rgba=not no_rgba,
        alpha=not no_alpha,
        ofd=ofd,
        ofd_tolerance=ofd_tolerance,
        max_pixels=max_pixels,
        max_frames=max_frames,
        jobs=jobs,
        png_compression=png_compression,
        skip_existing=skip_existing,
        video_codec=codec.name,
        crf=crf,
        video_ext=video_ext,
        rgba_video=rgba_video.lower() if rgba_video is not None else None,
        audio=not no_audio,
        protected=_protected_files(session.xml, background, checkpoint, onnx),
        live=live,
    )
    reporter = _CliReporter(show_progress=sys.stderr.isatty(), live=live)
    if ray is not None:
        from toolkit.cluster.runner import ClusterOptions, run_on_ray
        from toolkit.cluster.workers import SessionSpec

        spec = SessionSpec(
            xml,
            device=device,
            precision=hint,
            resize=mode,
            requests=requests,
            network_size=net_size,
        )
        cluster = ClusterOptions(address=ray, workers=ray_workers, cpus=ray_cpus)
        summary = run_on_ray(items, options, spec, cluster, reporter)
    else:
        summary = run_infer(session, items, options, reporter)
    failed = summary.failed
    if len(summary.results) == 1 and failed:
        raise typer.Exit(1)  # its one error line is already printed
    seconds = max(summary.seconds, 1e-9)
    skipped = len(summary.skipped)
    typer.echo(
        f"{summary.frames} frames from {len(summary.results)} inputs in {seconds:.1f} s "
        f"({summary.frames / seconds:.2f} frames/s) -> {output_dir}"
        + (f" ({skipped} skipped: already done)" if skipped else ""),
        err=True,
    )
    if expansion.skipped:
        typer.echo(_skipped_line(expansion.skipped), err=True)
    if failed:
        raise ToolkitError(f"{len(failed)} of {len(summary.results)} inputs failed")


def _skipped_line(skipped: list[Path], shown: int = 5) -> str:
    """The summary's note of files folders and globs left out as this tool's own outputs."""
    names = ", ".join(str(p) for p in skipped[:shown])
    more = f" and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return (
        f"skipped {len(skipped)} file(s) this tool wrote ({names}{more}); "
        "name a file explicitly to process it anyway"
    )
