"""The written repository on a real Triton server (PyTriton's tritonserver), started by dgla-serve.

No mocks: `dgla-serve` runs as a subprocess on loopback ports, every server is stopped by its PID
in the fixture's teardown (also when a test fails), and the teardown asserts that no process of
the server's group and no shared-memory segment is left. Most tests use the run's shared server
(``triton_server``); those that start their own test what one shared server cannot show.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from inputs import as_sent, bomb_png, photo_jpeg

from dgla_export.tools.client import main
from dgla_export.triton.client import ClientError, classify
from dgla_export.triton.repository import write_repository
from dgla_export.triton.security import ADMIN_HEADER
from triton_repository.conftest import models_of
from triton_repository.serving import Serve, free_ports

pytestmark = pytest.mark.slow  # run by make test, not by make test-fast

if importlib.util.find_spec("pytriton") is None:
    pytest.skip("Triton is not installed (pip install 'dgla-export[serve]')", allow_module_level=True)

TOLERANCE = 1e-5  # served probabilities vs local ONNX Runtime's
MAPS = ("cam", "cam_top1")


@pytest.fixture(scope="module")
def served_graph(tiny_explained) -> Path:
    """The graph the shared server serves as dgla: exported with explain, so its maps are served too."""
    return tiny_explained["fp32"]


@pytest.fixture
def served(triton_server):
    """The shared server (tests/triton_repository/conftest.py) and what dgla-serve printed when ready."""
    return triton_server, triton_server.output


@pytest.fixture(scope="module")
def image_files(images, tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    paths = []
    for name, image in images[:4]:
        paths.append(folder / f"{name}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def _local_probs(
    onnx_path: Path, paths: list[Path], config, method: str = "fast", output: str = "probs", send: str = "image"
) -> np.ndarray:
    """The graph's answers here, from the photos as the server preprocesses them (``send="image"``),
    or from the 16-bit pixels a pixels-only client sends, normalised as NAME_normalise does."""
    from dgla_export.preprocess import Preprocessing
    from dgla_export.runtimes.onnxruntime import create_session

    arrays = as_sent(Preprocessing.of(config, method), paths, send)  # type: ignore[arg-type]
    return create_session(onnx_path, "cpu").run([output], dict(zip(config.input_names, arrays, strict=True)))[0]


def _probs(predictions) -> np.ndarray:
    assert all(p.error is None for p in predictions), [p.error for p in predictions]
    return np.stack([p.probs for p in predictions])


def test_every_model_loads_ready_on_loopback(served) -> None:
    server, output = served
    states = dict(re.findall(r"^model\s+(\S+) v1: (\S+)", output, flags=re.M))
    held = sorted(p.name for p in server.repository.iterdir() if (p / "config.pbtxt").is_file())
    assert states == dict.fromkeys(held, "READY"), states
    assert server.written["dgla"] == models_of("dgla"), server.written["dgla"]
    assert server.written["dgla_int8"] == models_of("dgla_int8")
    assert {"dgla_bad_shape", "dgla_slow"} <= set(states)
    assert "ONNX Runtime (Python backend)" in output
    assert re.search(rf"^grpc\s+127\.0\.0\.1:{server.grpc}$", output, flags=re.M), output
    listening = subprocess.run(["ss", "-ltn"], capture_output=True, text=True).stdout if shutil.which("ss") else ""
    ports = {server.http, server.grpc, server.metrics}
    seen = set()
    for line in listening.splitlines()[1:]:
        address, _, port = line.split()[3].rpartition(":")
        if int(port) in ports:
            ip = ipaddress.ip_address(address.strip("[]"))
            ip = getattr(ip, "ipv4_mapped", None) or ip
            assert ip.is_loopback, f"port {port} listens beyond loopback: {line}"
            seen.add(int(port))
    assert not listening or seen == ports, f"not listening on {ports - seen}"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize(("model", "send"), [("dgla", "pixels"), ("dgla", "image"), ("dgla_onnx", "image")])
def test_served_probabilities_equal_local_onnxruntime(
    served, served_graph, tiny, image_files, protocol, model, send
) -> None:
    """Each way in (the ensemble's pixels-only entry point, its image input, the raw model) answers
    what the graph answers here for the same inputs."""
    server, _ = served
    url = server.grpc_url if protocol == "grpc" else server.http_url
    served_probs = _probs(classify(image_files, url=url, model=model, protocol=protocol, send=send))
    local = _local_probs(served_graph, image_files, tiny.config, send=send if model == "dgla" else "image")
    err = float(np.abs(served_probs - local).max())
    print(f"{model} ({send}) over {protocol}: served vs local probs differ by {err:.2e}")
    assert err <= TOLERANCE, f"{model} ({send}) over {protocol}: served vs local probs differ by {err:.2e}"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_corrupt_image_fails_alone_and_the_server_stays_up(served, image_files, tmp_path, protocol) -> None:
    server, _ = served
    url = server.grpc_url if protocol == "grpc" else server.http_url
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(image_files[0].read_bytes()[:200])  # a truncated PNG
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not an image")
    mixed = [image_files[0], corrupt, image_files[1], junk]
    predictions = classify(mixed, url=url, model="dgla", protocol=protocol, send="image")  # the server decodes
    assert [p.error is None for p in predictions] == [True, False, True, False]
    assert "cannot decode image (200 bytes)" in predictions[1].error, predictions[1].error
    assert "not a known image format" in predictions[3].error, predictions[3].error
    again = classify(image_files[:1], url=url, model="dgla", protocol=protocol, send="image")
    assert again[0].error is None and abs(float(again[0].probs.sum()) - 1) < 1e-5


def test_large_photo_is_served(served, served_graph, tiny, images, tmp_path) -> None:
    """A 24 MP camera JPEG through the ensemble: the server's fast path equals the package's."""
    server, _ = served
    photo = tmp_path / "photo_6000x4000.jpg"
    photo.write_bytes(photo_jpeg(images[2][1], (6000, 4000)))
    served_probs = _probs(classify([photo], url=server.grpc_url, model="dgla", send="image"))
    err = float(np.abs(served_probs - _local_probs(served_graph, [photo], tiny.config)).max())
    assert err <= TOLERANCE, f"6000x4000 JPEG: served vs local probs differ by {err:.2e}"
    exact = float(np.abs(served_probs - _local_probs(served_graph, [photo], tiny.config, "exact")).max())
    assert exact > TOLERANCE, f"served probs equal the exact path's ({exact:.1e}): did the fast path run?"


def test_an_image_bomb_is_refused_and_the_server_keeps_answering(served, image_files, tmp_path) -> None:
    server, _ = served
    bombs = {"56mp.png": bomb_png(8000, 7000), "144mp.png": bomb_png(12000, 12000)}
    for name, data in bombs.items():
        (tmp_path / name).write_bytes(data)
    paths = [tmp_path / name for name in bombs]
    started = time.monotonic()
    predictions = classify([*paths, image_files[0]], url=server.grpc_url, max_pixels=10**9, send="image")
    elapsed = time.monotonic() - started
    for prediction, size in zip(predictions, ("8000x7000", "12000x12000"), strict=False):
        assert prediction.error and f"image of {size} pixels" in prediction.error, prediction.error
        assert "exceeds the limit of 50 MP" in prediction.error, prediction.error  # the model parameter's limit
    assert predictions[2].error is None
    assert elapsed < 10, f"refusing two bombs and answering one image took {elapsed:.1f} s"
    # with its default limit, the client refuses the bomb itself, before sending it
    for send in ("image", "pixels"):
        (local,) = classify(paths[1:], url=server.grpc_url, send=send)
        assert "cannot read image" in local.error and "exceeds" in local.error, (send, local.error)


def _batch_sizes(server, model: str) -> dict[int, int]:
    # statistics are an admin API: behind the admin key the fixture's server was given
    headers = {ADMIN_HEADER: server.admin_key}
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/{model}/stats", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as answer:
        stats = json.load(answer)["model_stats"][0]
    return {b["batch_size"]: b["compute_infer"]["count"] for b in stats.get("batch_stats", [])}


def test_dynamic_batcher_merges_concurrent_clients(served, image_files) -> None:
    server, _ = served
    before = _batch_sizes(server, "dgla_onnx")
    clients = 6
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        jobs = [pool.submit(classify, image_files, url=server.grpc_url, model="dgla_onnx") for _ in range(clients)]
        for job in jobs:
            _probs(job.result())
    after = _batch_sizes(server, "dgla_onnx")
    merged = {size: count - before.get(size, 0) for size, count in after.items() if count > before.get(size, 0)}
    assert sum(size * count for size, count in merged.items()) == clients * len(image_files), merged
    assert max(merged) > 1, f"every executed batch had size 1: {merged}"


def test_client_errors_name_the_cause(served, image_files, capsys) -> None:
    server, _ = served
    with pytest.raises(ClientError, match="did not answer within 1 s"):
        classify(image_files[:1], url=server.grpc_url, model="dgla_slow", timeout=1, send="image")
    with pytest.raises(ClientError, match="did not answer within 1 s"):
        classify(image_files[:1], url=server.http_url, model="dgla_slow", protocol="http", timeout=1, send="image")
    with pytest.raises(ClientError, match=r"answered probs of shape \(3,\)"):
        classify(image_files[:1], url=server.grpc_url, model="dgla_bad_shape", send="image")
    # a model without a pixels-only entry point: one line naming the way out, from the command as from Python
    assert main([str(image_files[0]), "--url", server.grpc_url, "--model", "dgla_slow"]) == 2
    said = capsys.readouterr().err
    assert "no pixels-only entry point (dgla_slow_pixels is not ready)" in said and "--send image" in said, said
    with pytest.raises(ClientError, match="send='image'"):
        classify(image_files[:1], url=server.grpc_url, model="dgla_slow")
    with pytest.raises(ClientError, match="'dgla_trt' is not ready"):
        classify(image_files[:1], url=server.grpc_url, model="dgla_trt")
    with pytest.raises(ClientError, match=r"does that port speak grpc.*--protocol http"):
        classify(image_files[:1], url=server.http_url, protocol="grpc", timeout=3)  # gRPC sent to the HTTP port
    (down,) = free_ports(1)
    with pytest.raises(ClientError, match="no Triton server answers"):
        classify(image_files[:1], url=f"127.0.0.1:{down}", timeout=3)
    with pytest.raises(ClientError, match="no Triton server answers"):
        classify(image_files[:1], url=f"127.0.0.1:{down}", protocol="http", timeout=3)


def test_cli_over_http_prints_results_and_names_bad_files(served, image_files, tmp_path, capsys) -> None:
    server, _ = served
    assert main([*map(str, image_files[:2]), "--url", server.http_url, "--protocol", "http", "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.count("(") == 1 for line in lines), lines
    assert main([str(image_files[0].parent), "--url", server.grpc_url]) == 0  # a folder: every image in it
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [str(p) for p in sorted(image_files)], lines
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"junk")
    assert main([str(image_files[0]), str(junk), "--url", server.grpc_url, "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip())["image"] == str(image_files[0])
    assert captured.err.count("\n") == 1 and f"{junk}: " in captured.err and "Traceback" not in captured.err


def test_a_newcomers_folder_every_photo_under_its_own_name_nothing_skipped_in_silence(
    served, images, tmp_path, capsys
) -> None:
    """Two photos of one name, a DICOM without an extension (as PACS exports write them), and files
    that are no photos: every photo answered and mapped under its own name, the rest named in one line."""
    import torch
    from photo_encodings import ENCODINGS
    from PIL import Image

    server, _ = served
    lesions = tmp_path / "lesions"
    lesions.mkdir()
    Image.fromarray(images[0][1]).save(lesions / "skin.jpg")
    Image.fromarray(images[1][1]).save(lesions / "skin.png")
    (lesions / "1.2.840.113619.2.55.3").write_bytes(ENCODINGS["dicom_rle"](images[2][1]))
    (lesions / "notes.txt").write_text("MRN 12345\n")
    torch.save({"w": torch.zeros(2)}, lesions / "ckpt.pt")
    maps = tmp_path / "maps"
    assert main([str(lesions), "--url", server.grpc_url, "--heatmap", str(maps), "--json"]) == 0
    captured = capsys.readouterr()
    answers = [json.loads(line) for line in captured.out.splitlines()]
    photos = ["1.2.840.113619.2.55.3", "skin.jpg", "skin.png"]
    assert [a["image"] for a in answers] == [str(lesions / p) for p in photos], answers
    assert [a["heatmap"] for a in answers] == [str(maps / f"{p}.png") for p in photos]
    assert sorted(p.name for p in maps.glob("*.png")) == [f"{p}.png" for p in photos]
    assert captured.err == "dgla-client: skipped 2 files that are not images: ckpt.pt, notes.txt\n", captured.err


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_maps_equal_local_onnxruntime(served, served_graph, tiny, image_files, protocol) -> None:
    """The ensemble answers the top-1 class's map, and every class's when asked, as the graph does here."""
    server, _ = served
    url = server.grpc_url if protocol == "grpc" else server.http_url
    local = {
        name: _local_probs(served_graph, image_files, tiny.config, output=name, send="pixels")
        for name in ("cam", "cam_top1")
    }
    top1_only = classify(image_files, url=url, protocol=protocol, maps="top1")
    assert all(p.cam is None and p.cam_top1 is not None for p in top1_only), "maps='top1' sent more than asked"
    every = classify(image_files, url=url, protocol=protocol, maps="all")
    for name, predictions in (("cam_top1", top1_only), ("cam_top1", every), ("cam", every)):
        served_maps = np.stack([getattr(p, name) for p in predictions])
        assert served_maps.shape == local[name].shape, (name, served_maps.shape, local[name].shape)
        err = float(np.abs(served_maps - local[name]).max() / np.abs(local[name]).max())
        assert err <= TOLERANCE, f"{name} over {protocol}: served vs local maps differ by {err:.2e} (relative)"
    picked = local["cam"][np.arange(len(image_files)), _probs(every).argmax(-1)]
    assert np.array_equal(picked, local["cam_top1"]), "cam_top1 is not the map of the top-1 class"


def test_client_writes_heatmap_overlays(served, tiny, image_files, tmp_path, capsys) -> None:
    """Per image: the photo as shown with the model's square outlined, beside that square under its map,
    both as high as the served model's finest input (192 px for the tiny model: the server says so);
    no metadata in the PNG; with --anonymise, named by the image's bytes, not its file name."""
    from PIL import Image

    from dgla_export.data import image_id
    from dgla_export.overlay import colour_bar
    from dgla_export.preprocess import decode_image

    server, _ = served
    folder = tmp_path / "maps"
    assert main([*map(str, image_files[:2]), "--url", server.grpc_url, "--heatmap", str(folder)]) == 0
    written = sorted(folder.glob("*.png"))
    assert [p.name for p in written] == sorted(f"{p.name}.png" for p in image_files[:2]), written
    assert [line.split("  heatmap: ")[1] for line in capsys.readouterr().out.splitlines()] == [
        str(folder / f"{p.name}.png") for p in image_files[:2]
    ]
    size = tiny.config.architecture.display_size
    for path in written:
        height, width = decode_image(next(p for p in image_files if f"{p.name}.png" == path.name).read_bytes()).shape[
            :2
        ]
        photo_width = round(width * size / height)
        with Image.open(path) as picture:
            assert picture.size == (photo_width + size + colour_bar(size).width, size + 22), (path, picture.size)
            assert picture.mode == "RGB" and not picture.getexif() and set(picture.info) <= {"dpi"}, picture.info
            pixels = np.asarray(picture, dtype=float)
        overlay = pixels[22:, photo_width:]
        assert overlay.std() > 20 and overlay.max() - overlay.min() > 100, f"{path} looks blank"
        left = (photo_width - size) // 2  # the outline of the square the model saw: cyan, inside black
        assert tuple(pixels[22 + size // 2, left + 3]) == (0, 255, 255), tuple(pixels[22 + size // 2, left + 3])
    capsys.readouterr()
    # every class: seven panels, the predicted one first; the earlier folder is replaced only with --force
    argv = [str(image_files[0]), "--url", server.grpc_url, "--heatmap", str(folder), "--heatmap-classes", "all"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err and "Traceback" not in err, err
    assert main([*argv, "--force", "--anonymise", "--json"]) == 0
    (sheet,) = folder.glob("*.png")
    anonymous = image_id(image_files[0].read_bytes())
    assert sheet.stem == anonymous and json.loads(capsys.readouterr().out)["image"] == anonymous
    with Image.open(sheet) as picture:
        assert picture.size[0] > 7 * size and picture.size[1] == size + 22, picture.size


def test_bad_heatmap_paths_get_one_line(served, image_files, tmp_path, capsys) -> None:
    """Checked before any request; nothing of the user's is touched, with or without --force."""
    server, _ = served
    taken = tmp_path / "notes.txt"
    taken.write_text("a user's file")
    users = tmp_path / "users"
    users.mkdir()
    (users / "photo.jpg").write_bytes(b"theirs")
    base = [str(image_files[0]), "--url", server.grpc_url, "--heatmap"]
    cases = (
        ([str(taken)], "is a file, not a folder"),
        ([str(users)], "exists and is not empty; pass --force"),
        ([str(users), "--force"], "photo.jpg, which dgla-client --heatmap did not write"),
        ([str(image_files[0].parent)], "holds the input"),
    )
    for extra, expected in cases:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and expected in err, err
    assert taken.read_text() == "a user's file" and (users / "photo.jpg").read_bytes() == b"theirs"
    assert main([*base, str(tmp_path / "new" / "maps")]) == 0  # a missing parent is created, like any output's
    assert len(list((tmp_path / "new" / "maps").glob("*.png"))) == 1


def test_heatmaps_from_a_graph_without_maps_are_one_clear_error(triton_server, image_files, tmp_path, capsys) -> None:
    maps = ["--heatmap", str(tmp_path / "maps")]
    argv = [str(image_files[0]), "--url", triton_server.grpc_url, "--model", "dgla_int8", *maps]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "answers no class activation maps" in err and "--explain" in err, err
    assert not (tmp_path / "maps").exists()


def test_port_in_use_is_a_clear_error_not_a_hang(served, tiny_onnx, tmp_path) -> None:
    server, _ = served
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "dgla_export.tools.serve", str(tmp_path), "--grpc-port", str(server.grpc),
         "--http-port", str(free_ports(1)[0]), "--metrics-port", str(free_ports(1)[0])],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"127.0.0.1:{server.grpc} (grpc) cannot be used" in result.stderr and "--grpc-port" in result.stderr
    assert "Traceback" not in result.stderr and time.monotonic() - started < 30


def test_a_failing_warmup_keeps_the_model_from_loading(tiny_onnx, tmp_path) -> None:
    """Warm-ups run at load: a corrupt warm-up image fails the preprocessing model, and dgla-serve
    names it, exits 2 and leaves nothing behind."""
    repository = tmp_path / "repo"
    write_repository(tiny_onnx["fp32"], repository)
    warmup = repository / "dgla_preprocess" / "warmup" / "sample_image"
    warmup.write_bytes(warmup.read_bytes()[:4] + b"\0" * (len(warmup.read_bytes()) - 4))
    server = Serve(repository, timeout=60)
    server.process.wait(timeout=120)
    stderr = server.stop()
    assert server.process.returncode == 2, stderr
    assert "dgla_preprocess" in stderr and "Traceback" not in stderr, stderr
    assert not server.leftovers(), server.leftovers()
    assert os.path.isdir(repository / "dgla_preprocess")  # the user's repository is untouched


def test_int8_graph_is_served(triton_server, tiny_int8, tiny_onnx, tiny, image_files) -> None:
    """The INT8 Q/DQ graph on a real server (exported without explain): served probabilities are the
    INT8 graph's own (not FP32's), through the ensemble and through its runtime model."""
    graph = tiny_int8["cpu"][0]
    fp32 = _local_probs(tiny_onnx["fp32"], image_files, tiny.config)
    for model, send in (("dgla_int8", "pixels"), ("dgla_int8", "image"), ("dgla_int8_onnx", "image")):
        local = _local_probs(graph, image_files, tiny.config, send=send)
        served = _probs(classify(image_files, url=triton_server.grpc_url, model=model, send=send))
        err = float(np.abs(served - local).max())
        assert err <= TOLERANCE, f"{model} ({send}): served INT8 vs local INT8 probs differ by {err:.2e}"
    assert np.abs(local - fp32).max() > 1e-4, "the INT8 graph answers like FP32: was it quantized?"


def test_sigint_stops_a_background_server_which_restarts_on_the_same_ports(tiny_onnx, tmp_path) -> None:
    """A background job of a non-interactive shell starts with SIGINT ignored; dgla-serve still
    stops on it (exit 130, interrupted), and starts again at once on the ports it just left (whose connections linger in
    TIME_WAIT after its own readiness polls and the client's requests)."""
    repository = tmp_path / "repo"
    write_repository(tiny_onnx["fp32"], repository)
    ports = free_ports(3)
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "dgla_export.tools.serve", str(repository), "--http-port", str(ports[0]),
               "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])]  # fmt: skip
    shell = subprocess.Popen(
        ["bash", "-c", f"{' '.join(command)} > {log} 2>&1 & echo $!; wait $!"], stdout=subprocess.PIPE, text=True
    )
    pid = int(shell.stdout.readline())
    log.touch()  # the background job may not have opened it yet
    try:
        deadline = time.monotonic() + 180
        while "ready;" not in log.read_text() and time.monotonic() < deadline and shell.poll() is None:
            time.sleep(0.5)
        assert "ready;" in log.read_text(), log.read_text()[-3000:]
        images = tmp_path / "image.png"
        from PIL import Image

        Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(images)
        classify([images], url=f"127.0.0.1:{ports[0]}", protocol="http")
        started = time.monotonic()
        os.kill(pid, signal.SIGINT)
        shell.wait(timeout=60)
        stopped_in = time.monotonic() - started
    finally:
        if shell.poll() is None:  # the test failed half-way: stop dgla-serve so that it stops its server
            os.kill(pid, signal.SIGTERM)
            try:
                shell.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                shell.wait()
    assert "dgla-serve: stopping" in log.read_text(), log.read_text()[-2000:]
    assert shell.returncode == 130, f"dgla-serve exited {shell.returncode} on SIGINT (documented: 130, interrupted)"
    assert stopped_in < 35, f"SIGINT took {stopped_in:.0f} s to stop the server (documented: within 30 s)"
    again = Serve(repository, ports=ports)  # at once, on the same ports
    again.wait_ready()
    again.stop()
    assert not again.leftovers(), again.leftovers()


@pytest.mark.dali
@pytest.mark.skipif(importlib.util.find_spec("nvidia.dali") is None, reason="NVIDIA DALI is not installed")
def test_dali_preprocessing_is_served_behind_its_guard(triton_server, tiny_onnx, tiny, images, tmp_path) -> None:
    """`--preprocess dali` (dgla_dali of the shared server): its guard, the DALI pipeline (run by
    dgla-serve with DALI's CPU operators, as Triton's DALI backend would on a GPU) and the ensemble
    taking uint8 bytes. The probabilities equal the exact path's; an image bomb fails alone, the next
    image is answered."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(photo_jpeg(images[0][1], (4000, 3000)))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(12000, 12000))
    from photo_encodings import ENCODINGS

    adobe = tmp_path / "adobe.jpg"  # what DALI would read without its profile: refused by the guard
    adobe.write_bytes(ENCODINGS["jpeg_adobergb"](images[0][1]))
    output = triton_server.output
    assert "DALI pipeline, CPU operators" in output and re.search(r"dgla_dali_guard v1: READY", output), output
    for protocol, url in (("grpc", triton_server.grpc_url), ("http", triton_server.http_url)):
        served = classify([photo, bomb, *image_files_of(images, tmp_path)], url=url, protocol=protocol,
                          model="dgla_dali", max_pixels=10**9, send="image")  # fmt: skip
        assert "12000x12000 pixels (144.0 MP) exceeds the limit of 64 MP" in served[1].error, served[1].error
        (refused,) = classify([adobe], url=url, protocol=protocol, model="dgla_dali", send="image")
        assert "colour profile other than sRGB" in refused.error and "--preprocess fast" in refused.error
        paths = [photo, *image_files_of(images, tmp_path)]
        probs = _probs([served[0], *served[2:]])
        err = float(np.abs(probs - _local_probs(tiny_onnx["fp32"], paths, tiny.config, "exact")).max())
        assert err < 1e-4, f"DALI over {protocol}: served vs exact-path probabilities differ by {err:.2e}"


def image_files_of(images, folder: Path) -> list[Path]:
    from PIL import Image

    paths = []
    for name, image in images[:2]:
        paths.append(folder / f"{name}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    """The photo corpus (tests/photo_encodings.py) at 1200x900, one file per encoding, named as a clinic
    might (a patient's name in the file name), and the as-shown PNG of each."""
    import skimage.data
    from photo_encodings import as_shown_png, corpus
    from PIL import Image

    photo = np.asarray(Image.fromarray(skimage.data.retina()).resize((1200, 900), Image.Resampling.BICUBIC))
    folder, shown = tmp_path_factory.mktemp("photos"), tmp_path_factory.mktemp("shown")
    files = {}
    for name, data in corpus(photo).items():
        files[name] = folder / f"Jane_Example_{name}.bin"
        files[name].write_bytes(data)
        (shown / f"{name}.png").write_bytes(as_shown_png(data))
    return files, shown


def test_every_photo_encoding_is_served_as_its_as_shown_png(triton_server, served_graph, tiny, photo_files) -> None:
    """The real ensemble (exact preprocessing: dgla_exact), through dgla-client (de-identified bytes)
    and as the raw files: each within 0.02 in probability of its as-shown PNG, same top-1; nothing of
    the patient in what the server printed."""
    import tritonclient.grpc as grpc
    from photo_encodings import IDENTITY

    files, shown = photo_files
    names = list(files)
    reference = _local_probs(served_graph, [shown / f"{n}.png" for n in names], tiny.config, "exact")
    served = _probs(classify([files[n] for n in names], url=triton_server.grpc_url, model="dgla_exact", send="image"))
    client = grpc.InferenceServerClient(triton_server.grpc_url)
    raw = []
    for name in names:  # the file's own bytes, metadata and all: the server's decoder reads every format
        tensor = grpc.InferInput("image", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[files[name].read_bytes()]], dtype=np.object_))
        raw.append(client.infer("dgla_exact", [tensor]).as_numpy("probs")[0])
    client.close()
    log = triton_server.said()
    for how, probs in (("dgla-client", served), ("raw bytes", np.stack(raw))):
        err = np.abs(probs - reference).max(axis=1)
        worst = names[int(err.argmax())]
        assert err.max() < 0.02, f"{how}: {worst} differs from its as-shown PNG by {err.max():.4f}"
        flips = [n for n, a, b in zip(names, probs.argmax(1), reference.argmax(1), strict=True) if a != b]
        assert not flips, f"{how}: top-1 differs from the as-shown PNG for {flips}"
    leaked = [m for m in (*(x.decode() for x in IDENTITY), "Jane_Example") if m in log]
    assert not leaked, f"the server printed {leaked}"
