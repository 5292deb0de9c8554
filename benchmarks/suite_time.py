"""`make test` as CI runs it, timed: a fresh clone of a commit, `bash .ci/run` with CI=true.

Records the wall time of the whole run and of each phase (the installs; the static checks, the GPU
box's tests and the main pytest run), the CPU time of every process it started, each pytest run's
closing counts and its slowest 30 tests (``--durations=30``, added through PYTEST_ADDOPTS for
commits that do not print them), with the machine's CPU and flags. Two records of one host compare
with ``--compare``; a ratio is only read between records of one session on one host.

Run:  python benchmarks/suite_time.py [COMMIT]             (default HEAD; minutes: the whole suite)
      python benchmarks/suite_time.py COMMIT --log RUN.log
            (a run made the same way under /usr/bin/time -v: its log is read instead, without phases)
      python benchmarks/suite_time.py --fast      (make test-fast here, environments in place)
      python benchmarks/suite_time.py --compare BEFORE.json AFTER.json
Writes benchmarks/results/suite-time/COMMIT.json (COMMIT-fast.json with --fast).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine, parse_args, write_json

ROOT = Path(__file__).resolve().parents[1]
CLOSING = re.compile(r"^=*\s*(\d+ (?:passed|failed|skipped|errors?|deselected)\b.*) in ([\d.]+)s")
DURATION = re.compile(r"^([\d.]+)s (setup|call|teardown)\s+(\S+)")
COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected|warnings?)")
# The line that opens each phase after the first, as make prints it (a sub-make's own lines come
# when its target ends, so the top-level make's command lines mark the boundaries): the installs,
# then the checks and the tests (at once since make test runs them side by side).
PHASES = (
    ("install", None),
    ("checks and tests", re.compile(r"checks gpubox-tests|^\S*ruff check")),
)
TIME_V = {
    "user_s": "User time (seconds)",
    "sys_s": "System time (seconds)",
    "wall": "Elapsed (wall clock) time (h:mm:ss or m:ss)",
}


def parse(lines: list[tuple[float, str]]) -> dict:
    """Pytest runs (closing counts, seconds, slowest tests) and phase times from (seconds, line) pairs."""
    runs: list[dict] = []
    current: list[dict] = []
    for _, line in lines:
        found = DURATION.match(line.strip())
        if found:
            current.append({"seconds": float(found.group(1)), "when": found.group(2), "test": found.group(3)})
            continue
        closed = CLOSING.match(line.strip())
        if closed:
            counts = {kind.rstrip("s"): int(n) for n, kind in COUNTS.findall(closed.group(1))}
            runs.append({"counts": counts, "pytest_s": float(closed.group(2)), "slowest": current[:30]})
            current = []
    starts = {PHASES[0][0]: 0.0}
    for (name, pattern), (previous, _) in zip(PHASES[1:], PHASES, strict=False):
        if previous in starts:
            found = [t for t, line in lines if t >= starts[previous] and pattern.search(line.strip())]
            if found:
                starts[name] = found[0]
    return {"pytest_runs": runs, "phase_starts_s": starts}


def phases(starts: dict[str, float], wall: float) -> dict[str, float]:
    names = [n for n, _ in PHASES if n in starts]
    ends = [starts[n] for n in names[1:]] + [wall]
    return {name: round(end - starts[name], 1) for name, end in zip(names, ends, strict=True)}


def time_v(text: str) -> dict[str, float]:
    """User, system and wall seconds from /usr/bin/time -v's report at the end of a log."""
    found = {}
    for key, label in TIME_V.items():
        match = re.search(rf"{re.escape(label)}: ([\d:.]+)", text)
        if match:
            parts = [float(x) for x in match.group(1).split(":")]
            found[key] = sum(x * 60**i for i, x in enumerate(reversed(parts)))
    return found


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "DGLA_", "PYTEST_"))}
    env.update(CI="true", PYTHONUNBUFFERED="1", PYTEST_ADDOPTS="--durations=30")
    return env


def _stream(command: list[str], cwd: Path) -> tuple[list[tuple[float, str]], float, dict]:
    """Run ``command``, echoing and timestamping every line; its wall time and its processes' CPU time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    lines: list[tuple[float, str]] = []
    with subprocess.Popen(
        command, cwd=cwd, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        for line in process.stdout:
            lines.append((time.perf_counter() - started, line.rstrip("\n")))
            print(line, end="", flush=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return lines, wall, {"exit_code": process.returncode, "user_s": round(user, 1), "sys_s": round(system, 1)}


def run(commit: str) -> tuple[list[tuple[float, str]], float, dict]:
    folder = Path(tempfile.mkdtemp(prefix="dgla-suite-time."))
    try:
        clone = folder / "dgla-export"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", commit], check=True)
        return _stream(["bash", ".ci/run"], clone)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def compare(before: dict, after: dict) -> str:
    rows = [("", before["commit"], after["commit"], "after / before")]
    for key in ("wall_s", "cpu_user_s"):
        if before.get(key) and after.get(key):
            rows.append((key, str(before[key]), str(after[key]), f"{after[key] / before[key]:.2f}"))
    for name in before["phases_s"]:
        if name in after["phases_s"]:
            b, a = before["phases_s"][name], after["phases_s"][name]
            rows.append((name, str(b), str(a), f"{a / b:.2f}"))
    tests = [sum(r["counts"].get("passed", 0) for r in rec["pytest_runs"]) for rec in (before, after)]
    rows.append(("tests passed (every pytest run)", str(tests[0]), str(tests[1]), ""))
    same = before["machine"].get("cpu") == after["machine"].get("cpu")
    rows.append(("same CPU", "", "", "yes" if same else "NO: not comparable"))
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, width, strict=True)) for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commit", nargs="?", default="HEAD", help="the commit to clone and time (default HEAD)")
    parser.add_argument("--log", type=Path, help="read this run's output (under /usr/bin/time -v) instead of running")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="two records")
    parser.add_argument(
        "--fast", action="store_true", help="time `make test-fast` in this clone (its venv in place, a clean HEAD)"
    )
    args = parse_args(parser)
    if args.compare:
        print(compare(*(json.loads(p.read_text()) for p in args.compare)))
        return 0
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.commit],
                         capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    if args.fast:
        return _record_fast(sha)
    if args.log:
        text = args.log.read_text(errors="replace")
        measured = time_v(text)
        if "wall" not in measured:
            parser.error(f"{args.log} holds no /usr/bin/time -v report (run: /usr/bin/time -v bash .ci/run)")
        lines, wall = [(0.0, line) for line in text.splitlines()], measured["wall"]
        process = {"user_s": measured["user_s"], "sys_s": measured["sys_s"], "exit_code": 0 if "rc=0" in text else 1}
        source = f"the log of a run made the same way under /usr/bin/time -v ({args.log.name}); no phase times"
    else:
        lines, wall, process = run(sha)
        source = "this script: a fresh clone, bash .ci/run with CI=true"
    parsed = parse(lines)
    record = {
        "commit": sha,
        "source": source,
        "command": "CI=true bash .ci/run (PYTEST_ADDOPTS=--durations=30) in a fresh clone; pip's cache warm",
        "machine": machine(),
        "wall_s": round(wall, 1),
        "cpu_user_s": process["user_s"],
        "cpu_sys_s": process["sys_s"],
        "exit_code": process["exit_code"],
        "phases_s": phases(parsed["phase_starts_s"], wall) if not args.log else {},
        "pytest_runs": parsed["pytest_runs"],
    }
    (RESULTS / "suite-time").mkdir(parents=True, exist_ok=True)
    path = write_json(f"suite-time/{sha}.json", record)
    print(f"suite time: {wall:.0f} s at {sha}; wrote {path}")
    return 0 if process["exit_code"] == 0 else 1


def _record_fast(sha: str) -> int:
    changed = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    if changed.strip() or head != sha:
        print(f"suite_time --fast: check out {sha} with no changes first (the record names a clean commit)")
        return 2
    lines, wall, process = _stream(["make", "test-fast"], ROOT)
    record = {
        "commit": sha,
        "source": "this script: make test-fast in a clone whose environment make test had installed",
        "command": "make test-fast (PYTEST_ADDOPTS=--durations=30)",
        "machine": machine(),
        "wall_s": round(wall, 1),
        "cpu_user_s": process["user_s"],
        "cpu_sys_s": process["sys_s"],
        "exit_code": process["exit_code"],
        "pytest_runs": parse(lines)["pytest_runs"],
    }
    (RESULTS / "suite-time").mkdir(parents=True, exist_ok=True)
    path = write_json(f"suite-time/{sha}-fast.json", record)
    print(f"make test-fast: {wall:.0f} s at {sha}; wrote {path}")
    return 0 if process["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
