"""One contract for every command: exit codes, and which errors are the user's to fix.

| code | meaning |
| --- | --- |
| 0 | success |
| 1 | a bug in dgla-export (the traceback is printed: please report it) |
| 2 | bad input or usage: a file, folder, option or server the user can fix (one line says how) |
| 3 | a parity or tolerance failure: an artefact ran but its numbers are not good enough |

A user's error is one line ``PROG: error: WHAT is wrong with WHICH input; what to do``, never a
traceback (``--debug`` or ``DGLA_DEBUG=1`` shows it). Only the package's own user-facing errors
get exit 2: :class:`UserError` and its subclasses, errors that declare ``user_facing = True``
(the standalone preprocessing module cannot import this one), and a file-system error naming a
file. Any other exception, a ``ValueError`` from deep inside an exporter included, is a bug:
exit 1, with its traceback.
"""

from __future__ import annotations

import contextvars
import os
import sys
import traceback
from collections.abc import Callable

__all__ = [
    "EXIT_BUG",
    "EXIT_INTERRUPTED",
    "EXIT_MISMATCH",
    "EXIT_OK",
    "EXIT_USAGE",
    "MismatchError",
    "OptionError",
    "ServeError",
    "UserError",
    "is_user_error",
    "listed",
    "option",
    "run_command",
]

EXIT_OK, EXIT_BUG, EXIT_USAGE, EXIT_MISMATCH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
DEBUG_ENV = "DGLA_DEBUG"


class UserError(Exception):
    """Bad input the user can fix: exit code 2, one line, no traceback."""


class OptionError(UserError, ValueError):
    """An option (or API argument) outside what the function accepts."""


class ServeError(UserError, RuntimeError):
    """Triton is missing, a port is taken, or the repository cannot be served here."""


class MismatchError(Exception):
    """An artefact ran, but its numbers are not good enough: exit code 3, one line."""


def listed(items: list[str], limit: int = 3) -> str:
    """The first ``limit`` items of a message, and how many more: one line, whatever the count."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def is_user_error(err: BaseException) -> bool:
    if isinstance(err, UserError) or getattr(err, "user_facing", False):
        return True
    # a file or folder of the user's that cannot be read or written, named by the error
    return isinstance(err, OSError) and bool(err.filename)


def _one_line(err: BaseException) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    joined = lines[0]
    for line in lines[1:]:  # "does not match the model:" + "60 tensors match" reads as one sentence
        joined += f" {line}" if joined.endswith(":") else f"; {line}"
    return joined


_COMMAND_LINE = contextvars.ContextVar("dgla_export_command_line", default=False)


def option(flag: str, keyword: str) -> str:
    """How a message names an option: ``--force`` inside a command, ``force=True`` from Python
    (an API user told to pass --force has nothing to pass it to)."""
    return flag if _COMMAND_LINE.get() else keyword


def run_command(prog: str, body: Callable[[], int], *, debug: bool = False) -> int:
    """Run a command's body under the exit-code contract; its messages name command-line options."""
    debug = debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    speaking = _COMMAND_LINE.set(True)
    try:
        return body()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MismatchError as err:
        if debug:
            traceback.print_exc()
        print(f"{prog}: {_one_line(err)}", file=sys.stderr)
        return EXIT_MISMATCH
    except Exception as err:
        if not is_user_error(err):
            traceback.print_exc()
            print(f"{prog}: internal error: this is a bug in dgla-export; please report it", file=sys.stderr)
            return EXIT_BUG
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        _COMMAND_LINE.reset(speaking)
