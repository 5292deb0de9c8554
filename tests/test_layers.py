"""Imports flow one way: machine facts at the bottom, artefact records below both the writers
(export) and the runtimes, the API above the stages, the commands on top. A module may import its
own package and any lower layer, never a higher one, nor a sibling of its layer (export and
runtimes know nothing of each other). Read from the source, lazy imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dgla_export"
# bottom first; names at the same level are siblings
LAYERS = [
    ["_version", "errors", "install"],
    ["machine", "io", "console", "decode", "dali_pipeline"],
    ["preprocess", "deidentify"],
    ["data", "overlay"],
    ["models"],
    ["artefacts", "compare"],
    ["clinical"],
    ["export", "runtimes"],
    ["validation", "localise"],
    ["quantize", "golden"],
    ["quantize_nncf"],  # NNCF's INT8 for OpenVINO, written and judged as the own search's graphs are
    ["benchmarking", "triton"],
    ["deploy", "pacs"],
    ["api"],
    ["tools"],
    ["__init__"],
]
LEVEL = {unit: level for level, units in enumerate(LAYERS) for unit in units}
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _unit(path: Path, package: Path) -> str:
    """``dgla_export/benchmarking/run.py`` -> ``benchmarking``; the package root is ``__init__``."""
    parts = path.relative_to(package).with_suffix("").parts
    return parts[0]


def violations(path: Path, package: Path = PACKAGE) -> list[str]:
    """Every import in ``path`` of a layer above its own, or of a sibling."""
    here = _unit(path, package)
    wrong = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            wrong.append(f"line {node.lineno}: a relative import (write dgla_export.<module>)")
            continue
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module == "dgla_export":  # from dgla_export import data
            names += [f"dgla_export.{a.name}" for a in node.names if a.name != "__version__"]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        for name in names:
            if name != "dgla_export" and not name.startswith("dgla_export."):
                continue
            there = name.split(".")[1] if "." in name else "__init__"
            if there != here and LEVEL[there] >= LEVEL[here]:
                wrong.append(f"line {node.lineno}: {name} ({there}, layer {LEVEL[there]}) from {here} ({LEVEL[here]})")
    return wrong


def test_every_module_has_a_layer() -> None:
    units = {_unit(path, PACKAGE) for path in SOURCES}
    assert units <= set(LEVEL), f"modules without a layer in this test: {sorted(units - set(LEVEL))}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_goes_up_or_sideways(path: Path) -> None:
    wrong = violations(path)
    assert not wrong, f"{path.relative_to(PACKAGE)} imports against the layering:\n" + "\n".join(wrong)


def test_the_check_sees_upward_and_sideways_imports(tmp_path) -> None:
    package = tmp_path / "dgla_export"
    (package / "export").mkdir(parents=True)
    (package / "errors.py").write_text("def probe():\n    from dgla_export.api import export_onnx\n")
    (package / "export" / "build.py").write_text("import dgla_export.runtimes.tensorrt\n")
    expected = f"line 2: dgla_export.api (api, layer {LEVEL['api']}) from errors (0)"
    assert violations(package / "errors.py", package) == [expected]
    assert "runtimes" in violations(package / "export" / "build.py", package)[0]


def test_one_version_string() -> None:
    """The version lives in _version.py alone; the package, its metadata and the graphs it writes agree."""
    import importlib.metadata

    import dgla_export
    from dgla_export._version import __version__

    assert dgla_export.__version__ == __version__ == importlib.metadata.version("dgla-export")
    written = [p for p in SOURCES if p.name != "_version.py" and f'"{__version__}"' in p.read_text()]
    assert not written, f"the version string is written again in {written}"
