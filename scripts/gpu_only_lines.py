"""Count the statements only a GPU can execute that the CPU test suite never runs.

A statement counts when coverage marks it unexecuted, it sits in a function body, and the
function drives a GPU: it is in a TensorRT module, or its source names CUDA, TensorRT, a GPU or
ONNX Runtime's IO binding. A heuristic (a function that merely mentions TensorRT in a message is
counted), applied alike to every commit it is given. The coverage JSON comes from the whole suite
run at that commit (coverage is not a dependency of the package):

    pip install coverage --target /tmp/cov
    PYTHONPATH=/tmp/cov:. python -m coverage run --source=dgla_export -m pytest -q
    PYTHONPATH=/tmp/cov python -m coverage json -o cov.json
    python scripts/gpu_only_lines.py cov.json COMMIT [--output record.json]
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
from pathlib import Path

GPU = re.compile(r"cuda|tensorrt|\btrt\b|io_binding|gpu|nvidia-smi", re.IGNORECASE)


def gpu_statements(source: str, whole_module: bool) -> set[int]:
    """Lines of statements in function bodies of GPU-driving functions."""
    found: set[int] = set()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if not (whole_module or GPU.search(ast.get_source_segment(source, node) or "")):
            continue
        nested = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef  # counted as their own functions
        for statement in node.body:
            found.update(s.lineno for s in ast.walk(statement) if isinstance(s, ast.stmt) and not isinstance(s, nested))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("coverage_json", type=Path)
    parser.add_argument("commit", help="the commit the coverage was measured at (its sources are read from git)")
    parser.add_argument("--output", type=Path, help="write the per-module counts as JSON")
    args = parser.parse_args()
    files = json.loads(args.coverage_json.read_text())["files"]
    per_module = {}
    for name, record in sorted(files.items()):
        module = name[name.index("dgla_export/") :]
        source = subprocess.run(["git", "show", f"{args.commit}:{module}"], capture_output=True, text=True, check=True)
        missed = gpu_statements(source.stdout, "tensorrt" in module) & set(record["missing_lines"])
        if missed:
            per_module[module] = len(missed)
    total = sum(per_module.values())
    print(f"{args.commit}: {total} GPU-only statements the CPU suite never runs")
    for module, count in sorted(per_module.items(), key=lambda item: -item[1]):
        print(f"  {module:48s} {count:4d}")
    if args.output:
        record = {"commit": args.commit, "total": total, "modules": per_module}
        args.output.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
