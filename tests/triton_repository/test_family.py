"""Every architecture of the family, in its tiny configuration, through every stage: export (with
explain) -> validate -> one Triton repository holding all of them (the run's shared server,
tests/triton_repository/conftest.py) -> dgla-client -> heatmaps.

The client is told nothing but the served model's name: inputs, sizes and class names come from
the repository.
"""

from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import pytest
from inputs import as_sent
from PIL import Image

from dgla_export.tools.client import main as client_main
from triton_repository.conftest import FAMILY, models_of

pytestmark = pytest.mark.slow

if importlib.util.find_spec("pytriton") is None:
    pytest.skip("Triton is not installed (pip install 'dgla-export[serve]')", allow_module_level=True)

TOLERANCE = 1e-5  # served probabilities vs local ONNX Runtime's


@pytest.fixture
def family(family_graphs, triton_server):
    """The family's graphs (exported and validated once a run) and the shared server serving them."""
    return family_graphs, triton_server, triton_server.output


def test_one_repository_serves_every_architecture(family) -> None:
    _, server, output = family
    states = dict(re.findall(r"^model\s+(\S+) v1: (\S+)", output, flags=re.M))
    expected = {model for name in FAMILY for model in models_of(name)}
    assert {name: states.get(name) for name in expected} == dict.fromkeys(expected, "READY"), states
    for name in FAMILY:  # each architecture wrote its five models, no more
        assert server.written[name] == models_of(name), server.written[name]


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
    inputs = as_sent(recipe, paths)  # dgla-client's default: only the pixels the model sees
    local = create_session(path, "cpu").run(["probs"], dict(zip(config.input_names, inputs, strict=True)))[0]
    for answer, probs in zip(answers, local, strict=True):
        assert answer["class"] == config.class_names[int(probs.argmax())]
        err = abs(answer["probability"] - float(probs.max()))
        assert err < TOLERANCE, f"{name}: served vs local top-1 probability differ by {err:.2e}"
    size = config.architecture.display_size
    for p in paths:
        with Image.open(heatmaps / f"{p.name}.png") as sheet:
            assert sheet.height == size + 22, f"{name}: heatmap {sheet.size}, expected panels {size} px high"
    assert len(config.input_names) == (2 if name.startswith(("dbi", "dgla")) else 1)
    assert np.isfinite(local).all()
