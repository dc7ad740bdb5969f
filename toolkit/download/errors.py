"""Why a download failed, sorted by what the engine should do next.

The engine's decisions depend only on the class of the failure: a :class:`RetryableError`
is tried again from the same source (with backoff), a :class:`SourceFailedError` moves on to
the next source at once, and :class:`DownloadError` is what a caller finally sees.
"""

from __future__ import annotations

from toolkit.errors import ToolkitError


class DownloadError(ToolkitError):
    """A model file could not be fetched and verified from any source (exit code 1)."""


class SourceError(Exception):
    """One attempt at one source went wrong; ``str()`` is a short reason for the user."""


class RetryableError(SourceError):
    """Worth another attempt at the same source: network trouble, 5xx, 429, a short body.

    ``retry_after`` is the server's own ``Retry-After`` in seconds, when it sent one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SourceFailedError(SourceError):
    """This source will not give the right bytes (404, wrong size, wrong hash, HTML, too long)."""


class UnresolvedHostError(SourceFailedError):
    """The host name does not resolve: offline, or a typo. Retrying with backoff cannot help
    within a download's time scale, so the source is given up at once."""


class HtmlPageError(SourceFailedError):
    """An HTML page arrived where the binary file was expected."""


class RangeNotHonouredError(RetryableError):
    """The server's answer to ``Range`` cannot be appended: start again from byte 0."""
