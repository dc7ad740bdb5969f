"""Model Optimizer flags from a model.yml's ``model_optimizer_args``, parsed into data.

Model Optimizer is gone from OpenVINO 2025+, but OMZ configs still describe preprocessing in
its language (``--mean_values=input[127.5, 127.5, 127.5] --reverse_input_channels ...``).
This module reads the flags that carry meaning and nothing else: an unknown flag is an error
naming it, because silently dropping e.g. a ``--mean_values`` typo would produce an IR that
computes something else without anyone noticing.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from toolkit.errors import ConfigError

#: The webcam config's arguments: what OMZ's IR was built with (``$conv_dir`` unexpanded).
DEFAULT_MO_ARGS: tuple[str, ...] = (
    "--input_model=$conv_dir/modnet_webcam_portrait_matting.onnx",
    "--scale_values=input[127.5]",
    "--mean_values=input[127.5, 127.5, 127.5]",
    "--reverse_input_channels",
    "--output=output",
)

_VALUE_FLAGS = (
    "input_model",
    "mean_values",
    "scale_values",
    "input",
    "output",
    "layout",
    "input_shape",
    "framework",
)
_BOOL_FLAGS = ("reverse_input_channels",)
#: Flags omz_converter adds itself; modnet-tools decides these from its own options.
_SET_BY_TOOL = ("output_dir", "model_name", "compress_to_fp16", "data_type")
_TRUE = ("", "true", "1", "yes")
_FALSE = ("false", "0", "no")


def _err(flag: str, why: str) -> ConfigError:
    """One line always: a value with a newline or control character is shown escaped."""
    text = f"model_optimizer_args: {flag}: {why}"
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return ConfigError(text)


@dataclass(frozen=True)
class ModelOptimizerArgs:
    """The meaning of a Model Optimizer command line.

    Per-input values are keyed by input name; the key ``""`` means "the only input" (MO's
    unnamed form ``--mean_values=[...]``). Use :meth:`mean_for` etc. to look them up.
    """

    input_model: str | None = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    mean_values: dict[str, tuple[float, ...]] = field(default_factory=dict)
    scale_values: dict[str, tuple[float, ...]] = field(default_factory=dict)
    reverse_input_channels: bool = False
    layouts: dict[str, str] = field(default_factory=dict)
    input_shape: tuple[int | None, ...] | None = None
    framework: str | None = None

    def _lookup(self, table: dict[str, tuple[float, ...]], name: str) -> tuple[float, ...] | None:
        return table.get(name, table.get(""))

    def mean_for(self, name: str) -> tuple[float, ...] | None:
        return self._lookup(self.mean_values, name)

    def scale_for(self, name: str) -> tuple[float, ...] | None:
        return self._lookup(self.scale_values, name)

    def layout_for(self, name: str) -> str | None:
        return self.layouts.get(name, self.layouts.get(""))

    def to_command_line(self) -> list[str]:
        """The flags back in Model Optimizer's spelling (for --dry-run and the IR's rt_info)."""
        out: list[str] = []
        if self.framework:
            out.append(f"--framework={self.framework}")
        if self.input_model:
            out.append(f"--input_model={self.input_model}")
        if self.inputs:
            out.append("--input=" + ",".join(self.inputs))
        for flag, table in (("scale_values", self.scale_values), ("mean_values", self.mean_values)):
            if table:
                out.append(f"--{flag}=" + ",".join(f"{k}{_fmt(v)}" for k, v in table.items()))
        if self.reverse_input_channels:
            out.append("--reverse_input_channels")
        if self.outputs:
            out.append("--output=" + ",".join(self.outputs))
        if self.layouts:
            out.append(
                "--layout=" + ",".join(f"{k}({v})" if k else v for k, v in self.layouts.items())
            )
        if self.input_shape is not None:
            dims = ", ".join("?" if d is None else str(d) for d in self.input_shape)
            out.append(f"--input_shape=[{dims}]")
        return out


def _fmt(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(repr(v) for v in values) + "]"


def _split_flag(arg: str) -> tuple[str, str | None]:
    if not arg.startswith("--"):
        raise _err(arg, "expected a --flag")
    name, sep, value = arg[2:].partition("=")
    return name, (value if sep else None)


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets/parentheses: ``a[1,2],b[3]`` -> two parts."""
    parts: list[str] = []
    depth = 0
    current = ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


_NAMED_VALUES = re.compile(r"^(?P<name>[^\[\]()]*)[\[(](?P<values>[^\[\]()]*)[\])]$")


def _parse_values(flag: str, text: str) -> dict[str, tuple[float, ...]]:
    """``input[127.5, 127.5, 127.5]``, ``[127.5]``, ``a[1,2,3],b[4]``, ``(1 2 3)`` -> per input."""
    out: dict[str, tuple[float, ...]] = {}
    for part in _split_top_level(text):
        match = _NAMED_VALUES.match(part)
        if match is None:
            raise _err(flag, f"cannot read {part!r}; expected name[v1,v2,v3] or [v]")
        name = match.group("name").strip()
        raw = [v for v in re.split(r"[,\s]+", match.group("values").strip()) if v]
        try:
            values = tuple(float(v) for v in raw)
        except ValueError:
            raise _err(flag, f"{part!r} holds a value that is not a number") from None
        if len(values) not in (1, 3):
            raise _err(flag, f"{part!r}: give one value or one per channel (3), not {len(values)}")
        if flag == "scale_values" and any(v == 0 for v in values):
            raise _err(flag, f"{part!r}: a scale of 0 would divide by zero")
        if name in out:
            raise _err(flag, f"input {name or '(unnamed)'!r} is given twice")
        out[name] = values
    if not out:
        raise _err(flag, "needs a value")
    return out


def _parse_layouts(flag: str, text: str) -> dict[str, str]:
    """``input(NCHW)``, ``NCHW`` or ``[n,c,h,w]``; the ``src->dst`` form is refused."""
    out: dict[str, str] = {}
    for part in _split_top_level(text):
        match = re.match(r"^(?P<name>[^\[\]()]*)\((?P<layout>[^()]*)\)$", part)
        name, layout = (match.group("name").strip(), match.group("layout")) if match else ("", part)
        layout = layout.strip().strip("[]").replace(",", "").replace(" ", "").upper()
        if "->" in layout:
            raise _err(flag, f"{part!r}: layout conversion (src->dst) is not supported")
        if not re.fullmatch(r"[A-Z?.]+", layout):
            raise _err(flag, f"{part!r} is not a layout such as NCHW")
        out[name] = layout
    return out


def _parse_shape(flag: str, text: str) -> tuple[int | None, ...]:
    raw = text.strip()
    if not raw.startswith(("[", "(")) or not raw.endswith(("]", ")")):
        raise _err(flag, f"{text!r}: expected [N,C,H,W]")
    if "],[" in raw.replace(" ", "") or "),(" in raw.replace(" ", ""):
        raise _err(flag, "only one input shape is supported (MODNet has one input)")
    dims: list[int | None] = []
    for item in (v for v in re.split(r"[,\s]+", raw[1:-1].strip()) if v):
        if item in ("?", "-1"):
            dims.append(None)
            continue
        try:
            dims.append(int(item))
        except ValueError:
            raise _err(flag, f"{text!r}: {item!r} is not a dimension") from None
    return tuple(dims)


def _parse_bool(flag: str, value: str | None) -> bool:
    if value is None or value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise _err(flag, f"expected true or false, not {value!r}")


def _tokens(args: Sequence[str]) -> list[str]:
    """Accept one flag per item (as in model.yml) and also ``--flag value`` pairs."""
    out: list[str] = []
    items = list(args)
    i = 0
    while i < len(items):
        arg = items[i].strip()
        name, value = _split_flag(arg) if arg.startswith("--") else ("", None)
        if not arg.startswith("--"):
            raise _err(arg, "expected a --flag (values go after '=')")
        if (
            value is None
            and name in _VALUE_FLAGS
            and i + 1 < len(items)
            and not items[i + 1].startswith("--")
        ):
            arg = f"{arg}={items[i + 1]}"
            i += 1
        out.append(arg)
        i += 1
    return out


def parse_mo_args(args: Sequence[str] | str) -> ModelOptimizerArgs:
    """Parse Model Optimizer flags; raise :class:`ConfigError` naming the first bad one.

    ``args`` is the config's list (one flag per item) or one command-line string.
    """
    items = shlex.split(args) if isinstance(args, str) else list(args)
    result: dict[str, object] = {}
    seen: set[str] = set()
    for arg in _tokens(items):
        name, value = _split_flag(arg)
        flag = "--" + name
        if name in _SET_BY_TOOL:
            raise _err(flag, "is set by modnet-tools itself (use --precision / -o); remove it")
        if name not in _VALUE_FLAGS and name not in _BOOL_FLAGS:
            raise _err(flag, "unknown or unsupported Model Optimizer flag")
        if name in seen:
            raise _err(flag, "given twice")
        seen.add(name)
        if name in _BOOL_FLAGS:
            result[name] = _parse_bool(flag, value)
            continue
        if value is None or not value.strip():
            raise _err(flag, "needs a value (--flag=value)")
        value = value.strip()
        if name in ("mean_values", "scale_values"):
            result[name] = _parse_values(name, value)
        elif name == "layout":
            result["layouts"] = _parse_layouts(flag, value)
        elif name == "input_shape":
            result[name] = _parse_shape(flag, value)
        elif name in ("input", "output"):
            names = tuple(re.sub(r"[\[(].*$", "", p).strip() for p in _split_top_level(value))
            if not all(names):
                raise _err(
                    flag, f"{value!r}: every entry needs a tensor name (e.g. input[1,3,512,512])"
                )
            result[name + "s"] = names
        elif name == "framework":
            if value.lower() != "onnx":
                raise _err(flag, f"only onnx models are converted, not {value!r}")
            result[name] = value.lower()
        else:
            result[name] = value
    return ModelOptimizerArgs(**result)  # type: ignore[arg-type]
