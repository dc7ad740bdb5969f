"""The network matches the released checkpoint's layout exactly and behaves as documented."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from toolkit.model.modnet import InputSizeError, MODNet, count_parameters

MANIFEST = Path(__file__).parents[1] / "data" / "modnet_state_dict.json"


@pytest.fixture(scope="module")
def model() -> MODNet:
    torch.manual_seed(0)
    return MODNet().eval()


def test_every_manifest_entry_matches_the_network(model: MODNet) -> None:
    manifest = json.loads(MANIFEST.read_text())
    entries = manifest["entries"]
    assert len(entries) == manifest["entries_count"] == 751
    state = model.state_dict()
    ours = {
        "module." + k: (list(v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in state.items()
    }
    theirs = {key: (shape, dtype) for key, shape, dtype in entries}
    assert set(ours) == set(theirs), set(ours) ^ set(theirs)
    for key, (shape, dtype) in theirs.items():
        assert ours[key] == (shape, dtype), key
    # Same order too: a state_dict saved by this network lists keys as the released one does.
    assert list(ours) == [key for key, _, _ in entries]


def test_parameter_counts_match_the_reference(model: MODNet) -> None:
    manifest = json.loads(MANIFEST.read_text())
    assert count_parameters(model) == manifest["parameters_total"] == 6_487_075
    training_only = [model.lr_branch.conv_lr, model.hr_branch.conv_hr]
    unused = sum(p.numel() for m in training_only for p in m.parameters())
    assert count_parameters(model) - unused == manifest["parameters_used_in_inference"]


def test_backbone_is_one_module_under_two_names(model: MODNet) -> None:
    assert model.lr_branch.backbone is model.backbone
    state = model.state_dict()
    key = "backbone.model.features.0.0.weight"
    assert state[key].data_ptr() == state["lr_branch." + key].data_ptr()


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 64, 64), (2, 96, 160), (3, 128, 64)])
def test_returns_only_the_matte_in_unit_range(
    model: MODNet, batch: int, height: int, width: int
) -> None:
    x = torch.rand(batch, 3, height, width) * 2 - 1
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (batch, 1, height, width)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_batch_items_are_independent(model: MODNet) -> None:
    x = torch.rand(2, 3, 64, 96) * 2 - 1
    with torch.no_grad():
        both = model(x)
        first = model(x[:1])
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("height", "width"), [(500, 512), (512, 100), (31, 32), (0, 64)])
def test_sizes_that_are_not_multiples_of_32_fail_up_front(
    model: MODNet, height: int, width: int
) -> None:
    with pytest.raises(InputSizeError, match="multiples of 32"):
        model(torch.zeros(1, 3, height, width))


def test_rejects_a_tensor_without_batch_dimension(model: MODNet) -> None:
    with pytest.raises(InputSizeError, match="N x 3 x H x W"):
        model(torch.zeros(3, 64, 64))
