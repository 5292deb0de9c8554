"""The versions of each model in a Triton repository written by `dgla-export triton`, and which one
is served; --activate N serves another, --rollback the one before (one command). The version's
files are checked against its manifest's SHA-256 before its configs replace the current ones;
restart the server (dgla-serve, or the official container) to serve it. Exit 2 when the version
does not exist or its files changed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "list a Triton repository's model versions; roll back or forward in one command"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repository", type=Path, help="folder written by `dgla-export triton`")
    parser.add_argument("--name", metavar="NAME", help="the ensemble (default: the repository's only one)")
    change = parser.add_mutually_exclusive_group()
    change.add_argument("--activate", type=int, metavar="N", help="serve version N of NAME from now on")
    change.add_argument("--rollback", action="store_true", help="serve the version before the one served now")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from dgla_export.api import activate_version
    from dgla_export.errors import UserError
    from dgla_export.triton.versions import active_version, ensembles, read_version, versions

    repository: Path = args.repository
    if not repository.is_dir():
        raise UserError(f"{repository} is not a folder; write a repository with `dgla-export triton`")
    names = [args.name] if args.name else ensembles(repository)
    if (args.activate is not None or args.rollback) and len(names) != 1:
        raise UserError(f"{repository} holds {len(names)} versioned ensembles ({', '.join(names)}): pass --name")
    if args.activate is not None or args.rollback:
        before, now = activate_version(repository, names[0], args.activate)
        print(f"{names[0]}: version {now.version} served from now on (was {before}); files match its manifest")
        print("restart the server to serve it")
    rows = []
    for name in names:
        served = active_version(repository, name)
        for number in versions(repository, name):
            rows.append({**read_version(repository, name, number).summary(), "served": number == served})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        from dgla_export.tools import render

        render.versions_table(rows)
    return 0
