"""Model Optimizer flags: every form the configs and OMZ users write, and every mistake named."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolkit.convert.mo_args import DEFAULT_MO_ARGS, parse_mo_args
from toolkit.download.config import discover
from toolkit.errors import ConfigError


def test_the_webcam_config_means_omz_preprocessing() -> None:
    mo = parse_mo_args(discover()["modnet-webcam-portrait-matting"].model_optimizer_args)
    assert mo.mean_for("input") == (127.5, 127.5, 127.5)
    assert mo.scale_for("input") == (127.5,)
    assert mo.reverse_input_channels is True
    assert mo.outputs == ("output",)
    assert mo.input_model == "$conv_dir/modnet_webcam_portrait_matting.onnx"


def test_every_shipped_config_parses() -> None:
    for config in discover().values():
        if config.model_optimizer_args:
            assert parse_mo_args(config.model_optimizer_args).reverse_input_channels


def test_default_args_are_the_webcam_configs() -> None:
    assert (
        list(DEFAULT_MO_ARGS) == discover()["modnet-webcam-portrait-matting"].model_optimizer_args
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("input[127.5, 127.5, 127.5]", {"input": (127.5, 127.5, 127.5)}),
        ("input[127.5,127.5,127.5]", {"input": (127.5, 127.5, 127.5)}),
        ("input(1 2 3)", {"input": (1.0, 2.0, 3.0)}),
        ("[255]", {"": (255.0,)}),
        ("input[1e2]", {"input": (100.0,)}),
        ("a[1,2,3],b[4]", {"a": (1.0, 2.0, 3.0), "b": (4.0,)}),
    ],
)
def test_mean_values_forms(text: str, expected: dict[str, tuple[float, ...]]) -> None:
    assert parse_mo_args([f"--mean_values={text}"]).mean_values == expected


def test_unnamed_values_apply_to_any_input() -> None:
    mo = parse_mo_args(["--scale_values=[58.4,57.1,57.4]", "--mean_values=[1,2,3]"])
    assert mo.scale_for("input") == (58.4, 57.1, 57.4)
    assert mo.mean_for("whatever") == (1.0, 2.0, 3.0)


def test_flags_and_space_separated_values() -> None:
    mo = parse_mo_args(
        "--input input --output=output --layout input(nchw) --input_shape [1,3,?,?] "
        "--reverse_input_channels=False --framework=onnx"
    )
    assert mo.inputs == ("input",)
    assert mo.layout_for("input") == "NCHW"
    assert mo.input_shape == (1, 3, None, None)
    assert mo.reverse_input_channels is False


def test_input_with_shape_keeps_the_name() -> None:
    assert parse_mo_args(["--input=input[1,3,512,512]"]).inputs == ("input",)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--mean_value=input[1,2,3]"], "--mean_value: unknown"),
        (["--reverse_input_channel"], "--reverse_input_channel: unknown"),
        (["--compress_to_fp16=True"], "set by modnet-tools"),
        (["--output_dir=/x"], "set by modnet-tools"),
        (["--scale_values=input[1,2]"], "one value or one per channel"),
        (["--scale_values=input[0]"], "divide by zero"),
        (["--mean_values=input[a,b,c]"], "not a number"),
        (["--mean_values=input 1 2 3"], "cannot read"),
        (["--mean_values="], "needs a value"),
        (["--mean_values"], "needs a value"),
        (["--layout=input(nchw->nhwc)"], "not supported"),
        (["--layout=input(N1HW)"], "not a layout"),
        (["--input_shape=1,3,512,512"], "expected [N,C,H,W]"),
        (["--input_shape=[1,3,x,512]"], "not a dimension"),
        (["--framework=tf"], "only onnx"),
        (["--reverse_input_channels=maybe"], "true or false"),
        (["--output=a", "--output=b"], "given twice"),
        (["mean_values=1"], "expected a --flag"),
        (["--mean_values=a[1],a[2]"], "given twice"),
        (["--input=[127.5]"], "needs a tensor name"),
        (["--output=x,(y)"], "needs a tensor name"),
    ],
)
def test_bad_flags_are_errors_naming_the_flag(args: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_mo_args(args)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_command_line_round_trips() -> None:
    mo = parse_mo_args([*DEFAULT_MO_ARGS, "--layout=input(NCHW)", "--input_shape=[1,3,?,?]"])
    again = parse_mo_args(mo.to_command_line())
    assert again == mo


@given(
    st.lists(
        st.floats(min_value=-1e4, max_value=1e4, allow_nan=False).filter(lambda v: v != 0),
        min_size=1,
        max_size=3,
    ).filter(lambda v: len(v) != 2)
)
def test_any_finite_values_round_trip(values: list[float]) -> None:
    text = "input[" + ", ".join(repr(v) for v in values) + "]"
    mo = parse_mo_args([f"--scale_values={text}"])
    assert mo.scale_for("input") == tuple(values)
    assert parse_mo_args(mo.to_command_line()) == mo
