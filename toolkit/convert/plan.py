"""What ``modnet-tools convert`` does for one model, as a plan first and then as work.

A :class:`ConvertJob` holds every decision (paths exactly as omz_converter lays them out,
precisions, input shape, the parsed Model Optimizer flags) before anything is touched, so
``--dry-run`` can print the very plan the real run would follow, together with the
omz_converter / Model Optimizer commands it replaces. :func:`run_job` then does the work,
skipping any file whose recorded recipe matches (unless forced) and verifying the result.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from toolkit.convert.export import (
    DEFAULT_INPUT_SHAPE,
    DEFAULT_OPSET,
    Exporter,
    InputShape,
    check_input_shape,
    format_input_shape,
    parse_input_shape,
)
from toolkit.convert.mo_args import ModelOptimizerArgs, parse_mo_args
from toolkit.download.config import ModelConfig, expand
from toolkit.errors import ToolkitError, UsageError
from toolkit.fsutil import confined_path

if TYPE_CHECKING:
    from toolkit.convert.pipeline import Recipe
    from toolkit.convert.verify import VerifyReport

CONVERTIBLE = ("FP16", "FP32")


class MissingCheckpointError(ToolkitError):
    """The checkpoint to convert is not there; the message says which command makes it."""


class Reporter(Protocol):
    """Where a job reports progress (the CLI prints; a library caller may collect)."""

    def heading(self, text: str) -> None: ...

    def info(self, text: str) -> None: ...

    def verify_report(self, report: VerifyReport) -> None: ...


@dataclass(frozen=True)
class ConvertJob:
    """Everything decided for one model before any work is done."""

    config: ModelConfig
    name: str
    checkpoint: Path
    checkpoint_given: bool
    download_dir: Path
    output_dir: Path
    precisions: tuple[str, ...]
    input_shape: InputShape
    mo: ModelOptimizerArgs
    exporter: Exporter = "legacy"
    opset: int = DEFAULT_OPSET

    @property
    def conv_dir(self) -> Path:
        return confined_path(self.output_dir / "public", self.name)

    @property
    def onnx_path(self) -> Path:
        if self.name == self.config.name:
            return self.conv_dir / self.config.onnx_file_name
        return self.conv_dir / (self.name.replace("-", "_") + ".onnx")

    def xml_path(self, precision: str) -> Path:
        return self.conv_dir / precision / f"{self.name}.xml"

    def omz_onnx_command(self) -> str:
        """omz_converter's export step (for reference only: it imports downloaded code)."""
        variables = self._template_vars()
        args = [expand(a, variables) for a in self.config.conversion_to_onnx_args]
        return shlex.join(
            ["python3", "--", "<omz_tools>/internal_scripts/pytorch_to_onnx.py", *args]
        )

    def mo_command(self, precision: str) -> str:
        """The Model Optimizer command omz_converter would run for ``precision``."""
        flags = [
            "mo",
            "--framework=onnx",
            f"--output_dir={self.conv_dir / precision}",
            f"--model_name={self.name}",
            "--input=input",
            *[a for a in self.mo.to_command_line() if not a.startswith("--input=")],
            "--layout=input(NCHW)",
            f"--input_shape={format_input_shape(self.input_shape)}",
            f"--compress_to_fp16={precision == 'FP16'}",
        ]
        if not any(a.startswith("--input_model=") for a in flags):
            flags.insert(2, f"--input_model={self.onnx_path}")
        seen: set[str] = set()
        unique = []
        for flag in flags:  # --layout / --input_shape may come from the config too
            key = flag.split("=", 1)[0]
            if key not in seen:
                seen.add(key)
                unique.append(flag)
        return shlex.join(unique)

    def _template_vars(self) -> dict[str, str]:
        return {
            "dl_dir": str(self.download_dir / "public" / self.config.name),
            "conv_dir": str(self.conv_dir),
            "config_dir": str(self.config.path.parent),
        }


def _shape_from_mo(mo: ModelOptimizerArgs) -> InputShape | None:
    dims = mo.input_shape
    if dims is None:
        return None
    if len(dims) == 4 and dims[2] is None and dims[3] is None and dims[:2] in ((1, 3), (None, 3)):
        return None
    if len(dims) != 4 or any(d is None for d in dims):
        raise UsageError(
            f"model_optimizer_args --input_shape {list(dims)}: use [N,3,H,W] or [1,3,?,?]"
        )
    return check_input_shape(
        (int(dims[0] or 1), int(dims[1] or 3), int(dims[2] or 0), int(dims[3] or 0))
    )


def _resolve_shape(config: ModelConfig, mo: ModelOptimizerArgs, text: str | None) -> InputShape:
    """--input-shape, else the flags' --input_shape, else input_info, else 1x3x512x512."""
    if text is not None:
        return parse_input_shape(text)
    if mo.input_shape is not None:
        return _shape_from_mo(mo)
    for info in config.input_info:
        if len(info.shape) == 4:
            s = info.shape
            return check_input_shape((s[0], s[1], s[2], s[3]))
    return DEFAULT_INPUT_SHAPE


def resolve_precisions(single: Sequence[str] | None, combined: str | None) -> tuple[str, ...]:
    """``--precision X`` (repeatable) and ``--precisions A,B`` together; default FP16 and FP32."""
    from toolkit.download.config import KNOWN_PRECISIONS

    wanted: list[str] = []
    for item in [*(single or []), *((combined or "").split(","))]:
        item = item.strip().upper()
        if item and item not in wanted:
            wanted.append(item)
    unknown = [p for p in wanted if p not in KNOWN_PRECISIONS]
    if unknown:
        raise ToolkitError(f"Unknown precisions specified: {', '.join(unknown)}.")
    other = [p for p in wanted if p not in CONVERTIBLE]
    if other:
        raise UsageError(f"convert makes FP16 and FP32 IRs; {', '.join(other)} is not one of them")
    return tuple(sorted(wanted)) if wanted else CONVERTIBLE


#: What ``--model-name`` may be: a folder and file name on every file system, like OMZ's names.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def check_model_name(name: str) -> str:
    """Refuse a ``--model-name`` that is not one plain name of at most 100 characters (it
    becomes a folder and the IR's file names: ``.``, ``..``, ``a/b``, 10 000 characters and
    control characters are all refused)."""
    if not _MODEL_NAME.fullmatch(name) or name.endswith("."):
        raise UsageError(
            f"--model-name {name[:60]!r}: unsafe name: use 1-100 letters, digits, '.', '_', '+' or '-', "
            "starting with a letter or digit and not ending with '.'"
        )
    return name


def plan_job(
    config: ModelConfig,
    *,
    download_dir: Path,
    output_dir: Path,
    precisions: Sequence[str] = CONVERTIBLE,
    checkpoint: Path | None = None,
    model_name: str | None = None,
    input_shape: str | None = None,
    extra_mo_args: Sequence[str] = (),
    exporter: Exporter = "legacy",
) -> ConvertJob:
    """Decide every path and setting for one model; touches nothing on disk."""
    name = config.name if model_name is None else check_model_name(model_name)
    confined_path(output_dir / "public", name)  # a --model-name may not escape the tree
    ckpt = checkpoint or confined_path(
        download_dir / "public" / config.name, config.checkpoint_file.name
    )
    conv_dir = output_dir / "public" / name
    variables = {
        "dl_dir": str(download_dir / "public" / config.name),
        "conv_dir": str(conv_dir),
        "config_dir": str(config.path.parent),
    }
    raw = [*config.model_optimizer_args, *extra_mo_args]
    if not raw:
        raise ToolkitError(
            f"model {config.name} has no model_optimizer_args: nothing says how to convert it"
        )
    mo = parse_mo_args([expand(a, variables) for a in raw])
    return ConvertJob(
        config=config,
        name=name,
        checkpoint=Path(ckpt),
        checkpoint_given=checkpoint is not None,
        download_dir=download_dir,
        output_dir=output_dir,
        precisions=tuple(precisions),
        input_shape=_resolve_shape(config, mo, input_shape),
        mo=mo,
        exporter=exporter,
    )


def _missing(job: ConvertJob) -> MissingCheckpointError:
    if job.checkpoint_given:
        return MissingCheckpointError(f"checkpoint {job.checkpoint} does not exist")
    where = "" if job.download_dir == Path("cache") else f" -o {shlex.quote(str(job.download_dir))}"
    return MissingCheckpointError(
        f"checkpoint {job.checkpoint} not found: run `modnet-tools download --name "
        f"{job.config.name}{where}` first, or pass --checkpoint FILE"
    )


@dataclass
class JobResult:
    """What a run did: files written or found up to date, the verification, timings."""

    name: str
    written: list[Path] = field(default_factory=list)
    up_to_date: list[Path] = field(default_factory=list)
    report: VerifyReport | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def describe(job: ConvertJob, reporter: Reporter, *, force: bool, verify: bool) -> None:
    """Print the plan (``--dry-run``): each step, its output and the command it replaces."""
    from toolkit.convert.pipeline import read_onnx_record, read_record, recipe_mo_args

    recipe = None
    if job.checkpoint.is_file():
        recipe = _recipe(job)
        source = f"checkpoint {job.checkpoint} (sha384 {recipe.checkpoint_sha384[:16]}...)"
    else:
        source = f"checkpoint {job.checkpoint} is missing: {_missing(job)}"

    def state(current: str | None, wanted: str | None) -> str:
        if recipe is not None and not force and current == wanted:
            return "up to date, would skip"
        return "would write"

    reporter.heading(f"Converting {job.name} to ONNX")
    reporter.info(f"  {source}")
    onnx_state = state(read_onnx_record(job.onnx_path), recipe.onnx_record() if recipe else None)
    reporter.info(
        f"  export toolkit.model.modnet.MODNet ({job.exporter} exporter, opset {job.opset}, input "
        f"{format_input_shape(job.input_shape)}) -> {job.onnx_path} [{onnx_state}]"
    )
    reporter.info(f"  omz_converter (reference): {job.omz_onnx_command()}")
    for precision in job.precisions:
        reporter.heading(f"Converting {job.name} to IR ({precision})")
        ir_state = state(
            read_record(job.xml_path(precision)), recipe.ir_record(precision) if recipe else None
        )
        reporter.info(
            f"  openvino.convert_model + PrePostProcessor "
            f"({' '.join(recipe_mo_args(job.mo))}) -> {job.xml_path(precision)} [{ir_state}]"
        )
        reporter.info(f"  Model Optimizer (reference): {job.mo_command(precision)}")
    if verify:
        reporter.heading(f"Verifying {job.name}")
        reporter.info(
            "  PyTorch vs ONNX Runtime vs each IR at f32 on the sample photo (when anything was written)"
        )


def run_job(
    job: ConvertJob,
    reporter: Reporter,
    *,
    force: bool = False,
    verify: bool = True,
    verify_image: Path | None = None,
    tolerance: float | None = None,
) -> JobResult:
    """Export, convert each precision, verify; skip whatever is already up to date.

    Every option is checked first (:func:`preflight`). The new files are written into a
    staging folder and verified there (``tolerance`` defaults to
    :data:`toolkit.convert.verify.FP32_TOLERANCE`); only then do they replace the earlier
    outputs, so a failed, interrupted or refused run (even with ``force``) leaves the
    previous good ONNX and IRs exactly as they were.
    Runs into the same model folder take turns (a lock file in it): otherwise one could
    replace an IR the other is verifying, or leave one run's .xml beside the other's .bin.
    """
    from toolkit.download.lock import file_lock

    preflight(job, verify=verify, verify_image=verify_image)

    def waiting() -> None:
        reporter.info(f"  waiting for another convert into {job.conv_dir} to finish")

    with file_lock(job.conv_dir / ".convert.lock", on_wait=waiting):
        return _run_job_locked(
            job,
            reporter,
            force=force,
            verify=verify,
            verify_image=verify_image,
            tolerance=tolerance,
        )


def preflight(job: ConvertJob, *, verify: bool, verify_image: Path | None) -> None:
    """Every check that needs no conversion, before any work (the CLI runs it for every
    selected model before the first export): the checkpoint is there and is a checkpoint, the
    verification image reads, and no output would land on an input or a file of another kind."""
    from toolkit.model.checkpoint import sniff

    if not job.checkpoint.exists():
        raise _missing(job)
    sniff(job.checkpoint)
    check_options(job, verify=verify, verify_image=verify_image)


def check_options(job: ConvertJob, *, verify: bool, verify_image: Path | None) -> None:
    """The part of :func:`preflight` that is about the command line rather than one model's
    files (a usage error, exit 2): the verification image and where the outputs would go."""
    from toolkit.fsutil import check_output

    inputs = [job.checkpoint, *([verify_image] if verify_image is not None else [])]
    check_output(job.onnx_path, "onnx", inputs=inputs)
    for precision in job.precisions:
        xml = job.xml_path(precision)
        check_output(xml, "ir", inputs=inputs)
        check_output(xml.with_suffix(".bin"), "weights", inputs=inputs)
    if verify and verify_image is not None:
        _read_verify_image(verify_image)


def _read_verify_image(path: Path) -> Any:
    """The verification photo as BGR uint8, or one usage line (exit 2) saying why not."""
    import cv2

    if not path.is_file():
        raise UsageError(f"--verify-image {path}: no such file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UsageError(f"--verify-image {path}: cannot read it as an image")
    return image


def _run_job_locked(
    job: ConvertJob,
    reporter: Reporter,
    *,
    force: bool,
    verify: bool,
    verify_image: Path | None,
    tolerance: float | None,
) -> JobResult:
    """:func:`run_job`'s work, with the model folder locked and the checkpoint checked."""
    from toolkit.convert.export import export_checkpoint
    from toolkit.convert.pipeline import (
        ONNX_RECORD_KEY,
        convert_onnx_precisions,
        read_onnx_record,
        read_record,
    )

    result = JobResult(job.name)
    _sweep_temporaries(job, reporter)
    _discard_unverified(job, reporter)
    recipe = _recipe(job)
    pending = [
        p for p in job.precisions if force or read_record(job.xml_path(p)) != recipe.ir_record(p)
    ]
    result.up_to_date += [job.xml_path(p) for p in job.precisions if p not in pending]
    onnx_current = read_onnx_record(job.onnx_path) == recipe.onnx_record()
    if not pending and onnx_current and not force:
        reporter.heading(f"{job.name}: up to date (use --force to redo)")
        result.up_to_date.insert(0, job.onnx_path)
        return result
    # Everything is written into a staging folder beside the outputs and verified there; only
    # then does it replace the earlier outputs, which a failed or interrupted run never touches.
    with _stage(job) as stage:
        staged: dict[Path, Path] = {}  # final path -> staged path
        onnx_source = job.onnx_path
        reporter.heading(f"Converting {job.name} to ONNX")
        if force or not onnx_current:
            start = time.perf_counter()
            onnx_source = stage / job.onnx_path.name
            export_checkpoint(
                job.checkpoint,
                onnx_source,
                input_shape=job.input_shape,
                exporter=job.exporter,
                opset=job.opset,
                metadata={ONNX_RECORD_KEY: recipe.onnx_record()},
            )
            result.seconds["onnx"] = time.perf_counter() - start
            staged[job.onnx_path] = onnx_source
            reporter.info(f"  exported {job.onnx_path.name} ({result.seconds['onnx']:.1f} s)")
        else:
            result.up_to_date.insert(0, job.onnx_path)
            reporter.info(f"  up to date: {job.onnx_path}")
        if pending:
            label = " and ".join(pending)
            reporter.heading(f"Converting {job.name} to IR ({label})")
            start = time.perf_counter()
            targets = {p: stage / p / job.xml_path(p).name for p in pending}
            convert_onnx_precisions(onnx_source, targets, mo=job.mo, recipe=recipe)
            for p, xml in targets.items():
                staged[job.xml_path(p)] = xml
                reporter.info(f"  converted {job.xml_path(p).relative_to(job.conv_dir)}")
            result.seconds["ir"] = time.perf_counter() - start
            reporter.info(f"  ({result.seconds['ir']:.1f} s)")
        for path in result.up_to_date[1:]:
            reporter.info(f"  up to date: {path}")
        if verify:
            reporter.heading(f"Verifying {job.name}")
            start = time.perf_counter()
            xmls = {p: staged.get(job.xml_path(p), job.xml_path(p)) for p in job.precisions}
            result.report = _verify(job, verify_image, tolerance, xmls, onnx_source)
            result.seconds["verify"] = time.perf_counter() - start
            reporter.verify_report(result.report)
            result.report.raise_for_failures()  # the earlier outputs stay as they were
        for final, path in staged.items():
            _publish(path, final)
            result.written.append(final)
            reporter.info(f"  wrote {final}")
    return result


@contextlib.contextmanager
def _stage(job: ConvertJob) -> Iterator[Path]:
    """A fresh hidden folder in the model folder (same file system: publishing is a rename),
    removed afterwards whatever happened; a killed run's is swept by the next run."""
    job.conv_dir.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=".staging.", dir=job.conv_dir))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _publish(staged: Path, final: Path) -> None:
    """Move a verified staged output onto its final path. For an IR the old ``.xml`` goes
    first, then the new ``.bin`` and the new ``.xml``: an old ``.xml`` never meets a new
    ``.bin`` (it would load and compute garbage)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.suffix == ".xml":
        final.unlink(missing_ok=True)
        os.replace(staged.with_suffix(".bin"), final.with_suffix(".bin"))
    os.replace(staged, final)


def _recipe(job: ConvertJob) -> Recipe:
    """What the job's outputs are made from; recorded in them, compared to skip redoing work."""
    from toolkit.convert.pipeline import Recipe, recipe_mo_args, weights_origin
    from toolkit.hashing import file_digest

    digest = file_digest(job.checkpoint)
    return Recipe(
        digest,
        job.input_shape,
        recipe_mo_args(job.mo),
        job.exporter,
        job.opset,
        weights=weights_origin(job.checkpoint, digest),
    )


def _stale_temporaries(job: ConvertJob) -> list[Path]:
    """Temporaries of convert's own writers that a killed run left behind.

    Only convert's names: ``.<file>.*.part`` of the ONNX, ``.xml`` and ``.bin`` it writes, and
    ``.staging.*`` folders in the FP32/FP16 folders. A download's resumable
    ``.<checkpoint>.<hash>.part`` beside the ONNX, and the FP16-INT8 folder that ``quantize``
    writes, are left alone. Called with the model folder locked, so no other convert is
    writing these right now.
    """
    found = sorted(job.conv_dir.glob(f".{job.onnx_path.name}.*.part"))
    found += sorted(p for p in job.conv_dir.glob(".staging.*") if p.is_dir())
    for precision in job.precisions:
        if precision not in CONVERTIBLE:
            continue
        xml = job.xml_path(precision)
        folder = xml.parent
        for pattern in (f".{xml.name}.*.part", f".{xml.with_suffix('.bin').name}.*.part"):
            found += sorted(folder.glob(pattern))
        found += sorted(p for p in folder.glob(".staging.*") if p.is_dir())
    return found


def _sweep_temporaries(job: ConvertJob, reporter: Reporter) -> None:
    """Remove what :func:`_stale_temporaries` finds, saying so."""
    stale = _stale_temporaries(job)
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if stale:
        reporter.info(f"  removed {len(stale)} temporary file(s) an interrupted run left behind")


def _unverified_marker(job: ConvertJob) -> Path:
    return job.conv_dir / ".convert-unverified"


def _discard_unverified(job: ConvertJob, reporter: Reporter) -> None:
    """Remove what a killed run of an earlier version (which wrote in place and left this
    marker until its verification passed) wrote but never verified, so this run redoes it.
    Runs now verify in a staging folder and write no marker."""
    marker = _unverified_marker(job)
    try:
        names = marker.read_text(encoding="utf-8").split()
    except FileNotFoundError:
        return
    for name in names:
        try:
            path = confined_path(job.conv_dir, name)
        except ToolkitError:
            continue  # not a name this tool wrote: leave whatever it points at alone
        if path.suffix in (".onnx", ".xml") and path.exists():
            reporter.info(f"  discarding {path}: an earlier run stopped before verifying it")
            _remove_output(path)
    marker.unlink(missing_ok=True)


def _remove_output(path: Path) -> None:
    path.unlink(missing_ok=True)
    if path.suffix == ".xml":
        path.with_suffix(".bin").unlink(missing_ok=True)


def _verify(
    job: ConvertJob,
    image_path: Path | None,
    tolerance: float | None,
    xmls: dict[str, Path],
    onnx: Path,
) -> VerifyReport:
    from toolkit.convert.verify import FP32_TOLERANCE, verify_ir
    from toolkit.paths import sample_image

    image = _read_verify_image(image_path or sample_image())
    order = sorted(job.precisions, key=lambda p: p != "FP32")  # FP32 first: it sets the size
    return verify_ir(
        job.checkpoint,
        [xmls[p] for p in order],
        image,
        onnx_path=onnx,
        tolerance=FP32_TOLERANCE if tolerance is None else tolerance,
    )
