"""Safe loading and validation of MODNet checkpoints.

Every checkpoint is loaded with ``torch.load(..., weights_only=True, map_location="cpu")``:
the restricted unpickler builds tensors and plain containers and refuses anything else, so a
checkpoint can never run code. Before that, the file's first bytes are sniffed so that the
common failures (an HTML page saved by a downloader, an empty or truncated file, random
bytes) get a message that says what the file actually is.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from toolkit.errors import CheckpointError
from toolkit.model.modnet import MODNet

#: ``torch.save``'s legacy format: pickle protocol 2, then the magic number 0x1950a86a20f9469cfc6c.
LEGACY_MAGIC = bytes.fromhex("80028a0a6cfc9c46f9206aa85019")
ZIP_MAGIC = b"PK\x03\x04"

_PREFIX = "module."
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_ALIASES = ("backbone.", "lr_branch.backbone.")
_SHOW = 5


def _fail(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: {why}")


def _html_title(head: bytes) -> str | None:
    """The <title> of an HTML page, or None when ``head`` does not look like HTML."""
    text = head.decode("utf-8", "replace").lstrip("\ufeff \t\r\n").lower()
    if not (text.startswith(("<!doctype html", "<html", "<head", "<!--")) or "<html" in text[:512]):
        return None
    match = re.search(r"<title[^>]*>(.*?)</title>", head.decode("utf-8", "replace"), re.I | re.S)
    return " ".join(match.group(1).split())[:80] if match else ""


def sniff(path: Path) -> str:
    """Classify a file as ``"zip"`` or ``"legacy"``, or raise a precise :class:`CheckpointError`."""
    if not path.exists():
        raise _fail(path, "no such file")
    if not path.is_file():
        raise _fail(path, "not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise _fail(path, "the file is empty (0 bytes); the download or save did not finish")
    with open(path, "rb") as fh:
        head = fh.read(4096)
    title = _html_title(head)
    if title is not None:
        shown = f" (title: {title!r})" if title else ""
        raise _fail(
            path,
            f"this is an HTML page{shown}, not a checkpoint; a download saved a web page "
            "(a Google Drive confirmation or quota page, or an error page) in its place",
        )
    if head.startswith(ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            raise _fail(path, f"truncated or corrupt zip-format checkpoint ({size} bytes)")
        if _is_torchscript(path):
            raise _fail(
                path,
                "a TorchScript archive (torch.jit.save), not a state_dict checkpoint: it holds "
                "code, which is never loaded here; save its weights with "
                "torch.save(torch.jit.load(path).state_dict(), 'modnet.ckpt') on a machine "
                "you trust, and pass that",
            )
        return "zip"
    if head.startswith(LEGACY_MAGIC):
        return "legacy"
    if head.lstrip().startswith(b"<?xml") and b"<net" in head:
        raise _fail(path, "an OpenVINO IR (.xml), not a PyTorch checkpoint: run it with --model")
    if head[:1] == b"\x08" and (b"pytorch" in head[:200] or b"onnx" in head[:200].lower()):
        raise _fail(
            path,
            "an ONNX model, not a PyTorch checkpoint: `modnet-tools convert` makes the IR from "
            "the checkpoint (the .ckpt/.pth that `download` fetched)",
        )
    raise _fail(
        path,
        f"not a PyTorch checkpoint: unrecognised header {head[:8].hex(' ')} "
        "(expected a torch.save file, zip or legacy format)",
    )


def _is_torchscript(path: Path) -> bool:
    """torch.jit.save's zip holds ``<archive>/code/`` (the model's TorchScript source) and
    ``<archive>/constants.pkl``; torch.save's never does."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return any(
        "/code/" in f"/{name}" or name.rsplit("/", 1)[-1] == "constants.pkl" for name in names
    )


def _load_raw(path: Path) -> Any:
    """``torch.load`` with the restricted unpickler, its many failure types turned into one."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if "weights_only" in message.lower() or "weights only" in message.lower():
            found = re.search(r"GLOBAL ([\w.]+)", message) or re.search(
                r"global[s]?:? ['\"]?([\w.]+)", message, re.I
            )
            what = f" ({found.group(1)})" if found else ""
            raise _fail(
                path,
                f"refused: the pickle asks for a Python object{what} that a plain state_dict "
                "never contains; it was not loaded and nothing in it was run",
            ) from None
        raise _fail(path, f"corrupt checkpoint pickle: {_first_line(message)}") from None
    except (
        EOFError,
        RuntimeError,
        ValueError,
        OSError,
        KeyError,
        AttributeError,
        IndexError,
        TypeError,
        zipfile.BadZipFile,
        UnicodeDecodeError,
        OverflowError,
        MemoryError,
    ) as exc:
        raise _fail(
            path,
            f"cannot read the checkpoint (truncated or corrupt): "
            f"{type(exc).__name__}: {_first_line(str(exc))}",
        ) from None


def _first_line(message: str) -> str:
    line = message.strip().splitlines()[0] if message.strip() else "no details"
    return line[:200]


def _unwrap(path: Path, obj: Any) -> Mapping[str, Any]:
    """Find the state_dict: bare, or wrapped under ``state_dict`` (fine-tuning scripts do that)."""
    if not isinstance(obj, Mapping):
        raise _fail(path, f"expected a state_dict (a dict of tensors), found {type(obj).__name__}")
    for key in _WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    return obj


def _normalise_keys(path: Path, state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Strip DataParallel's ``module.`` prefix and keep only tensors, refusing anything else."""
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise _fail(path, f"state_dict key {key!r} is not a string")
        if not isinstance(value, torch.Tensor):
            raise _fail(path, f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor")
        name = key[len(_PREFIX) :] if key.startswith(_PREFIX) else key
        tensors[name] = value
    return tensors


def _fill_aliases(tensors: dict[str, torch.Tensor]) -> None:
    """One backbone is registered under two names; accept a checkpoint that stores it once."""
    for src, dst in (_ALIASES, _ALIASES[::-1]):
        if not any(k.startswith(dst) for k in tensors):
            for key in [k for k in tensors if k.startswith(src)]:
                tensors[dst + key[len(src) :]] = tensors[key]


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f" and {len(names) - _SHOW} more" if len(names) > _SHOW else "")


def validate_state_dict(
    path: Path, tensors: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Check keys, shapes and values against the network; return float32 tensors ready to load."""
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
        raise _fail(path, "not a MODNet checkpoint: " + "; ".join(parts))
    wrong = [
        f"{k} {list(tensors[k].shape)} (expected {list(v.shape)})"
        for k, v in expected.items()
        if tensors[k].shape != v.shape
    ]
    if wrong:
        raise _fail(path, f"{len(wrong)} tensors have the wrong shape: {_listing(wrong)}")
    out: dict[str, torch.Tensor] = {}
    for key, ref in expected.items():
        value = tensors[key]
        if ref.is_floating_point():
            if not value.is_floating_point():
                raise _fail(path, f"{key} has dtype {value.dtype}, expected a floating type")
            value = value.to(torch.float32)
            if not torch.isfinite(value).all():
                raise _fail(path, f"{key} contains NaN or infinite values")
        out[key] = value
    return out


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load and validate a checkpoint; keys come back without the ``module.`` prefix."""
    path = Path(path)
    sniff(path)
    raw = _unwrap(path, _load_raw(path))
    tensors = _normalise_keys(path, raw)
    _fill_aliases(tensors)
    return validate_state_dict(path, tensors, MODNet().state_dict())


def load_model(path: str | Path) -> MODNet:
    """A MODNet in eval mode with the checkpoint's weights, loaded strictly."""
    model = MODNet()
    model.load_state_dict(load_state_dict(path), strict=True)
    return model.eval()
