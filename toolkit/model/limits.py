"""The network's limits, as plain Python (no torch): every stage that sizes MODNet's input
(``convert --input-shape``, infer's keep-aspect sizes, a reshaped IR, a ``--network-size``)
applies the same bound, so none of them can ask for gigabytes.
"""

from __future__ import annotations

from toolkit.errors import ToolkitError

#: The largest network input, in pixels (H x W), any command will run or convert at.
#: MODNet's activations cost about 300 bytes a pixel on the CPU plugin (a 512 x 42 656 panorama
#: under keep-aspect peaked at 6.4 GB; a 4096 x 4096 export at 8.2 GB), so 2048 x 2048 keeps a
#: run near 1.3 GB. The matte is resized back to the input's size anyway, so a larger network
#: input buys little: the network was trained at 512.
MAX_NETWORK_PIXELS = 2048 * 2048
#: The longest network side: a 32-pixel-high strip of 131 072 columns is within the pixel
#: budget but no portrait; the bound keeps every side within what a reshape is tested at.
MAX_NETWORK_SIDE = 8192


class NetworkSizeError(ToolkitError):
    """The network would run at an input size beyond :data:`MAX_NETWORK_PIXELS`."""


def network_size_problem(height: int, width: int) -> str | None:
    """Why the network cannot run at ``height`` x ``width``, or None when it can.

    One rule for every command (infer's keep-aspect sizes, a reshaped IR, ``convert
    --input-shape``, any ``--network-size``), so that none of them can ask for gigabytes.
    """
    if height <= 0 or width <= 0:
        return f"network input {width}x{height} is empty"
    if height * width > MAX_NETWORK_PIXELS or max(height, width) > MAX_NETWORK_SIDE:
        return (
            f"network input {width}x{height} ({height * width / 1e6:.1f} MP) is larger than "
            f"the {MAX_NETWORK_PIXELS / 1e6:.1f} MP (e.g. 2048x2048, longest side "
            f"{MAX_NETWORK_SIDE}) this tool runs MODNet at; it would need about "
            f"{height * width * 300 / 1e9:.1f} GB"
        )
    return None


def check_network_size(height: int, width: int, hint: str = "") -> None:
    """Raise :class:`NetworkSizeError` (one line, ending in ``hint``) for a size beyond the
    bound; see :func:`network_size_problem`."""
    problem = network_size_problem(height, width)
    if problem is not None:
        raise NetworkSizeError(problem + (f": {hint}" if hint else ""))
