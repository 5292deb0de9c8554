"""The README's two commands on a fresh clone, timed and recorded: what a newcomer meets.

Clones the committed HEAD into a new folder, runs `make demo`, then `bash .ci/run` (CI=true: the
install, then `make test`), each with its wall time and exit code, reads pytest's closing counts,
and measures the virtual environment the two commands made (its size and the largest packages).

Run: python benchmarks/fresh_clone.py [--python python3.11]
Writes benchmarks/results/fresh-clone/python3.X.json.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import commit, machine, parse_args, write_json

ROOT = Path(__file__).resolve().parents[1]
COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected)")


def _run(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> dict:
    started = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    text = log.read_text(errors="replace")
    closing = [line for line in text.splitlines() if COUNTS.search(line) and " in " in line]
    counts = {kind: int(n) for n, kind in COUNTS.findall(closing[-1])} if closing else {}
    return {"command": " ".join(command), "exit_code": done.returncode, "wall_s": round(seconds, 1), "tests": counts}


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default="python3", help="interpreter for the venv (make's PYTHON)")
    args = parse_args(parser)
    head = commit()
    if head.endswith("+dirty"):
        print("fresh_clone: commit first (a record of a dirty tree cannot be reproduced)", file=sys.stderr)
        return 2
    version = subprocess.run([args.python, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix="dgla-fresh-clone."))
    try:
        clone = folder / "dgla-export"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "DGLA_"))}
        env.update(CI="true", PYTHONUNBUFFERED="1", DGLA_EXPORT_CACHE=str(folder / "cache"))
        demo = _run(["make", "demo", f"PYTHON={args.python}"], clone, env, folder / "demo.log")
        print("make demo", demo)
        test = _run(["bash", ".ci/run"], clone, env, folder / "test.log")
        print(".ci/run", test)
        site = next((clone / ".venv" / "lib").glob("python3*/site-packages"))
        packages = sorted(((p.name, _size_mb(p)) for p in site.iterdir() if p.is_dir()), key=lambda x: -x[1])
        record = {
            "machine": machine(),
            "commit": head,
            "python": version,
            "make_demo": demo,
            "ci_run": test,
            "venv_mb": round(_size_mb(clone / ".venv"), 1),
            "largest_packages_mb": {name: round(size, 1) for name, size in packages[:8]},
        }
        path = write_json(f"fresh-clone/python{version}.json", record)
        print(f"wrote {path}")
        return 0 if demo["exit_code"] == test["exit_code"] == 0 else 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
