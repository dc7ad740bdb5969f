"""``convert: checkpoint -> ONNX -> OpenVINO IR with the preprocessing built in, verified``."""

from __future__ import annotations

from toolkit.cli.app import app  # noqa: F401
