"""Downloading model files: sources, cache, fetch engine, progress reporters.

The entry point is :func:`fetch_model` (or :func:`ensure_downloaded`, which raises on
failure and returns the checkpoint's path)::

    from toolkit.download.config import discover
    from toolkit.download import DownloadOptions, ensure_downloaded

    config = discover()["modnet-webcam-portrait-matting"]
    ckpt = ensure_downloaded(config, "cache", DownloadOptions(cache_dir=Path("~/.omz_cache")))
"""

from toolkit.download.engine import FetchSettings, Outcome, verify_file
from toolkit.download.errors import DownloadError
from toolkit.download.reporters import JsonReporter, Reporter, RichReporter, TextReporter
from toolkit.download.retry import RetryPolicy
from toolkit.download.runner import (
    MIRROR_ENV,
    DownloadOptions,
    FileResult,
    ModelResult,
    ensure_downloaded,
    fetch_model,
    fetch_models,
    make_session,
    model_file_path,
)
from toolkit.download.sources import Timeouts

__all__ = [
    "MIRROR_ENV",
    "DownloadError",
    "DownloadOptions",
    "FetchSettings",
    "FileResult",
    "JsonReporter",
    "ModelResult",
    "Outcome",
    "Reporter",
    "RetryPolicy",
    "RichReporter",
    "TextReporter",
    "Timeouts",
    "ensure_downloaded",
    "fetch_model",
    "fetch_models",
    "make_session",
    "model_file_path",
    "verify_file",
]
