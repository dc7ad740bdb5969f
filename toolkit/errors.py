"""The exception every layer raises for a problem the user can fix.

The CLI prints a :class:`ToolkitError` as one line on stderr and exits with its
``exit_code``; anything else is a bug and is reported as such. Keeping one base class lets
library callers catch every expected failure with one ``except``.
"""

from __future__ import annotations

import re


class ToolkitError(Exception):
    """A failure with a message fit for the user (one line, no traceback)."""

    exit_code: int = 1


class UsageError(ToolkitError):
    """The command line itself is wrong (exit code 2, as Click and OMZ use)."""

    exit_code = 2


class CheckpointError(ToolkitError):
    """A checkpoint file that cannot be loaded into MODNet."""


class ConfigError(ToolkitError):
    """A model.yml that does not validate."""


class MissingDependencyError(ToolkitError):
    """An optional dependency (an extra) is not installed."""


def require(module: str, extra: str) -> None:
    """Fail with an install hint when an optional module is absent.

    Called before the first heavy import of a capability so that an inference-only install
    says which extra to add instead of printing an ImportError traceback.
    """
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"this needs the '{module}' package: pip install 'modnet-tools[{extra}]'"
        )


#: OpenVINO prefixes every reason with where in its C++ sources it was raised, one
#: "Exception from src/...cpp:84:" line a layer, and checks with "Check '...' failed at ...:".
_LOCATION_LINE = re.compile(r"^(Exception from \S+:\d+:|Check '.*' failed at \S+:\d+:?)\s*$")
_LOCATION_INLINE = re.compile(r"Exception from \S+:\d+:\s*")


def one_line(exc: BaseException | str, limit: int = 400) -> str:
    """An exception's message as one line that keeps its *reason*.

    Cutting to the first line kept only OpenVINO's source location ("Exception from
    src/inference/src/cpp/core.cpp:84:") and lost the reason ("Incorrect weights in bin
    file!") printed below it. Location lines are dropped, the rest is joined, credentials in
    URLs are redacted, and the result is cut at ``limit`` characters.
    """
    text = exc if isinstance(exc, str) else str(exc)
    lines = [ln.strip() for ln in text.strip().splitlines()]
    kept = [_LOCATION_INLINE.sub("", ln) for ln in lines if ln and not _LOCATION_LINE.match(ln)]
    joined = " ".join(ln for ln in kept if ln) or " ".join(ln for ln in lines if ln)
    if not joined:
        return type(exc).__name__ if isinstance(exc, BaseException) else "no details"
    joined = redact(re.sub(r"\s{2,}", " ", joined))
    return joined if len(joined) <= limit else joined[: limit - 3].rstrip() + "..."


#: Query parameters that carry secrets in signed or authenticated URLs (S3's X-Amz-Signature
#: and X-Amz-Credential, Azure SAS's sig, GCS's X-Goog-Signature, token=, api_key=, ...).
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:[\w.-]*(?:token|sig|signature|secret|password|passwd|pwd|key|auth|"
    r"credential|session|code))=)([^&#\s'\"]+)"
)
#: The user-info part of a URL: scheme://user:password@host or scheme://token@host.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s'\"]+)@")


def redact(text: str) -> str:
    """``text`` with credentials in any URL it contains replaced by ``***``.

    Used for every error line and every progress line that may show a URL: a user pasting
    ``https://user:pass@host/x`` or a pre-signed ``...?X-Amz-Signature=...`` link must not
    see the secret echoed into a log or a CI transcript.
    """
    text = _USERINFO.sub(r"\1***@", text)
    return _SECRET_PARAM.sub(r"\1***", text)
