"""One contract for every command: exit codes, what counts as a user's error, and option types.

| code | meaning |
| --- | --- |
| 0 | success |
| 1 | a bug in dgla-export (the traceback is printed: please report it) |
| 2 | bad input or usage: a file, folder, option or server the user can fix (one line says how) |
| 3 | a parity or tolerance failure: an artefact ran but its numbers are not good enough |

A user's error is one line ``PROG: error: WHAT is wrong with WHICH input; what to do``, never a
traceback (``--debug`` or ``DGLA_DEBUG=1`` shows it). Every typed error of this package that
describes bad input derives from :class:`UserError` or from ``ValueError``/``OSError`` (the
standalone preprocessing module cannot import this one).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable

__all__ = [
    "EXIT_BUG",
    "EXIT_MISMATCH",
    "EXIT_OK",
    "EXIT_USAGE",
    "UserError",
    "batch_range",
    "batch_sizes",
    "positive_int",
    "run_command",
]

EXIT_OK, EXIT_BUG, EXIT_USAGE, EXIT_MISMATCH = 0, 1, 2, 3
DEBUG_ENV = "DGLA_DEBUG"


class UserError(Exception):
    """Bad input the user can fix: exit code 2, one line, no traceback."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, OSError)


def _one_line(err: BaseException) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(err).__name__


def run_command(prog: str, body: Callable[[], int], *, debug: bool = False) -> int:
    """Run a command's body under the exit-code contract."""
    debug = debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return body()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception:
        traceback.print_exc()
        print(f"{prog}: internal error: this is a bug in dgla-export; please report it", file=sys.stderr)
        return EXIT_BUG


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse names the option in its message)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def batch_sizes(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated batch sizes, e.g. ``1,4,8``."""
    try:
        return tuple(positive_int(part) for part in text.split(","))
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: {err}; give batch sizes like 1,4,8") from None


def batch_range(text: str) -> tuple[int, int]:
    """argparse type: ``MIN:MAX`` with 1 <= MIN <= MAX, e.g. ``1:32``."""
    parts = text.split(":")
    try:
        low, high = (positive_int(p) for p in parts) if len(parts) == 2 else (0, 0)
    except argparse.ArgumentTypeError:
        low = high = 0
    if not 1 <= low <= high:
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN:MAX with 1 <= MIN <= MAX (e.g. 1:32)")
    return low, high
