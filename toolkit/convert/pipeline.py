"""ONNX -> OpenVINO IR with OMZ's preprocessing built in, and checkpoint -> IR in one call.

Model Optimizer no longer exists; ``openvino.convert_model`` plus ``PrePostProcessor`` builds
the same IR from the config's ``model_optimizer_args``: the IR takes BGR pixels in 0..255
(float32, NCHW, input ``input``) and reverses the channels and normalises inside, exactly what
OMZ users feed it. The IR's rt_info says so (Model API keys plus our own), and records what it
was made from, so that a rerun with the same inputs can be skipped safely.

Every file appears at its final path only when complete (IR: ``.bin`` first, then ``.xml``,
the old ``.xml`` removed before either), so a failed or interrupted step never leaves an IR
that loads but is wrong.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import __version__
from toolkit.convert.export import (
    DEFAULT_INPUT_SHAPE,
    DEFAULT_OPSET,
    INPUT_NAME,
    Exporter,
    InputShape,
    check_input_shape,
    format_input_shape,
)
from toolkit.convert.mo_args import DEFAULT_MO_ARGS, ModelOptimizerArgs, parse_mo_args
from toolkit.errors import ToolkitError, UsageError, one_line
from toolkit.fsutil import atomic_path

if TYPE_CHECKING:
    import openvino as ov

PRECISIONS = ("FP16", "FP32")
#: Model API's wrapper name for MODNet (OMZ demos' ``PortraitBackgroundMatting``).
MODEL_TYPE = "Portrait-matting"
#: rt_info section for modnet-tools' own keys.
RT_SECTION = "modnet_tools"
#: Said by the IR (rt_info) and by ``infer`` when the weights are random.
RANDOM_WEIGHTS_NOTE = (
    "converted from a random checkpoint (modnet-tools random-checkpoint): the pipeline runs, "
    "but its mattes are meaningless; download the real weights for real results"
)
#: ONNX metadata_props key holding what the ONNX was made from.
ONNX_RECORD_KEY = "modnet_tools.made_from"


class ConversionError(ToolkitError):
    """convert_model / PrePostProcessor / save_model failed, or the IR breaks the contract."""


def _versions() -> dict[str, str]:
    import openvino as ov

    versions = {"modnet_tools": __version__, "openvino": ov.get_version()}
    with contextlib.suppress(ImportError):
        import torch

        versions["torch"] = str(torch.__version__)
    return versions


@dataclass(frozen=True)
class Recipe:
    """Everything an ONNX file or IR depends on; equal recipes give equal files.

    Stored in the ONNX's metadata and the IR's rt_info; a rerun compares its own recipe with
    the stored one and does no work when they match.
    """

    checkpoint_sha384: str
    input_shape: InputShape = DEFAULT_INPUT_SHAPE
    mo_args: tuple[str, ...] = ()
    exporter: Exporter = "legacy"
    opset: int = DEFAULT_OPSET
    #: Where the weights came from: ``released``, ``random`` or ``unknown`` (see
    #: :func:`weights_origin`); recorded in the IR so that ``infer`` can warn.
    weights: str = "unknown"

    def onnx_record(self) -> str:
        data = {
            "checkpoint_sha384": self.checkpoint_sha384,
            "input_shape": format_input_shape(self.input_shape),
            "exporter": self.exporter,
            "opset": self.opset,
            "versions": {k: v for k, v in _versions().items() if k != "openvino"},
        }
        return json.dumps(data, sort_keys=True)

    def ir_record(self, precision: str) -> str:
        data = {
            "checkpoint_sha384": self.checkpoint_sha384,
            "input_shape": format_input_shape(self.input_shape),
            "exporter": self.exporter,
            "opset": self.opset,
            "precision": precision,
            "weights": self.weights,
            "model_optimizer_args": list(self.mo_args),
            "versions": _versions(),
        }
        return json.dumps(data, sort_keys=True)


def weights_origin(checkpoint: Path, sha384: str) -> str:
    """``released`` (the sha384 of a known model's checkpoint), ``random`` (written by
    ``modnet-tools random-checkpoint``, which marks its BatchNorm counters) or ``unknown``
    (a fine-tune, or anything else)."""
    from toolkit.download.config import discover
    from toolkit.model.checkpoint import load_state_dict
    from toolkit.model.random_checkpoint import is_random_state

    with contextlib.suppress(ToolkitError):
        if any(c.checkpoint_file.checksum == sha384 for c in discover().values()):
            return "released"
    with contextlib.suppress(ToolkitError):
        if is_random_state(load_state_dict(checkpoint)):
            return "random"
    return "unknown"


def read_weights(model: ov.Model) -> str:
    """What an IR says about its weights (``unknown`` when it does not say)."""
    if model.has_rt_info([RT_SECTION, "weights"]):
        return str(model.get_rt_info([RT_SECTION, "weights"]).astype(str))
    return "unknown"


def recipe_mo_args(mo: ModelOptimizerArgs) -> tuple[str, ...]:
    """The MO flags that shape the IR (not ``--input_model``, whose path says nothing)."""
    return tuple(a for a in mo.to_command_line() if not a.startswith("--input_model="))


# --- building the IR -----------------------------------------------------------------------


def _check_names(mo: ModelOptimizerArgs, model: ov.Model) -> None:
    inputs = {n for port in model.inputs for n in port.get_names()}
    outputs = {n for port in model.outputs for n in port.get_names()}
    for flag, wanted, have in (
        ("--input", mo.inputs, inputs),
        ("--output", mo.outputs, outputs),
        ("--mean_values", tuple(k for k in mo.mean_values if k), inputs),
        ("--scale_values", tuple(k for k in mo.scale_values if k), inputs),
        ("--layout", tuple(k for k in mo.layouts if k), inputs),
    ):
        for name in wanted:
            if name not in have:
                raise ConversionError(
                    f"model_optimizer_args {flag} names {name!r}, but the model has {sorted(have)}"
                )


def _partial_shape(shape: InputShape) -> ov.PartialShape:
    import openvino as ov

    return ov.PartialShape([1, 3, -1, -1] if shape is None else list(shape))


def build_model(
    onnx_path: str | Path,
    mo: ModelOptimizerArgs,
    *,
    input_shape: InputShape | str = "from-args",
) -> ov.Model:
    """``convert_model`` + ``PrePostProcessor`` as Model Optimizer would have done it.

    Channel reversal comes first, then mean, then scale, so the mean and scale values are in
    the network's (RGB) channel order, as Model Optimizer documented. ``input_shape`` overrides
    ``--input_shape``; ``"from-args"`` keeps the ONNX's shape unless the flags give one.
    """
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as exc:
        raise ConversionError(
            f"openvino.convert_model failed on {onnx_path}: {_first(exc)}"
        ) from None
    _check_names(mo, model)
    if isinstance(input_shape, str):
        if mo.input_shape is not None:
            model.reshape(
                {INPUT_NAME: ov.PartialShape([-1 if d is None else d for d in mo.input_shape])}
            )
    else:
        model.reshape({INPUT_NAME: _partial_shape(input_shape)})
    ppp = PrePostProcessor(model)
    for port in model.inputs:
        name = port.get_any_name()
        layout = mo.layout_for(name) or "NCHW"
        info = ppp.input(name)
        info.tensor().set_element_type(ov.Type.f32).set_layout(ov.Layout(layout))
        info.model().set_layout(ov.Layout(layout))
        steps = info.preprocess()
        if mo.reverse_input_channels:
            steps.reverse_channels()
        mean = mo.mean_for(name)
        if mean is not None:
            steps.mean(mean[0] if len(mean) == 1 else list(mean))
        scale = mo.scale_for(name)
        if scale is not None:
            steps.scale(scale[0] if len(scale) == 1 else list(scale))
    try:
        model = ppp.build()
    except Exception as exc:
        raise ConversionError(f"PrePostProcessor failed: {_first(exc)}") from None
    if mo.outputs:
        keep = [o for o in model.outputs if o.get_names() & set(mo.outputs)]
        if len(keep) != len(model.outputs):
            raise ConversionError(
                f"cutting the model at --output {list(mo.outputs)} is not supported"
            )
    from toolkit.convert.graph_rewrite import optimize

    optimize(model)  # exact rewrites that spare OpenVINO's CPU plugin its slow channel copies
    return model


def _first(exc: BaseException) -> str:
    return one_line(exc, 300)  # the reason, not OpenVINO's source location


def _join(values: tuple[float, ...] | None) -> str:
    return " ".join(repr(v) for v in values) if values else ""


def annotate(
    model: ov.Model,
    mo: ModelOptimizerArgs,
    record: str,
    checkpoint_sha384: str,
    precision: str,
    weights: str = "unknown",
) -> None:
    """Write the rt_info a runtime needs: Model API's keys and modnet-tools' own.

    ``model_info`` is read by OpenVINO Model API, and only what is true *for Model API* goes
    there: the wrapper (``model_type``), the input layout and the resize rule. Model API's
    ``embedded_processing=True`` means "my own resize, layout and u8 conversion are already in
    the graph" (it then feeds [1,512,512,3] u8 and fails), and its ``mean_values``,
    ``scale_values`` and ``reverse_input_channels`` are steps *it* performs (so recording ours
    there normalised twice and reversed the channels twice). This IR takes BGR 0..255 and
    normalises inside, so Model API must add its resize/layout/u8 steps and nothing else,
    which is its behaviour when those keys are absent. What the IR does inside is recorded
    in the ``modnet_tools`` section, with where its weights came from (``weights``:
    ``released``, ``random`` or ``unknown``).
    """
    name = INPUT_NAME
    layout = mo.layout_for(name) or "NCHW"
    info = {
        "model_type": MODEL_TYPE,
        "layout": f"{name}:{layout}",
        "resize_type": "standard",  # stretch to the input size, as OMZ's demo does
    }
    for key, value in info.items():
        model.set_rt_info(value, ["model_info", key])
    ours = {
        "input_color_order": "BGR" if mo.reverse_input_channels else "RGB",
        "input_range": "0..255",
        "input_layout": layout,
        "mean_values": _join(mo.mean_for(name)),
        "scale_values": _join(mo.scale_for(name)),
        "reverse_input_channels": str(mo.reverse_input_channels),
        "source_checkpoint_sha384": checkpoint_sha384,
        "tool_version": __version__,
        "precision": precision,
        "weights": weights,
        "made_from": record,
    }
    if weights == "random":
        ours["warning"] = RANDOM_WEIGHTS_NOTE
    for key, value in ours.items():
        if value:
            model.set_rt_info(value, [RT_SECTION, key])


@contextlib.contextmanager
def _staging_dir(near: Path) -> Iterator[Path]:
    near.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=".staging.", dir=near))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def save_ir(model: ov.Model, xml_path: str | Path, precision: str) -> Path:
    """``ov.save_model`` to a staging folder, then move ``.bin`` and ``.xml`` into place.

    FP16 compresses the weights (``compress_to_fp16=True``); FP32 must say
    ``compress_to_fp16=False`` explicitly, since compression is save_model's default.
    """
    import openvino as ov

    if precision not in PRECISIONS:
        raise UsageError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    xml_path = Path(xml_path)
    bin_path = xml_path.with_suffix(".bin")
    # Contexts exit in reverse: the .bin is renamed into place first, then the .xml.
    with (
        _staging_dir(xml_path.parent) as stage,
        atomic_path(xml_path) as tmp_xml,
        atomic_path(bin_path) as tmp_bin,
    ):
        staged = stage / xml_path.name
        try:
            ov.save_model(model, str(staged), compress_to_fp16=(precision == "FP16"))
        except Exception as exc:
            # OpenVINO reports a failed write as a bare "iostream error", errno lost.
            hint = (
                f" (could not write into {xml_path.parent}: is the disk full?)"
                if "iostream" in str(exc)
                else ""
            )
            raise ConversionError(f"openvino.save_model failed: {_first(exc)}{hint}") from None
        os.replace(staged.with_suffix(".bin"), tmp_bin)
        os.replace(staged, tmp_xml)
        # The old .xml goes first: between the two renames an old .xml must never meet a
        # new .bin (it would load and compute garbage).
        xml_path.unlink(missing_ok=True)
    return xml_path


def read_record(xml_path: str | Path) -> str | None:
    """What an existing IR was made from (``None`` if absent, unreadable or not ours)."""
    import openvino as ov

    xml_path = Path(xml_path)
    if not xml_path.is_file() or not xml_path.with_suffix(".bin").is_file():
        return None
    try:
        model = ov.Core().read_model(str(xml_path))
        if not model.has_rt_info([RT_SECTION, "made_from"]):
            return None
        return str(model.get_rt_info([RT_SECTION, "made_from"]).astype(str))
    except Exception:  # a damaged IR is simply not up to date
        return None


def read_onnx_record(onnx_path: str | Path) -> str | None:
    """What an existing ONNX file was made from (``None`` if absent, unreadable or not ours)."""
    from toolkit.convert.export import import_onnx

    path = Path(onnx_path)
    if not path.is_file():
        return None
    try:
        proto = import_onnx().load(str(path), load_external_data=False)
    except Exception:
        return None
    for prop in proto.metadata_props:
        if prop.key == ONNX_RECORD_KEY:
            return str(prop.value)
    return None


def convert_onnx(
    onnx_path: str | Path,
    xml_path: str | Path,
    *,
    precision: str,
    mo: ModelOptimizerArgs,
    recipe: Recipe,
) -> Path:
    """ONNX -> IR at ``xml_path`` with preprocessing from ``mo`` and the recipe in rt_info."""
    return convert_onnx_precisions(onnx_path, {precision: Path(xml_path)}, mo=mo, recipe=recipe)[0]


def convert_onnx_precisions(
    onnx_path: str | Path,
    targets: Mapping[str, Path],
    *,
    mo: ModelOptimizerArgs,
    recipe: Recipe,
) -> list[Path]:
    """Like :func:`convert_onnx` for several precisions (``{"FP16": xml, ...}``), converting
    the ONNX once: ``convert_model`` is most of an IR step's time, saving is cheap."""
    for precision in targets:
        if precision not in PRECISIONS:
            raise UsageError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    model = build_model(onnx_path, mo, input_shape=recipe.input_shape)
    written = []
    for precision, xml_path in targets.items():
        annotate(
            model,
            mo,
            recipe.ir_record(precision),
            recipe.checkpoint_sha384,
            precision,
            recipe.weights,
        )
        written.append(save_ir(model, xml_path, precision))
    return written


def resolve_mo_args(
    model_optimizer_args: Sequence[str] | ModelOptimizerArgs | None,
    variables: Mapping[str, str] | None = None,
) -> ModelOptimizerArgs:
    """Parse the flags (default: the webcam config's), expanding ``$conv_dir``-style templates."""
    if isinstance(model_optimizer_args, ModelOptimizerArgs):
        return model_optimizer_args
    from toolkit.download.config import expand

    args = DEFAULT_MO_ARGS if model_optimizer_args is None else tuple(model_optimizer_args)
    return parse_mo_args([expand(a, dict(variables or {})) for a in args])


def convert_checkpoint(
    checkpoint: Path,
    xml_path: Path,
    *,
    precision: str = "FP32",
    input_shape: tuple[int, int, int, int] | None = DEFAULT_INPUT_SHAPE,
    model_optimizer_args: Sequence[str] | None = None,
    onnx_path: Path | None = None,
    exporter: Exporter = "legacy",
    force: bool = False,
) -> Path:
    """Checkpoint -> ONNX -> IR at ``xml_path`` (``.bin`` beside it); return ``xml_path``.

    The IR takes BGR 0..255 float32 NCHW pixels in ``input`` (channel reversal and
    normalisation are inside) and returns the matte in ``output``. ``input_shape=None`` means
    batch 1 with dynamic height and width. ``model_optimizer_args`` defaults to the webcam
    config's. The ONNX goes to ``onnx_path`` if given, else to a temporary folder. When
    ``xml_path`` already holds an IR made from the same checkpoint bytes and settings, nothing
    is done unless ``force``. The checkpoint is loaded with ``weights_only=True`` only.
    """
    from toolkit.convert.export import export_checkpoint
    from toolkit.hashing import file_digest

    checkpoint, xml_path = Path(checkpoint), Path(xml_path)
    shape = check_input_shape(input_shape)
    mo = resolve_mo_args(model_optimizer_args, {"conv_dir": str(xml_path.parent.parent)})
    if precision not in PRECISIONS:
        raise UsageError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    from toolkit.model.checkpoint import sniff

    sniff(checkpoint)  # a missing or obviously wrong file fails before hashing it
    digest = file_digest(checkpoint)
    recipe = Recipe(
        digest, shape, recipe_mo_args(mo), exporter, weights=weights_origin(checkpoint, digest)
    )
    if not force and read_record(xml_path) == recipe.ir_record(precision):
        return xml_path
    with contextlib.ExitStack() as stack:
        if onnx_path is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="modnet-onnx-")))
            onnx = tmp / "model.onnx"
        else:
            onnx = Path(onnx_path)
        if force or read_onnx_record(onnx) != recipe.onnx_record():
            export_checkpoint(
                checkpoint,
                onnx,
                input_shape=shape,
                exporter=exporter,
                metadata={ONNX_RECORD_KEY: recipe.onnx_record()},
            )
        return convert_onnx(onnx, xml_path, precision=precision, mo=mo, recipe=recipe)


def ir_summary(xml_path: str | Path) -> dict[str, Any]:
    """Input/output names, shapes, types, layout and rt_info of an IR (for reports and tests)."""
    import openvino as ov

    model = ov.Core().read_model(str(xml_path))
    inp, out = model.input(0), model.output(0)
    return {
        "input_name": inp.get_any_name(),
        "input_shape": str(inp.get_partial_shape()),
        "input_type": inp.get_element_type().get_type_name(),
        "input_layout": ov.layout_helpers.get_layout(inp).to_string(),
        "output_name": out.get_any_name(),
        "output_shape": str(out.get_partial_shape()),
        "output_type": out.get_element_type().get_type_name(),
    }
