"""Artefacts know their checkpoint: every command that reads a graph takes its weights from what the
graph records, and wrong weights are one line naming both digests, exit 2, before any slow work."""

from __future__ import annotations

import shutil

import pytest
import torch

import dgla_export as dx
from dgla_export.errors import EXIT_OK, EXIT_USAGE
from dgla_export.models.identity import CheckpointIdentity, CheckpointIdentityError
from dgla_export.models.weights import CheckpointError, read_checkpoint
from dgla_export.tools.export import main as export_main


def test_resolution_rules_without_exporting(tmp_path) -> None:
    """The rules alone, on records written by hand: what a default, a file and 'demo' resolve to."""
    from dgla_export.io import sha256_file
    from dgla_export.models.identity import resolve_weights

    mine, other = tmp_path / "mine.pt", tmp_path / "other.pt"
    mine.write_bytes(b"mine")
    other.write_bytes(b"other")
    from_file = CheckpointIdentity("s" * 64, "file", sha256_file(mine), str(mine), partial=True)
    assert resolve_weights(from_file, None, "g.onnx") == (mine, True)  # the recorded path, partial as recorded
    assert resolve_weights(from_file, mine, "g.onnx") == (str(mine), True)
    with pytest.raises(CheckpointIdentityError, match=sha256_file(other)[:12]):
        resolve_weights(from_file, other, "g.onnx")
    with pytest.raises(CheckpointIdentityError, match="not demo weights"):
        resolve_weights(from_file, "demo", "g.onnx")
    demo = CheckpointIdentity("d" * 64, "demo")
    assert resolve_weights(demo, None, "g.onnx") == ("demo", False)
    with pytest.raises(CheckpointIdentityError, match="drop --weights"):
        resolve_weights(demo, mine, "g.onnx")
    with pytest.raises(CheckpointIdentityError, match="cannot be made again"):
        resolve_weights(CheckpointIdentity("r" * 64, "random"), None, "g.onnx")
    assert resolve_weights(None, None, "old.onnx") == ("demo", False)  # a graph without a record
    legacy = CheckpointIdentity.from_metadata({"checkpoint_sha256": "state_dict:" + "a" * 64})
    assert legacy == CheckpointIdentity("a" * 64, "model")


@pytest.fixture(scope="module")
def from_file(tiny, tmp_path_factory):
    """(graph, checkpoint, another checkpoint): a tiny graph exported from a checkpoint file."""
    folder = tmp_path_factory.mktemp("identity")
    mine, other = folder / "mine.pt", folder / "other.pt"
    torch.save(tiny.state_dict(), mine)
    torch.save({k: v + 1e-3 if v.is_floating_point() else v for k, v in tiny.state_dict().items()}, other)
    graph = folder / "g.onnx"
    dx.export_onnx(graph, "dgla_tiny", weights=mine, batch=(1, 2), validate=False)
    return graph, mine, other


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    (line,) = [line for line in err.splitlines() if "error" in line]
    return line


@pytest.mark.slow
def test_the_graph_records_its_checkpoint(from_file) -> None:
    from dgla_export.artefacts.graph import graph_metadata, load_graph
    from dgla_export.io import sha256_file

    graph, mine, _ = from_file
    recorded = CheckpointIdentity.from_metadata(graph_metadata(load_graph(graph)))
    assert recorded is not None and recorded.source == "file" and recorded.file_sha256 == sha256_file(mine)
    assert recorded.path == str(mine.resolve()) and recorded.state_dict_sha256


@pytest.mark.slow
def test_validate_without_weights_uses_the_recorded_checkpoint(from_file, capsys) -> None:
    """The issue's trap: this once compared the graph with the demo weights and reported dozens of flips."""
    graph, _, _ = from_file
    assert export_main(["validate", str(graph), "--batches", "1"]) == EXIT_OK, capsys.readouterr().err


@pytest.mark.slow
def test_wrong_weights_are_refused_naming_both_digests(from_file, capsys) -> None:
    from dgla_export.io import sha256_file

    graph, mine, other = from_file
    assert export_main(["validate", str(graph), "--weights", str(other)]) == EXIT_USAGE
    line = _error_line(capsys)
    assert sha256_file(other)[:12] in line and sha256_file(mine)[:12] in line and "pass that checkpoint" in line
    assert export_main(["validate", str(graph), "--weights", "demo"]) == EXIT_USAGE
    assert "not demo weights" in _error_line(capsys)
    with pytest.raises(CheckpointIdentityError, match="is not the checkpoint"):  # before TensorRT is asked for
        dx.build_engine(graph.with_name("g.onnx"), graph.with_name("g.plan"), precision="fp32", weights=other)


@pytest.mark.slow
def test_a_moved_checkpoint_is_asked_for(from_file, tmp_path, capsys) -> None:
    graph, mine, _ = from_file
    moved = tmp_path / "moved.pt"
    shutil.move(mine, moved)
    try:
        assert export_main(["validate", str(graph)]) == EXIT_USAGE
        assert "which is not at that path now; pass --weights" in _error_line(capsys)
        assert export_main(["validate", str(graph), "--weights", str(moved), "--batches", "1"]) == EXIT_OK
    finally:
        shutil.move(moved, mine)


@pytest.mark.slow
def test_a_demo_graph_refuses_a_checkpoint_and_other_demo_weights(tiny_onnx, tiny, tmp_path) -> None:
    from dgla_export.models.registry import create_model

    mine = tmp_path / "mine.pt"
    torch.save(tiny.state_dict(), mine)
    with pytest.raises(CheckpointIdentityError, match=r"exported from the demo weights .* not from the checkpoint"):
        dx.validate(tiny_onnx["fp32"], weights=mine)
    changed = create_model("dgla_tiny", weights="demo")
    with torch.no_grad():
        changed.fc.bias.add_(0.5)  # as demo weights of another version would differ
    with pytest.raises(CheckpointIdentityError, match="the weights loaded now have state-dict sha256"):
        dx.validate(tiny_onnx["fp32"], changed)


def test_non_finite_weights_are_refused_naming_the_tensors(tiny, tmp_path) -> None:
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    state["fc.bias"][0] = float("nan")
    state["conv1.weight"][0, 0, 0, 0] = float("inf")
    torch.save(state, tmp_path / "diverged.pt")
    with pytest.raises(CheckpointError, match=r"non-finite values in 2 tensors: .*conv1.weight \(0 NaN, 1 Inf\)"):
        read_checkpoint(tmp_path / "diverged.pt")
    model = dx.create_model("dgla_tiny")
    model.load_state_dict(state)
    with pytest.raises(CheckpointError, match=r"fc.bias \(1 NaN, 0 Inf\)"):
        dx.load_model(model)
