"""Where a file's bytes come from: a URL, a Google Drive id, or a mirror of an output folder.

Each source turns "give me the file from byte N" into an open HTTP body, or raises a
:mod:`~toolkit.download.errors` class that tells the engine what to do next. Sources know
nothing about files on disk, retries or checksums: that is the engine's job.
"""

from __future__ import annotations

import http.client
import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote, urljoin, urlsplit

import requests
import urllib3.exceptions

from toolkit.download.config import GoogleDriveSource, HttpSource, ModelFile
from toolkit.download.errors import (
    HtmlPageError,
    RangeNotHonouredError,
    RetryableError,
    SourceError,
    SourceFailedError,
    UnresolvedHostError,
)
from toolkit.download.htmlpage import (
    MAX_PAGE_BYTES,
    describe_html,
    drive_confirm_form,
    looks_like_html,
)
from toolkit.download.retry import parse_retry_after

#: Google Drive's anonymous download endpoint; tests point it at a local server.
DRIVE_URL_ENV = "MODNET_TOOLS_GDRIVE_URL"
DEFAULT_DRIVE_URL = "https://drive.google.com/uc"
#: Hosts a Drive confirmation form may submit to (plus the configured endpoint's own host).
DRIVE_FORM_HOSTS = frozenset(
    {"drive.usercontent.google.com", "drive.google.com", "docs.google.com"}
)


@dataclass(frozen=True)
class Timeouts:
    """``connect``: to open a connection; ``read``: the longest silence while receiving."""

    connect: float = 30.0
    read: float = 120.0


@dataclass
class Body:
    """An open response whose body starts at byte ``start`` of the file.

    ``total`` is the full size the server claims (from Content-Range or Content-Length),
    when it claims one in a form that can be trusted.
    """

    response: requests.Response
    start: int
    total: int | None
    chunks: Iterator[bytes]

    def close(self) -> None:
        self.response.close()


class FileSource(Protocol):
    """Anything that can open a file's body from a byte offset."""

    @property
    def label(self) -> str:
        """How the source is named in messages."""
        ...

    def open(
        self, session: requests.Session, offset: int, timeouts: Timeouts, chunk_size: int
    ) -> Body: ...


#: What a network failure can surface as while requesting or streaming a body.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)

_UNRESOLVED = "cannot resolve the host name"
_NETWORK_REASONS = (
    (
        ("incompleteread", "connection broken", "chunkedencodingerror"),
        "the connection broke off mid-transfer",
    ),
    (("timed out", "timeout"), "timed out waiting for data"),
    (("connection refused",), "connection refused"),
    (("connection reset",), "the connection was reset"),
    (
        ("remotedisconnected", "without response"),
        "the server closed the connection without answering",
    ),
    (
        (
            "name or service not known",
            "nodename nor servname",
            "getaddrinfo",
            "nameresolution",
            "temporary failure in name resolution",
        ),
        _UNRESOLVED,
    ),
)


def network_error(exc: BaseException) -> SourceError:
    """Map what requests raises to what the engine should do about it, with a short reason."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return RetryableError("timed out connecting")
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return RetryableError("timed out waiting for data")
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return SourceFailedError("too many redirects")
    if isinstance(exc, requests.exceptions.SSLError):
        return SourceFailedError(f"TLS error: {_short(exc)}")
    if isinstance(exc, requests.exceptions.ProxyError):
        return RetryableError(f"proxy error: {_short(exc)}")
    if isinstance(
        exc,
        (
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
        ),
    ):
        return SourceFailedError(f"invalid URL: {_short(exc)}")
    low = f"{type(exc).__name__} {exc!r} {exc}".lower()
    for needles, reason in _NETWORK_REASONS:
        if any(n in low for n in needles):
            if reason == _UNRESOLVED:
                return UnresolvedHostError(reason)
            return RetryableError(reason)
    return RetryableError(f"connection failed: {_short(exc)}")


def _short(exc: BaseException) -> str:
    text = re.sub(r"\s+", " ", str(exc)).strip() or type(exc).__name__
    return (text[:160] + "...") if len(text) > 160 else text


def _get(
    session: requests.Session,
    url: str,
    offset: int,
    timeouts: Timeouts,
    params: dict[str, str] | None = None,
) -> requests.Response:
    """GET with the headers every download needs, and the status sorted into error classes."""
    # identity: byte offsets, sizes and Range must all refer to the same (unencoded) bytes.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = session.get(
            url,
            params=params,
            headers=headers,
            stream=True,
            timeout=(timeouts.connect, timeouts.read),
        )
    except NETWORK_ERRORS as exc:
        error = network_error(exc)
        if isinstance(error, UnresolvedHostError):  # name the host: "offline?" is then obvious
            host = urlsplit(url).hostname or url
            error = UnresolvedHostError(f"{_UNRESOLVED} {host}")
        raise error from exc
    code = response.status_code
    if code in (200, 206):
        return response
    reason = f"HTTP {code} {response.reason or ''}".strip()
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    response.close()
    if code == 416:
        raise RangeNotHonouredError(f"{reason} for a resumed download")
    if code in (408, 429) or code >= 500:
        raise RetryableError(reason, retry_after=retry_after)
    raise SourceFailedError(reason)


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


def _peek(response: requests.Response, chunk_size: int) -> tuple[bytes, Iterator[bytes]]:
    """Read the first chunk (to look at it) and return it with an iterator over the rest."""
    chunks = response.iter_content(chunk_size)
    try:
        first = next(chunks, b"")
    except NETWORK_ERRORS as exc:
        response.close()
        raise network_error(exc) from exc
    return first, chunks


def _read_page(first: bytes, rest: Iterator[bytes], response: requests.Response) -> bytes:
    page = bytearray(first)
    try:
        for chunk in rest:
            page += chunk
            if len(page) >= MAX_PAGE_BYTES:
                break
    except NETWORK_ERRORS as exc:  # a page that breaks off is still a page; say what we have
        if not page:
            raise network_error(exc) from exc
    finally:
        response.close()
    return bytes(page)


def _body(response: requests.Response, first: bytes, rest: Iterator[bytes]) -> Body:
    """Work out where the body starts and how big the server says the file is."""
    start, total = 0, None
    if response.status_code == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not match:
            response.close()
            raise RangeNotHonouredError("a partial response without a usable Content-Range")
        start = int(match.group(1))
        total = None if match.group(3) == "*" else int(match.group(3))
    else:
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        length = response.headers.get("Content-Length")
        if encoding in ("", "identity") and length is not None and length.strip().isdigit():
            total = int(length)
    chunks = itertools.chain([first] if first else [], rest)
    return Body(response=response, start=start, total=total, chunks=chunks)


def _html_error(page: bytes) -> HtmlPageError:
    return HtmlPageError(f"an HTML page instead of the file ({describe_html(page)})")


@dataclass(frozen=True)
class UrlSource:
    """A plain http(s) URL; redirects are followed, Range is used to resume."""

    url: str
    name: str = ""
    #: The expected file is itself a web page, so HTML is not a sign of a wrong answer.
    html_expected: bool = False

    @property
    def label(self) -> str:
        return self.name or self.url

    def open(
        self, session: requests.Session, offset: int, timeouts: Timeouts, chunk_size: int
    ) -> Body:
        response = _get(session, self.url, offset, timeouts)
        first, rest = _peek(response, chunk_size)
        if not self.html_expected and looks_like_html(first, response.headers.get("Content-Type")):
            raise _html_error(_read_page(first, rest, response))
        return _body(response, first, rest)


def drive_url() -> str:
    return os.environ.get(DRIVE_URL_ENV) or DEFAULT_DRIVE_URL


@dataclass(frozen=True)
class DriveSource:
    """A Google Drive file id, fetched through whichever confirmation Drive asks for.

    Large files get an HTML "can't scan for viruses" page first. Two forms of it exist:
    the historical one sets a ``download_warning*`` cookie whose value goes back as
    ``confirm=``; today's page holds a GET form (hidden ``id``, ``export``, ``confirm``,
    ``uuid``) that submits to drive.usercontent.google.com. Both are passed here; anything
    else (quota exceeded, sign-in) is reported by name.
    """

    file_id: str

    @property
    def label(self) -> str:
        return f"Google Drive file {self.file_id}"

    def open(
        self, session: requests.Session, offset: int, timeouts: Timeouts, chunk_size: int
    ) -> Body:
        base = drive_url()
        params = {"export": "download", "id": self.file_id}
        response = _get(session, base, offset, timeouts, params=params)
        first, rest = _peek(response, chunk_size)
        if not looks_like_html(first, response.headers.get("Content-Type")):
            return _body(response, first, rest)
        page = _read_page(first, rest, response)
        cookie = next(
            (v for k, v in response.cookies.items() if k.startswith("download_warning")), None
        ) or next((c.value for c in session.cookies if c.name.startswith("download_warning")), None)
        if cookie:
            follow = _get(session, base, offset, timeouts, params={**params, "confirm": cookie})
        else:
            form = drive_confirm_form(page)
            if form is None:
                raise _html_error(page)
            action = urljoin(response.url, form.action or response.url)
            host = (urlsplit(action).hostname or "").lower()
            allowed = DRIVE_FORM_HOSTS | {(urlsplit(base).hostname or "").lower()}
            if urlsplit(action).scheme not in ("http", "https") or host not in allowed:
                raise HtmlPageError(
                    f"Google Drive's confirmation form points to an unexpected host {host!r}"
                )
            follow = _get(session, action, offset, timeouts, params=form.fields)
        first, rest = _peek(follow, chunk_size)
        if looks_like_html(first, follow.headers.get("Content-Type")):
            page = _read_page(first, rest, follow)
            detail = describe_html(page)
            raise HtmlPageError(f"an HTML page after the download confirmation ({detail})")
        return _body(follow, first, rest)


def mirror_url(mirror: str, model_name: str, file_name: str) -> str:
    """``<mirror>/public/<name>/<file>``: the layout of an output folder served over HTTP."""
    return f"{mirror.rstrip('/')}/public/{quote(model_name)}/{quote(file_name)}"


def file_sources(
    model_name: str, model_file: ModelFile, *, mirror: str | None, offline: bool
) -> list[FileSource]:
    """The sources to try, in order: the mirror first, then (unless offline) the config's."""
    found: list[FileSource] = []
    html = model_file.name.lower().endswith((".html", ".htm"))
    if mirror:
        url = mirror_url(mirror, model_name, model_file.name)
        found.append(UrlSource(url, name=f"mirror {url}", html_expected=html))
    if offline:
        return found
    for src in model_file.sources:
        if isinstance(src, HttpSource):
            found.append(UrlSource(src.url, html_expected=html))
        elif isinstance(src, GoogleDriveSource):
            found.append(DriveSource(src.id))
    return found
