"""graph_rewrite: the exact rewrites convert and quantize apply, on the real network and on
small hand-built graphs (a pattern that only looks like IBNorm must be left alone)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
ops = pytest.importorskip("openvino.opset13")


def _types(model) -> Counter[str]:  # type: ignore[no-untyped-def]
    return Counter(op.get_type_name() for op in model.get_ordered_ops())


def _run(model, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.asarray(compiled(x)[0])


def test_optimize_removes_every_split_and_concat_of_modnet_exactly(perf_model) -> None:  # type: ignore[no-untyped-def]
    from toolkit.convert.graph_rewrite import optimize
    from toolkit.perf.calibration import holdout_set

    plain = ov.convert_model(str(perf_model.onnx))  # the exported graph, not rewritten
    rewritten = ov.convert_model(str(perf_model.onnx))
    before = _types(plain)
    assert before["Slice"] == 32 and before["MVN"] == 16 and before["Concat"] == 22
    assert optimize(rewritten) == {"ibnorm_splits_removed": 16, "concat_convolutions_split": 6}
    after = _types(rewritten)
    assert after["Slice"] == 0 and after["Concat"] == 0 and after["MVN"] == 16
    assert optimize(rewritten) == {"ibnorm_splits_removed": 0, "concat_convolutions_split": 0}
    image = holdout_set(1, size=128)[0]
    x = np.ascontiguousarray(((image[:, :, ::-1] - 127.5) / 127.5).transpose(2, 0, 1)[None])
    x = x.astype(np.float32)
    assert np.abs(_run(plain, x) - _run(rewritten, x)).max() < 1e-5


def test_converted_irs_carry_the_rewrite(perf_model) -> None:  # type: ignore[no-untyped-def]
    for xml in (perf_model.fp32, perf_model.fp16):
        model = ov.Core().read_model(xml)
        assert _types(model)["Slice"] == 0 and _types(model)["Concat"] == 0
        note = model.get_rt_info(["modnet_tools", "graph_rewrites"]).astype(str)
        assert "ibnorm_splits_removed=16" in note and "concat_convolutions_split=6" in note


def _ibnorm(channels: int, first: tuple[int, int], second: tuple[int, int]):  # type: ignore[no-untyped-def]
    """x -> concat(slice(x)*s + b, MVN(slice(x))) on axis 1, with dynamic height and width."""
    rng = np.random.default_rng(0)
    x = ops.parameter([1, channels, -1, -1], np.float32, name="x")

    def cut(lo: int, hi: int):  # type: ignore[no-untyped-def]
        return ops.slice(x, np.array([lo]), np.array([hi]), np.array([1]), np.array([1]))

    half = first[1] - first[0]
    scale = rng.uniform(0.5, 1.5, (1, half, 1, 1)).astype(np.float32)
    shift = rng.normal(0, 0.1, (1, half, 1, 1)).astype(np.float32)
    bn = ops.add(ops.multiply(cut(*first), ops.constant(scale)), ops.constant(shift))
    inorm = ops.mvn(cut(*second), ops.constant(np.array([2, 3])), True, 1e-5, "inside_sqrt")
    out = ops.relu(ops.concat([bn, inorm], 1))
    return ov.Model([out], [x])


def test_a_hand_built_ibnorm_is_rewritten_exactly_at_any_size() -> None:
    from toolkit.convert.graph_rewrite import remove_ibnorm_splits

    model, reference = _ibnorm(8, (0, 4), (4, 8)), _ibnorm(8, (0, 4), (4, 8))
    assert remove_ibnorm_splits(model) == 1
    rng = np.random.default_rng(1)
    for height, width in ((5, 7), (32, 16)):
        x = rng.normal(2.0, 3.0, (1, 8, height, width)).astype(np.float32)
        assert np.abs(_run(model, x) - _run(reference, x)).max() < 1e-5


def test_a_lookalike_that_is_not_ibnorm_is_left_alone() -> None:
    from toolkit.convert.graph_rewrite import remove_ibnorm_splits

    gap = _ibnorm(8, (0, 4), (5, 8))  # channel 4 is dropped: not a split of the whole tensor
    assert remove_ibnorm_splits(gap) == 0
    assert _types(gap)["Slice"] == 2


def test_a_concat_used_twice_is_not_split() -> None:
    from toolkit.convert.graph_rewrite import split_concat_convolutions

    a = ops.parameter([1, 2, 8, 8], np.float32, name="a")
    b = ops.parameter([1, 3, 8, 8], np.float32, name="b")
    cat = ops.concat([a, b], 1)
    w = ops.constant(np.ones((4, 5, 3, 3), np.float32))
    conv = ops.convolution(cat, w, [1, 1], [1, 1], [1, 1], [1, 1])
    shared = ov.Model([conv, ops.relu(cat)], [a, b])
    assert split_concat_convolutions(shared) == 0
    alone = ov.Model(
        [ops.convolution(ops.concat([a, b], 1), w, [1, 1], [1, 1], [1, 1], [1, 1])], [a, b]
    )
    reference = ov.Model(
        [ops.convolution(ops.concat([a, b], 1), w, [1, 1], [1, 1], [1, 1], [1, 1])], [a, b]
    )
    assert split_concat_convolutions(alone) == 1 and _types(alone)["Concat"] == 0
    rng = np.random.default_rng(2)
    xa, xb = (
        rng.normal(size=(1, 2, 8, 8)).astype(np.float32),
        rng.normal(size=(1, 3, 8, 8)).astype(np.float32),
    )
    compiled = [
        ov.Core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        for m in (alone, reference)
    ]
    outs = [np.asarray(c({0: xa, 1: xb})[0]) for c in compiled]
    assert np.abs(outs[0] - outs[1]).max() < 1e-5
