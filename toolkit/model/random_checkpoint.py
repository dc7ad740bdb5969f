"""Checkpoints with random weights, in the released file format.

The real checkpoint needs the internet; these let the tests (and a user without the weights)
run the whole pipeline. They are saved exactly like the released files: an ``OrderedDict``
with DataParallel's ``module.`` prefix, in the legacy (non-zip) ``torch.save`` format by
default. BatchNorm statistics are drawn to look like a trained network's, so that the matte
varies across the image instead of saturating.

Two profiles:

* ``tame`` - conv weights at 0.7x the He-normal scale, running_var in [1, 2]: the network
  is numerically calm, FP16 and bf16 stay close to FP32. Use it to compare reduced
  precisions or slightly different preprocessing.
* ``touchy`` - full He-normal scale and looser statistics: small input changes move the
  matte a lot. Use it where exactness is tested, so that a wrong preprocessing step shows.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch

from toolkit.fsutil import atomic_path
from toolkit.model.modnet import MODNet

Profile = Literal["tame", "touchy"]

#: Every BatchNorm's ``num_batches_tracked`` in a random checkpoint ("RAND" in ASCII). The
#: counter plays no part in inference, a trained network's counters are its real step counts,
#: and it is a tensor a state_dict must hold anyway: a mark that survives any ``torch.save``
#: format, so that ``convert`` can record in the IR that its mattes are meaningless.
RANDOM_MARK = 0x52414E44
Format = Literal["legacy", "zip"]

_PROFILES: dict[str, dict[str, float]] = {
    "tame": {"gain": 0.7, "var_lo": 1.0, "var_hi": 2.0, "mean_std": 0.05, "bias_std": 0.05},
    "touchy": {"gain": 1.0, "var_lo": 0.5, "var_hi": 1.5, "mean_std": 0.1, "bias_std": 0.1},
}


def random_state_dict(seed: int = 0, profile: Profile = "tame") -> OrderedDict[str, torch.Tensor]:
    """A state_dict for :class:`MODNet` (keys without ``module.``), reproducible from ``seed``."""
    if profile not in _PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(_PROFILES)}")
    p = _PROFILES[profile]
    gen = torch.Generator().manual_seed(seed)
    model = MODNet()
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, ref in model.state_dict().items():
        leaf = key.rsplit(".", 1)[-1]
        shape = ref.shape
        if leaf == "num_batches_tracked":
            torch.randint(1000, 100000, (1,), generator=gen)  # keeps every later draw as it was
            value = torch.tensor(RANDOM_MARK)
        elif leaf == "running_var":
            value = torch.empty(shape).uniform_(p["var_lo"], p["var_hi"], generator=gen)
        elif leaf == "running_mean":
            value = torch.randn(shape, generator=gen) * p["mean_std"]
        elif leaf == "weight" and ref.dim() == 1:  # BatchNorm scale
            value = torch.empty(shape).uniform_(0.75, 1.25, generator=gen)
        elif leaf == "bias":
            value = torch.randn(shape, generator=gen) * p["bias_std"]
        elif leaf == "weight":  # conv (4-D) or linear (2-D): He-normal on the fan-in
            fan_in = math.prod(shape[1:])
            value = torch.randn(shape, generator=gen) * (p["gain"] * math.sqrt(2.0 / fan_in))
        else:  # pragma: no cover - the network has no other kinds of entries
            raise AssertionError(f"unhandled state_dict entry {key}")
        out[key] = value.to(ref.dtype)
    # The backbone is one module under two names: both keys must hold the same tensors.
    for key in list(out):
        if key.startswith("lr_branch.backbone."):
            out[key] = out[key[len("lr_branch.") :]]
    return out


def is_random_state(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a (validated) state_dict is one :func:`random_state_dict` made."""
    counters = [v for k, v in state.items() if k.endswith("num_batches_tracked")]
    return bool(counters) and all(int(v) == RANDOM_MARK for v in counters)


def write_random_checkpoint(
    path: str | Path,
    *,
    seed: int = 0,
    profile: Profile = "tame",
    fmt: Format = "legacy",
) -> Path:
    """Write a random-weight checkpoint in the released format (atomically); return its path."""
    if fmt not in ("legacy", "zip"):
        raise ValueError(f"unknown checkpoint format {fmt!r}; choose legacy or zip")
    state = OrderedDict(("module." + k, v) for k, v in random_state_dict(seed, profile).items())
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp, _use_new_zipfile_serialization=(fmt == "zip"))
    return path
