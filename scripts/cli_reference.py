"""Write docs/cli.md from the commands' own parsers (their --help), so the reference cannot drift:
tests/test_docs.py fails when the page and the parsers disagree.

    python scripts/cli_reference.py
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMMANDS = ("dgla-export", "dgla-bench", "dgla-client", "dgla-serve", "dgla-gateway")


def _help(parser: argparse.ArgumentParser) -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: fix it, or the page depends on who wrote it
    return parser.format_help().rstrip() + "\n"


def reference() -> str:
    from dgla_export.tools import bench, client, export, gateway, serve

    parsers = {"dgla-export": export.build_parser(), "dgla-bench": bench.build_parser(),
               "dgla-client": client.build_parser(), "dgla-serve": serve.build_parser(),
               "dgla-gateway": gateway.build_parser()}  # fmt: skip
    exit_codes = "[usage.md](usage.md#exit-codes-and-errors-every-command)"
    lines = ["# Command reference", "", "Generated from the parsers by `python scripts/cli_reference.py`; "
             f"every command also answers `--help`. Exit codes: {exit_codes}.", ""]  # fmt: skip
    for name, parser in parsers.items():
        lines += [f"## {name}", "", "```text", _help(parser).rstrip(), "```", ""]
        if name == "dgla-export":
            subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            for sub, subparser in subparsers.choices.items():
                lines += [f"### dgla-export {sub}", "", "```text", _help(subparser).rstrip(), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    (ROOT / "docs" / "cli.md").write_text(reference())
    print(f"wrote {ROOT / 'docs' / 'cli.md'}")
