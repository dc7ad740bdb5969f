"""Checkpoint loading: both released formats, wrappers, and every kind of bad file."""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from tests.helpers import CreatesFile, assert_one_line_error
from toolkit.errors import CheckpointError
from toolkit.model.checkpoint import LEGACY_MAGIC, ZIP_MAGIC, load_model, load_state_dict, sniff
from toolkit.model.random_checkpoint import random_state_dict, write_random_checkpoint


@pytest.fixture(scope="module")
def released_state() -> OrderedDict[str, torch.Tensor]:
    return OrderedDict(("module." + k, v) for k, v in random_state_dict(seed=3).items())


def test_random_checkpoint_has_the_released_legacy_header(tmp_path: Path) -> None:
    path = write_random_checkpoint(tmp_path / "r.ckpt", seed=0)
    assert path.read_bytes()[:14] == LEGACY_MAGIC
    assert path.read_bytes()[:14].hex(" ") == "80 02 8a 0a 6c fc 9c 46 f9 20 6a a8 50 19"
    raw = torch.load(path, weights_only=True, map_location="cpu")
    assert isinstance(raw, OrderedDict) and len(raw) == 751
    assert all(k.startswith("module.") for k in raw)


def test_zip_format_is_written_and_loaded(tmp_path: Path) -> None:
    path = write_random_checkpoint(tmp_path / "z.ckpt", seed=0, fmt="zip")
    assert path.read_bytes()[:4] == ZIP_MAGIC
    assert sniff(path) == "zip"
    legacy = load_state_dict(write_random_checkpoint(tmp_path / "l.ckpt", seed=0))
    zipped = load_state_dict(path)
    assert legacy.keys() == zipped.keys()
    assert all(torch.equal(legacy[k], zipped[k]) for k in legacy)


def test_random_batchnorm_statistics_are_realistic() -> None:
    state = random_state_dict(seed=0)
    var = state["backbone.model.features.0.1.running_var"]
    mean = state["backbone.model.features.0.1.running_mean"]
    assert float(var.min()) >= 1.0 and float(var.max()) <= 2.0 and float(var.std()) > 0.1
    assert float(mean.abs().max()) > 0 and float(mean.std()) < 0.2
    assert not torch.equal(state["f_branch.conv_f2x.layers.1.bnorm.weight"], torch.ones(16))


def test_random_checkpoint_matte_varies_across_a_photo(
    tame_checkpoint: Path, sample_photo: Path
) -> None:
    import cv2
    import numpy as np

    bgr = cv2.imread(str(sample_photo))
    rgb = bgr[:, :, ::-1].astype(np.float32)
    x = torch.from_numpy(((rgb - 127.5) / 127.5).transpose(2, 0, 1).copy())[None]
    with torch.no_grad():
        matte = load_model(tame_checkpoint)(x)[0, 0]
    assert float(matte.std()) > 0.03
    assert float(matte.max()) - float(matte.min()) > 0.3


@pytest.mark.parametrize("prefix", ["module.", ""])
@pytest.mark.parametrize("wrapped", [False, True])
@pytest.mark.parametrize("zip_format", [False, True])
def test_loads_prefixed_bare_and_wrapped_state_dicts(
    tmp_path: Path,
    released_state: OrderedDict[str, torch.Tensor],
    prefix: str,
    wrapped: bool,
    zip_format: bool,
) -> None:
    state = OrderedDict((prefix + k.removeprefix("module."), v) for k, v in released_state.items())
    obj: object = {"state_dict": state, "epoch": 7, "lr": 0.01} if wrapped else state
    path = tmp_path / "c.ckpt"
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    loaded = load_state_dict(path)
    assert len(loaded) == 751
    key = "f_branch.conv_f.1.layers.0.weight"
    assert torch.equal(loaded[key], released_state["module." + key])


def test_a_checkpoint_storing_the_shared_backbone_once_loads(
    tmp_path: Path, released_state: OrderedDict[str, torch.Tensor]
) -> None:
    state = {k: v for k, v in released_state.items() if ".lr_branch.backbone." not in k}
    torch.save(state, tmp_path / "once.ckpt")
    model = load_model(tmp_path / "once.ckpt")
    assert torch.equal(
        model.lr_branch.backbone.model.features[0][0].weight,
        released_state["module.backbone.model.features.0.0.weight"],
    )


@pytest.mark.parametrize("zip_format", [False, True])
def test_a_pickle_that_would_create_a_file_is_refused_and_nothing_runs(
    tmp_path: Path, zip_format: bool
) -> None:
    canary = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save(
        {"module.backbone.x": CreatesFile(canary)}, path, _use_new_zipfile_serialization=zip_format
    )
    # Prove the payload is live: a full unpickle of the same object does create a file.
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(CreatesFile(live)))
    assert live.exists()
    with pytest.raises(CheckpointError, match=r"refused.*nothing in it was run"):
        load_state_dict(path)
    assert not canary.exists()


def test_a_bare_malicious_pickle_is_refused_without_unpickling(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(CreatesFile(canary), protocol=2))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_state_dict(path)
    assert not canary.exists()


def _bad_files(tmp: Path, good_legacy: bytes, good_zip: bytes) -> dict[str, tuple[Path, str]]:
    """Every bad-checkpoint case, with the phrase its error must contain."""
    cases: dict[str, tuple[bytes | object, str]] = {
        "html": (
            b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>"
            b"</head><body>Google Drive can't scan this file for viruses.</body></html>",
            "HTML page",
        ),
        "html_quota": (
            b"\n  <html><head><title>Google Drive - Quota exceeded</title></head></html>",
            "Quota exceeded",
        ),
        "empty": (b"", "empty (0 bytes)"),
        "truncated_legacy": (good_legacy[: len(good_legacy) // 3], "truncated or corrupt"),
        "truncated_zip": (good_zip[: len(good_zip) // 3], "truncated or corrupt"),
        "random_bytes": (os.urandom(4096), "not a PyTorch checkpoint"),
        "text": (b"this is not a model\n", "not a PyTorch checkpoint"),
    }
    out = {}
    for name, (data, needle) in cases.items():
        path = tmp / f"{name}.ckpt"
        assert isinstance(data, bytes)
        path.write_bytes(data)
        out[name] = (path, needle)
    return out


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    tmp = tmp_path_factory.mktemp("bad")
    legacy = write_random_checkpoint(tmp / "good_legacy.bin", seed=5).read_bytes()
    zipped = write_random_checkpoint(tmp / "good_zip.bin", seed=5, fmt="zip").read_bytes()
    cases = _bad_files(tmp, legacy, zipped)
    state = OrderedDict(("module." + k, v) for k, v in random_state_dict(seed=5).items())
    # Wrong keys, wrong shapes, not a dict, a non-tensor entry: valid pickles, wrong contents.
    extra = dict(state)
    extra["module.head.weight"] = torch.zeros(3)
    del extra["module.f_branch.conv_f.1.layers.0.bias"]
    torch.save(extra, tmp / "keys.ckpt")
    cases["wrong_keys"] = (tmp / "keys.ckpt", "missing keys: f_branch.conv_f.1.layers.0.bias")
    shape = dict(state)
    shape["module.f_branch.conv_f.1.layers.0.weight"] = torch.zeros(2, 16, 1, 1)
    torch.save(shape, tmp / "shape.ckpt")
    cases["wrong_shape"] = (tmp / "shape.ckpt", "f_branch.conv_f.1.layers.0.weight [2, 16, 1, 1]")
    torch.save([1, 2, 3], tmp / "list.ckpt")
    cases["not_a_dict"] = (tmp / "list.ckpt", "expected a state_dict")
    nonfinite = dict(state)
    nonfinite["module.f_branch.conv_f.1.layers.0.bias"] = torch.tensor([float("nan")])
    torch.save(nonfinite, tmp / "nan.ckpt")
    cases["nan"] = (tmp / "nan.ckpt", "NaN")
    canary = tmp / "pwned"
    torch.save({"module.x": CreatesFile(canary)}, tmp / "evil.ckpt")
    cases["evil"] = (tmp / "evil.ckpt", "refused")
    cases["missing"] = (tmp / "does-not-exist.ckpt", "no such file")
    return cases


CASES = [
    "html",
    "html_quota",
    "empty",
    "truncated_legacy",
    "truncated_zip",
    "random_bytes",
    "text",
    "wrong_keys",
    "wrong_shape",
    "not_a_dict",
    "nan",
    "evil",
    "missing",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_checkpoint_gets_a_clear_error(
    bad_checkpoints: dict[str, tuple[Path, str]], case: str
) -> None:
    path, needle = bad_checkpoints[case]
    with pytest.raises(CheckpointError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert needle.lower() in message.lower(), message
    assert str(path) in message
    assert "\n" not in message


@pytest.mark.parametrize("case", CASES)
def test_cli_reports_a_bad_checkpoint_in_one_line(
    bad_checkpoints: dict[str, tuple[Path, str]], case: str, run_cli
) -> None:
    path, needle = bad_checkpoints[case]
    proc = run_cli("check-checkpoint", path)
    assert_one_line_error(proc, needle)
    assert not (path.parent / "pwned").exists()


def test_cli_random_checkpoint_then_check(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "r.ckpt"
    proc = run_cli("random-checkpoint", out, "--seed", "4", "--format", "zip")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("check-checkpoint", out)
    assert proc.returncode == 0, proc.stderr
    assert "valid MODNet checkpoint (zip format, 751 entries" in proc.stdout
