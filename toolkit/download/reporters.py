"""Progress reporting, kept out of the engine: rich bars, plain lines, or OMZ's JSON events.

The engine calls one :class:`Reporter` object; which one is chosen once by the CLI:
rich progress bars (bytes, speed, ETA) when stdout is a terminal, plain lines when it is a
pipe or a log, and ``--progress-format json`` for tools that parse omz_downloader's event
stream. Whatever the format, errors go to stderr as one ``error: ...`` line each, and in
JSON mode nothing but the events reaches stdout. Every line is passed through
:func:`toolkit.errors.redact`: a URL's password, token or signature is never printed.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from toolkit.errors import redact


class Reporter:
    """Receives what happens during a download; the base class reports nothing but errors.

    Methods may be called from several worker threads at once (``--jobs``); subclasses
    serialise their output with ``self.lock``.
    """

    def __init__(self, err: TextIO | None = None) -> None:
        self.lock = threading.RLock()
        self._err = err

    @property
    def err(self) -> TextIO:
        # Looked up at call time: rich's live display swaps sys.stderr while it runs.
        return self._err or sys.stderr

    def model_begin(self, model: str, num_files: int) -> None:
        """A model's download starts (``num_files`` counts every file of the config)."""

    def file_begin(self, model: str, file: str, size: int) -> None:
        """A file is about to be retrieved; ``size`` is its expected size."""

    def section(self, model: str, file: str, text: str) -> None:
        """A step for a human reader: "Downloading X", "Retrieving X from the cache"..."""

    def note(self, model: str, file: str, text: str) -> None:
        """A remark for a human reader (a retry, a fallback to the next source)."""

    def progress(self, model: str, file: str, done: int, total: int) -> None:
        """``done`` bytes of the file are on disk (including resumed ones)."""

    def file_end(self, model: str, file: str, ok: bool, error: str | None = None) -> None:
        if error:
            self.error(f"{model}: {file}: {error}")

    def model_end(self, model: str, ok: bool) -> None:
        """A model is done; ``ok`` is False if any of its files failed."""

    def finish(self, failed: list[str]) -> None:
        """Every model is done; ``failed`` names those that failed."""

    def error(self, text: str) -> None:
        with self.lock:
            print(f"error: {redact(text)}", file=self.err, flush=True)

    def close(self) -> None:
        """Release the terminal (stop live displays)."""


class JsonReporter(Reporter):
    """omz_downloader's ``--progress_format json``: one event object a line, nothing else.

    Field order and names are OMZ's: ``$type`` first, then ``model`` and ``model_file``
    (its relative name with forward slashes), then the event's own fields.
    """

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        super().__init__(err)
        self._out = out

    def _emit(self, kind: str, **fields: Any) -> None:
        line = redact(json.dumps({"$type": kind, **fields}))
        with self.lock:
            out = self._out or sys.stdout
            out.write(line + "\n")
            out.flush()

    def model_begin(self, model: str, num_files: int) -> None:
        self._emit("model_download_begin", model=model, num_files=num_files)

    def file_begin(self, model: str, file: str, size: int) -> None:
        self._emit("model_file_download_begin", model=model, model_file=file, size=size)

    def progress(self, model: str, file: str, done: int, total: int) -> None:
        self._emit("model_file_download_progress", model=model, model_file=file, size=done)

    def file_end(self, model: str, file: str, ok: bool, error: str | None = None) -> None:
        super().file_end(model, file, ok, error)
        self._emit("model_file_download_end", model=model, model_file=file, successful=ok)

    def model_end(self, model: str, ok: bool) -> None:
        self._emit("model_download_end", model=model, successful=ok)


@dataclass
class _Speed:
    started: float = field(default_factory=time.monotonic)
    first_done: int | None = None
    last_line: float = 0.0
    last_decile: int = -1


class TextReporter(Reporter):
    """Plain lines for logs and pipes, in omz_downloader's wording.

    Progress is a line per tenth of the file (and at most one every few seconds in between),
    not a line per chunk, so a log stays readable.
    """

    def __init__(
        self, out: TextIO | None = None, err: TextIO | None = None, every: float = 5.0
    ) -> None:
        super().__init__(err)
        self._out = out
        self._every = every
        self._speed: dict[tuple[str, str], _Speed] = {}
        self._gap = False  # a blank line is owed before the next section
        self._sectioned = False  # the current file printed a section
        self._any_section = False

    def _print(self, text: str) -> None:
        with self.lock:
            out = self._out or sys.stdout
            out.write(redact(text) + "\n")
            out.flush()

    def _blank_before(self, text: str) -> None:
        """Blank lines only separate sections (as omz_downloader's do), never pile up: a run
        that downloads nothing (``--offline``) prints none."""
        with self.lock:
            if self._gap:
                self._print("")
            self._gap = False
            self._print(text)

    def model_begin(self, model: str, num_files: int) -> None:
        self._print(f"################|| Downloading {model} ||################")
        self._gap = True

    def file_begin(self, model: str, file: str, size: int) -> None:
        with self.lock:
            self._speed[(model, file)] = _Speed()

    def section(self, model: str, file: str, text: str) -> None:
        with self.lock:
            self._blank_before(f"========== {text}")
            self._sectioned = self._any_section = True

    def note(self, model: str, file: str, text: str) -> None:
        self._print(text)

    def progress(self, model: str, file: str, done: int, total: int) -> None:
        with self.lock:
            speed = self._speed.setdefault((model, file), _Speed())
            if speed.first_done is None:
                speed.first_done = done
            now = time.monotonic()
            decile = min(10, done * 10 // total) if total else 10
            if decile == speed.last_decile and now - speed.last_line < self._every:
                return
            speed.last_decile, speed.last_line = decile, now
            elapsed = now - speed.started
            rate = (done - speed.first_done) / 1024 / elapsed if elapsed > 0 else 0.0
            percent = done * 100 // total if total else 100
            self._print(
                f"... {percent}%, {done // 1024} KB, {rate:.0f} KB/s, {elapsed:.0f} seconds passed"
            )

    def file_end(self, model: str, file: str, ok: bool, error: str | None = None) -> None:
        super().file_end(model, file, ok, error)
        with self.lock:
            self._speed.pop((model, file), None)
            self._gap = self._gap or self._sectioned
            self._sectioned = False

    def finish(self, failed: list[str]) -> None:
        if failed:
            with self.lock:
                self._gap = self._gap and self._any_section
                self._blank_before("FAILED:\n" + "\n".join(failed))


class RichReporter(TextReporter):
    """Progress bars with bytes, speed and ETA for an interactive terminal."""

    def __init__(self, console: Console | None = None, err: TextIO | None = None) -> None:
        super().__init__(err=err)
        self.console = console or Console()
        self._bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._tasks: dict[tuple[str, str], TaskID] = {}
        self._started = False

    def _print(self, text: str) -> None:
        with self.lock:
            self.console.print(redact(text), markup=False, highlight=False)

    def progress(self, model: str, file: str, done: int, total: int) -> None:
        with self.lock:
            if not self._started:
                self._bars.start()
                self._started = True
            task = self._tasks.get((model, file))
            if task is None:
                # Created at the first byte count so resumed bytes do not count as speed.
                self._tasks[(model, file)] = self._bars.add_task(file, total=total, completed=done)
            else:
                self._bars.update(task, completed=done, total=total)

    def file_end(self, model: str, file: str, ok: bool, error: str | None = None) -> None:
        with self.lock:
            task = self._tasks.pop((model, file), None)
            if task is not None and not ok:
                self._bars.update(task, description=f"{file} (failed)")
        Reporter.file_end(self, model, file, ok, error)

    def close(self) -> None:
        with self.lock:
            if self._started:
                self._bars.stop()
                self._started = False


def make_reporter(progress_format: str, *, tty: bool | None = None) -> Reporter:
    """``json`` -> events; ``text`` -> bars on a terminal, plain lines elsewhere."""
    if progress_format == "json":
        return JsonReporter()
    if tty is None:
        tty = sys.stdout.isatty()
    return RichReporter() if tty else TextReporter()
