"""The Python API for matting: a session created once per model and reused for every image.

>>> from toolkit.matting.session import MattingSession
>>> session = MattingSession.from_xml("cache/public/modnet-webcam-portrait-matting/FP32/"
...                                   "modnet-webcam-portrait-matting.xml")
>>> alpha = session.matte(cv2.imread("photo.jpg"))   # float32 H x W in [0, 1]

Creating a session reads the IR and compiles it (a fraction of a second); :meth:`matte` then
costs one inference plus two resizes. The CLI's ``infer`` and the evaluation and benchmark
code use this class, so what they measure is what library users get. Nothing here imports
torch.

Stable API (other modules rely on it): :meth:`MattingSession.from_xml`,
:meth:`MattingSession.from_name`, :meth:`MattingSession.matte`,
:meth:`MattingSession.matte_stream`, :meth:`MattingSession.preprocess`,
:meth:`MattingSession.postprocess`, and the attributes ``resize``, ``model``, ``xml``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from toolkit import paths
from toolkit.errors import ToolkitError, UsageError
from toolkit.matting.prepost import (
    ResizeMode,
    alpha_to_input_size,
    network_size,
    parse_network_size,
    require_finite,
    to_network_input,
)
from toolkit.matting.runtime import InferencePrecision, IRModel, PerformanceMode

DEFAULT_MODEL = "modnet-webcam-portrait-matting"
#: Which converted precision ``from_name`` picks when none is asked for: exact first.
PRECISION_PREFERENCE = ("FP32", "FP16")

U8Image = npt.NDArray[np.uint8]
F32Array = npt.NDArray[np.float32]
K = TypeVar("K")


#: The rt_info section ``convert`` writes (toolkit.convert.pipeline.RT_SECTION; not imported
#: from there because inference must not import the conversion stack).
_RT_SECTION = "modnet_tools"


class RandomWeightsWarning(UserWarning):
    """The IR was converted from a random checkpoint: it runs, its mattes mean nothing."""


class ModelNotFoundError(ToolkitError):
    """No converted IR where one was expected."""


def find_ir(
    root: Path,
    name: str = DEFAULT_MODEL,
    precision: str | None = None,
    *,
    how: str = "MattingSession.from_xml(path), or from_name(root=DIR)",
) -> Path:
    """The converted IR ``<root>/public/<name>/<PREC>/<name>.xml``; FP32 preferred, then FP16.

    ``precision`` is case-insensitive (``fp32`` is ``FP32``). When nothing is there, the error
    says which files were looked for (absolute paths: "./cache" means nothing from another
    folder), where that root came from, and ``how`` to point at a model instead (the CLI
    passes its own options).
    """
    from toolkit.download.config import normalize_precision

    wanted = [normalize_precision(precision)] if precision else list(PRECISION_PREFERENCE)
    for prec in wanted:
        xml = paths.ir_xml(root, name, prec)
        if xml.is_file():
            return xml
    looked = " or ".join(str(paths.ir_xml(root, name, p).absolute()) for p in wanted)
    which = f"{name} ({wanted[0]})" if precision else name
    raise ModelNotFoundError(
        f"no converted model {which}: looked for {looked} ({_root_origin(root)}); point at "
        f"it with {how}, or set ${paths.HOME_ENV} to the folder `convert -o` wrote into; "
        "or make one: `modnet-tools download` then `modnet-tools convert`"
    )


def _root_origin(root: Path) -> str:
    """Where the folder searched came from, so that "not found" can be understood."""
    home = os.environ.get(paths.HOME_ENV)
    if home and Path(home) == root:
        return f"${paths.HOME_ENV}"
    if root == paths.default_root():
        return f"the default ./cache of the current folder {Path.cwd()}; ${paths.HOME_ENV} is unset"
    return f"the folder given, {root}"


def _check_network_size(size: tuple[int, int] | None, resize: ResizeMode) -> tuple[int, int] | None:
    if size is None:
        return None
    height, width = size
    if resize != "stretch":
        raise UsageError("--network-size stretches every frame to that size: use --resize stretch")
    parse_network_size(f"{width}x{height}")  # the same rules as the command line
    return height, width


class MattingSession:
    """A compiled MODNet IR plus the resize rule: call :meth:`matte` on BGR uint8 frames."""

    def __init__(
        self,
        model: IRModel,
        resize: ResizeMode = "stretch",
        network_size: tuple[int, int] | None = None,
    ) -> None:
        self.model = model
        self.resize: ResizeMode = resize
        self.xml = model.xml
        #: (H, W) every frame is stretched to instead of the IR's own size (the IR is
        #: reshaped; the matte is resized back to the frame): ``--network-size``.
        self.fixed_network_size = _check_network_size(network_size, resize)
        warning = self.weights_warning
        if warning is not None:
            warnings.warn(warning, RandomWeightsWarning, stacklevel=3)

    @property
    def weights(self) -> str:
        """Where the IR's weights came from, as ``convert`` recorded it: ``released``,
        ``random`` (``modnet-tools random-checkpoint``) or ``unknown``."""
        return self.model.rt_value(_RT_SECTION, "weights") or "unknown"

    @property
    def weights_warning(self) -> str | None:
        """One line saying the mattes are meaningless, for an IR made from random weights."""
        if self.weights != "random":
            return None
        note = self.model.rt_value(_RT_SECTION, "warning") or (
            "converted from a random checkpoint: its mattes are meaningless"
        )
        return f"{self.xml}: {note}"

    @classmethod
    def from_xml(
        cls,
        xml: str | Path,
        *,
        device: str = "CPU",
        precision: InferencePrecision = "f32",
        resize: ResizeMode = "stretch",
        performance: PerformanceMode = "latency",
        requests: int = 0,
        network_size: tuple[int, int] | None = None,
    ) -> MattingSession:
        """Load an IR. ``precision`` is OpenVINO's inference precision (``f32`` is exact;
        ``bf16`` is about twice as fast on CPUs that have it; a CPU without it runs f32 and
        ``model.precision_note`` says so); ``performance`` is ``latency`` for one image at a
        time, ``throughput`` for :meth:`matte_stream`; ``network_size`` (H, W), multiples of
        32, runs the network at that size instead of the IR's (smaller is faster)."""
        model = IRModel(
            xml, device=device, precision=precision, performance=performance, requests=requests
        )
        return cls(model, resize, network_size)

    @classmethod
    def from_name(
        cls,
        name: str = DEFAULT_MODEL,
        *,
        root: Path | None = None,
        model_precision: str | None = None,
        device: str = "CPU",
        precision: InferencePrecision = "f32",
        resize: ResizeMode = "stretch",
        performance: PerformanceMode = "latency",
        requests: int = 0,
        network_size: tuple[int, int] | None = None,
    ) -> MattingSession:
        """Load the IR that ``modnet-tools convert`` wrote under ``root`` (default: the
        toolkit's home, ``$MODNET_TOOLS_HOME`` or ``./cache``)."""
        xml = find_ir(root if root is not None else paths.default_root(), name, model_precision)
        return cls.from_xml(
            xml,
            device=device,
            precision=precision,
            resize=resize,
            performance=performance,
            requests=requests,
            network_size=network_size,
        )

    # --- the two halves, exposed for callers that schedule inference themselves ----------------

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """The (H, W) the network runs at for a frame of this size."""
        if self.fixed_network_size is not None:
            return self.fixed_network_size
        return network_size(height, width, self.resize, self.model.fixed_size)

    def preprocess(self, bgr: U8Image) -> F32Array:
        """A BGR uint8 H x W x 3 frame -> the 1 x 3 x h x w float tensor the IR takes."""
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 H x W x 3 image, got {bgr.dtype} {bgr.shape}")
        size = self.network_size(*bgr.shape[:2])
        return to_network_input(bgr, size, self.resize)

    @staticmethod
    def postprocess(raw: F32Array, height: int, width: int, *, check: bool = True) -> F32Array:
        """The IR's matte -> float32 H x W in [0, 1] at the frame's size.

        A matte with NaN or infinity raises :class:`~toolkit.matting.prepost.NonFiniteMatteError`
        (``check=False`` leaves the test to the caller): clipping would pass it off as 0 or 1.
        """
        if check:
            require_finite(raw)
        return alpha_to_input_size(raw, height, width)

    # --- inference -------------------------------------------------------------------------------

    def matte(self, bgr: U8Image) -> F32Array:
        """The alpha matte of one BGR uint8 frame: float32, the frame's H x W, values in [0, 1]."""
        raw = self.model.infer(self.preprocess(bgr))
        return self.postprocess(raw, bgr.shape[0], bgr.shape[1])

    def matte_stream(
        self, frames: Iterable[tuple[K, U8Image]], *, check_finite: bool = True
    ) -> Iterator[tuple[K, U8Image, F32Array]]:
        """Matte a stream of (key, frame) with several requests in flight; yield
        (key, frame, alpha) in the input order.

        ``frames`` is consumed lazily, so a generator that decodes the next frame overlaps with
        inference. Create the session with ``performance="throughput"`` for best speed.
        A non-finite matte raises (ending the stream) unless ``check_finite`` is False: then
        the NaN reaches the caller, which can fail that one frame alone (as ``infer`` does).
        """
        shapes: dict[int, tuple[U8Image, K]] = {}
        counter = 0

        def tensors() -> Iterator[tuple[int, F32Array]]:
            nonlocal counter
            for key, frame in frames:
                tensor = self.preprocess(frame)
                shapes[counter] = (frame, key)
                yield counter, tensor
                counter += 1

        for seq, raw in self.model.run_ordered(tensors()):
            frame, key = shapes.pop(seq)
            yield key, frame, self.postprocess(raw, *frame.shape[:2], check=check_finite)
