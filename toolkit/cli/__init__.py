"""Command-line entry point: argument aliases, error reporting and exit codes.

Exit codes: 0 success, 1 a model, file or input failed, 2 bad usage. Expected failures are
:class:`~toolkit.errors.ToolkitError` and print one line; anything else is a bug and prints
one line too, with the traceback only under ``--verbose``.
"""

from __future__ import annotations

import sys
import traceback

from typer import Abort

try:  # Typer >= 0.29 vendors Click; older releases use the click package
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, NoArgsIsHelpError  # type: ignore[assignment]

# Each module registers its commands on ``app`` when imported.
from toolkit.cli import (  # noqa: F401  (imported for their side effect)
    checkpoint_cmd,
    convert_cmd,
    download_cmd,
    evaluate_cmd,
    infer_cmd,
    perf_cmd,
    serve_cmd,
)
from toolkit.cli.app import State, app
from toolkit.cluster.connect import LOCAL, is_address
from toolkit.errors import ToolkitError, one_line, redact

#: The exit code Typer returns for Ctrl-C (128 + SIGINT).
_INTERRUPTED = 130

#: OMZ's underscore spellings, accepted so that omz_downloader/omz_converter scripts keep working.
OMZ_ALIASES = {
    "--output_dir": "--output-dir",
    "--cache_dir": "--cache-dir",
    "--num_attempts": "--num-attempts",
    "--progress_format": "--progress-format",
    "--print_all": "--print-all",
    "--download_dir": "--download-dir",
    "--dry_run": "--dry-run",
    "--models_dir": "--models-dir",
    "--add_mo_arg": "--add-mo-arg",
}


def translate_aliases(argv: list[str]) -> list[str]:
    """Rewrite ``--output_dir X`` / ``--output_dir=X`` to the kebab-case option (hidden aliases)."""
    out: list[str] = []
    for arg in argv:
        if arg == "--":
            out.extend(argv[len(out) :])
            break
        head, sep, tail = arg.partition("=")
        out.append(OMZ_ALIASES.get(head, head) + sep + tail if head in OMZ_ALIASES else arg)
    return out


#: Options whose value may be left out (``--ray`` alone: a local cluster), with that default.
OPTIONAL_VALUES = {"--ray": LOCAL}


def fill_optional_values(argv: list[str]) -> list[str]:
    """Rewrite ``--ray`` without an address to ``--ray=local``.

    Click has no options with an optional value, so ``--ray`` is completed here: the next
    argument is its value only if it reads as an address (``auto``, ``local``, ``HOST:PORT``,
    ``ray://HOST:PORT``); anything else (an input, another option, nothing) stays what it is.
    """
    out: list[str] = []
    for index, arg in enumerate(argv):
        if arg == "--":
            out.extend(argv[index:])
            break
        if arg in OPTIONAL_VALUES:
            following = argv[index + 1] if index + 1 < len(argv) else None
            if following is None or not is_address(following):
                out.append(f"{arg}={OPTIONAL_VALUES[arg]}")
                continue
        out.append(arg)
    return out


def _error(message: str) -> None:
    """The one ``error:`` line; credentials in any URL it quotes are redacted."""
    print(f"error: {redact(message)}", file=sys.stderr)


def _one_line(exc: BaseException) -> str:
    return one_line(exc, 1000)


def _usage_line(exc: ClickException) -> str:
    """Click's message on one line, with where to look for help."""
    text = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        text += f" (see '{ctx.command_path} --help')"
    return text


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with its code.

    Typer runs outside its standalone mode so that every outcome is reported here the same
    way: usage errors and command failures as one ``error:`` line, Ctrl-C as "interrupted".
    """
    args = fill_optional_values(translate_aliases(list(sys.argv[1:] if argv is None else argv)))
    State.verbose = "--verbose" in args or "-v" in args[:1]
    try:
        code = app(args=args, prog_name="modnet-tools", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # bare ``modnet-tools`` or a group without a command
        exc.show()
        sys.exit(exc.exit_code)
    except ClickException as exc:  # bad usage caught while parsing: one line, not a box
        _error(_usage_line(exc))
        sys.exit(exc.exit_code)
    except Abort:
        _error("aborted")
        sys.exit(1)
    except ToolkitError as exc:
        if State.verbose:
            traceback.print_exc()
        _error(_one_line(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _error("interrupted")
        sys.exit(130)
    except OSError as exc:  # the system said no (disk full, permissions, a file for a folder)
        if State.verbose:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename is not None else ""
        _error(f"{where}{exc.strerror or _one_line(exc)}")
        sys.exit(1)
    except Exception as exc:  # a bug: still one line unless asked for details
        if State.verbose:
            traceback.print_exc()
        _error(
            f"unexpected {type(exc).__name__}: {_one_line(exc)} (run with --verbose for details)"
        )
        sys.exit(1)
    if code == _INTERRUPTED:  # Typer turns Ctrl-C into a silent Exit(130)
        _error("interrupted")
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["app", "main"]
