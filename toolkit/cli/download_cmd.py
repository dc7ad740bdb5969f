"""``download and info: fetch model files like omz_downloader, print omz_info_dumper's JSON``."""

from __future__ import annotations

from toolkit.cli.app import app  # noqa: F401
