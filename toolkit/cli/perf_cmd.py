"""``benchmark and quantize: speed measurements and the INT8 IR``."""

from __future__ import annotations

from toolkit.cli.app import app  # noqa: F401
