"""Fetching one model file so that its final path only ever holds verified bytes.

The sequence for a file, all under a lock on its destination (and on its cache entry):

1. keep a file already at the destination when its size and sha384 match (unless ``force``);
2. copy it from the cache when the cache has a good copy;
3. otherwise try each source in order. Bytes stream into a partial file beside the
   destination (``.<name>.<hash prefix>.part``, a fixed name so a later run can continue it);
   network trouble, 5xx, 429 and short bodies are retried with backoff, resuming with
   ``Range``; a wrong hash, a wrong size, an over-long body or an HTML page moves on to the
   next source at once;
4. rename the partial onto the destination only after size and sha384 match, then add it to
   the cache.

A killed or interrupted run leaves at most the partial file, never a file at the final path.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import requests

from toolkit.download.cache import CacheEntryError, DirCache
from toolkit.download.config import ModelFile
from toolkit.download.errors import (
    DownloadError,
    RangeNotHonouredError,
    RetryableError,
    SourceError,
    SourceFailedError,
)
from toolkit.download.lock import file_lock
from toolkit.download.reporters import Reporter
from toolkit.download.retry import RetryPolicy
from toolkit.download.sources import NETWORK_ERRORS, Body, FileSource, Timeouts, network_error
from toolkit.fsutil import atomic_path, sibling
from toolkit.hashing import CHUNK

CHUNK_SIZE = 64 * 1024
#: Write errors of the local disk (requests' exceptions are OSErrors too, so the errno tells).
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES})


@dataclass(frozen=True)
class FetchSettings:
    """How hard to try. ``num_attempts`` is per source; ``offline`` allows only the cache
    and the mirror; ``force`` ignores files already present and the cache."""

    num_attempts: int = 3
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    force: bool = False
    offline: bool = False
    chunk_size: int = CHUNK_SIZE


class Outcome(str, Enum):
    """How a file came to be at its destination."""

    KEPT = "kept"
    CACHE = "cache"
    DOWNLOADED = "downloaded"


class Cancelled(Exception):
    """Another thread asked every download to stop (Ctrl-C with ``--jobs``)."""


def partial_path(dest: Path, checksum: str) -> Path:
    """Where an unfinished download of ``dest`` lives; the hash prefix keeps a partial of a
    different version of the file from being continued."""
    return sibling(dest, ".", f".{checksum[:12]}.part")  # within NAME_MAX, like dest


def lock_path(dest: Path) -> Path:
    return sibling(dest, ".", ".lock")


def _sha384(path: Path) -> str:
    hasher = hashlib.sha384()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def verify_file(path: Path, model_file: ModelFile) -> bool:
    """True when ``path`` is a regular file with the expected size and sha384."""
    try:
        if not path.is_file() or path.stat().st_size != model_file.size:
            return False
    except OSError:
        return False
    return _sha384(path) == model_file.checksum


def _publish(partial: Path, dest: Path) -> None:
    """Make a verified partial file the destination, durably."""
    with open(partial, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(partial, dest)


def _is_prefix(short: Path, full: Path) -> bool:
    """True when ``short``'s bytes are the start of ``full``'s."""
    with open(short, "rb") as a, open(full, "rb") as b:
        for chunk in iter(lambda: a.read(CHUNK), b""):
            if b.read(len(chunk)) != chunk:
                return False
    return True


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@dataclass
class FileJob:
    """Everything needed to fetch one file of one model."""

    model: str
    model_file: ModelFile
    dest: Path
    sources: list[FileSource]
    session: requests.Session
    reporter: Reporter
    settings: FetchSettings = field(default_factory=FetchSettings)
    cache: DirCache | None = None
    cancel: threading.Event | None = None

    @property
    def file_label(self) -> str:
        return self.model_file.name

    def _note(self, text: str) -> None:
        self.reporter.note(self.model, self.file_label, text)

    def _section(self, text: str) -> None:
        self.reporter.section(self.model, self.file_label, text)

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()

    def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self.cancel is None:
            threading.Event().wait(seconds)
        elif self.cancel.wait(seconds):
            raise Cancelled()

    # -- the whole file -------------------------------------------------------------------

    def run(self) -> Outcome:
        """Fetch the file; raises :class:`DownloadError` with every source's reason."""
        try:
            with self._locks():
                return self._run_locked()
        except OSError as exc:  # disk full, permissions, a folder where a file should be
            where = exc.filename or self.dest
            raise DownloadError(f"cannot write {where}: {exc.strerror or exc}") from None

    @contextlib.contextmanager
    def _locks(self) -> Iterator[None]:
        def waiting() -> None:
            self._note(f"waiting for another download of {self.dest} to finish")

        with contextlib.ExitStack() as stack:
            stack.enter_context(file_lock(lock_path(self.dest), on_wait=waiting))
            if self.cache is not None:
                try:
                    cache_lock = self.cache.lock_path(self.model_file.checksum)
                    stack.enter_context(file_lock(cache_lock, on_wait=waiting))
                except OSError as exc:  # a read-only shared cache is still worth reading
                    self._note(
                        f"cannot lock the cache ({exc.strerror or exc}); reading it unlocked"
                    )
            yield

    def _run_locked(self) -> Outcome:
        mf, dest = self.model_file, self.dest
        partial = partial_path(dest, mf.checksum)
        if self.settings.force:
            _unlink(partial)
        elif dest.exists():
            if verify_file(dest, mf):
                self._section(f"Keeping {dest} (already present; size and sha384 match)")
                self._cache_put(dest, only_if_missing=True)
                return Outcome.KEPT
            self._prepare_stale_destination(dest, partial)
        if not self.settings.force and self.cache is not None:
            self._section(f"Retrieving {dest} from the cache")
            try:
                if self.cache.get(mf, dest, before_publish=self._set_aside_stale):
                    return Outcome.CACHE
                self._note("not in the cache")
            except CacheEntryError as exc:
                self._note(f"{exc}; downloading instead")
        sources = self.sources
        if not sources:
            where = "the cache or the mirror" if self.cache is not None else "the mirror"
            hint = "" if self.cache is not None else " (no --cache-dir given)"
            kept = f"; the non-matching file at {dest} was left in place" if dest.is_file() else ""
            raise DownloadError(
                f"not available offline: no verified copy at the destination, in {where}"
                f"{hint}, and --offline forbids the file's own sources{kept}"
            )
        reasons: list[str] = []
        for index, source in enumerate(sources):
            self._section(f"Downloading {dest}" + (f" from {source.label}" if index else ""))
            try:
                self._from_source(source, partial)
            except SourceError as exc:
                reasons.append(f"{source.label}: {exc}")
                if index + 1 < len(sources):
                    self._note(f"{source.label} failed: {exc}; trying the next source")
                continue
            self._set_aside_stale(partial)
            _publish(partial, dest)
            self._cache_put(dest, only_if_missing=False)
            return Outcome.DOWNLOADED
        if dest.is_file() and not verify_file(dest, mf):
            reasons.append(f"the non-matching file at {dest} was left in place")
        raise DownloadError("; ".join(reasons))

    def _prepare_stale_destination(self, dest: Path, partial: Path) -> None:
        """A file at the destination that is not the right one stays until a verified
        replacement exists (then :meth:`_set_aside_stale` keeps it under another name).

        A shorter one is most likely what omz_downloader (which writes in place) left when
        it was interrupted, so a copy of it becomes the partial file, continued and verified.
        """
        if dest.is_dir() and not dest.is_symlink():
            raise DownloadError(f"{dest} is a folder, expected a file")
        size = dest.stat().st_size if dest.is_file() else None
        if size is not None and 0 < size < self.model_file.size and not partial.exists():
            self._note(f"{dest} is incomplete ({size} bytes); continuing a copy of it")
            with atomic_path(partial) as tmp:
                shutil.copyfile(dest, tmp)
            return
        self._note(
            f"{dest} does not match the expected size and sha384; it stays until a verified "
            "replacement is found"
        )

    def _set_aside_stale(self, verified: Path) -> None:
        """Just before the verified file ``verified`` replaces the destination: keep whatever
        non-matching file is there under ``<name>.mismatch-<its sha384 prefix>`` and say so.

        Nothing is kept when the old file is the right one (``--force``) or an interrupted
        copy of it (its bytes are a prefix of the verified file): no data is lost then.
        """
        dest = self.dest
        if not dest.is_file() or verify_file(dest, self.model_file) or _is_prefix(dest, verified):
            return
        kept = dest.with_name(f"{dest.name}.mismatch-{_sha384(dest)[:12]}")
        os.replace(dest, kept)
        self._note(f"the file that was at {dest} did not match; kept it as {kept}")

    def _cache_put(self, path: Path, *, only_if_missing: bool) -> None:
        if self.cache is None:
            return
        checksum = self.model_file.checksum
        if only_if_missing and self.cache.has(checksum):
            return
        try:
            self.cache.put(checksum, path)
        except OSError as exc:  # a cache we cannot write is not worth failing the download
            self._note(f"could not add {path.name} to the cache: {exc.strerror or exc}")

    # -- one source -----------------------------------------------------------------------

    def _from_source(self, source: FileSource, partial: Path) -> None:
        """Leave a verified file at ``partial`` or raise why this source failed.

        ``own`` says whether every byte in the partial file came from this source: a hash
        mismatch then condemns the source; otherwise (bytes from an earlier run or another
        source) the file is started again from zero before the source is judged.
        """
        size = self.model_file.size
        attempts = self.settings.num_attempts
        own = not (partial.exists() and partial.stat().st_size > 0)
        attempt = 0
        while True:
            self._check_cancel()
            offset = partial.stat().st_size if partial.exists() else 0
            if offset > size:
                _unlink(partial)
                offset = 0
            if offset == size:
                if _sha384(partial) == self.model_file.checksum:
                    return
                _unlink(partial)
                offset = 0
                own = True
            attempt += 1
            try:
                body = source.open(
                    self.session, offset, self.settings.timeouts, self.settings.chunk_size
                )
                try:
                    own = self._receive(body, partial, offset) or own
                finally:
                    body.close()
            except RangeNotHonouredError as exc:
                _unlink(partial)
                own = True
                if offset:  # starting from zero is a different request: not a failed attempt
                    attempt -= 1
                elif attempt >= attempts:
                    raise SourceFailedError(f"{exc} (after {attempt} attempts)") from None
                self._note(f"{exc}; starting again from byte 0")
                continue
            except RetryableError as exc:
                if attempt >= attempts:
                    tries = "1 attempt" if attempt == 1 else f"{attempt} attempts"
                    raise SourceFailedError(f"{exc} (after {tries})") from None
                self._wait_before_retry(exc, attempt)
                continue
            except SourceFailedError:
                raise
            if _sha384(partial) == self.model_file.checksum:
                return
            _unlink(partial)
            if own:
                raise SourceFailedError(
                    f"wrong sha384: the {size} bytes received are not the expected file"
                )
            own = True
            self._note("the continued file did not match its sha384; starting again from byte 0")

    def _wait_before_retry(self, exc: RetryableError, attempt: int) -> None:
        policy = self.settings.retry
        if exc.retry_after is not None:
            if exc.retry_after > policy.max_wait:
                raise SourceFailedError(
                    f"{exc}; the server asked to wait {exc.retry_after:.0f} s, "
                    f"more than the {policy.max_wait:.0f} s allowed"
                ) from None
            wait = exc.retry_after
            why = f"the server asked to wait {wait:g} s (Retry-After)"
        else:
            wait = policy.backoff(attempt)
            why = f"retrying in {wait:.1f} s"
        self._note(f"attempt {attempt} of {self.settings.num_attempts} failed: {exc}; {why}")
        self._sleep(wait)

    def _receive(self, body: Body, partial: Path, offset: int) -> bool:
        """Append (or restart) the partial file from ``body``; returns True when the file was
        restarted from byte 0 (so all its bytes are now this source's)."""
        size = self.model_file.size
        restarted = False
        if body.start != offset:
            if body.start != 0:
                raise RangeNotHonouredError(
                    f"the server resumed at byte {body.start}, not {offset}"
                )
            if offset:
                self._note(f"the server ignored Range (resume at byte {offset}); starting again")
            offset, restarted = 0, True
        if body.total is not None and body.total != size:
            raise SourceFailedError(f"the server's file has {body.total} bytes, expected {size}")
        if offset == 0:
            restarted = True
        done = offset
        self.reporter.progress(self.model, self.file_label, done, size)
        with open(partial, "ab" if offset else "wb") as out:
            try:
                chunks = iter(body.chunks)
                while done < size:
                    self._check_cancel()
                    chunk = next(chunks, None)
                    if chunk is None:
                        break
                    if done + len(chunk) > size:
                        self._too_long(partial)
                    out.write(chunk)
                    out.flush()
                    done += len(chunk)
                    self.reporter.progress(self.model, self.file_label, done, size)
                if done == size and body.total is None:
                    # No announced length: one more read tells a complete body from an
                    # over-long one. A timeout here is ignored: the hash decides.
                    with contextlib.suppress(*NETWORK_ERRORS):
                        if next(chunks, b""):
                            self._too_long(partial)
            except (SourceError, Cancelled):
                raise
            except NETWORK_ERRORS as exc:
                if getattr(exc, "errno", None) in _DISK_ERRNOS:
                    raise  # our disk, not the network: retrying or another source cannot help
                raise network_error(exc) from exc
            if done < size:
                raise RetryableError(f"the connection closed after {done} of {size} bytes")
        return restarted

    def _too_long(self, partial: Path) -> None:
        _unlink(partial)
        raise SourceFailedError(
            f"the server sent more than the expected {self.model_file.size} bytes (cut off)"
        )
