"""The command that installs an optional part of this package, printed in hints so that it runs as
printed: from this clone (kept editable, as ``make demo`` installed it) while the package is not on
a registry, with the interpreter that runs dgla-export (a venv need not be activated)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

__all__ = ["install_command"]


def install_command(extras: str) -> str:
    """``python -m pip install -e 'CLONE[extras]'`` for the running interpreter and this package's
    source tree; ``pip install 'dgla-export[extras]'`` where the package came from a wheel (no
    source tree beside it)."""
    root = Path(__file__).resolve().parents[1]
    pip = f"{shlex.quote(sys.executable)} -m pip install"
    if (root / "pyproject.toml").is_file():
        return f"{pip} -e {shlex.quote(f'{root}[{extras}]')}"
    return f"{pip} {shlex.quote(f'dgla-export[{extras}]')}"
