"""Numerical proof that an IR computes what the PyTorch model computes.

The same real photo goes through PyTorch (the reference: RGB, (x - 127.5) / 127.5), ONNX
Runtime on the exported ONNX (same normalised input) and each OpenVINO IR (raw BGR 0..255, the
IR normalises and reverses channels itself) at ``INFERENCE_PRECISION_HINT=f32``, so the IR's
built-in preprocessing is checked too: a missing channel reversal or a wrong mean shows up as
a large difference.

Measure and tolerance: a backend passes when its matte is within ``FP32_TOLERANCE`` of
PyTorch's at every pixel (max abs) *and* within ``MEAN_TOLERANCE`` on average (mean abs). They
are chosen so that no image a user may pass fails a correct IR, from measurements on two random
checkpoints (a calm one and a deliberately touchy one) over the bundled photo, black, white,
grey 127 and 128, pure red, an 8x8 thumbnail and uniform noise (README, "Verification"):

* a correct FP32 IR differs by at most 7e-5 on photos and noise, but by up to 8.8e-3 (max) and
  3.1e-4 (mean) on flat images: MODNet's instance normalisation divides by a variance that is
  zero there, and OpenVINO computes it in another order than PyTorch, so rounding is amplified;
* a wrong IR (channel reversal or mean forgotten, another checkpoint) differs by at least 0.36
  (max) and 2.7e-2 (mean) on every image that can show the mistake at all (no flat grey image
  can show a channel swap).

3e-2 and 2e-3 sit at least 3.4x above the worst correct result and 9x below the least wrong
one. FP16 (or INT8) weights drift by up to 0.1 on a touchy checkpoint, so their drift is
reported, not judged.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.errors import ToolkitError, one_line

if TYPE_CHECKING:
    from rich.table import Table

#: Max abs matte difference allowed for FP32 IRs (and ONNX Runtime) against PyTorch.
FP32_TOLERANCE = 3e-2
#: Mean abs matte difference allowed (a wrong IR moves the whole matte, noise a few pixels).
MEAN_TOLERANCE = 2e-3
#: The most pixels a dynamic IR is verified at: a large photo is scaled down to fit (the
#: network needs about 300 bytes a pixel).
MAX_VERIFY_PIXELS = 1024 * 1024
SIZE_MULTIPLE = 32


class VerificationError(ToolkitError):
    """A backend disagrees with PyTorch by more than the tolerance, or failed to run."""


@dataclass(frozen=True)
class BackendResult:
    """One backend's matte compared with PyTorch's (``max_abs``/``mean_abs`` are None for the
    reference itself and for a backend that failed, see ``error``)."""

    backend: str
    precision: str
    seconds: float | None
    max_abs: float | None = None
    mean_abs: float | None = None
    judged: bool = False
    error: str | None = None
    path: str | None = None
    skipped: str | None = None

    def ok(self, tolerance: float, mean_tolerance: float = MEAN_TOLERANCE) -> bool:
        if self.skipped is not None:
            return True
        if self.error is not None:
            return False
        return not self.judged or (
            self.max_abs is not None
            and self.max_abs <= tolerance
            and self.mean_abs is not None
            and self.mean_abs <= mean_tolerance
        )


@dataclass(frozen=True)
class VerifyReport:
    """Per-backend differences against PyTorch on one image; render with :meth:`table`."""

    image_size: tuple[int, int]
    tolerance: float
    results: tuple[BackendResult, ...] = field(default_factory=tuple)
    mean_tolerance: float = MEAN_TOLERANCE

    @property
    def passed(self) -> bool:
        return all(r.ok(self.tolerance, self.mean_tolerance) for r in self.results)

    def failures(self) -> list[str]:
        """One line per failing backend, naming it and the number that failed."""
        out = []
        for r in self.results:
            if r.skipped is not None:
                continue
            if r.error is not None:
                out.append(f"{r.backend} ({r.precision}) failed to run: {r.error}")
            elif not r.ok(self.tolerance, self.mean_tolerance):
                out.append(
                    f"{r.backend} ({r.precision}) differs from PyTorch by {r.max_abs:.3g} "
                    f"(max abs; tolerance {self.tolerance:g}) and {r.mean_abs:.3g} on average "
                    f"(tolerance {self.mean_tolerance:g})"
                )
        return out

    def raise_for_failures(self) -> None:
        """Raise :class:`VerificationError` with the first failure (one line) if any."""
        problems = self.failures()
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise VerificationError(problems[0] + more)

    def result(self, backend: str, precision: str | None = None) -> BackendResult:
        """Look a row up by backend name (and precision)."""
        for r in self.results:
            if r.backend == backend and (precision is None or r.precision == precision):
                return r
        raise KeyError((backend, precision))

    def as_dict(self) -> dict[str, Any]:
        return {
            "image_size": list(self.image_size),
            "tolerance": self.tolerance,
            "passed": self.passed,
            "results": [r.__dict__ for r in self.results],
        }

    def table(self) -> Table:
        from rich.table import Table

        h, w = self.image_size
        table = Table(
            title=f"Matte vs PyTorch on a {w}x{h} photo (tolerance {self.tolerance:g} max, "
            f"{self.mean_tolerance:g} mean)"
        )
        for col in ("backend", "precision", "max |diff|", "mean |diff|", "time (ms)", "result"):
            table.add_column(col, justify="left" if col in ("backend", "result") else "right")
        for r in self.results:
            if r.skipped is not None:
                status = f"skipped: {r.skipped}"
            elif r.error is not None:
                status = f"[red]error: {r.error}[/red]"
            elif r.max_abs is None:
                status = "reference"
            elif r.judged:
                passed = r.ok(self.tolerance, self.mean_tolerance)
                status = "[green]ok[/green]" if passed else "[red]FAIL[/red]"
            else:
                status = "drift (reported)"
            table.add_row(
                r.backend,
                r.precision,
                "-" if r.max_abs is None else f"{r.max_abs:.2e}",
                "-" if r.mean_abs is None else f"{r.mean_abs:.2e}",
                "-" if r.seconds is None else f"{r.seconds * 1000:.0f}",
                status,
            )
        return table


def _timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    """One warm-up call (first-run allocations are not the model's speed), then one timed."""
    fn()
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _fit(image_bgr: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize to the IR's static H x W (bilinear, as OMZ's demo), or for a dynamic IR floor each
    side to a multiple of 32."""
    import cv2

    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ToolkitError(
            f"expected a BGR uint8 H x W x 3 image, got {image_bgr.dtype} {image_bgr.shape}"
        )
    h, w = image_bgr.shape[:2]
    if size is None:
        scale = min(1.0, (MAX_VERIFY_PIXELS / (h * w)) ** 0.5)  # a 24 MP photo would need 7 GB
        sh, sw = max(1, int(h * scale)), max(1, int(w * scale))
        size = (
            max(SIZE_MULTIPLE, sh // SIZE_MULTIPLE * SIZE_MULTIPLE),
            max(SIZE_MULTIPLE, min(sw, 8192) // SIZE_MULTIPLE * SIZE_MULTIPLE),
        )
    if (h, w) == size:
        return image_bgr
    return cv2.resize(image_bgr, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def normalise(image_bgr: np.ndarray) -> np.ndarray:
    """What the network itself wants: RGB, (x - 127.5) / 127.5, 1 x 3 x H x W float32."""
    rgb = image_bgr[:, :, ::-1].astype(np.float32)
    return np.ascontiguousarray(((rgb - 127.5) / 127.5).transpose(2, 0, 1)[None])


def _ir_precision(model: Any, xml: Path) -> str:
    if model.has_rt_info(["modnet_tools", "precision"]):
        return str(model.get_rt_info(["modnet_tools", "precision"]).astype(str))
    return xml.parent.name if xml.parent.name.upper().startswith(("FP", "INT")) else "unknown"


def _static_hw(model: Any) -> tuple[int, int] | None:
    shape = model.input(0).get_partial_shape()
    if shape.rank.is_static and len(shape) == 4 and shape[2].is_static and shape[3].is_static:
        return (shape[2].get_length(), shape[3].get_length())
    return None


def _diff(out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    d = np.abs(out.astype(np.float64).reshape(ref.shape) - ref)
    return float(d.max()), float(d.mean())


def _one_line(exc: BaseException) -> str:
    return one_line(exc, 200)  # the reason, not OpenVINO's source location


def verify_ir(
    checkpoint: str | Path,
    xml_path: str | Path | Sequence[str | Path],
    image_bgr: np.ndarray,
    *,
    onnx_path: str | Path | None = None,
    tolerance: float = FP32_TOLERANCE,
    device: str = "CPU",
) -> VerifyReport:
    """Compare PyTorch, ONNX Runtime (when installed and ``onnx_path`` is given) and one or
    more IRs on ``image_bgr`` (an OpenCV BGR uint8 image of any size).

    The image is resized to the first IR's input size (or floored to multiples of 32 for a
    dynamic IR). FP32 IRs and ONNX Runtime are judged against ``tolerance`` (max abs); other
    precisions are reported only. Returns a :class:`VerifyReport`; call
    ``report.raise_for_failures()`` to turn a failure into a one-line error, and
    ``rich.print(report.table())`` to show it. Loads the checkpoint with ``weights_only``.
    """
    import openvino as ov

    xmls = [Path(xml_path)] if isinstance(xml_path, (str, Path)) else [Path(p) for p in xml_path]
    if not xmls:
        raise ToolkitError("verify_ir needs at least one IR")
    core = ov.Core()
    models = []
    for xml in xmls:
        try:
            models.append(core.read_model(str(xml)))
        except Exception as exc:
            raise VerificationError(f"cannot read the IR {xml}: {_one_line(exc)}") from None
    image = _fit(image_bgr, _static_hw(models[0]))
    x = normalise(image)
    results: list[BackendResult] = []

    ref, seconds = _run_pytorch(Path(checkpoint), x)
    results.append(BackendResult("PyTorch", "FP32", seconds, path=str(checkpoint)))

    if onnx_path is not None:
        results.append(_run_onnxruntime(Path(onnx_path), x, ref))

    bgr = np.ascontiguousarray(image.transpose(2, 0, 1)[None].astype(np.float32))
    for xml, ir in zip(xmls, models, strict=True):
        precision = _ir_precision(ir, xml)
        try:
            compiled = core.compile_model(ir, device, {"INFERENCE_PRECISION_HINT": "f32"})
            request = compiled.create_infer_request()
            out, seconds = _timed(partial(_infer_ir, request, bgr))
            max_abs, mean_abs = _diff(out, ref)
            results.append(
                BackendResult(
                    "OpenVINO",
                    precision,
                    seconds,
                    max_abs,
                    mean_abs,
                    precision == "FP32",
                    path=str(xml),
                )
            )
        except Exception as exc:
            results.append(
                BackendResult("OpenVINO", precision, None, error=_one_line(exc), path=str(xml))
            )
    return VerifyReport((image.shape[0], image.shape[1]), tolerance, tuple(results))


def _run_pytorch(checkpoint: Path, x: np.ndarray) -> tuple[np.ndarray, float]:
    """The reference matte (float64) and PyTorch's time for it."""
    import torch

    from toolkit.model.checkpoint import load_model

    model = load_model(checkpoint)

    def run() -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    out, seconds = _timed(run)
    return out.astype(np.float64), seconds


def _infer_ir(request: Any, bgr: np.ndarray) -> np.ndarray:
    return np.asarray(request.infer([bgr])[0])


def _run_onnxruntime(onnx_path: Path, x: np.ndarray, ref: np.ndarray) -> BackendResult:
    if importlib.util.find_spec("onnxruntime") is None:
        why = "onnxruntime is not installed (pip install 'modnet-tools[verify]')"
        return BackendResult("ONNX Runtime", "FP32", None, skipped=why, path=str(onnx_path))
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        out, seconds = _timed(lambda: np.asarray(session.run(None, {name: x})[0]))
    except Exception as exc:
        return BackendResult(
            "ONNX Runtime", "FP32", None, error=_one_line(exc), path=str(onnx_path)
        )
    max_abs, mean_abs = _diff(out, ref)
    return BackendResult(
        "ONNX Runtime", "FP32", seconds, max_abs, mean_abs, True, path=str(onnx_path)
    )
