"""The documentation's examples run as written (on the tiny model, so that the suite stays quick),
and the CLI reference is the parsers' own text."""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), flags=re.S)


@pytest.mark.slow
def test_every_api_example_runs(tmp_path) -> None:
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("the serving example needs Triton (pip install 'dgla-export[serve]')")
    assert len(EXAMPLES) == 7
    free = []
    for _ in range(3):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            free.append(sock.getsockname()[1])
    script = "\n".join(EXAMPLES).replace('"dgla_resnet50"', '"dgla_tiny"')
    ports = "http_port={}, grpc_port={}, metrics_port={}".format(*free)
    script = script.replace("http_port=18000, grpc_port=18001, metrics_port=18002", ports)
    (tmp_path / "build" / "api").mkdir(parents=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert (
        "True" in out
        and "onnxruntime-cpu-fp16 True" in out
        and "['dgla', 'dgla_normalise', 'dgla_onnx', 'dgla_pixels', 'dgla_preprocess']" in out
    )
    assert "127.0.0.1:" in out and "[W]" not in out and "Folding" not in out, out  # no library chatter
    assert "cam_top1 (3, 3)" in out, out  # the tiny model's map, served
    assert "(400, 512, 3)\nTrue False\ncannot decode image (2000 bytes)" in out, out  # decode_image, deidentify
    assert "no intermediate tensor past 0.05" in out, out  # debug: the tiny FP16 graph is within its bound


def test_the_cli_reference_is_the_parsers_own_text() -> None:
    """docs/cli.md is generated from the parsers (scripts/cli_reference.py); a changed option without
    a regenerated page fails here."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from cli_reference import reference

    expected = reference()
    written = (ROOT / "docs" / "cli.md").read_text()
    assert written == expected, "docs/cli.md is stale: run python scripts/cli_reference.py"
