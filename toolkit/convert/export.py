"""PyTorch -> ONNX export of the project's own MODNet network.

OMZ exported by importing the downloaded MODNet sources; here the network is
:class:`toolkit.model.modnet.MODNet` with weights from :mod:`toolkit.model.checkpoint` (``weights_only``),
so nothing downloaded is ever imported or run.

The exporter is chosen explicitly instead of following torch's default, because the default
changed under OMZ's feet (torch 2.9 switched to the dynamo exporter). Measured here (torch 2.13,
2-core CPU, MODNet at 512x512): the TorchScript ("legacy") exporter at opset 17 under
``torch.no_grad()`` takes about 1 s and 0.5 GB peak, the dynamo exporter about 8 s (14-30 s on a
busy machine) and the same memory; both give ONNX files that agree with PyTorch to 7e-5 in ONNX
Runtime and OpenVINO, static or with dynamic height and width. So ``legacy`` is the default and
``dynamo`` stays one argument away for the day the legacy path is removed from torch.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from toolkit.errors import ToolkitError, UsageError
from toolkit.fsutil import atomic_path
from toolkit.model.limits import network_size_problem

if TYPE_CHECKING:
    import torch

#: What OMZ's config asks for: one 512x512 RGB image.
DEFAULT_INPUT_SHAPE: tuple[int, int, int, int] = (1, 3, 512, 512)
#: Opset for the legacy exporter. 9 fails in ONNX Runtime, 10 gives wrong mattes (Resize
#: semantics); 11+ is right. 17 is the newest every runtime here handles natively.
DEFAULT_OPSET = 17
MIN_OPSET = 11
INPUT_NAME = "input"
OUTPUT_NAME = "output"
SIZE_MULTIPLE = 32

Exporter = Literal["legacy", "dynamo"]
#: ``None`` means batch 1 with dynamic height and width.
InputShape = tuple[int, int, int, int] | None


class ExportError(ToolkitError):
    """The export produced no valid ONNX file (nothing is left at the destination)."""


def check_input_shape(shape: InputShape) -> InputShape:
    """Refuse shapes MODNet cannot run: N x 3 x H x W with H, W positive multiples of 32."""
    if shape is None:
        return None
    if len(shape) != 4:
        raise UsageError(f"input shape must have 4 dimensions (N,3,H,W); got {list(shape)}")
    n, c, h, w = shape
    if n < 1:
        raise UsageError(f"input shape: batch must be at least 1; got {n}")
    if c != 3:
        raise UsageError(f"input shape: MODNet takes 3 channels; got {c}")
    if h <= 0 or w <= 0 or h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        raise UsageError(
            f"input shape: height and width must be positive multiples of {SIZE_MULTIPLE} "
            f"(MODNet has five stride-2 stages); got {h}x{w}"
        )
    if n != 1:
        raise UsageError(
            f"input shape: batch {n} is not supported (every command runs one frame a request "
            "and verifies at batch 1); use 1,3,H,W"
        )
    problem = network_size_problem(h, w)
    if problem is not None:
        raise UsageError(f"input shape: {problem}")
    return (n, c, h, w)


def parse_input_shape(text: str) -> InputShape:
    """Parse ``--input-shape``: ``1,3,512,512``, ``[1, 3, 320, 480]``, ``512x512`` (H x W) or
    ``dynamic`` / ``1,3,?,?`` / ``1,3,-1,-1`` for dynamic height and width."""
    raw = text.strip().strip("[]()").replace(" ", "")
    if raw.lower() in ("dynamic", "dyn", "?"):
        return None
    if "x" in raw.lower() and "," not in raw:
        parts = raw.lower().split("x")
        if len(parts) != 2:
            raise UsageError(f"input shape {text!r}: use HxW, N,3,H,W or 'dynamic'")
        parts = ["1", "3", *parts]
    else:
        parts = raw.split(",")
    if len(parts) != 4:
        raise UsageError(f"input shape {text!r}: expected 4 comma-separated dimensions (N,3,H,W)")
    if parts[2] in ("?", "-1") and parts[3] in ("?", "-1"):
        if parts[:2] != ["1", "3"]:
            raise UsageError(f"input shape {text!r}: a dynamic shape must be 1,3,?,?")
        return None
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(
            f"input shape {text!r}: dimensions must be integers (or ? for dynamic H and W)"
        ) from None
    return check_input_shape((dims[0], dims[1], dims[2], dims[3]))


def format_input_shape(shape: InputShape) -> str:
    """``[1,3,512,512]`` or ``[1,3,?,?]``: the form Model Optimizer and the IR's rt_info use."""
    return "[1,3,?,?]" if shape is None else "[" + ",".join(str(d) for d in shape) + "]"


# --- the real ``onnx`` package, even when a folder named ``onnx`` shadows it -----------------


def _is_real_onnx(module: ModuleType | None) -> bool:
    return module is not None and all(
        hasattr(module, attr) for attr in ("ModelProto", "checker", "load", "__version__")
    )


def _impostors() -> list[str]:
    """sys.path entries holding an ``onnx`` folder or module that is not the onnx package."""
    bad = []
    for entry in sys.path:
        base = Path(entry or ".")
        folder = base / "onnx"
        if (base / "onnx.py").is_file() or (
            folder.is_dir() and not (folder / "checker.py").is_file()
        ):
            bad.append(entry)
    return bad


def _try_import() -> tuple[ModuleType | None, str | None]:
    try:
        return importlib.import_module("onnx"), None
    except Exception as exc:  # an impostor's __init__ may raise anything
        return None, f"{type(exc).__name__}: {exc}"


def import_onnx() -> ModuleType:
    """Import the real ``onnx`` package, never a folder that happens to be named ``onnx``.

    MODNet's own repository has a top-level ``onnx/`` folder; run from there, ``import onnx``
    would find that folder first (sys.path starts with the working directory), run its code and
    fail in a baffling way. So the sys.path entries holding such an impostor are skipped
    *before* importing (nothing in it is executed); if no real package is left, the error says
    which folder is in the way.
    """
    cached = sys.modules.get("onnx")
    if _is_real_onnx(cached):
        assert cached is not None
        return cached
    for name in [m for m in sys.modules if m == "onnx" or m.startswith("onnx.")]:
        del sys.modules[name]
    bad = _impostors()
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if p not in bad]
    try:
        module, why = _try_import()
    finally:
        sys.path[:] = saved
    if _is_real_onnx(module):
        assert module is not None
        return module
    if bad:
        where = ", ".join(str(Path(p or ".").resolve() / "onnx") for p in bad)
        why = f"a folder {where} is in the way and no real onnx package is installed"
    raise ToolkitError(
        f"cannot import the onnx package ({why}); pip install 'modnet-tools[convert]'"
    )


# --- export ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' warnings and progress chatter (they are not the user's business:
    InstanceNorm's "train=True" note is expected, MODNet always normalises per image)."""
    import io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink):
            yield


def _export_legacy(
    model: torch.nn.Module, example: torch.Tensor, dest: Path, dynamic: bool, opset: int
) -> None:
    import torch

    axes: dict[str, dict[int, str]] | None = None
    if dynamic:
        axes = {INPUT_NAME: {2: "height", 3: "width"}, OUTPUT_NAME: {2: "height", 3: "width"}}
    # no_grad: with autograd on, tracing keeps every activation alive (1.15 GB peak instead of 0.5).
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            str(dest),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_axes=axes,
            do_constant_folding=True,
            dynamo=False,
        )


def _export_dynamo(
    model: torch.nn.Module, example: torch.Tensor, dest: Path, dynamic: bool
) -> None:
    import torch
    from torch.export import Dim

    shapes: Any = None
    if dynamic:
        # Declaring H and W as 32*k tells the exporter the sizes the network can really take.
        shapes = (
            {
                2: SIZE_MULTIPLE * Dim("h32", min=1, max=256),
                3: SIZE_MULTIPLE * Dim("w32", min=1, max=256),
            },
        )
    with torch.no_grad():
        program = torch.onnx.export(
            model,
            (example,),
            None,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=shapes,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    if program is None:  # pragma: no cover - dynamo always returns a program when f is None
        raise ExportError("the dynamo exporter returned nothing")
    program.save(str(dest), external_data=False)


def _check_onnx(
    path: Path, dynamic: bool, shape: InputShape, metadata: Mapping[str, str] | None
) -> None:
    """``onnx.checker`` plus the contract: one input ``input``, one output ``output``, no
    external data, and the static or dynamic dims asked for; then add ``metadata``."""
    onnx = import_onnx()
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as exc:  # onnx raises ValidationError and friends
        raise ExportError(f"exported ONNX fails onnx.checker: {str(exc).splitlines()[0]}") from None
    proto = onnx.load(str(path), load_external_data=False)
    external = [
        t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
    ]
    if external:
        raise ExportError(f"exported ONNX refers to external data ({external[0]}, ...)")
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise ExportError(f"exported ONNX has inputs {inputs} and outputs {outputs}")
    dims = [
        d.dim_value if d.HasField("dim_value") else None
        for d in proto.graph.input[0].type.tensor_type.shape.dim
    ]
    expected = [1, 3, None, None] if dynamic else list(shape or ())
    if dims != expected:
        raise ExportError(f"exported ONNX input has shape {dims}, expected {expected}")
    if metadata:
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(path))


def export_model(
    model: torch.nn.Module,
    onnx_path: str | Path,
    *,
    input_shape: InputShape = DEFAULT_INPUT_SHAPE,
    exporter: Exporter = "legacy",
    opset: int = DEFAULT_OPSET,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Export a loaded MODNet to one self-contained ONNX file, written atomically and checked.

    ``input_shape=None`` gives batch 1 with dynamic height and width (any multiple of 32 works
    at run time). ``metadata`` goes into the ONNX's metadata_props. A failure leaves nothing at
    ``onnx_path``.
    """
    import torch

    shape = check_input_shape(input_shape)
    if opset < MIN_OPSET:
        raise UsageError(f"opset {opset} is too old: MODNet needs opset {MIN_OPSET} or later")
    if exporter not in ("legacy", "dynamo"):
        raise UsageError(f"unknown exporter {exporter!r}; choose legacy or dynamo")
    dynamic = shape is None
    example = torch.zeros(shape or DEFAULT_INPUT_SHAPE, dtype=torch.float32)
    dest = Path(onnx_path)
    model = model.eval()
    import_onnx()  # before torch.onnx imports it: a shadowing ``onnx`` folder must never load
    with atomic_path(dest) as tmp:
        try:
            with _quiet():
                if exporter == "legacy":
                    _export_legacy(model, example, tmp, dynamic, opset)
                else:
                    _export_dynamo(model, example, tmp, dynamic)
        except ToolkitError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"ONNX export failed ({exporter}): {first}") from exc
        _check_onnx(tmp, dynamic, shape, metadata)
        _umask_mode(tmp)
    return dest


def _umask_mode(path: Path) -> None:
    """Give the file the usual 0666 & ~umask mode (the temp file was created 0600)."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    path.chmod(0o666 & ~mask)


def export_checkpoint(
    checkpoint: str | Path,
    onnx_path: str | Path,
    *,
    input_shape: InputShape = DEFAULT_INPUT_SHAPE,
    exporter: Exporter = "legacy",
    opset: int = DEFAULT_OPSET,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Load ``checkpoint`` safely (``weights_only``) and export it; see :func:`export_model`."""
    from toolkit.model.checkpoint import load_model

    return export_model(
        load_model(checkpoint),
        onnx_path,
        input_shape=input_shape,
        exporter=exporter,
        opset=opset,
        metadata=metadata,
    )
