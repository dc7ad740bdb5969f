"""What ``/v1/matte`` and the live WebSocket answer: ``infer``'s outputs, as bytes.

The same library functions ``infer`` uses (quantise, cut-out, composite, encode), so the
matte PNG is byte for byte ``<stem>_alpha.png``, the cut-out ``<stem>_rgba.png`` and a
composite ``<stem>_composite.png|jpg`` of the same image with the same options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from toolkit.errors import UsageError
from toolkit.matting.batch import encode_image
from toolkit.matting.prepost import (
    Background,
    composite,
    cutout,
    parse_background,
    quantize_alpha,
)
from toolkit.serve.errors import ApiError, one_line

Output = Literal["alpha", "rgba", "composite"]
Format = Literal["png", "jpeg"]
OUTPUTS: tuple[Output, ...] = ("alpha", "rgba", "composite")
FORMATS: dict[str, Format] = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg"}
MEDIA_TYPES: dict[Format, str] = {"png": "image/png", "jpeg": "image/jpeg"}
#: The composite's background when none is named: Open Model Zoo's demo colour.
DEFAULT_BACKGROUND = "omz"


@dataclass(frozen=True)
class RenderOptions:
    """What to answer with, validated."""

    output: Output = "alpha"
    fmt: Format = "png"
    background: Background | None = None
    png_compression: int = 1

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.fmt]


def parse_options(
    output: str | None, fmt: str | None, background: str | None, png_compression: int = 1
) -> RenderOptions:
    """Validate the query parameters (ApiError 400 with the reason)."""
    out = (output or "alpha").strip().lower()
    if out not in OUTPUTS:
        raise ApiError(
            400, f"output must be one of {', '.join(OUTPUTS)}, not {one_line(out, 40)!r}"
        )
    chosen = FORMATS.get((fmt or "png").strip().lower())
    if chosen is None:
        raise ApiError(400, f"format must be png or jpeg, not {one_line(fmt or '', 40)!r}")
    if out == "rgba" and chosen == "jpeg":
        raise ApiError(400, "output=rgba needs format=png (JPEG has no transparency)")
    bg: Background | None = None
    if background is not None and out != "composite":
        raise ApiError(400, "background= applies only to output=composite")
    if out == "composite":
        spec = background if background is not None else DEFAULT_BACKGROUND
        if len(spec) > 64:
            raise ApiError(400, "background= is too long")
        try:
            bg = parse_background(spec)  # no loader: a client's text never names a file
        except UsageError as exc:
            text = str(exc)
            if "not a colour" in text:  # the CLI's text offers files, which the server never reads
                text = (
                    f"background={one_line(spec, 64)!r} is not a colour (#RRGGBB, R,G,B, "
                    "bgr:B,G,R, a name such as omz or white) or blur:K"
                )
            raise ApiError(400, one_line(text.replace("--background", "background=", 1))) from None
    return RenderOptions(out, chosen, bg, png_compression)


def render(
    frame: npt.NDArray[np.uint8], alpha: npt.NDArray[np.float32], options: RenderOptions
) -> bytes:
    """The encoded answer for one frame and its float matte."""
    alpha8 = quantize_alpha(alpha)
    ext = ".png" if options.fmt == "png" else ".jpg"
    if options.output == "alpha":
        image = alpha8
    elif options.output == "rgba":
        image = cutout(frame, alpha8)
    else:
        assert options.background is not None
        image = composite(frame, alpha8, options.background.render(frame))
    return encode_image(ext, image, options.png_compression)
