"""Property-based tests: whatever the input, the parsers and the maths keep their promises.

* model.yml (:func:`toolkit.download.config.load_config`): any text gives a ``ModelConfig`` or a
  ``ConfigError`` whose one line starts with the file; a valid config with one field made bad
  names that field; a file name is accepted only if it stays inside the model folder.
* Model Optimizer flags (:mod:`toolkit.convert.mo_args`): any token list gives a result or a
  ``ConfigError`` naming a flag; whatever parses prints back to the same meaning.
* Resize rules and compositing (:mod:`toolkit.matting.prepost`): sizes are multiples of 32 with the
  authors' short-side rule, tensors keep their values in range, the composite is the demo's
  formula with its exact end points, the OFD only touches one-frame flickers.
* The small option parsers (``--input-shape``, ``--background``, ``--resize``,
  ``--inference-precision``): a value or a usage error, nothing else.

Examples are derandomized (CI runs the same ones every time, so the README's counts hold).
"""

from __future__ import annotations

import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from toolkit.convert.export import parse_input_shape
from toolkit.convert.mo_args import ModelOptimizerArgs, parse_mo_args
from toolkit.download.config import ModelConfig, load_config
from toolkit.errors import ConfigError, ToolkitError, UsageError
from toolkit.fsutil import confined_path
from toolkit.matting.prepost import (
    REF_SIZE,
    Background,
    OneFrameDelay,
    alpha_to_input_size,
    composite,
    cutout,
    keep_aspect_size,
    network_size,
    parse_background,
    parse_resize,
    quantize_alpha,
    to_network_input,
)
from toolkit.matting.runtime import parse_precision

PROPS = settings(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

WEBCAM_YML = (
    Path(__file__).resolve().parents[2] / "model_configs" / "modnet-webcam-portrait-matting.yml"
)
VALID: dict[str, Any] = yaml.safe_load(WEBCAM_YML.read_text(encoding="utf-8"))

# --- model.yml ----------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
yaml_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _write(tmp: Path, text: str | bytes, name: str = "m.yml") -> Path:
    path = tmp / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _load_or_error(path: Path) -> ModelConfig | ConfigError:
    try:
        config = load_config(path)
        event("ModelConfig")
        return config
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: "), message
        assert "\n" not in message, message
        event("ConfigError")
        return exc


@settings(PROPS, max_examples=200)
@given(text=st.one_of(st.text(max_size=400), yaml_values.map(lambda v: yaml.safe_dump(v))))
def test_any_text_is_a_config_or_a_config_error_naming_the_file(text: str, tmp_path: Path) -> None:
    _load_or_error(_write(tmp_path, text))


@settings(PROPS, max_examples=100)
@given(data=st.binary(max_size=400))
def test_any_bytes_are_a_config_or_a_config_error(data: bytes, tmp_path: Path) -> None:
    _load_or_error(_write(tmp_path, data))


#: Where a bad value can be put in a valid config, as a path of keys and list indices.
FIELDS: list[tuple[str | int, ...]] = [
    ("description",),
    ("task_type",),
    ("framework",),
    ("license",),
    ("files",),
    ("files", 0),
    ("files", 4, "name"),
    ("files", 4, "size"),
    ("files", 4, "checksum"),
    ("files", 4, "source"),
    ("files", 4, "alternative_sources"),
    ("files", 4, "alternative_sources", 0),
    ("files", 4, "original_source"),
    ("conversion_to_onnx_args",),
    ("conversion_to_onnx_args", 0),
    ("input_info",),
    ("input_info", 0, "shape"),
    ("input_info", 0, "shape", 2),
    ("input_info", 0, "layout"),
    ("model_optimizer_args",),
    ("model_optimizer_args", 1),
    ("quantization_output_precisions",),
    ("accuracy_config",),
    ("postprocessing",),
]


def _set(doc: Any, where: tuple[str | int, ...], value: Any) -> None:
    for key in where[:-1]:
        doc = doc[key]
    doc[where[-1]] = value


@settings(PROPS, max_examples=300)
@given(where=st.sampled_from(FIELDS), value=yaml_values)
def test_one_bad_field_is_named_in_the_error(
    where: tuple[str | int, ...], value: Any, tmp_path: Path
) -> None:
    import copy

    doc = copy.deepcopy(VALID)
    _set(doc, where, value)
    path = _write(tmp_path, yaml.safe_dump(doc))
    outcome = _load_or_error(path)
    if isinstance(outcome, ConfigError):
        dotted = ".".join(str(k) for k in where)
        assert f"field '{dotted}" in str(outcome), (dotted, str(outcome))


_KNOWN_KEYS = set(ModelConfig.model_fields) | {"name", "path"}


@settings(PROPS, max_examples=100)
@given(
    key=st.text(min_size=1, max_size=20).filter(lambda k: k not in _KNOWN_KEYS), value=yaml_values
)
def test_an_unknown_field_is_refused_by_name(key: str, value: Any, tmp_path: Path) -> None:
    path = _write(tmp_path, yaml.safe_dump({**VALID, key: value}))
    outcome = _load_or_error(path)
    assert isinstance(outcome, ConfigError)
    assert f"field '{key}'" in str(outcome) and "Extra inputs" in str(outcome), str(outcome)


_segments = st.one_of(
    st.sampled_from(["..", ".", "", "a", "b.bin", "C:", "c:x", "x\\..\\y", "~", "..."]),
    st.text(alphabet=st.characters(blacklist_characters="/\x00"), min_size=1, max_size=8),
)
_file_names = st.one_of(
    st.lists(_segments, min_size=1, max_size=5).map("/".join),
    st.lists(_segments, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)),
    st.text(max_size=30),
)


@settings(PROPS, max_examples=400)
@given(name=_file_names)
def test_a_file_name_is_accepted_only_if_it_stays_in_the_model_folder(
    name: str, tmp_path: Path
) -> None:
    """The schema's check and the writer's ``confined_path`` agree: whatever the config
    accepts lands inside the folder; the rest is a ConfigError naming ``files.0.name``."""
    doc = {**VALID, "files": [{**VALID["files"][4], "name": name}]}
    path = _write(tmp_path, yaml.safe_dump(doc))
    outcome = _load_or_error(path)
    base = tmp_path / "out" / "public" / "m"
    if isinstance(outcome, ConfigError):
        assert "field 'files.0.name'" in str(outcome), str(outcome)
        return
    dest = confined_path(base, outcome.files[0].name)
    assert base.resolve() in dest.resolve().parents
    assert ".." not in PurePosixPath(name).parts and not name.startswith("/")


@pytest.mark.parametrize(
    "size", ["abc", "1e6", "12.5", "'123'", "-1", "0", "true", "null", "[1]", "{a: 1}", ".inf"]
)
def test_a_non_numeric_or_non_positive_size_is_refused(size: str, tmp_path: Path) -> None:
    text = WEBCAM_YML.read_text(encoding="utf-8").replace("size: 9516", f"size: {size}", 1)
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=r"field 'files\.0\.size'") as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")


# --- Model Optimizer flags -------------------------------------------------------------------------

_FLAGS = [
    "input_model", "mean_values", "scale_values", "input", "output", "layout", "input_shape",
    "framework", "reverse_input_channels", "output_dir", "data_type", "compress_to_fp16",
    "model_name", "batch", "mean_value", "transform", "", "-",
]  # fmt: skip
_VALUE_BITS = st.one_of(
    st.sampled_from(
        ["input", "[127.5]", "[1,2,3]", "[0]", "(1 2 3)", "[1,2]", "NCHW", "input(NCHW)", "a->b",
         "[1,3,512,512]", "[1,3,?,?]", "[-1]", "onnx", "tf", "true", "false", "maybe", "", "x[",
         "]", "nan", "inf", "1e400", "[1,,2]", "input[1],input[2]"]
    ),
    st.text(max_size=15),
)  # fmt: skip
_tokens = st.lists(
    st.one_of(
        st.builds(lambda f, v: f"--{f}={v}", st.sampled_from(_FLAGS), _VALUE_BITS),
        st.builds(lambda f: f"--{f}", st.sampled_from(_FLAGS)),
        _VALUE_BITS,
    ),
    max_size=6,
)


@settings(PROPS, max_examples=400)
@given(tokens=_tokens)
def test_any_flags_parse_or_fail_naming_a_flag(tokens: list[str]) -> None:
    try:
        result = parse_mo_args(tokens)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("model_optimizer_args: "), message
        assert "\n" not in message
        event("ConfigError")
        return
    event("parsed")
    assert isinstance(result, ModelOptimizerArgs)
    assert parse_mo_args(result.to_command_line()) == result


_values = st.lists(
    st.floats(-1e6, 1e6, allow_nan=False).filter(lambda v: v != 0), min_size=1, max_size=3
).filter(lambda v: len(v) != 2)
_names = st.sampled_from(["", "input", "data", "x.1"])
_layouts = st.sampled_from(["NCHW", "NHWC", "N?HW", "..."])


@st.composite
def _mo(draw: st.DrawFn) -> ModelOptimizerArgs:
    inputs = draw(st.lists(st.sampled_from(["input", "data"]), max_size=2, unique=True))
    shape = draw(
        st.none() | st.lists(st.one_of(st.none(), st.integers(1, 4096)), min_size=1, max_size=5)
    )
    return ModelOptimizerArgs(
        input_model=draw(
            st.none() | st.sampled_from(["m.onnx", "/abs/m.onnx", "$conv_dir/x.onnx"])
        ),
        inputs=tuple(inputs),
        outputs=tuple(
            draw(st.lists(st.sampled_from(["output", "alpha"]), max_size=2, unique=True))
        ),
        mean_values=draw(st.dictionaries(_names, _values.map(tuple), max_size=2)),
        scale_values=draw(st.dictionaries(_names, _values.map(tuple), max_size=2)),
        reverse_input_channels=draw(st.booleans()),
        layouts=draw(st.dictionaries(_names, _layouts, max_size=2)),
        input_shape=None if shape is None else tuple(shape),
        framework=draw(st.none() | st.just("onnx")),
    )


@settings(PROPS, max_examples=300)
@given(mo=_mo())
def test_what_parses_prints_back_to_the_same_meaning(mo: ModelOptimizerArgs) -> None:
    """to_command_line() then parse, as a list and as one shell string, gives ``mo`` back
    (what --dry-run prints and rt_info records is what was applied)."""
    line = mo.to_command_line()
    assert parse_mo_args(line) == mo
    assert parse_mo_args(shlex.join(line)) == mo


# --- resize rules ------------------------------------------------------------------------------------


@settings(PROPS, max_examples=500)
@given(st.integers(1, 20_000), st.integers(1, 20_000))
def test_keep_aspect_size_follows_the_rule(height: int, width: int) -> None:
    new_h, new_w = keep_aspect_size(height, width)
    assert new_h % 32 == 0 and new_w % 32 == 0 and min(new_h, new_w) >= 32
    if height >= width:
        assert new_h >= new_w
    if width >= height:
        assert new_w >= new_h
    if max(height, width) < REF_SIZE or min(height, width) > REF_SIZE:
        assert min(new_h, new_w) == REF_SIZE
        long_in, short_in = max(height, width), min(height, width)
        assert abs(max(new_h, new_w) - long_in * REF_SIZE / short_in) < 33
    else:
        for new, old in ((new_h, height), (new_w, width)):
            assert new == max(32, old - old % 32)


@settings(PROPS, max_examples=100)
@given(
    st.integers(1, 5000),
    st.integers(1, 5000),
    st.none()
    | st.tuples(st.integers(1, 64).map(lambda k: 32 * k), st.integers(1, 64).map(lambda k: 32 * k)),
)
def test_stretch_always_runs_at_the_ir_size(
    height: int, width: int, fixed: tuple[int, int] | None
) -> None:
    assert network_size(height, width, "stretch", fixed) == (fixed or (REF_SIZE, REF_SIZE))
    expected = keep_aspect_size(height, width)
    from toolkit.model.limits import NetworkSizeError, network_size_problem

    if network_size_problem(*expected) is None:
        assert network_size(height, width, "keep-aspect", fixed) == expected
    else:  # an extreme aspect ratio needs a network input past the bound: refused, not run
        with pytest.raises(NetworkSizeError):
            network_size(height, width, "keep-aspect", fixed)


_frames = hnp.arrays(np.uint8, st.tuples(st.integers(1, 80), st.integers(1, 80), st.just(3)))


@settings(PROPS, max_examples=150)
@given(
    frame=_frames,
    size=st.tuples(st.integers(1, 4), st.integers(1, 4)).map(lambda s: (32 * s[0], 32 * s[1])),
    mode=st.sampled_from(["stretch", "keep-aspect"]),
)
def test_network_input_is_nchw_float_in_the_frames_range(
    frame: np.ndarray, size: tuple[int, int], mode: str
) -> None:
    blob = to_network_input(frame, size, mode)  # type: ignore[arg-type]
    assert blob.shape == (1, 3, *size) and blob.dtype == np.float32
    assert blob.min() >= frame.min() and blob.max() <= frame.max()
    if frame.shape[:2] == size:
        assert np.array_equal(blob[0].transpose(1, 2, 0), frame.astype(np.float32))


@settings(PROPS, max_examples=150)
@given(
    matte=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 64), st.integers(1, 64)),
        elements=st.floats(-2, 3, width=32),
    ),
    height=st.integers(1, 300),
    width=st.integers(1, 300),
)
def test_alpha_comes_back_at_the_input_size_within_0_1(
    matte: np.ndarray, height: int, width: int
) -> None:
    alpha = alpha_to_input_size(matte[np.newaxis, np.newaxis], height, width)
    assert alpha.shape == (height, width) and alpha.dtype == np.float32
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0
    q = quantize_alpha(alpha)
    assert q.dtype == np.uint8
    assert np.abs(q.astype(np.float64) / 255 - alpha).max() <= 0.5 / 255 + 1e-6


# --- compositing -------------------------------------------------------------------------------------


@st.composite
def _triple(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    frame = draw(hnp.arrays(np.uint8, (h, w, 3)))
    alpha = draw(hnp.arrays(np.uint8, (h, w)))
    background = draw(hnp.arrays(np.uint8, (h, w, 3)))
    return frame, alpha, background


@settings(PROPS, max_examples=300)
@given(_triple())
def test_composite_is_the_demos_formula(
    triple: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    frame, alpha8, background = triple
    out = composite(frame, alpha8, background)
    assert out.shape == frame.shape and out.dtype == np.uint8
    a = alpha8.astype(np.float64)[..., None] / 255
    exact = frame * a + background * (1 - a)
    assert np.abs(out - exact).max() <= 0.5 + 1e-3
    low, high = np.minimum(frame, background), np.maximum(frame, background)
    assert (out >= low).all() and (out <= high).all()
    opaque, clear = alpha8 == 255, alpha8 == 0
    assert np.array_equal(out[opaque], frame[opaque])
    assert np.array_equal(out[clear], background[clear])
    swapped = composite(background, 255 - alpha8, frame)
    assert np.abs(swapped.astype(int) - out.astype(int)).max() <= 1


@settings(PROPS, max_examples=100)
@given(_triple())
def test_cutout_keeps_colours_and_uses_the_matte_as_alpha(
    triple: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    frame, alpha8, _ = triple
    bgra = cutout(frame, alpha8)
    assert bgra.shape == (*frame.shape[:2], 4)
    assert np.array_equal(bgra[..., :3], frame) and np.array_equal(bgra[..., 3], alpha8)


@settings(PROPS, max_examples=200)
@given(
    st.integers(1, 16).flatmap(
        lambda n: st.tuples(
            *[hnp.arrays(np.float32, (n,), elements=st.floats(0, 1, width=32)) for _ in range(3)]
        )
    ),
    st.floats(0.01, 0.99),
)
def test_ofd_only_replaces_one_frame_flickers_by_the_neighbours_mean(
    alphas: tuple[np.ndarray, np.ndarray, np.ndarray], tolerance: float
) -> None:
    prev, cur, nxt = alphas
    ofd = OneFrameDelay(tolerance)
    out = ofd.smooth(prev, cur, nxt)
    assert out.shape == cur.shape
    tol = np.float32(tolerance)
    flicker = (np.abs(prev - nxt) <= tol) & (np.abs(cur - prev) > tol) & (np.abs(cur - nxt) > tol)
    assert np.array_equal(out[~flicker], cur[~flicker])
    assert np.allclose(out[flicker], (prev[flicker] + nxt[flicker]) / 2)
    # Streaming gives the same: first and last frames pass through, the middle is smoothed.
    stream = [ofd.push(a) for a in (prev, cur, nxt)] + [ofd.flush()]
    assert stream[0] is None
    assert np.array_equal(stream[1], prev) and np.array_equal(stream[3], nxt)
    assert np.array_equal(stream[2], out)


# --- option parsers ----------------------------------------------------------------------------------


@settings(PROPS, max_examples=300)
@given(st.one_of(st.text(max_size=30), st.from_regex(r"\[?[-?\d, x]{0,20}\]?", fullmatch=True)))
def test_input_shape_is_a_shape_or_a_usage_error(text: str) -> None:
    try:
        shape = parse_input_shape(text)
    except UsageError as exc:
        assert "\n" not in str(exc)
        return
    if shape is not None:
        n, c, h, w = shape
        assert n >= 1 and c == 3 and h % 32 == 0 and w % 32 == 0 and h > 0 and w > 0


@settings(PROPS, max_examples=300)
@given(
    st.one_of(
        st.text(max_size=30),
        st.from_regex(r"(rgb:|bgr:|blur:|#)?[\d, a-fA-F]{0,14}", fullmatch=True),
    )
)
def test_background_is_a_background_or_a_usage_error(text: str) -> None:
    try:
        background = parse_background(text)
    except UsageError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(background, Background)
    frame = np.full((8, 8, 3), 77, np.uint8)
    rendered = background.render(frame)
    assert rendered.shape == frame.shape and rendered.dtype == np.uint8


@settings(PROPS, max_examples=100)
@given(st.text(max_size=20))
def test_resize_and_precision_options_are_values_or_usage_errors(text: str) -> None:
    for parse in (parse_resize, parse_precision):
        try:
            parse(text)
        except UsageError:
            continue
        except ToolkitError as exc:  # pragma: no cover - a wrong error class is a failure
            raise AssertionError(f"{parse.__name__} raised {type(exc).__name__}") from exc
