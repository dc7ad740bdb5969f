"""modnet-tools: MODNet portrait matting from the released PyTorch checkpoint to a verified
OpenVINO IR, and running it on images and video.

The package is importable without torch: only the modules that export or verify import it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modnet-tools")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
