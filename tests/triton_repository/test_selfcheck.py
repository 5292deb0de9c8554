"""What is served was validated, and answers on the serving machine what PyTorch answered: the
repository admits a graph only with a passing report of itself (or --unvalidated, in the open), and
every start of dgla-serve sends the reference photos through each ensemble before saying ready."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dgla_export.io import report_beside, sha256_file
from dgla_export.tools.export import main as export_main
from dgla_export.triton.repository import write_repository

NEEDS_TRITON = pytest.mark.skipif(importlib.util.find_spec("pytriton") is None, reason="needs Triton")


def _tripled(source: Path, target: Path) -> None:
    """The graph with its first convolution's weights tripled: it runs, and answers otherwise."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weights = next(i for i in model.graph.initializer if i.name == conv.input[1])
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * 3, weights.name))
    onnx.save(model, str(target))


def test_only_a_graph_with_a_passing_report_of_itself_goes_in(tiny_onnx, tmp_path, capsys) -> None:
    graph = tmp_path / "tiny.onnx"
    shutil.copyfile(tiny_onnx["fp32"], graph)
    tampered = tmp_path / "tampered.onnx"
    _tripled(graph, tampered)
    cases = {  # the graph, what lies beside it, and what the one line must say
        "no report beside it": (graph, None, "dgla-export validate"),
        "another graph's report": (tampered, report_beside(tiny_onnx["fp32"]), "graph changed after it was validated"),
    }
    for case, (onnx_path, report, said) in cases.items():
        if report is not None:
            shutil.copyfile(report, report_beside(onnx_path))
        code = export_main(["triton", "--onnx", str(onnx_path), "--output", str(tmp_path / case.replace(" ", "_"))])
        err = capsys.readouterr().err
        assert code == 2 and said in err and err.count("\n") == 1, (case, code, err)
        assert not (tmp_path / case.replace(" ", "_")).exists(), f"{case}: a repository was written"
    # the premise: the same graph with its report beside it goes in, its golden answers with it
    shutil.copyfile(report_beside(tiny_onnx["fp32"]), report_beside(graph))
    assert export_main(["triton", "--onnx", str(graph), "--output", str(tmp_path / "validated")]) == 0
    manifest = json.loads((tmp_path / "validated" / "dgla" / "1" / "manifest.json").read_text())
    assert manifest["validation"]["graph_sha256"] == sha256_file(graph) and not manifest["unvalidated"]
    golden = manifest["golden"]
    assert golden["precision"] == "fp32" and golden["method"] == "fast" and len(golden["photos"]) == 3
    for photo in golden["photos"].values():
        assert (tmp_path / "validated" / photo["file"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert abs(sum(photo["probs"]) - 1) < 1e-6
    # --unvalidated: in, and said so in the manifest and on the terminal
    capsys.readouterr()
    argv = ["triton", "--onnx", str(tampered), "--output", str(tmp_path / "unvalidated"), "--unvalidated"]
    assert export_main(argv) == 0
    assert "UNVALIDATED" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "unvalidated" / "dgla" / "1" / "manifest.json").read_text())
    assert manifest["unvalidated"] and manifest["golden"] is None and manifest["validation"] is None


@NEEDS_TRITON
def test_the_shared_server_checked_its_answers_before_it_said_ready(triton_server) -> None:
    said = triton_server.serve.stderr_so_far()  # dgla-serve's progress; the endpoints and "ready" go to stdout
    assert "self-check passed" in said and "ready;" in triton_server.output, said
    assert "dgla_int8 v1: UNVALIDATED" in said, said  # written --unvalidated: printed at every start
    # the repository's own copy of the check, as any Triton deployment runs it, agrees
    script = triton_server.repository / "dgla" / "selfcheck.py"
    env = {**os.environ, "DGLA_ADMIN_KEY": triton_server.admin_key}
    result = subprocess.run(
        [sys.executable, str(script), "--url", f"http://127.0.0.1:{triton_server.http}"],
        capture_output=True, text=True, timeout=300, env=env, cwd="/",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "self-check passed" in result.stdout and "UNVALIDATED" in result.stdout, result.stdout
    print(result.stdout.strip().splitlines()[-1])


@NEEDS_TRITON
@pytest.mark.slow
def test_a_graph_changed_behind_its_manifest_is_not_served(tiny_onnx, tmp_path) -> None:
    """The attack: the served graph replaced after writing (a convolution's weights tripled) and the
    manifest's digests updated to match, so every file check passes; the answers do not."""
    from triton_repository.serving import Serve

    repository = tmp_path / "repo"
    write_repository(tiny_onnx["fp32"], repository)
    graph = repository / "dgla_onnx" / "1" / "model.onnx"
    _tripled(graph, graph)
    manifest_path = repository / "dgla" / "1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["dgla_onnx/1/model.onnx"] = manifest["graph"]["sha256"] = sha256_file(graph)
    manifest_path.write_text(json.dumps(manifest))
    server = Serve(repository, extra=["--log", str(tmp_path / "server.log")])
    code = server.process.wait(timeout=300)
    stderr = server.stop()
    assert code == 3, (code, stderr)
    error = [line for line in stderr.splitlines() if "FAILED" in line]
    assert len(error) == 1 and "self-check FAILED" in error[0] and "dgla v1, photo" in error[0], stderr
    assert "Traceback" not in stderr, stderr
    assert "ready;" not in "\n".join(server.lines), "the server said ready"
    assert not server.leftovers(), server.leftovers()
    print(error[0])


@NEEDS_TRITON
def test_a_file_changed_behind_its_manifest_stops_the_start(tiny_onnx, tmp_path) -> None:
    from triton_repository.serving import Serve

    repository = tmp_path / "repo"
    write_repository(tiny_onnx["fp32"], repository)
    preprocess = repository / "dgla_preprocess" / "1" / "preprocess.py"
    preprocess.write_text(preprocess.read_text() + "\n# changed\n")
    server = Serve(repository, extra=["--log", str(tmp_path / "server.log")])
    code = server.process.wait(timeout=120)
    stderr = server.stop()
    assert code == 2 and "preprocess.py changed since version 1" in stderr, (code, stderr)


def test_the_check_compares_within_the_served_precision_s_tolerance() -> None:
    from dgla_export.triton.selfcheck import Answer

    tolerance = {"probs_abs": 0.01, "cam_abs": 0.05}
    assert Answer("dgla", 1, "coffee", 0.009, 0.04, "fp16", tolerance).passed
    assert not Answer("dgla", 1, "coffee", 0.011, None, "fp16", tolerance).passed
    assert not Answer("dgla", 1, "coffee", 0.0, 0.06, "fp16", tolerance).passed
    refused = Answer("dgla", 1, "coffee", float("inf"), None, "fp16", tolerance, error="HTTP 503")
    assert not refused.passed and "no answer (HTTP 503)" in refused.describe()


def test_what_is_served_is_what_its_manifest_says_or_nothing_starts(tiny_onnx, tmp_path) -> None:
    """Each change below, made after writing, passes a check of the manifest's file list alone (the
    first version's); each is refused before any server starts (found by review)."""
    from dgla_export.errors import ServeError
    from dgla_export.triton.serving_copy import serving_repository

    written = tmp_path / "written"
    write_repository(tiny_onnx["fp32"], written)
    manifest = written / "dgla" / "1" / "manifest.json"

    def config_env(repo: Path) -> None:  # a config naming an environment of the attacker's
        config = repo / "dgla_preprocess" / "config.pbtxt"
        extra = 'parameters { key: "EXECUTION_ENV_PATH" value { string_value: "/x" } }\n'
        config.write_text(config.read_text() + extra)

    changes = {
        "a config that runs other code": (config_env, "config.pbtxt changed"),
        "a module beside the model's code": (
            lambda repo: (repo / "dgla_preprocess" / "1" / "PIL.py").write_text("print('x')"), "not in its manifest"),
        "class names swapped": (
            lambda repo: (repo / "dgla" / "labels.txt").write_text("NV\nMEL\n"), "labels.txt changed"),
        "no manifest": (lambda repo: (repo / "dgla" / "1" / "manifest.json").unlink(), "no version manifest"),
        "a manifest listing no files": (
            lambda repo: (repo / "dgla" / "1" / "manifest.json").write_text(
                json.dumps({**json.loads(manifest.read_text()), "files": {}})), "not a manifest"),
    }  # fmt: skip
    for case, (change, said) in changes.items():
        repo = tmp_path / case.replace(" ", "_")
        shutil.copytree(written, repo)
        serving_repository(repo, tmp_path / f"{repo.name}-premise", gpu=False)  # the premise: it served before
        change(repo)
        with pytest.raises(ServeError, match=said):
            serving_repository(repo, tmp_path / f"{repo.name}-copy", gpu=False)
    with pytest.raises(ServeError, match=r"no versioned ensemble '\.\./outside'"):
        serving_repository(written, tmp_path / "outside-copy", gpu=False, versions={"../outside": 1})


def test_a_report_that_is_not_a_pass_with_golden_answers_is_refused(tiny_onnx, tmp_path, capsys) -> None:
    graph = tmp_path / "tiny.onnx"
    shutil.copyfile(tiny_onnx["fp32"], graph)
    report = json.loads(report_beside(tiny_onnx["fp32"]).read_text())
    forged = {
        "passed is not True": ({**report, "passed": "no"}, "FAILED validation"),
        "no golden answers": ({k: v for k, v in report.items() if k != "golden"}, "no golden answers"),
    }
    for case, (content, said) in forged.items():
        report_beside(graph).write_text(json.dumps(content))
        code = export_main(["triton", "--onnx", str(graph), "--output", str(tmp_path / "repo")])
        err = capsys.readouterr().err
        assert code == 2 and said in err, (case, err)


def test_an_int8_graph_is_served_only_on_the_runtime_it_passed_on(tiny_onnx, tiny_int8, tmp_path, capsys) -> None:
    """INT8 arithmetic differs between runtimes: a pass on ONNX Runtime admits no OpenVINO serving."""
    graph = tmp_path / "int8.onnx"
    shutil.copyfile(tiny_int8["cpu"][0], graph)
    report = json.loads(report_beside(tiny_onnx["fp32"]).read_text())
    report |= {"graph_sha256": sha256_file(graph), "precision": "int8", "runtime": "onnxruntime-cpu-int8"}
    report_beside(graph).write_text(json.dumps(report))
    argv = ["triton", "--onnx", str(graph)]
    assert export_main([*argv, "--runtime", "openvino", "--output", str(tmp_path / "ov")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "validated this INT8 graph on onnxruntime-cpu-int8" in err and "--runtime openvino" in err, err
    assert not (tmp_path / "ov").exists()
    assert export_main([*argv, "--output", str(tmp_path / "ort")]) == 0  # the premise: the report admits it there


@NEEDS_TRITON
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs OpenVINO")
def test_an_fp32_repository_computed_in_bf16_where_it_is_served_is_refused(tiny_onnx, tmp_path) -> None:
    """The issue's case: a CPU with native BF16 makes OpenVINO (Triton's backend, and dgla-serve's
    stand-in) compute the FP32 graph in BF16, whatever the repository says. Written for FP32, the
    start is refused; written with --openvino-bf16 (BF16 declared, its tolerance), it serves."""
    from dgla_export.runtimes.openvino import cpu_capabilities
    from dgla_export.triton.repository import TritonOptions
    from triton_repository.serving import Serve

    if "BF16" not in cpu_capabilities():
        pytest.skip("this CPU has no BF16: OpenVINO computes FP32 here, as the repository says")
    for bf16, expected in ((False, 3), (True, 0)):
        repository = tmp_path / f"bf16-{bf16}"
        write_repository(tiny_onnx["fp32"], repository, options=TritonOptions(runtime="openvino", openvino_bf16=bf16))
        server = Serve(repository, extra=["--log", str(tmp_path / f"server-{bf16}.log")])
        if expected == 3:
            code = server.process.wait(timeout=300)
            stderr = server.stop()
            assert code == 3 and "allowed for fp32" in stderr, (code, stderr)
            print(next(line for line in stderr.splitlines() if "FAILED" in line))
        else:
            server.wait_ready()
            said = server.stderr_so_far()
            server.stop()
            assert "self-check passed" in said and "allowed for bf16" in said, said
