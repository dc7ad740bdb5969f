"""Where things live on disk: the same layout omz_downloader and omz_converter use.

``<root>/public/<name>/<file>`` for downloads, ``<root>/public/<name>/<onnx>`` and
``<root>/public/<name>/<PREC>/<name>.xml|.bin`` for conversions, so a folder made by either
tool works with the other.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "MODNET_TOOLS_HOME"


def default_root() -> Path:
    """``$MODNET_TOOLS_HOME``, else ``./cache`` (relative to the working directory)."""
    return Path(os.environ.get(HOME_ENV) or "cache")


def model_dir(root: Path, name: str) -> Path:
    return root / "public" / name


def ir_xml(root: Path, name: str, precision: str) -> Path:
    return model_dir(root, name) / precision / f"{name}.xml"


def sample_image() -> Path:
    """The bundled sample photo (NASA's public-domain astronaut portrait, as shipped by scikit-image)."""
    return Path(__file__).parent / "data" / "astronaut.png"
