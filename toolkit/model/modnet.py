"""MODNet in PyTorch, written from the layer description in the project's reference notes.

The attribute names are chosen so that ``state_dict()`` (with ``module.`` prepended) has
exactly the keys of the released checkpoints: the converter exports this network and the
verifier compares against it, so loading the released weights without any renaming is the
whole point of this module. Nothing here imports code from a download.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: Height and width of every input must be a multiple of this (five stride-2 stages).
SIZE_MULTIPLE = 32

# MobileNetV2 inverted-residual settings: expansion t, output channels c, repeats n, stride s.
_MOBILENET_V2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

# Indices into ``features`` after which the encoder taps its 2x, 4x, 8x, 16x and 32x features.
_ENCODER_TAPS = (1, 3, 6, 13, 18)


class InputSizeError(ValueError):
    """An input whose height or width the network cannot process."""


def _resample(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Bilinear resampling by a scale factor, as every resize inside MODNet is done."""
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


class InvertedResidual(nn.Module):
    """MobileNetV2 block; its layers live in ``conv`` so the checkpoint keys line up."""

    def __init__(self, inp: int, out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = round(inp * expansion)
        self.use_residual = stride == 1 and inp == out
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [
                nn.Conv2d(inp, hidden, 1, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU6(inplace=True),
            ]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out, 1, bias=False),
            nn.BatchNorm2d(out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_residual else y


class MobileNetV2(nn.Module):
    """The feature extractor only (MODNet never uses the classifier, and the checkpoint has none)."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        features: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(in_channels, 32, 3, 2, 1, bias=False),
                nn.BatchNorm2d(32),
                nn.ReLU6(inplace=True),
            )
        ]
        inp = 32
        for t, c, n, s in _MOBILENET_V2_SETTINGS:
            for i in range(n):
                features.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        features.append(
            nn.Sequential(
                nn.Conv2d(inp, 1280, 1, bias=False),
                nn.BatchNorm2d(1280),
                nn.ReLU6(inplace=True),
            )
        )
        self.features = nn.Sequential(*features)


class MobileNetV2Backbone(nn.Module):
    """Runs the MobileNetV2 features and returns the five encoder taps (2x ... 32x)."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.model = MobileNetV2(in_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps: list[torch.Tensor] = []
        for index, layer in enumerate(self.model.features):
            x = layer(x)
            if index in _ENCODER_TAPS:
                taps.append(x)
        return taps


class IBNorm(nn.Module):
    """BatchNorm on the first half of the channels, InstanceNorm on the rest.

    The InstanceNorm half uses the statistics of the image being processed; that is why a
    padded image gives a different matte than a resized one.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn_channels = channels // 2
        self.bnorm = nn.BatchNorm2d(self.bn_channels, affine=True)
        self.inorm = nn.InstanceNorm2d(channels - self.bn_channels, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bnorm(x[:, : self.bn_channels])
        inn = self.inorm(x[:, self.bn_channels :])
        return torch.cat([bn, inn], dim=1)


class Conv2dIBNormRelu(nn.Module):
    """Conv2d (with bias), then optionally IBNorm and ReLU, kept in ``layers``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        *,
        with_ibn: bool = True,
        with_relu: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=True)
        ]
        if with_ibn:
            layers.append(IBNorm(out_channels))
        if with_relu:
            layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SEBlock(nn.Module):
    """Squeeze-and-excitation: channel weights from a global average, no biases."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return x * weights.unsqueeze(-1).unsqueeze(-1)


class LRBranch(nn.Module):
    """Semantic branch: the backbone's coarse features, refined down to 1/8 resolution."""

    def __init__(self, backbone: MobileNetV2Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.se_block = SEBlock(1280)
        self.conv_lr16x = Conv2dIBNormRelu(1280, 96, 5, padding=2)
        self.conv_lr8x = Conv2dIBNormRelu(96, 32, 5, padding=2)
        # Predicts the coarse semantic mask during training only; kept for the checkpoint keys.
        self.conv_lr = Conv2dIBNormRelu(32, 1, 3, 2, 1, with_ibn=False, with_relu=False)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        enc2x, enc4x, _, _, enc32x = self.backbone(img)
        x = self.se_block(enc32x)
        x = self.conv_lr16x(_resample(x, 2.0))
        lr8x = self.conv_lr8x(_resample(x, 2.0))
        return lr8x, enc2x, enc4x


class HRBranch(nn.Module):
    """Detail branch: high-resolution features from the image and the early encoder taps."""

    def __init__(self, hr_channels: int = 32, enc_channels: tuple[int, int] = (16, 24)) -> None:
        super().__init__()
        hr = hr_channels
        self.tohr_enc2x = Conv2dIBNormRelu(enc_channels[0], hr, 1)
        self.conv_enc2x = Conv2dIBNormRelu(hr + 3, hr, 3, 2, 1)
        self.tohr_enc4x = Conv2dIBNormRelu(enc_channels[1], hr, 1)
        self.conv_enc4x = Conv2dIBNormRelu(2 * hr, 2 * hr, 3, padding=1)
        self.conv_hr4x = nn.Sequential(
            Conv2dIBNormRelu(3 * hr + 3, 2 * hr, 3, padding=1),
            Conv2dIBNormRelu(2 * hr, 2 * hr, 3, padding=1),
            Conv2dIBNormRelu(2 * hr, hr, 3, padding=1),
        )
        self.conv_hr2x = nn.Sequential(
            Conv2dIBNormRelu(2 * hr, 2 * hr, 3, padding=1),
            Conv2dIBNormRelu(2 * hr, hr, 3, padding=1),
            Conv2dIBNormRelu(hr, hr, 3, padding=1),
            Conv2dIBNormRelu(hr, hr, 3, padding=1),
        )
        # Training-only detail prediction head; kept for the checkpoint keys.
        self.conv_hr = nn.Sequential(
            Conv2dIBNormRelu(hr + 3, hr, 3, padding=1),
            Conv2dIBNormRelu(hr, 1, 1, with_ibn=False, with_relu=False),
        )

    def forward(
        self, img: torch.Tensor, enc2x: torch.Tensor, enc4x: torch.Tensor, lr8x: torch.Tensor
    ) -> torch.Tensor:
        img2x = _resample(img, 0.5)
        img4x = _resample(img, 0.25)
        e2 = self.tohr_enc2x(enc2x)
        h = self.conv_enc2x(torch.cat([img2x, e2], dim=1))
        e4 = self.tohr_enc4x(enc4x)
        h = self.conv_enc4x(torch.cat([h, e4], dim=1))
        h = self.conv_hr4x(torch.cat([h, _resample(lr8x, 2.0), img4x], dim=1))
        return self.conv_hr2x(torch.cat([_resample(h, 2.0), e2], dim=1))


class FusionBranch(nn.Module):
    """Fuses the semantic and detail features into the full-resolution alpha matte."""

    def __init__(self, hr_channels: int = 32, lr_channels: int = 32) -> None:
        super().__init__()
        hr = hr_channels
        self.conv_lr4x = Conv2dIBNormRelu(lr_channels, hr, 5, padding=2)
        self.conv_f2x = Conv2dIBNormRelu(2 * hr, hr, 3, padding=1)
        self.conv_f = nn.Sequential(
            Conv2dIBNormRelu(hr + 3, hr // 2, 3, padding=1),
            Conv2dIBNormRelu(hr // 2, 1, 1, with_ibn=False, with_relu=False),
        )

    def forward(self, img: torch.Tensor, lr8x: torch.Tensor, hr2x: torch.Tensor) -> torch.Tensor:
        l4 = self.conv_lr4x(_resample(lr8x, 2.0))
        f = self.conv_f2x(torch.cat([_resample(l4, 2.0), hr2x], dim=1))
        f = self.conv_f(torch.cat([_resample(f, 2.0), img], dim=1))
        return torch.sigmoid(f)


def _is_tracing() -> bool:
    """True while torch.export / dynamo / TorchScript trace the model.

    The size check is plain Python on concrete ints; under tracing the sizes may be symbolic,
    and a check there would either specialise dynamic axes or break the export.
    """
    compiler = getattr(torch, "compiler", None)
    if compiler is not None:
        for probe in ("is_exporting", "is_compiling", "is_dynamo_compiling"):
            fn = getattr(compiler, probe, None)
            if fn is not None and fn():
                return True
    return bool(torch.jit.is_tracing())


def check_input_size(height: int, width: int) -> None:
    """Raise :class:`InputSizeError` unless both sides are positive multiples of 32."""
    if height <= 0 or width <= 0 or height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise InputSizeError(
            f"MODNet needs height and width that are positive multiples of {SIZE_MULTIPLE}; "
            f"got {height}x{width} (H x W)"
        )


class MODNet(nn.Module):
    """The whole network; ``forward`` returns the matte, N x 1 x H x W, values in [0, 1].

    The input is RGB, normalised as (x - 127.5) / 127.5, NCHW float32.
    """

    def __init__(self, in_channels: int = 3, hr_channels: int = 32) -> None:
        super().__init__()
        self.backbone = MobileNetV2Backbone(in_channels)
        self.lr_branch = LRBranch(self.backbone)
        self.hr_branch = HRBranch(hr_channels)
        self.f_branch = FusionBranch(hr_channels)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.dim() != 4:
            raise InputSizeError(f"MODNet expects an N x 3 x H x W tensor; got {img.dim()} dims")
        if not _is_tracing():
            check_input_size(int(img.shape[2]), int(img.shape[3]))
        lr8x, enc2x, enc4x = self.lr_branch(img)
        hr2x = self.hr_branch(img, enc2x, enc4x, lr8x)
        return self.f_branch(img, lr8x, hr2x)


def count_parameters(model: nn.Module) -> int:
    """Parameters counted once each (the backbone shared by two names counts once)."""
    return sum(p.numel() for p in model.parameters())
