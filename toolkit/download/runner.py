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


_UNREACHABLE = ("cannot resolve the host name", "not available offline")


def with_next_steps(error: str, *, cache: bool) -> str:
    """``error``, plus what to do next when no source was reachable at all (offline, or
    ``--offline`` without a copy): the user's way forward is a mirror, a cache, or the
    random checkpoint, not a fourth retry."""
    reasons = [r for r in error.split("; ") if r.strip()]
    if not reasons or not all(any(u in r for u in _UNREACHABLE) for r in reasons):
        return error
    cache_hint = "" if cache else ", or --cache-dir DIR holding an omz_downloader cache"
    return (
        f"{error}. Next: --mirror URL (a folder `download` filled on a connected machine, "
        f"served over HTTP){cache_hint}, with --offline to skip the internet; or run the "
        "tools without the real weights: `modnet-tools random-checkpoint model.ckpt`, then "
        "`modnet-tools convert --checkpoint model.ckpt` (its mattes are meaningless)"
    )


def usable_cache(cache_dir: Path | None) -> bool:
    """Whether ``cache_dir`` can be a cache: absent (it is created) or a folder. A file there
    is the user's, never replaced; the download goes on without the cache (the CLI warns)."""
    if cache_dir is None:
        return False
    try:
        return not cache_dir.exists() or cache_dir.is_dir()
    except OSError:
        return False


def required_files(config: ModelConfig) -> set[str]:
    """The files a model needs: its checkpoint (and IR files a config ships pre-converted).

    OMZ's configs also list the authors' Python sources (``modnet_onnx.py``, ``src/models/...``)
    so that omz_converter can import them; modnet-tools never does, so a failure to fetch them
    is a note, not a failed model (a user offline then sees the one error that matters).
    """
    names = {f.name for f in config.files if not f.name.endswith(".py")}
    return names or {f.name for f in config.files}


def wanted(model_file: ModelFile, precisions: frozenset[str] | set[str] | None) -> bool:
    """omz_downloader's rule: a file in a ``<PRECISION>/`` folder is fetched only when that
    precision is requested; every other file always is."""
    if precisions is None:
        return True
    parts = PurePosixPath(model_file.name).parts
    return not (len(parts) == 2 and parts[0] in KNOWN_PRECISIONS and parts[0] not in precisions)


@dataclass
class FileResult:
    """One file's outcome; ``skipped`` is why an optional extra could not be fetched."""

    name: str
    path: Path
    outcome: Outcome | None = None
    error: str | None = None
    skipped: str | None = None


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
    cache_dir = options.cache_dir
    cache = DirCache(cache_dir) if cache_dir is not None and usable_cache(cache_dir) else None
    result = ModelResult(config.name)
    needed = required_files(config)
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
            if mf.name in needed:
                file_result.error = with_next_steps(str(exc), cache=cache is not None)
            else:
                file_result.skipped = str(exc)
                reporter.note(
                    config.name,
                    mf.name,
                    f"skipped the optional {mf.name} (OMZ's reference code, unused here): {exc}",
                )
        ok = file_result.error is None and file_result.skipped is None
        reporter.file_end(config.name, mf.name, ok, file_result.error)
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
