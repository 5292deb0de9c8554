"""The README's flow, run as written: its command block line by line, then its Python block in the
same folder with the command block's server still up, in a fresh folder holding only what the page
says the user brings (ckpt.pt, lesions/, truth.csv).

Substitutions, each stated in the README: the tiny configuration (``--model dgla_tiny`` on the
commands that build a model, ``dgla_tiny`` for ``dgla_resnet50`` in Python), ``--quick`` on the
bench, free loopback ports for the servers (and the client's ``--url``); the ``pip install`` line is
what this environment already did; on a machine without TensorRT the ``trt`` line must end in its
one-line refusal (exit 2) and nothing at its output.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from triton_repository.serving import Serve, free_ports

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"
TOOLS = {"dgla-export": "dgla_export.tools.export", "dgla-bench": "dgla_export.tools.bench",
         "dgla-client": "dgla_export.tools.client"}  # fmt: skip

if importlib.util.find_spec("pytriton") is None:
    pytest.skip("the README's flow serves its model: pip install 'dgla-export[serve]'", allow_module_level=True)


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def _flow_lines() -> list[str]:
    """The commands of the block after "From checkpoint to served model", comments stripped."""
    section = README.read_text().split("## From checkpoint to served model", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    lines = [re.split(r"\s{2,}#", line)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


@pytest.fixture
def brought(tmp_path, images, tiny):
    """What the README says the user brings: a checkpoint, a folder of photos, their labels."""
    import torch
    from PIL import Image

    torch.save(tiny.state_dict(), tmp_path / "ckpt.pt")
    (tmp_path / "lesions").mkdir()
    classes = list(tiny.config.class_names)
    with open(tmp_path / "truth.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", *classes])
        for index, (name, image) in enumerate(images):
            Image.fromarray(image).save(tmp_path / "lesions" / f"{name}.png")
            writer.writerow([name, *(("1.0" if c == index % len(classes) else "0.0") for c in range(len(classes)))])
    return tmp_path


def _run(argv: list[str], folder: Path) -> subprocess.CompletedProcess:
    module = TOOLS[argv[0]]
    return subprocess.run([sys.executable, "-m", module, *argv[1:]], cwd=folder, capture_output=True, text=True)


def test_the_command_block_then_the_python_block_run_as_written(brought) -> None:
    server = None
    try:
        server = _command_block(brought)
        _python_block(brought)  # as a user runs it next: dgla-serve still up, its files in the folder
    finally:
        if server is not None:
            server.stop()


def _command_block(brought: Path) -> Serve:
    from dgla_export.runtimes.availability import tensorrt_problem

    lines = _flow_lines()
    assert lines[0].startswith("pip install") and lines[-1].startswith("dgla-client"), lines
    server = None
    for line in lines[1:]:
        argv = shlex.split(line.removesuffix("&"))
        if argv[0] == "dgla-serve":
            server = Serve(brought / argv[1])
            server.wait_ready()
            continue
        if argv[:2] == ["dgla-export", "onnx"] or argv[0] == "dgla-bench":
            argv += ["--model", "dgla_tiny"] + (["--quick"] if argv[0] == "dgla-bench" else [])
        if argv[0] == "dgla-client":
            argv = [arg.replace("localhost:8001", server.grpc_url) for arg in argv]
        run = _run(argv, brought)
        if argv[:2] == ["dgla-export", "trt"] and tensorrt_problem() is not None:
            assert run.returncode == 2 and "cannot build an engine here" in run.stderr, run.stderr[-2000:]
            assert not (brought / "dgla_fp16.plan").exists()
            continue
        assert run.returncode == 0, f"{line}\n{run.stderr[-3000:]}"
        if argv[0] == "dgla-client":
            answered = run.stdout.strip().splitlines()
            photos = sorted(p.name for p in (brought / "lesions").iterdir())
            assert len(answered) == len(photos), run.stdout
            pattern = re.compile(r"(\S+\.png): (MEL|NV|BCC|AKIEC|BKL|DF|VASC) \d\.\d{3} .*  heatmap: (maps/\S+\.png)$")
            found = [pattern.match(answer) for answer in answered]
            assert all(found), answered
            for match in found:  # each photo's heatmap is named after it, and is there
                assert match.group(3) == f"maps/{Path(match.group(1)).name}.png", match.group(0)
                assert (brought / match.group(3)).stat().st_size > 0
    assert server is not None
    for made in ("dgla.onnx", "dgla_fp16.onnx", "bench/results.json", "fp16-debug/report.json", "triton-repo"):
        assert (brought / made).exists(), made
    # every folder and file the commands wrote has the mode any of the user's gets under the umask
    # (a repository left 0700 was unreadable to a Triton container running as another user)
    mask = os.umask(0o022)
    os.umask(mask)
    wrong = {}
    for path in brought.rglob("*"):
        executable = path.is_dir() or path.name == "reproduce.sh"
        expected = (0o777 if executable else 0o666) & ~mask
        if stat.S_IMODE(path.stat().st_mode) != expected:
            wrong[str(path.relative_to(brought))] = oct(stat.S_IMODE(path.stat().st_mode))
    assert not wrong, f"modes other than the umask's ({oct(mask)}): {wrong}"
    return server


def _python_block(brought: Path) -> None:
    (block,) = [b for b in _blocks("python") if "dx.export_onnx" in b and "dx.serve" in b]
    http, grpc, metrics = free_ports(3)
    code = block.replace('"dgla_resnet50"', '"dgla_tiny"')
    code = code.replace(
        "http_port=8010, grpc_port=8011, metrics_port=8012",
        f"http_port={http}, grpc_port={grpc}, metrics_port={metrics}",
    )
    assert code.count(str(grpc)) == 1, "the README's Python block no longer names its ports"
    run = subprocess.run([sys.executable, "-c", code], cwd=brought, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith(f":{grpc}"), run.stdout
    assert run.stderr == "", run.stderr[-2000:]  # the API says nothing on the console
