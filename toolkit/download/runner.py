"""Downloading whole models: the library entry points behind ``modnet-tools download``.

:func:`fetch_model` does one model (every file, even after one fails, so a later run has
less to do); :func:`fetch_models` runs several on worker threads (``--jobs``), one model per
job as omz_downloader does, each thread with its own HTTP session.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import requests

from toolkit import __version__
from toolkit.download.cache import DirCache
from toolkit.download.config import KNOWN_PRECISIONS, ModelConfig, ModelFile
from toolkit.download.engine import Cancelled, FetchSettings, FileJob, Outcome
from toolkit.download.errors import DownloadError
from toolkit.download.reporters import Reporter
from toolkit.download.sources import file_sources
from toolkit.errors import ToolkitError
from toolkit.fsutil import confined_path
from toolkit.paths import model_dir

MIRROR_ENV = "MODNET_TOOLS_MIRROR"


def make_session() -> requests.Session:
    """One HTTP session (connection reuse, cookies for Google Drive's confirmation).

    ``trust_env`` stays on: proxies (``HTTPS_PROXY``, ``NO_PROXY``...), ``REQUESTS_CA_BUNDLE``
    and ``.netrc`` come from the environment exactly as with any requests-based tool.
    """
    session = requests.Session()
    session.trust_env = True
    session.headers["User-Agent"] = f"modnet-tools/{__version__}"
    return session


def model_file_path(config: ModelConfig, output_dir: str | os.PathLike[str], name: str) -> Path:
    """``<output_dir>/public/<model>/<file>``, refusing names that would escape it."""
    return confined_path(model_dir(Path(output_dir), config.name), name)


def wanted(model_file: ModelFile, precisions: frozenset[str] | set[str] | None) -> bool:
    """omz_downloader's rule: a file in a ``<PRECISION>/`` folder is fetched only when that
    precision is requested; every other file always is."""
    if precisions is None:
        return True
    parts = PurePosixPath(model_file.name).parts
    return not (len(parts) == 2 and parts[0] in KNOWN_PRECISIONS and parts[0] not in precisions)


@dataclass
class FileResult:
    name: str
    path: Path
    outcome: Outcome | None = None
    error: str | None = None


@dataclass
class ModelResult:
    name: str
    files: list[FileResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.error is None for f in self.files)


@dataclass(frozen=True)
class DownloadOptions:
    """Where else to look and how hard to try; the defaults are a plain online download."""

    cache_dir: Path | None = None
    mirror: str | None = None
    precisions: frozenset[str] | None = None
    settings: FetchSettings = field(default_factory=FetchSettings)


def fetch_model(
    config: ModelConfig,
    output_dir: str | os.PathLike[str],
    options: DownloadOptions | None = None,
    *,
    reporter: Reporter | None = None,
    session: requests.Session | None = None,
    cancel: threading.Event | None = None,
) -> ModelResult:
    """Fetch every file of ``config`` into ``<output_dir>/public/<name>/`` and verify it.

    Never raises for a file that fails: its error is in the result (and reported); check
    ``result.ok``. The checkpoint then sits at
    ``model_file_path(config, output_dir, config.checkpoint_file.name)``.
    """
    options = options or DownloadOptions()
    settings = options.settings
    reporter = reporter or Reporter()
    session = session or make_session()
    cache = DirCache(options.cache_dir) if options.cache_dir is not None else None
    result = ModelResult(config.name)
    reporter.model_begin(config.name, len(config.files))
    for mf in config.files:
        if not wanted(mf, options.precisions):
            continue
        dest = model_file_path(config, output_dir, mf.name)
        file_result = FileResult(mf.name, dest)
        result.files.append(file_result)
        reporter.file_begin(config.name, mf.name, mf.size)
        job = FileJob(
            model=config.name,
            model_file=mf,
            dest=dest,
            sources=file_sources(config.name, mf, mirror=options.mirror, offline=settings.offline),
            session=session,
            reporter=reporter,
            settings=settings,
            cache=cache,
            cancel=cancel,
        )
        try:
            file_result.outcome = job.run()
        except ToolkitError as exc:
            file_result.error = str(exc)
        reporter.file_end(config.name, mf.name, file_result.error is None, file_result.error)
    reporter.model_end(config.name, result.ok)
    return result


def ensure_downloaded(
    config: ModelConfig,
    output_dir: str | os.PathLike[str],
    options: DownloadOptions | None = None,
    *,
    reporter: Reporter | None = None,
) -> Path:
    """Fetch ``config`` (if needed) and return its checkpoint's path; raise on failure."""
    result = fetch_model(config, output_dir, options, reporter=reporter)
    failed = [f for f in result.files if f.error]
    if failed:
        raise DownloadError(f"{config.name}: {failed[0].name}: {failed[0].error}")
    return model_file_path(config, output_dir, config.checkpoint_file.name)


def fetch_models(
    configs: Sequence[ModelConfig],
    output_dir: str | os.PathLike[str],
    options: DownloadOptions | None = None,
    *,
    jobs: int = 1,
    reporter: Reporter | None = None,
) -> list[ModelResult]:
    """Fetch several models, ``jobs`` at a time; the results are in ``configs`` order.

    With one job everything runs on the calling thread (Ctrl-C interrupts it directly).
    With more, workers are daemon threads: on Ctrl-C the main thread sets the cancel event,
    and the process can exit without waiting for a worker stuck in a slow read. Either way
    only partial files are left behind, never a file at a final path.
    """
    reporter = reporter or Reporter()
    if jobs <= 1 or len(configs) <= 1:
        return [fetch_model(c, output_dir, options, reporter=reporter) for c in configs]
    cancel = threading.Event()
    results: dict[int, ModelResult] = {}
    errors: list[BaseException] = []
    pending = list(enumerate(configs))
    guard = threading.Lock()

    def worker() -> None:
        session = make_session()
        while not cancel.is_set():
            with guard:
                if not pending:
                    return
                index, config = pending.pop(0)
            try:
                results[index] = fetch_model(
                    config, output_dir, options, reporter=reporter, session=session, cancel=cancel
                )
            except Cancelled:
                return
            except BaseException as exc:  # a bug: stop everything and report it
                errors.append(exc)
                cancel.set()
                return

    threads = [
        threading.Thread(target=worker, name=f"download-{i}", daemon=True)
        for i in range(min(jobs, len(configs)))
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except KeyboardInterrupt:
        cancel.set()
        raise
    if errors:
        raise errors[0]
    return [results[i] for i in range(len(configs))]
