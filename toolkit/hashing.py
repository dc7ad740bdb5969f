"""Hashes as plain ``alg:hex`` strings (pooch style) and streaming file digests."""

from __future__ import annotations

import hashlib
import os

CHUNK = 1 << 20


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha384") -> str:
    """Hex digest of a file, read in 1 MiB chunks so large files never sit in memory."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
