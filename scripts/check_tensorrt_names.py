"""Check statically that every TensorRT name our code uses exists in TensorRT 10.13 and 11.4.

TensorRT's builder cannot be installed on CI. Two descriptions of its API can:
- 10.13: NVIDIA's `tensorrt-stubs`; its .pyi files use `in` as a parameter name (a syntax
  error), so they are copied and patched;
- 11.4: the lean runtime wheel `tensorrt-lean-cu12`, which imports without a GPU; mypy's stubgen
  writes stubs from the module itself. It has the runtime API (Runtime, ICudaEngine,
  IExecutionContext, the enums) but no builder: the builder's names are checked against 10.13
  only, and those three are the only misses allowed on 11.4.
mypy type-checks our TensorRT modules against each and only unknown-name errors fail the run.
A tripwire file that uses a name that does not exist must fail, proving the stubs were read.
Run: python scripts/check_tensorrt_names.py
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

STUBS = "tensorrt-stubs==10.13.0.35.1"
LEAN = "tensorrt-lean-cu12==11.4.0.106"
BUILDER_ONLY = ('"Builder"', '"NetworkDefinitionCreationFlag"', '"OnnxParser"')  # not in the lean runtime
MODULES = ["dgla_export/export/tensorrt_build.py", "dgla_export/runtimes/tensorrt.py"]
NAME_ERRORS = ("[attr-defined]", "[name-defined]", "[import-not-found]", "[import-untyped]", "[syntax]")


def fetch_stubs(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", STUBS, "-d", str(folder)], check=True)
    wheel = next(folder.glob("tensorrt_stubs-*.whl"))
    stubs = folder / "stubs"
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.startswith(("tensorrt/", "tensorrt_bindings/")) and member.endswith(".pyi"):
                archive.extract(member, stubs)
    for pyi in stubs.rglob("*.pyi"):
        # Two fix-ups make the stubs parse: a parameter named `in` (-> `in_`), and a parameter
        # without a default after defaulted ones (add_scale_nd's channel_axis: gets `= ...`).
        text = re.sub(r"([(,]\s*)in(\s*:)", r"\1in_\2", pyi.read_text())
        pyi.write_text("\n".join(_fix_defaults(line) for line in text.splitlines()) + "\n")
    return stubs


def lean_stubs(folder: Path) -> Path:
    """Stubs of TensorRT 11.4's runtime, generated from the installed lean wheel, as `tensorrt`."""
    site = folder / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(site), LEAN], check=True)
    generated = folder / "generated"
    stubgen = [sys.executable, "-c", "from mypy.stubgen import main; main()"]  # mypy is compiled: no `-m`
    subprocess.run(
        [*stubgen, "-q", "-p", "tensorrt_lean_bindings", "-o", str(generated)],
        check=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )
    stubs = folder / "stubs11"
    (stubs / "tensorrt").mkdir(parents=True)
    api = (generated / "tensorrt_lean_bindings" / "tensorrt_lean.pyi").read_text()
    (stubs / "tensorrt" / "__init__.pyi").write_text(api + "\n__version__: str\n")
    return stubs


def _split_params(params: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(params):
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(params[start:i])
            start = i + 1
    parts.append(params[start:])
    return parts


def _fix_defaults(line: str) -> str:
    match = re.match(r"^(\s*def \w+\()(.*)(\) -> .*:)$", line)
    if not match:
        return line
    params, seen_default = _split_params(match.group(2)), False
    for i, param in enumerate(params):
        bare = param.strip()
        if "=" in bare:
            seen_default = True
        elif seen_default and ":" in bare and not bare.startswith("*"):
            params[i] = f"{param} = ..."
    return match.group(1) + ",".join(params) + match.group(3)


def mypy(stubs: Path, files: list[str]) -> list[str]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--python-version",
            "3.11",
            "--follow-imports=silent",
            "--ignore-missing-imports",
            "--no-error-summary",
            "--show-error-codes",
            "--cache-dir",
            "/dev/null",
            *files,
        ],
        capture_output=True,
        text=True,
        env={"MYPYPATH": str(stubs), "PATH": "/usr/bin:/bin"},
    )
    # Errors inside the stubs themselves (they use `capsule` and `typing_extensions` without
    # importing them) are not ours: only lines in the checked files count.
    return [
        line
        for line in result.stdout.splitlines()
        if line.startswith(tuple(files)) and any(code in line for code in NAME_ERRORS)
    ]


def check(stubs: Path, tmp: Path, label: str, allowed: tuple[str, ...] = ()) -> int:
    tripwire = tmp / "tripwire.py"
    tripwire.write_text("import tensorrt as trt\ntrt.TensorIOMode.NO_SUCH_MODE_XYZ\n")
    if not any("NO_SUCH_MODE_XYZ" in line for line in mypy(stubs, [str(tripwire)])):
        print(f"tripwire not caught: mypy did not read the {label} stubs", file=sys.stderr)
        return 1
    problems = [line for line in mypy(stubs, MODULES) if not any(name in line for name in allowed)]
    for line in problems:
        print(line)
    print(f"TensorRT names checked against {label}: {len(problems)} unknown", file=sys.stderr)
    return 1 if problems else 0


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        failed = check(fetch_stubs(Path(tmp)), Path(tmp), STUBS)
        label = f"{LEAN} (runtime API; builder names: 10.13 only)"
        failed |= check(lean_stubs(Path(tmp)), Path(tmp), label, BUILDER_ONLY)
    return failed


if __name__ == "__main__":
    sys.exit(main())
