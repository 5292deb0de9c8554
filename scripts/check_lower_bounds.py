"""Check the package's declared lower bounds (run by `make test`).

1. Resolution: pip resolves ``dgla-export[serve]`` with every runtime dependency pinned to its
   declared lower bound (``--dry-run``: metadata only, no multi-GB wheels). A lower bound that
   conflicts with another, or that no release for this Python satisfies, fails here.
2. Behaviour: the packages whose lower-bound wheels are small are installed into a folder placed
   in front of the venv, and the tests that exercise them run against those versions.

The ``tensorrt`` extra is left out: its PyPI package fetches from NVIDIA's index, which this
project's CI cannot reach (the TensorRT code is checked against NVIDIA's stubs instead).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
BOUNDS_PYTHON = (3, 11)  # the Python the lower bounds are chosen and checked for (pyproject.toml says so)
# Small wheels whose lower bounds are installed and tested, and the tests that use them.
TESTED = ("polygraphy", "onnx-graphsurgeon", "rich", "pillow", "safetensors")
TESTS = [
    "tests/test_preprocess.py",
    "tests/export/test_onnx_export.py",
    "tests/tools/test_contract.py::test_bad_numbers_name_their_option",
    "tests/tools/test_contract.py::test_image_folders_with_junk_or_nothing",
    "tests/models/test_registry_and_weights.py::test_checkpoint_round_trip",
    "tests/test_explain.py::test_an_overlay_shows_the_hot_cell_and_leaves_cold_skin_clear",  # Pillow's sized font
]


def lower_bounds() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounds = {}
    for text in [*project["dependencies"], *project["optional-dependencies"]["serve"]]:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue  # not for this Python (e.g. serve on 3.13)
        lower = [s.version for s in requirement.specifier if s.operator == ">="]
        if not lower:
            raise SystemExit(f"pyproject.toml: {text!r} has no lower bound (NAME>=VERSION)")
        bounds[requirement.name.lower()] = lower[0]
    return bounds


def main() -> int:
    if sys.version_info[:2] != BOUNDS_PYTHON:
        # The bounds are the oldest releases with wheels for Python 3.11; several have none for
        # newer Pythons (matplotlib 3.6.1, scikit-learn 1.1.3 on 3.12), where pip picks newer ones.
        print(f"lower bounds: declared for Python {'.'.join(map(str, BOUNDS_PYTHON))} (CI); not checked on "
              f"{sys.version_info.major}.{sys.version_info.minor}")  # fmt: skip
        return 0
    bounds = lower_bounds()
    with tempfile.TemporaryDirectory(prefix="dgla-lower-bounds-") as tmp:
        constraints = Path(tmp) / "lower.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in bounds.items()))
        report = Path(tmp) / "report.json"
        command = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary", ":all:",
            "--quiet", "--report", str(report), "-c", str(constraints), f"{ROOT}[serve]",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stderr[-3000:], file=sys.stderr)
            print("lower bounds: pip cannot resolve the package at its declared lower bounds", file=sys.stderr)
            return 1
        resolved = {
            i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]
        }
        mismatched = {
            n: (v, resolved.get(n))
            for n, v in bounds.items()
            if Version(resolved.get(n, "0").split("+")[0]) != Version(v)
        }
        if mismatched:
            print(f"lower bounds: resolved to other versions than declared: {mismatched}", file=sys.stderr)
            return 1
        print(f"lower bounds: {len(bounds)} declared lower bounds resolve together ({len(resolved)} packages)")
        target = Path(tmp) / "site"
        pins = [f"{name}=={bounds[name]}" for name in TESTED]
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), *pins], check=True
        )
        env = {**os.environ, "PYTHONPATH": str(target)}
        probe = f"import importlib.metadata as m; print({{n: m.version(n) for n in {TESTED!r}}})"
        versions = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
        print(f"lower bounds: testing with {versions.stdout.strip()}")
        tests = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], env=env, cwd=ROOT
        )
        return tests.returncode


if __name__ == "__main__":
    sys.exit(main())
