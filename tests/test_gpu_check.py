"""The GPU check's dry mode: the same script and stages a GPU visit runs, on this CPU with the tiny
model, in an environment like the bare GPU box's (make test passes it as DGLA_GPUBOX_PYTHON: numpy 2,
none of the package's wheels but those the check carries)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# make test runs it (after `gpu_check.sh prepare`); make test-fast does not: the dry run takes a
# minute, and without prepared wheels its fixture downloads them
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
GPUBOX = os.environ.get("DGLA_GPUBOX_PYTHON")


def _check(*args: str, python: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHON": python or GPUBOX or sys.executable, **env}
    environment.pop("PYTHONPATH", None)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=environment, timeout=600)


@pytest.fixture(scope="module")
def dry(tmp_path_factory) -> Path:
    if not list((ROOT / "build" / "gpu-check" / "wheels").glob("*.whl")):
        prepared = _check("prepare", python=sys.executable)
        assert prepared.returncode == 0, prepared.stderr[-2000:]
    out = tmp_path_factory.mktemp("gpu-check") / "out"
    result = _check("dry", str(out))
    assert result.returncode == 0, (
        f"dry run exit {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return out


def _json(out: Path, name: str) -> dict:
    return json.loads((out / name).read_text())


def test_the_dry_run_leaves_every_record_and_a_clean_summary(dry) -> None:
    stages = _json(dry, "stages.json")
    assert {name: info["rc"] for name, info in stages.items()} == dict.fromkeys(
        ("env", "preprocess", "maps", "bench", "compile"), 0
    ), stages
    summary = _json(dry, "summary.json")
    assert (summary["exit"], summary["missing"], summary["parity_failed"]) == (0, [], [])
    text = (dry / "summary.md").read_text()
    for heading in ("Grad-CAM and logits", "## bench", "Fast preprocessing", "Not run on this machine"):
        assert heading in text, text
    assert not list(dry.glob("*.partial"))


def test_the_environment_is_the_box_s_and_names_what_cannot_run(dry) -> None:
    env = _json(dry, "env.json")
    if GPUBOX:  # the environment make test builds: numpy 2, as on the box
        assert env["numpy"].startswith("2."), env["numpy"]
        assert env["machine"].get("onnxruntime-gpu") is None and env["machine"]["onnxruntime"]
    assert env["commit"] and env["commit"] != "not a git checkout"
    assert env["gemm_tflops"]["fp32"] > 0.001, env["gemm_tflops"]  # above 1 GFLOP/s on any CPU
    assert set(env["not_run"]) >= {"tensorrt", "onnxruntime-cuda", "onnxruntime-tensorrt", "dali"}
    assert all(len(why) > 20 for why in env["not_run"].values()), env["not_run"]


def test_maps_and_logits_are_held_to_their_precision(dry) -> None:
    maps = _json(dry, "maps.json")["variants"]
    fp32, bf16 = maps["eager"], maps["autocast-bf16"]
    assert fp32["passed"] and bf16["passed"], (fp32, bf16)
    # the same CPU and FP32 on both sides: identical; BF16 is not, but within its tolerance
    assert fp32["maps"]["top1_max_abs"] < 1e-6, fp32["maps"]
    assert 0 < bf16["logits"]["probs"]["max_abs"] <= bf16["logits"]["tolerance"]["probs_abs"], bf16["logits"]["probs"]
    tolerance = bf16["logits"]["tolerance"]
    assert 0 < bf16["maps"]["top1_max_abs"] <= tolerance["cam_abs"], bf16["maps"]
    assert bf16["maps"]["hottest_agreement"] >= tolerance["cam_hottest"], bf16["maps"]


def test_the_bench_record_is_dgla_bench_s(dry) -> None:
    results = _json(dry, "bench/results.json")
    by_name = {b["backend"]: b for b in results["backends"]}
    # the CPU's defaults: BF16 autocast (alone and with channels_last) joins them on a CPU with BF16 units
    bf16 = {"torch-autocast-bf16-cpu", "torch-autocast-bf16+channels_last-cpu"}
    assert set(by_name) - bf16 == {"torch-eager-cpu", "torch-channels_last-cpu"}
    for backend in by_name.values():
        assert backend["verdict"] == "passed", backend
        bound = 1e-5 if backend["precision"] == "fp32" else backend["parity"]["tolerance"]["probs_abs"]
        assert backend["parity"]["probs"]["max_abs"] <= bound, backend["parity"]["probs"]
        assert [t["batch"] for t in backend["timing"]] == [1, 2]
        assert all(t["gemm_fraction"] > 0 for t in backend["timing"]), backend["timing"]
    assert (dry / "bench" / "results.md").is_file()


def test_preprocessing_uses_every_core(dry) -> None:
    prep = _json(dry, "preprocess.json")
    assert prep["workers"] == os.cpu_count()
    assert prep["photos_per_s"] > 0 and prep["one_photo"]["p50_ms"] > 0, prep


def test_a_stage_that_ran_out_of_time_is_named_and_fails_the_check(dry, tmp_path) -> None:
    out = tmp_path / "late"
    shutil.copytree(dry, out)
    stages = _json(out, "stages.json")
    stages["bench"] = {"rc": 124, "seconds": 240, "why": "stopped after 240 s"}
    (out / "stages.json").write_text(json.dumps(stages))
    shutil.rmtree(out / "bench")
    result = subprocess.run(
        [GPUBOX or sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "summary", "--output", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "bench: {'rc': 124" in (out / "summary.md").read_text()
    assert _json(out, "summary.json")["missing"] == ["bench"]


def test_bad_usage_and_an_unprepared_tree_say_how_to_fix_it(tmp_path) -> None:
    usage = _check("gpu", str(tmp_path))
    assert usage.returncode == 2 and usage.stderr.startswith("usage: scripts/gpu_check.sh"), usage.stderr
    bare = tmp_path / "tree"
    shutil.copytree(ROOT / "scripts", bare / "scripts")
    result = subprocess.run(["bash", str(bare / "scripts" / "gpu_check.sh"), "dry", str(tmp_path / "o")],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and "run 'scripts/gpu_check.sh prepare' first" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
