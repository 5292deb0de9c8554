"""Every architecture of the family, in its tiny configuration, through every stage: export (with
explain) -> validate -> one Triton repository holding all of them -> dgla-client -> heatmaps.

The client is told nothing but the served model's name: inputs, sizes and class names come from
the repository.
"""

from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import pytest
from PIL import Image

import dgla_export as dx
from dgla_export.models import create_model
from dgla_export.models.registry import TINY
from dgla_export.tools.client import main as client_main
from dgla_export.triton.repository import TritonOptions, write_repository
from triton_repository.serving import Serve

pytestmark = pytest.mark.slow

if importlib.util.find_spec("pytriton") is None:
    pytest.skip("Triton is not installed (pip install 'dgla-export[serve]')", allow_module_level=True)

FAMILY = ("resnet50", "dbi_resnet50", "gla_resnet50", "dgla_resnet50", "arl_cnn50")
TOLERANCE = 1e-5  # served probabilities vs local ONNX Runtime's


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    folder = tmp_path_factory.mktemp("family")
    graphs = {}
    for name in FAMILY:
        model = create_model(name, weights="demo", **TINY)
        path = folder / f"{name}.onnx"
        exported = dx.export_onnx(path, model, explain=True, batch=(1, 8))
        assert exported.passed, exported.validation
        checked = dx.validate(path, model)
        assert checked.passed, checked
        graphs[name] = (model.config, path)
    repository = folder / "repo"
    for name, (_, path) in graphs.items():
        write_repository(path, repository, options=TritonOptions(name=name, preferred_batch_sizes=(4,)), add=True)
    server = Serve(repository)
    output = server.wait_ready()
    yield graphs, server, output
    stderr = server.stop()
    assert server.server_pid is not None, stderr
    assert not server.leftovers(), f"left behind after SIGTERM: {server.leftovers()}"


def test_one_repository_serves_every_architecture(family) -> None:
    _, _, output = family
    states = dict(re.findall(r"^model\s+(\S+) v1: (\S+)", output, flags=re.M))
    expected = {f"{name}{suffix}" for name in FAMILY for suffix in ("", "_onnx", "_preprocess")}
    assert states == dict.fromkeys(sorted(expected), "READY"), states


@pytest.mark.parametrize("name", FAMILY)
def test_client_and_heatmaps_follow_the_served_model(family, name, images, tmp_path, capsys) -> None:
    from dgla_export.preprocess import Preprocessing
    from dgla_export.runtimes.onnxruntime import create_session

    graphs, server, _ = family
    config, path = graphs[name]
    paths = []
    for image_name, image in images[:3]:
        paths.append(tmp_path / f"{image_name}.png")
        Image.fromarray(image).save(paths[-1])
    heatmaps = tmp_path / "heatmaps"
    argv = [*map(str, paths), "--url", server.grpc_url, "--model", name, "--json", "--heatmap", str(heatmaps)]
    assert client_main(argv) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    recipe = Preprocessing.of(config, "fast")
    inputs = recipe.batch([recipe.load(p) for p in paths])
    local = create_session(path, "cpu").run(["probs"], dict(zip(config.input_names, inputs, strict=True)))[0]
    for answer, probs in zip(answers, local, strict=True):
        assert answer["class"] == config.class_names[int(probs.argmax())]
        err = abs(answer["probability"] - float(probs.max()))
        assert err < TOLERANCE, f"{name}: served vs local top-1 probability differ by {err:.2e}"
    size = config.architecture.display_size
    for p in paths:
        with Image.open(heatmaps / f"{p.stem}.png") as sheet:
            assert sheet.height == size + 22, f"{name}: heatmap {sheet.size}, expected panels {size} px high"
    assert len(config.input_names) == (2 if name.startswith(("dbi", "dgla")) else 1)
    assert np.isfinite(local).all()
