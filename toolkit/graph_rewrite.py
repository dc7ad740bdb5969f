"""A graph rewrite that makes MODNet's IBNorm cheap in OpenVINO's CPU plugin, exactly.

MODNet's IBNorm normalises the first half of a layer's channels with BatchNorm and the second
half with InstanceNorm, then concatenates them. In the IR that is ``Slice`` -> (``Multiply``,
``Add``) and ``Slice`` -> ``MVN``, joined by a ``Concat`` on the channel axis, sixteen times.
The CPU plugin keeps activations channels-last (NHWC) for its convolution kernels, where a
channel split or concatenation is a strided copy it runs with its reference (slow,
single-threaded) implementation: profiling the INT8 IR showed those splits and concatenations
taking about a fifth of the frame time.

The rewrite computes the same values without splitting:
``y = z * S + B + MVN(z) * K`` with per-channel constants: ``S``/``B`` hold the BatchNorm scale
and shift on the first half and zeros on the second; ``K`` is 0 on the first half and 1 on the
second. MVN normalises each channel on its own, so running it over every channel and masking
the first half gives the second half's values unchanged. The extra MVN work (half the
channels again) is far cheaper than the copies it removes, and the multiply/add chain fuses
into one kernel. On an FP32 IR at f32 the output is bit-identical on this machine.

Used by :mod:`toolkit.quantize` before NNCF, so the FP16-INT8 IR (what ``infer --fast`` runs)
has no IBNorm split. Layers that do not match the pattern exactly are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import openvino as ov

#: Recorded in the IR's rt_info so a reader can tell the graph was rewritten.
REWRITE_NAME = "ibnorm-without-split"


@dataclass(frozen=True)
class _IBNorm:
    """One matched IBNorm: its input, the BatchNorm half's affine, the MVN node."""

    concat: Any
    source: Any  # ov.Output feeding both slices
    channels: int
    split: int
    scale: npt.NDArray[np.float32]
    shift: npt.NDArray[np.float32]
    mvn: Any


def _producer(node: Any, index: int) -> Any:
    return node.input(index).get_source_output().get_node()


def _constant(node: Any) -> npt.NDArray[Any] | None:
    """A constant's value; also through the ``Convert`` that decompresses FP16 weights."""
    if node.get_type_name() == "Convert":
        node = _producer(node, 0)
        if node.get_type_name() != "Constant":
            return None
        return np.asarray(node.get_data()).astype(np.float32)
    if node.get_type_name() != "Constant":
        return None
    return np.asarray(node.get_data())


def _affine(add: Any) -> tuple[Any, npt.NDArray[Any], npt.NDArray[Any]] | None:
    """``Add(Multiply(x, scale), shift)`` with constants on either side: (x's node, scale,
    shift)."""
    if add.get_type_name() != "Add":
        return None
    for mul_i in (0, 1):
        mul, shift = _producer(add, mul_i), _constant(_producer(add, 1 - mul_i))
        if mul.get_type_name() != "Multiply" or shift is None:
            continue
        for x_i in (0, 1):
            scale = _constant(_producer(mul, 1 - x_i))
            if scale is not None:
                return _producer(mul, x_i), scale, shift
    return None


def _slice_bounds(node: Any) -> tuple[Any, int, int] | None:
    """A ``Slice`` on axis 1 with step 1 and constant bounds: (its input output, start, stop)."""
    if node.get_type_name() != "Slice" or len(node.inputs()) < 4:
        return None
    values = [_constant(_producer(node, i)) for i in range(1, len(node.inputs()))]
    if any(v is None or v.size != 1 for v in values):
        return None
    start, stop, step = (int(v.ravel()[0]) for v in values[:3])  # type: ignore[union-attr]
    axis = int(values[3].ravel()[0]) if len(values) > 3 else 0  # type: ignore[union-attr]
    if step != 1 or axis not in (1, -3):
        return None
    return node.input(0).get_source_output(), start, stop


def _match(concat: Any) -> _IBNorm | None:
    if concat.get_type_name() != "Concat" or len(concat.inputs()) != 2:
        return None
    if concat.get_output_partial_shape(0).rank.get_length() != 4:
        return None
    if int(concat.get_attributes().get("axis", 0)) not in (1, -3):
        return None
    affine = _affine(_producer(concat, 0))
    mvn = _producer(concat, 1)
    if affine is None or mvn.get_type_name() != "MVN":
        return None
    first, scale, shift = affine
    bn_slice, in_slice = _slice_bounds(first), _slice_bounds(_producer(mvn, 0))
    if bn_slice is None or in_slice is None:
        return None
    source = bn_slice[0]
    same = in_slice[0].get_node() is source.get_node() and (
        in_slice[0].get_index() == source.get_index()
    )
    shape = source.get_partial_shape()
    if not same or shape.rank.get_length() != 4 or shape[1].is_dynamic:
        return None
    channels = shape[1].get_length()
    split = bn_slice[2]
    if (
        bn_slice[1] != 0
        or in_slice[1] != split
        or in_slice[2] < channels
        or not 0 < split < channels
    ):
        return None
    if scale.size not in (1, split) or shift.size not in (1, split):
        return None
    axes = _constant(_producer(mvn, 1))
    if axes is None or sorted(int(a) % 4 for a in axes.ravel()) != [2, 3]:
        return None
    return _IBNorm(
        concat,
        source,
        channels,
        split,
        np.broadcast_to(scale.astype(np.float32).ravel(), (split,)).copy(),
        np.broadcast_to(shift.astype(np.float32).ravel(), (split,)).copy(),
        mvn,
    )


def _per_channel(channels: int, values: npt.NDArray[np.float32], start: int) -> Any:
    import openvino.opset13 as ops

    full = np.zeros((1, channels, 1, 1), np.float32)
    full[0, start : start + values.size, 0, 0] = values
    return ops.constant(full)


def _replace(match: _IBNorm) -> None:
    import openvino.opset13 as ops

    c, a = match.channels, match.split
    attrs = match.mvn.get_attributes()
    axes = _constant(_producer(match.mvn, 1))
    assert axes is not None
    normalised = ops.mvn(
        match.source,
        ops.constant(axes),
        bool(attrs["normalize_variance"]),
        float(attrs["eps"]),
        str(attrs["eps_mode"]),
    )
    batch = ops.add(
        ops.multiply(match.source, _per_channel(c, match.scale, 0)),
        _per_channel(c, match.shift, 0),
    )
    instance = ops.multiply(normalised, _per_channel(c, np.ones(c - a, np.float32), a))
    out = ops.add(batch, instance)
    # Keep the concatenation's name: ignored scopes and profiles still find the layer.
    out.set_friendly_name(match.concat.get_friendly_name())
    match.concat.output(0).replace(out.output(0))


def remove_ibnorm_splits(model: ov.Model) -> int:
    """Rewrite every IBNorm in ``model`` (in place); return how many were rewritten."""
    matches = [m for op in model.get_ordered_ops() if (m := _match(op)) is not None]
    for match in matches:
        _replace(match)
    if matches:
        model.validate_nodes_and_infer_types()
    return len(matches)
