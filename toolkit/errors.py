"""The exception every layer raises for a problem the user can fix.

The CLI prints a :class:`ToolkitError` as one line on stderr and exits with its
``exit_code``; anything else is a bug and is reported as such. Keeping one base class lets
library callers catch every expected failure with one ``except``.
"""

from __future__ import annotations


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
