"""``infer: matting on images, folders, video and cameras``."""

from __future__ import annotations

from toolkit.cli.app import app  # noqa: F401
