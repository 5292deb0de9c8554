"""Every CLI keeps one contract: a user's error is one line naming the input and the fix, exit 2,
no traceback, nothing half-written; a broken artefact never passes with exit 0."""

from __future__ import annotations

import itertools
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from inputs import text_bomb_png

from dgla_export.errors import EXIT_MISMATCH, EXIT_USAGE
from dgla_export.io import report_beside
from dgla_export.tools.bench import main as bench_main
from dgla_export.tools.client import main as client_main
from dgla_export.tools.export import main as export_main


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if "error" in line]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert len(lines[0]) < 600, f"{len(lines[0])} characters: {lines[0][:200]}..."
    return lines[0]


@pytest.fixture(scope="module")
def truncated(tiny_onnx, tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "truncated.onnx"
    path.write_bytes(tiny_onnx["fp32"].read_bytes()[:50_000])
    return path


@pytest.fixture(scope="module")
def junk_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "ckpt.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


QUICK_BENCH = ["--model", "dgla_tiny", "--batches", "1", "--min-seconds", "0.1", "--min-runs", "2", "--in-process"]


def test_bench_refuses_a_truncated_graph_before_any_work(truncated, tmp_path, capsys) -> None:
    argv = [*QUICK_BENCH, "--onnx", str(truncated), "--fail-on-mismatch", "--output", str(tmp_path / "out")]
    assert bench_main(argv) == EXIT_USAGE
    _one_line_error(capsys, str(truncated), "not a readable ONNX file", "dgla-export onnx")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["validate", "triton"])
def test_export_commands_refuse_a_truncated_graph(truncated, tmp_path, capsys, command) -> None:
    argv = (
        ["validate", str(truncated), "--model", "dgla_tiny"]
        if command == "validate"
        else ["triton", "--onnx", str(truncated), "--output", str(tmp_path / "repo")]
    )
    assert export_main(argv) == EXIT_USAGE
    _one_line_error(capsys, str(truncated), "truncated or not ONNX")
    assert not (tmp_path / "repo").exists()


def test_image_folders_with_junk_or_nothing(tiny_onnx, tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [*QUICK_BENCH, "--onnx", str(tiny_onnx["fp32"]), "--output", str(tmp_path / "out")]
    assert bench_main([*argv, "--images", str(empty)]) == EXIT_USAGE
    _one_line_error(capsys, "no images", str(empty))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.png").write_text("not an image")
    assert bench_main([*argv, "--images", str(junk)]) == EXIT_USAGE
    _one_line_error(capsys, "notes.png", "not a known image format")
    (junk / "notes.png").write_bytes(text_bomb_png())  # a decoder's ValueError: still the one image error
    assert bench_main([*argv, "--images", str(junk)]) == EXIT_USAGE
    _one_line_error(capsys, "notes.png", "damaged or unsupported data")


def test_bad_numbers_name_their_option(tiny_onnx, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench_main(["--onnx", str(tiny_onnx["fp32"]), "--batches", "0"])
    assert exit_info.value.code == EXIT_USAGE
    assert "argument --batches" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        export_main(["onnx", "--output", "x.onnx", "--batch", "abc"])
    assert exit_info.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "argument --batch" in err and "MIN:MAX" in err


def test_a_corrupt_checkpoint_is_called_corrupt(tiny_onnx, junk_checkpoint, tmp_path, capsys) -> None:
    argv = [*QUICK_BENCH, "--backends", "torch-eager-cpu", "--weights", str(junk_checkpoint)]
    assert bench_main([*argv, "--output", str(tmp_path / "out")]) == EXIT_USAGE
    _one_line_error(capsys, str(junk_checkpoint), "corrupt")
    argv = ["onnx", "--model", "dgla_tiny", "--weights", str(junk_checkpoint), "--output", str(tmp_path / "g.onnx")]
    assert export_main(argv) == EXIT_USAGE
    _one_line_error(capsys, "corrupt")
    # a graph exported from other weights: the digests disagree before the file is even read
    argv = ["validate", str(tiny_onnx["fp32"]), "--weights", str(junk_checkpoint)]
    assert export_main(argv) == EXIT_USAGE
    _one_line_error(capsys, "exported from the demo weights", "drop --weights")


def test_a_mismatching_checkpoint_is_summarised(tiny_onnx, tmp_path, capsys) -> None:
    from dgla_export import create_model

    path = tmp_path / "other.pt"
    torch.save(create_model("gla_tiny").state_dict(), path)  # no DBI fusion, so fuse.* is missing
    argv = ["onnx", "--model", "dgla_tiny", "--weights", str(path), "--output", str(tmp_path / "g.onnx")]
    assert export_main(argv) == EXIT_USAGE
    line = _one_line_error(capsys, "does not match the model: ", "missing from the checkpoint", "--partial")
    assert "fuse.0.weight" in line and ":;" not in line


def test_onnx_checks_images_before_exporting(tmp_path, capsys) -> None:
    output = tmp_path / "model.onnx"
    argv = ["onnx", "--model", "dgla_tiny", "--output", str(output), "--images", str(tmp_path / "nowhere")]
    assert export_main(argv) == EXIT_USAGE
    _one_line_error(capsys, "nowhere", "does not exist")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_graph_failing_validation_never_reaches_the_output(tmp_path, capsys, monkeypatch) -> None:
    from dgla_export.models import config

    # Tolerances are data: an FP32 bound of zero makes ONNX Runtime's summation-order error fail.
    monkeypatch.setitem(config.DEFAULT_TOLERANCES, "fp32", config.Tolerance(logits_rel=0.0, probs_abs=0.0))
    output = tmp_path / "model.onnx"
    argv = ["onnx", "--model", "dgla_tiny", "--output", str(output), "--batch", "1:2", "--weights", "random"]
    assert export_main(argv) == EXIT_MISMATCH
    err = capsys.readouterr().err
    assert not output.exists()
    assert (tmp_path / "model.failed.onnx").is_file() and "model.failed.onnx" in err
    # no staging left; the failed graph's report beside it, as a passed one would be
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.failed.onnx", "model.failed.validation.json"]
    first = (tmp_path / "model.failed.onnx").read_bytes()
    assert export_main(argv) == EXIT_MISMATCH  # an earlier failed graph is kept, never overwritten
    assert "model.failed-2.onnx" in capsys.readouterr().err
    assert (tmp_path / "model.failed.onnx").read_bytes() == first
    assert export_main([*argv, "--force"]) == EXIT_MISMATCH  # --force replaces the first one
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.failed-2.onnx", "model.failed-2.validation.json", "model.failed.onnx", "model.failed.validation.json"
    ]  # fmt: skip


def test_bench_measures_fp16_on_the_cpu_and_warns_of_unused_files(tiny_onnx, tmp_path, capsys) -> None:
    argv = [*QUICK_BENCH, "--onnx", str(tiny_onnx["fp32"]), "--onnx-fp16", str(tiny_onnx["fp16"])]
    assert bench_main([*argv, "--backends", "onnxruntime-cpu-fp16", "--output", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "warning: --onnx " in err and "not used" in err
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    fp16 = results["backends"][0]
    assert fp16["backend"] == "onnxruntime-cpu-fp16" and fp16["parity"]["passed"], fp16.get("parity")
    assert fp16["timing"][0]["p50_ms"] > 0
    swapped = [*QUICK_BENCH, "--onnx", str(tiny_onnx["fp16"]), "--output", str(tmp_path / "b")]
    assert bench_main(swapped) == EXIT_USAGE
    _one_line_error(capsys, "fp16 graph", "--onnx-fp16")


def test_a_requested_backend_that_cannot_run_is_an_error(tiny_onnx, tmp_path, capsys) -> None:
    argv = [*QUICK_BENCH, "--onnx", str(tiny_onnx["fp32"]), "--output", str(tmp_path / "out")]
    assert bench_main([*argv, "--backends", "onnxruntime-cpu-fp16"]) == EXIT_USAGE
    _one_line_error(capsys, "onnxruntime-cpu-fp16", "no --onnx-fp16 given")


def test_labels_rows_must_be_one_hot(tiny_onnx, tmp_path, images, capsys) -> None:
    rows = ["image,MEL,NV,BCC,AKIEC,BKL,DF,VASC", f"{images[0][0]},0,0,0,0,0,0,0"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    argv = [*QUICK_BENCH, "--onnx", str(tiny_onnx["fp32"]), "--labels", str(tmp_path / "labels.csv")]
    assert bench_main([*argv, "--output", str(tmp_path / "out")]) == EXIT_USAGE
    _one_line_error(capsys, "line 2", images[0][0], "one 1")


def test_client_names_missing_files(capsys) -> None:
    assert client_main(["/nonexistent/lesion.jpg", "--url", "127.0.0.1:1"]) == EXIT_USAGE
    _one_line_error(capsys, "/nonexistent/lesion.jpg")


@pytest.mark.parametrize(
    "command",
    [
        ["dgla-export"], ["dgla-export", "onnx"], ["dgla-export", "validate"], ["dgla-export", "trt"],
        ["dgla-export", "triton"], ["dgla-export", "info"], ["dgla-bench"], ["dgla-client"], ["dgla-serve"],
        ["dgla-gateway"],
    ],
)  # fmt: skip
def test_help_is_written_for_users(command) -> None:
    modules = {
        "dgla-export": "dgla_export.tools.export", "dgla-bench": "dgla_export.tools.bench",
        "dgla-client": "dgla_export.tools.client", "dgla-serve": "dgla_export.tools.serve",
        "dgla-gateway": "dgla_export.tools.gateway",
    }  # fmt: skip
    code = f"import sys; from {modules[command[0]]} import build_parser as b; b().parse_args(sys.argv[1:])"
    result = subprocess.run([sys.executable, "-c", code, *command[1:], "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "``" not in text and ":class:" not in text, text
    options = [line.split()[0] for line in text.splitlines() if line.startswith("  -")]
    lines = [*text.splitlines(), ""]
    # an option alone on its line has its help on the next, indented to the help column
    undocumented = [
        line for line, after in itertools.pairwise(lines) if line.startswith("  --") and len(line.split()) == 1
        and not after.startswith(" " * 8)
    ]  # fmt: skip
    assert options and not undocumented, undocumented


def test_single_batch_plot_has_measured_ticks_and_starts_at_zero() -> None:
    import matplotlib.pyplot as plt

    from dgla_export.benchmarking.report import throughput_figure

    rows = [
        {"backend": "a", "batch": 1, "throughput_pairs_s": 2.0, "parity_passed": True},
        {"backend": "b", "batch": 1, "throughput_pairs_s": 3.0, "parity_passed": True},
    ]
    fig = throughput_figure(rows, "t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1"]
    assert ax.get_ylim()[0] == 0 and ax.get_xscale() == "linear"
    plt.close(fig)
    rows = [{"backend": "a", "batch": b, "throughput_pairs_s": float(b), "parity_passed": True} for b in (1, 4, 32)]
    fig = throughput_figure(rows, "t")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "4", "32"]
    plt.close(fig)


# Nothing a user owns is lost: --force replaces only an earlier output of the same command.


def test_triton_force_never_wipes_a_users_folder(tiny_onnx, tmp_path, capsys) -> None:
    mydata = tmp_path / "mydata"
    mydata.mkdir()
    (mydata / "precious.txt").write_text("x")
    assert export_main(["triton", "--onnx", str(tiny_onnx["fp32"]), "--output", str(mydata), "--force"]) == EXIT_USAGE
    _one_line_error(capsys, str(mydata), "precious.txt", "did not write")
    assert sorted(p.name for p in mydata.iterdir()) == ["precious.txt"]


def test_triton_force_refuses_the_current_folder_and_an_inputs_folder(tiny_onnx, tmp_path, capsys, monkeypatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    shutil.copyfile(tiny_onnx["fp32"], scratch / "tiny.onnx")
    shutil.copyfile(report_beside(tiny_onnx["fp32"]), scratch / "tiny.validation.json")  # it travels with the graph
    monkeypatch.chdir(scratch)
    assert export_main(["triton", "--onnx", "tiny.onnx", "--output", ".", "--force"]) == EXIT_USAGE
    _one_line_error(capsys, "is the current folder")
    assert sorted(p.name for p in scratch.iterdir()) == ["tiny.onnx", "tiny.validation.json"]
    # an earlier repository of this command, with the input moved inside it
    assert export_main(["triton", "--onnx", "tiny.onnx", "--output", "repo"]) == 0
    shutil.move("tiny.onnx", "repo/tiny.onnx")
    shutil.move("tiny.validation.json", "repo/tiny.validation.json")
    before = sorted(str(p) for p in Path("repo").rglob("*"))
    assert export_main(["triton", "--onnx", "repo/tiny.onnx", "--output", "repo", "--force"]) == EXIT_USAGE
    _one_line_error(capsys, "holds the input repo/tiny.onnx")
    assert sorted(str(p) for p in Path("repo").rglob("*")) == before


def test_triton_force_replaces_its_own_earlier_repository(tiny_onnx, tmp_path, capsys) -> None:
    argv = ["triton", "--onnx", str(tiny_onnx["fp32"]), "--output", str(tmp_path / "repo")]
    assert export_main(argv) == 0
    (tmp_path / "repo" / "dgla_onnx" / "1" / "model.onnx").write_bytes(b"stale")
    assert export_main(argv) == EXIT_USAGE
    _one_line_error(capsys, "--force")
    assert export_main([*argv, "--force"]) == 0
    served = (tmp_path / "repo" / "dgla_onnx" / "1" / "model.onnx").read_bytes()
    assert served == tiny_onnx["fp32"].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # no staging or old copy left beside


def test_onnx_output_paths_are_checked_before_the_export(tmp_path, capsys) -> None:
    folder = tmp_path / "existing"
    folder.mkdir()
    started = time.monotonic()
    assert export_main(["onnx", "--model", "dgla_tiny", "--output", str(folder), "--force"]) == EXIT_USAGE
    _one_line_error(capsys, str(folder), "is a folder")
    report = tmp_path / "report.json"
    report.write_text("{}")
    argv = ["onnx", "--model", "dgla_tiny", "--output", str(tmp_path / "m.onnx"), "--report", str(report)]
    assert export_main(argv) == EXIT_USAGE
    _one_line_error(capsys, str(report), "--force")
    assert time.monotonic() - started < 10, "refused only after slow work"
    assert report.read_text() == "{}"


def test_an_unwritable_output_names_the_users_path(immutable, capsys) -> None:
    output = immutable / "tiny.onnx"
    assert export_main(["onnx", "--model", "dgla_tiny", "--output", str(output)]) == EXIT_USAGE
    line = _one_line_error(capsys, f"cannot write {output}", "not writable")
    assert f".{output.name}." not in line


def test_bench_output_is_replaced_only_when_it_is_its_own(tiny_onnx, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = [*QUICK_BENCH, "--onnx", str(tiny_onnx["fp32"]), "--output", str(out)]
    assert bench_main([*argv, "--backends", "onnxruntime-cpu-fp32"]) == 0
    assert (out / "predictions" / "onnxruntime-cpu-fp32.csv").is_file()
    capsys.readouterr()
    assert bench_main([*argv, "--backends", "torch-eager-cpu"]) == EXIT_USAGE
    _one_line_error(capsys, str(out), "--force")
    assert bench_main([*argv, "--backends", "torch-eager-cpu", "--force"]) == 0
    predictions = sorted(p.name for p in (out / "predictions").iterdir())
    assert predictions == ["reference-torch-fp32.csv", "torch-eager-cpu.csv"]  # no stale results of the first run
    (out / "mine.txt").write_text("x")
    capsys.readouterr()
    assert bench_main([*argv, "--backends", "torch-eager-cpu", "--force"]) == EXIT_USAGE
    _one_line_error(capsys, "mine.txt")


def test_bench_refuses_a_graph_of_another_model_at_once(tiny_onnx, tmp_path, capsys) -> None:
    argv = [*QUICK_BENCH, "--model", "gla_tiny", "--onnx", str(tiny_onnx["fp32"]), "--output", str(tmp_path / "o")]
    started = time.monotonic()
    assert bench_main(argv) == EXIT_USAGE
    _one_line_error(capsys, "is a dgla_tiny graph, not gla_tiny", "--model dgla_tiny")
    assert time.monotonic() - started < 10 and not (tmp_path / "o").exists()


def test_labels_that_do_not_match_the_images_are_named(tiny_onnx, tmp_path, images, capsys) -> None:
    rows = ["image,MEL,NV,BCC,AKIEC,BKL,DF,VASC"]
    rows += [f"{name}.jpg,1,0,0,0,0,0,0" for name, _ in images[1:]] + ["ISIC_0000000.jpg,0,1,0,0,0,0,0"]
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n", encoding="utf-8-sig")
    argv = [*QUICK_BENCH, "--onnx", str(tiny_onnx["fp32"]), "--backends", "onnxruntime-cpu-fp32"]
    argv += ["--labels", str(labels), "--output", str(tmp_path / "o")]
    assert bench_main(argv) == EXIT_USAGE
    unlabelled, orphan = f"1 images without a label ({images[0][0]})", "1 labels without an image (ISIC_0000000.jpg)"
    _one_line_error(capsys, unlabelled, orphan)
    assert bench_main([*argv, "--allow-label-subset"]) == 0
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["reference_metrics"]["images"] == len(images) - 1


def test_client_names_empty_folders(tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    assert client_main([str(empty), "--url", "127.0.0.1:1"]) == EXIT_USAGE
    _one_line_error(capsys, str(empty), "holds no images", "only notes.txt")


def test_a_hint_prints_as_written_and_runs_as_printed(capsys) -> None:
    from dgla_export.console import Console
    from dgla_export.install import install_command

    hint = install_command("openvino")
    Console("dgla-bench").print(f"skipped onnxruntime-openvino: OpenVINO is not installed ({hint})")
    printed = capsys.readouterr().err
    assert hint in printed, printed  # rich took "[openvino]" for a style tag, and broke long lines
    argv = shlex.split(hint)
    assert argv[:5] == [sys.executable, "-m", "pip", "install", "-e"] and argv[5].endswith("[openvino]")
    # pip resolves it as printed (the clone's metadata, its extras): a dry run, nothing installed
    run = subprocess.run(
        [*argv, "--dry-run", "--no-deps", "--no-build-isolation", "--quiet"], capture_output=True, text=True,
        cwd=tempfile.gettempdir(), timeout=300,
    )  # fmt: skip
    print(f"{hint}: exit {run.returncode}")
    assert run.returncode == 0, run.stderr[-2000:]


def test_a_checkpoint_given_as_a_graph_is_named_as_one(tiny, tiny_onnx, tmp_path, capsys) -> None:
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "my checkpoints"
    folder.mkdir()
    torch.save(tiny.state_dict(), folder / "ckpt.pt")
    torch.save(tiny.state_dict(), folder / "legacy.pth", _use_new_zipfile_serialization=False)
    save_file(tiny.state_dict(), folder / "ckpt.safetensors")
    for name in ("ckpt.pt", "legacy.pth", "ckpt.safetensors"):
        assert bench_main([*QUICK_BENCH, "--onnx", str(folder / name)]) == EXIT_USAGE
        _one_line_error(
            capsys, "is a PyTorch checkpoint, not an ONNX graph", f"--weights {shlex.quote(str(folder / name))}"
        )
    damaged = tmp_path / "damaged.onnx"  # ends like a zip: neither a checkpoint nor a crash
    damaged.write_bytes(tiny_onnx["fp32"].read_bytes()[:4096] + b"PK\x05\x06" + bytes(18))
    assert bench_main([*QUICK_BENCH, "--onnx", str(damaged)]) == EXIT_USAGE
    _one_line_error(capsys, "not a readable ONNX file")


def test_progress_in_a_log_is_plain_periodic_lines(tiny_onnx, capsys, monkeypatch) -> None:
    from dgla_export import console

    monkeypatch.setattr(console, "HEARTBEAT_SECONDS", 0.05)
    assert export_main(["validate", str(tiny_onnx["fp32"]), "--model", "dgla_tiny", "--batches", "1"]) == 0
    err = capsys.readouterr().err
    progress = [line for line in err.splitlines() if line.startswith("dgla-export: [")]
    assert any("validating against PyTorch FP32" in line for line in progress), err
    steps = [line for line in progress if "still validating against PyTorch FP32: " in line]
    assert steps, err  # the periodic lines name the latest step inside the long one
    assert all(line.count(" s]") == 1 and " s)" not in line for line in progress), err  # the time once, in front


@pytest.mark.slow
def test_export_progress_in_a_pipe_names_the_users_path_and_no_library_chatter(tmp_path) -> None:
    """The command as a user pipes it: a fresh process (torch not yet imported), stderr not a terminal;
    the widest table (validation of an explained graph) whole within the plain width."""
    from dgla_export.console import PLAIN_WIDTH

    output = tmp_path / "tiny.onnx"
    command = [sys.executable, "-m", "dgla_export.tools.export", "onnx", "--model", "dgla_tiny", "--output",
               str(output), "--batch", "1:2", "--batches", "1", "--explain"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    err = result.stderr
    assert any(line.startswith("dgla-export: [") and "exporting" in line for line in err.splitlines()), err
    assert ".tiny.onnx." not in err, err  # the user's path, never a staging name
    for chatter in ("torchvision is not installed", "[W]", "[I]", "Folding Constants", "W12", "[W:onnxruntime"):
        assert chatter not in err, f"library chatter reached the user: {chatter!r} in\n{err}"
    row = next(line for line in err.splitlines() if line.startswith("│ 1 "))
    assert row.rstrip().endswith("│") and row.split("│")[-2].strip() == "pass", f"the validation row is cut:\n{err}"
    assert max(len(line) for line in err.splitlines()) <= PLAIN_WIDTH, err


def test_image_limit_and_preprocessing_path_reach_every_command(tiny_onnx, tmp_path, capsys) -> None:
    from inputs import bomb_png

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "big.png").write_bytes(bomb_png(2000, 1500))  # 3 MP
    argv = ["validate", str(tiny_onnx["fp32"]), "--model", "dgla_tiny", "--images", str(folder)]
    assert export_main([*argv, "--max-pixels", "2M"]) == EXIT_USAGE
    _one_line_error(capsys, "big.png", "2000x1500 pixels", "limit of 2 MP")
    report = tmp_path / "report.json"
    assert export_main([*argv, "--batches", "1", "--preprocess", "exact", "--report", str(report)]) == 0
    assert json.loads(report.read_text())["preprocessing"] == "exact"
    out = tmp_path / "bench"
    argv = [*QUICK_BENCH, "--onnx", str(tiny_onnx["fp32"]), "--backends", "onnxruntime-cpu-fp32", "--output", str(out)]
    assert bench_main([*argv, "--images", str(folder), "--max-pixels", "1M"]) == EXIT_USAGE
    _one_line_error(capsys, "big.png", "limit of 1 MP")
    assert bench_main([*argv, "--preprocess", "exact"]) == 0
    assert json.loads((out / "results.json").read_text())["options"]["preprocess"] == "exact"
    assert "exact preprocessing" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["client", "serve"])
def test_client_and_serve_help_load_neither_torch_nor_onnxruntime(command) -> None:
    """A client on a reception PC, or a server start, pays for no framework it does not run."""
    code = (
        "import sys\n"
        f"from dgla_export.tools.{command} import build_parser\n"
        "try:\n"
        "    build_parser().parse_args(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "import dgla_export.overlay, dgla_export.triton.client  # what classify and --heatmap run\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'onnxruntime', 'onnx', 'tensorrt'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
