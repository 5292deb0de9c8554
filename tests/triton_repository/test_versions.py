"""Versions: a new graph for a served name becomes its next version beside the earlier ones, each
with a manifest (every file's SHA-256, the configs, the validation report); a rollback is one
command, refuses a version whose files changed, and on a real server restores the earlier
version's answers exactly."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image
from tritonclient.grpc import model_config_pb2

from dgla_export.io import report_beside, sha256_file
from dgla_export.tools.export import main as export_main
from dgla_export.tools.serve import main as serve_main
from dgla_export.triton.client import classify
from dgla_export.triton.versions import active_version, read_version, versions
from triton_repository.serving import Serve

MODELS = ("dgla", "dgla_normalise", "dgla_onnx", "dgla_pixels", "dgla_preprocess")


def _config(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _served(repo) -> dict[str, list[int]]:
    """Each model's version policy, and the ensemble's steps' versions."""
    found = {m: list(_config(repo / m / "config.pbtxt").version_policy.specific.versions) for m in MODELS}
    found["steps"] = [s.model_version for s in _config(repo / "dgla" / "config.pbtxt").ensemble_scheduling.step]
    pixels = [s.model_version for s in _config(repo / "dgla_pixels" / "config.pbtxt").ensemble_scheduling.step]
    assert pixels == found["steps"], (pixels, found["steps"])  # both entry points serve one version
    return found


def _triton(*args: str) -> int:
    return export_main(["triton", *args, "--preferred-batch-sizes", "4"])


def test_a_second_graph_becomes_version_2_and_a_rollback_serves_version_1(tiny_onnx, tmp_path, capsys) -> None:
    repo = tmp_path / "repo"
    other = tmp_path / "other"
    assert _triton("--onnx", str(tiny_onnx["fp32"]), "--output", str(other), "--name", "arl") == 0
    assert _triton("--onnx", str(tiny_onnx["fp32"]), "--output", str(repo)) == 0
    first = {m: (repo / m / "config.pbtxt").read_text() for m in MODELS}
    assert _served(repo) == {**{m: [1] for m in MODELS}, "steps": [1, 1]}
    assert _triton("--onnx", str(tiny_onnx["fp16"]), "--output", str(repo), "--add") == 0
    assert "version 2 of dgla" in capsys.readouterr().out
    assert versions(repo, "dgla") == [1, 2] and active_version(repo, "dgla") == 2
    assert _served(repo) == {**{m: [2] for m in MODELS}, "steps": [2, 2]}
    for model in MODELS:  # version 1 is still there, unchanged
        assert (repo / model / "1").is_dir() and (repo / model / "2").is_dir(), model
    v1, v2 = read_version(repo, "dgla", 1), read_version(repo, "dgla", 2)
    assert v1.files["dgla_onnx/1/model.onnx"] == sha256_file(tiny_onnx["fp32"])
    assert v2.files["dgla_onnx/2/model.onnx"] == sha256_file(tiny_onnx["fp16"])
    assert (v1.graph["precision"], v2.graph["precision"]) == ("fp32", "fp16")
    assert "dgla_preprocess/2/preprocess.py" in v2.files and v1.configs == first

    assert export_main(["versions", str(repo), "--rollback"]) == 0
    assert "version 1 served from now on (was 2)" in capsys.readouterr().out
    assert {m: (repo / m / "config.pbtxt").read_text() for m in MODELS} == first  # exactly as version 1 wrote them
    assert export_main(["versions", str(repo), "--rollback"]) == 2  # nothing older
    assert "nothing to roll back to" in capsys.readouterr().err
    assert export_main(["versions", str(repo), "--activate", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.split("\n", 2)[2])
    assert [(r["version"], r["served"], r["precision"]) for r in rows] == [(1, False, "fp32"), (2, True, "fp16")]

    # a changed file is refused, and nothing is switched
    (repo / "dgla_onnx" / "1" / "model.onnx").write_bytes(b"not the graph")
    assert export_main(["versions", str(repo), "--activate", "1"]) == 2
    assert "dgla_onnx/1/model.onnx changed since version 1" in capsys.readouterr().err
    assert active_version(repo, "dgla") == 2


def test_an_interrupted_rollback_leaves_the_served_version_whole(tiny_onnx, tmp_path, monkeypatch, capsys) -> None:
    """Every config is staged before any is renamed: a Ctrl-C while staging switches nothing and
    leaves no staged file; one while renaming waits until every config is renamed; a hand-edited
    config is one line naming the command that writes it anew."""
    repo = tmp_path / "repo"
    assert _triton("--onnx", str(tiny_onnx["fp32"]), "--output", str(repo)) == 0
    assert _triton("--onnx", str(tiny_onnx["fp16"]), "--output", str(repo), "--add") == 0
    second = {m: (repo / m / "config.pbtxt").read_text() for m in MODELS}
    writes = []
    real = Path.write_text

    def interrupted(self, *args, **kwargs):
        writes.append(self.name)
        if len(writes) == 3:  # a Ctrl-C half-way through the configs
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", interrupted)
    assert export_main(["versions", str(repo), "--rollback"]) == 130
    monkeypatch.undo()
    assert len(writes) == 3, writes  # the premise: interrupted after two files were written
    assert {m: (repo / m / "config.pbtxt").read_text() for m in MODELS} == second, "a half-switched version"
    assert not list(repo.rglob("*.staged")), list(repo.rglob("*.staged"))
    assert active_version(repo, "dgla") == 2
    # a real SIGINT between two renames (from another process, as Ctrl-C is): every config is
    # renamed, then the command stops as interrupted, with version 1 whole
    import os
    import signal

    import dgla_export.triton.versions as versions_module

    renamed = []
    real_replace = os.replace

    def replace_then_signal(source, target):
        real_replace(source, target)
        renamed.append(target)
        if len(renamed) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(versions_module.os, "replace", replace_then_signal)
    assert export_main(["versions", str(repo), "--rollback"]) == 130
    monkeypatch.undo()
    assert len(renamed) >= len(MODELS), renamed  # the premise: the signal came before the last rename
    assert active_version(repo, "dgla") == 1
    assert _served(repo) == {**{m: [1] for m in MODELS}, "steps": [1, 1]}, "a half-switched version"
    assert not list(repo.rglob("*.staged"))
    assert export_main(["versions", str(repo), "--activate", "2"]) == 0
    capsys.readouterr()
    # a config edited by hand into something Triton cannot read: one line, then the command it names works
    (repo / "dgla" / "config.pbtxt").write_text("name: dgla\nplatform: {ensemble")
    assert export_main(["versions", str(repo), "--rollback"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "is not a model config Triton reads" in err, err
    hint = err.rsplit(": ", 1)[1].split()
    assert hint[:2] == ["dgla-export", "versions"], err
    assert export_main(hint[1:]) == 0 and active_version(repo, "dgla") == 2


def test_a_version_keeps_the_model_set_and_the_report_must_be_of_this_graph(tiny_onnx, tmp_path, capsys) -> None:
    repo = tmp_path / "repo"
    graph = tiny_onnx["fp32"]
    assert _triton("--onnx", str(graph), "--output", str(repo)) == 0
    capsys.readouterr()
    openvino = importlib.util.find_spec("openvino") is not None
    not_an_object = tmp_path / "list.json"
    not_an_object.write_text("[1, 2]")
    refusals = [
        (["--validation", str(tmp_path / "absent.json")], "cannot read the validation report"),
        (["--validation", str(not_an_object)], "is JSON but not a validation report"),
        (["--validation", str(_report(tmp_path, "0" * 64, True))], "is not a report on"),
        (["--validation", str(_report(tmp_path, sha256_file(graph), False))], "FAILED validation"),
        (["--validation", str(_report(tmp_path, sha256_file(graph), True))], "carries no golden answers"),
        (["--validation", str(_without_pixels(graph, tmp_path))], "no golden answers for the pixels-only entry point"),
    ]
    if openvino:  # NAME_openvino instead of NAME_onnx: another model set, not a version
        refusals.append((["--runtime", "openvino"], "a version changes files, not models"))
    for extra, problem in refusals:
        assert _triton("--onnx", str(graph), "--output", str(repo), "--add", *extra) == 2, extra
        assert problem in capsys.readouterr().err, extra
    assert versions(repo, "dgla") == [1]
    report = tmp_path / "moved.validation.json"  # the graph's own report, passed by hand from elsewhere
    report.write_bytes(report_beside(graph).read_bytes())
    assert _triton("--onnx", str(graph), "--output", str(repo), "--add", "--validation", str(report)) == 0
    recorded = json.loads(report.read_text())
    assert recorded.pop("golden")["answers"]  # the golden answers go into the version's reference/
    assert read_version(repo, "dgla", 2).validation == recorded
    assert _triton("--onnx", str(tiny_onnx["fp16"]), "--output", str(repo), "--add", "--name", "auto") == 0
    assert active_version(repo, "dgla_tiny_fp16") == 1 and active_version(repo, "dgla") == 2


def _without_pixels(graph: Path, folder: Path) -> Path:
    """The graph's own report as an earlier dgla-export wrote it: golden answers, none for the pixels."""
    report = json.loads(report_beside(graph).read_text())
    del report["golden"]["pixels"], report["golden"]["answers"]["pixels"]
    path = folder / "earlier.validation.json"
    path.write_text(json.dumps(report))
    return path


def test_a_repository_from_before_the_pixels_entry_point_gets_a_way_forward(tiny_onnx, tmp_path, capsys) -> None:
    """--add onto a version written before NAME_pixels existed: refused in one line naming both ways
    (another --name, or --force), never a version whose rollback would leave NAME_pixels serving on."""
    import shutil

    repo = tmp_path / "repo"
    assert _triton("--onnx", str(tiny_onnx["fp32"]), "--output", str(repo)) == 0
    manifest = repo / "dgla" / "1" / "manifest.json"
    record = json.loads(manifest.read_text())  # as an earlier dgla-export wrote it: three models
    for model in ("dgla_normalise", "dgla_pixels"):
        shutil.rmtree(repo / model)
        del record["configs"][model]
    record["files"] = {f: h for f, h in record["files"].items() if not f.startswith(("dgla_normalise", "dgla_pixels"))}
    record["golden"].pop("pixels")
    manifest.write_text(json.dumps(record))
    capsys.readouterr()
    assert _triton("--onnx", str(tiny_onnx["fp32"]), "--output", str(repo), "--add") == 2
    said = capsys.readouterr().err
    assert "written before repositories had the pixels-only entry point" in said and "--force" in said, said
    assert "--name" in said and len(said.strip().splitlines()) == 1, said
    assert versions(repo, "dgla") == [1]
    assert _triton("--onnx", str(tiny_onnx["fp32"]), "--output", str(repo), "--add", "--name", "second") == 0


def _report(folder, digest: str, passed: bool):
    path = folder / f"report_{digest[:4]}_{passed}.json"
    path.write_text(json.dumps({"graph_sha256": digest, "passed": passed, "verdict": "passed" if passed else "FAILED"}))
    return path


def test_dgla_serve_names_the_version_it_serves(tiny_onnx, tmp_path, capsys) -> None:
    repo = tmp_path / "repo"
    assert _triton("--onnx", str(tiny_onnx["fp32"]), "--output", str(repo)) == 0
    assert _triton("--onnx", str(tiny_onnx["fp32"]), "--output", str(repo), "--add", "--name", "arl") == 0
    capsys.readouterr()
    assert serve_main([str(repo), "--version", "1"]) == 2  # two ensembles: which?
    assert "name one, --version NAME=N" in capsys.readouterr().err
    assert serve_main([str(repo), "--version", "dgla=3"]) == 2
    assert "no version 3 of dgla (versions: 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        serve_main([str(repo), "--version", "dgla=0"])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("pytriton") is None, reason="needs Triton (pip install '.[serve]')")
def test_a_rollback_restores_the_earlier_answers_exactly(tiny_onnx, images, tmp_path) -> None:
    repo = tmp_path / "repo"
    paths = []
    for name, pixels in images[:4]:
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(pixels).save(paths[-1])

    def answers(*extra: str) -> tuple[str, np.ndarray]:
        server = Serve(repo, extra=extra)
        try:
            output = server.wait_ready()
            found = classify(paths, url=server.grpc_url)
            assert all(a.error is None for a in found), [a.error for a in found]
            return output, np.stack([a.probs for a in found])
        finally:
            server.stop()

    assert _triton("--onnx", str(tiny_onnx["fp32"]), "--output", str(repo)) == 0
    _, first = answers()
    assert _triton("--onnx", str(tiny_onnx["fp16"]), "--output", str(repo), "--add") == 0
    log2, second = answers()
    assert "dgla_onnx v2: READY" in log2 and "dgla_onnx v1" not in log2, log2
    moved = float(np.abs(second - first).max())
    assert moved > 0, "version 2 (FP16) answers exactly as version 1 (FP32): the server did not serve it"
    assert export_main(["versions", str(repo), "--rollback"]) == 0
    log3, rolled_back = answers()
    assert "dgla_onnx v1: READY" in log3, log3
    err = float(np.abs(rolled_back - first).max())
    assert np.array_equal(rolled_back, first), f"rolled back differs from version 1 by {err:.2e}"
    _, pinned = answers("--version", "2")  # version 2 again, without touching the repository
    err = float(np.abs(pinned - second).max())
    assert np.array_equal(pinned, second), f"--version 2 differs from version 2 by {err:.2e}"
    assert active_version(repo, "dgla") == 1
    print(f"version 2 moved the answers by {moved:.2e}; the rollback restored version 1's exactly")
