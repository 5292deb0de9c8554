"""One contract for every command: exit codes and what counts as a user's error.

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
    if not lines:
        return type(err).__name__
    joined = lines[0]
    for line in lines[1:]:  # "does not match the model:" + "60 tensors match" reads as one sentence
        joined += f" {line}" if joined.endswith(":") else f"; {line}"
    return joined


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
