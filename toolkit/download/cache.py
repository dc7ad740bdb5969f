"""omz_downloader's content-addressed cache (format 1), shared by both tools.

Layout: ``<dir>/1/<first 2 hex of sha384>/<other 94 hex>``; new entries are written in
``<dir>/1/staging/`` and renamed into place, so an entry that exists is complete. Entries are
still checked (size and sha384) when read, because a cache outlives the runs that filled it.
Our only addition is ``<dir>/1/locks/`` (short-lived lock files), which omz_downloader never
looks at: its entries live in two-hex-digit folders.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from toolkit.download.config import ModelFile
from toolkit.fsutil import atomic_path
from toolkit.hashing import CHUNK

FORMAT = 1


class CacheEntryError(Exception):
    """A cache entry exists but is not the file it should be."""


class DirCache:
    """A folder of verified files named by their sha384."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root) / str(FORMAT)
        self.staging = self.root / "staging"

    def path_for(self, checksum: str) -> Path:
        checksum = checksum.lower()
        return self.root / checksum[:2] / checksum[2:]

    def lock_path(self, checksum: str) -> Path:
        return self.root / "locks" / f"{checksum.lower()}.lock"

    def has(self, checksum: str) -> bool:
        return self.path_for(checksum).is_file()

    def get(
        self,
        model_file: ModelFile,
        dest: Path,
        before_publish: Callable[[Path], None] | None = None,
    ) -> bool:
        """Copy the entry for ``model_file`` to ``dest`` (atomically) if it is there and right.

        Returns False when there is no entry; raises :class:`CacheEntryError` when the entry
        has the wrong size or hash (nothing is written to ``dest`` then). ``before_publish``
        is called with the verified copy just before it replaces ``dest`` (the engine sets a
        user's non-matching file aside there, never earlier).
        """
        entry = self.path_for(model_file.checksum)
        try:
            size = entry.stat().st_size
        except (FileNotFoundError, NotADirectoryError):  # no entry, or no cache folder at all
            return False
        if size != model_file.size:
            raise CacheEntryError(
                f"cached copy {entry} has {size} bytes, expected {model_file.size}"
            )
        hasher = hashlib.sha384()
        with atomic_path(dest) as tmp:
            with open(entry, "rb") as src, open(tmp, "wb") as out:
                for chunk in iter(lambda: src.read(CHUNK), b""):
                    hasher.update(chunk)
                    out.write(chunk)
            if hasher.hexdigest() != model_file.checksum:
                raise CacheEntryError(f"cached copy {entry} has the wrong sha384")
            if before_publish is not None:
                before_publish(tmp)
        return True

    def put(self, checksum: str, verified_file: Path) -> None:
        """Add a file whose hash the caller has just verified; an existing entry is replaced."""
        self.staging.mkdir(parents=True, exist_ok=True)
        staged = self.staging / uuid.uuid4().hex
        try:
            shutil.copyfile(verified_file, staged)
            with open(staged, "rb") as fh:
                os.fsync(fh.fileno())
            final = self.path_for(checksum)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                staged.unlink()
