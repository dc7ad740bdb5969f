"""An inter-process lock on a file path, so two downloads of one file take turns.

Two ``modnet-tools download`` runs (or two threads) writing the same destination or cache
entry would interleave bytes in the same partial file. Whoever holds the lock works; the
other waits, then finds the file already verified and keeps it.

On POSIX the lock is ``flock`` on a small lock file that is removed on release. Removing a
lock file is only safe if a waiter checks, once it holds the lock, that the path still
names the file it locked (otherwise it locked an orphan and must start over); that check is
done here. Elsewhere ``msvcrt.locking`` is used and the file is left in place.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the block; ``on_wait`` is called once if the
    lock is busy (to tell the user why nothing happens)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if sys.platform == "win32":  # pragma: no cover - exercised only on Windows
        with _windows_lock(path, on_wait):
            yield
        return
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait()
                    on_wait = None
                fcntl.flock(fd, fcntl.LOCK_EX)
            mine = os.fstat(fd)
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
        except BaseException:
            os.close(fd)
            raise
        if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
            break
        os.close(fd)  # the previous holder removed the file we locked: lock the new one
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # still holding the lock, so no one else can be using this file
        os.close(fd)


if sys.platform == "win32":  # pragma: no cover - exercised only on Windows

    @contextlib.contextmanager
    def _windows_lock(
        path: Path, on_wait: Callable[[], None] | None
    ) -> Iterator[None]:  # pragma: no cover
        import msvcrt

        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                    break
                except OSError:
                    if on_wait is not None:
                        on_wait()
                        on_wait = None
                    time.sleep(0.2)
            try:
                yield
            finally:
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        finally:
            os.close(fd)
