"""``evaluate: the model card's MAD / MSE, computed as OMZ's accuracy check does``."""

from __future__ import annotations

from toolkit.cli.app import app  # noqa: F401
