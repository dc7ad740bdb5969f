"""modnet-tools: MODNet portrait matting from the released PyTorch checkpoint to a verified
OpenVINO IR, and running it on images and video.

The public API a user imports lives here::

    from toolkit import MattingSession, ToolkitError

    session = MattingSession.from_name()          # the converted IR under ./cache
    alpha = session.matte(bgr_image)

The subpackages are the pipeline's stages, in the one direction data flows:
``download`` (model.yml, fetch) -> ``model`` (network, checkpoints) -> ``convert`` (ONNX, IR,
verification) -> ``matting`` (runtime, session, images, video, batch runner) -> ``evaluate``
-> ``perf`` -> ``cli``. A stage imports only from stages before it and from the small bottom
modules (``errors``, ``paths``, ``fsutil``, ``hashing``).

The package is importable without torch: only the model, export and verification modules
import it. The names below are loaded on first use, so ``import toolkit`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("modnet-tools")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    from toolkit.download.errors import DownloadError
    from toolkit.errors import (
        CheckpointError,
        ConfigError,
        MissingDependencyError,
        ToolkitError,
        UsageError,
    )
    from toolkit.matting.images import InputError
    from toolkit.matting.session import MattingSession, ModelNotFoundError

#: public name -> the module that defines it (imported lazily by ``__getattr__``).
_EXPORTS = {
    "MattingSession": "toolkit.matting.session",
    "ModelNotFoundError": "toolkit.matting.session",
    "InputError": "toolkit.matting.images",
    "DownloadError": "toolkit.download.errors",
    "ToolkitError": "toolkit.errors",
    "UsageError": "toolkit.errors",
    "CheckpointError": "toolkit.errors",
    "ConfigError": "toolkit.errors",
    "MissingDependencyError": "toolkit.errors",
}

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DownloadError",
    "InputError",
    "MattingSession",
    "MissingDependencyError",
    "ModelNotFoundError",
    "ToolkitError",
    "UsageError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module only when it is first used (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
    return getattr(import_module(module), name)
