"""Overload: the queue policy is written where requests wait, and a real server under a burst far
beyond its queue answers or rejects every request, with a status the client reports, and recovers."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image
from tritonclient.grpc import model_config_pb2

from dgla_export.tools.export import main as export_main
from dgla_export.triton.client import ClientError, classify
from dgla_export.triton.repository import write_repository

REJECTED = "Exceeds maximum queue size"


def _config(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_the_runtime_model_and_the_ensemble_s_door_reject_when_full(tiny_onnx, tmp_path) -> None:
    repo = tmp_path / "repo"
    args = ["triton", "--onnx", str(tiny_onnx["fp32"]), "--output", str(repo), "--max-queue-size", "3"]
    assert export_main([*args, "--queue-timeout", "2.5"]) == 0
    for model in ("dgla_onnx", "dgla_preprocess"):
        policy = _config(repo / model / "config.pbtxt").dynamic_batching.default_queue_policy
        assert policy.timeout_action == model_config_pb2.ModelQueuePolicy.REJECT, model
        assert (policy.max_queue_size, policy.default_timeout_microseconds) == (3, 2_500_000), model
    # the preprocessing step batches nothing on purpose: its queue is there to be bounded
    assert _config(repo / "dgla_preprocess" / "config.pbtxt").dynamic_batching.max_queue_delay_microseconds == 0
    with pytest.raises(SystemExit) as refused:  # argparse's own one-line refusal
        export_main([*args, "--force", "--queue-timeout", "0"])
    assert refused.value.code == 2


def test_capacity_and_deadline_size_the_batch_and_the_queue(tiny_onnx, tmp_path, capsys) -> None:
    repo = tmp_path / "repo"
    args = ["triton", "--onnx", str(tiny_onnx["fp32"]), "--output", str(repo), "--capacity", "0.71"]
    assert export_main([*args, "--deadline", "20"]) == 0
    config = _config(repo / "dgla_onnx" / "config.pbtxt")
    policy = config.dynamic_batching.default_queue_policy
    # B = int(0.71 * 20 / 4) = 3; T = 0.9 * 20 - 2 * 3 / 0.71 = 9.549 s; Q = int(0.71 * T) = 6
    assert (config.max_batch_size, policy.max_queue_size, policy.default_timeout_microseconds) == (3, 6, 9_549_000)
    worst = policy.default_timeout_microseconds / 1e6 + 2 * config.max_batch_size / 0.71
    assert worst <= 0.9 * 20 + 1e-3, f"queue timeout + two batches = {worst:.2f} s, past 90% of the deadline"
    assert _config(repo / "dgla" / "config.pbtxt").max_batch_size == 3
    capsys.readouterr()
    for extra, problem in (
        (["--deadline", "2", "--force"], "no queue keeps a 2 s deadline"),
        (["--deadline", "20", "--max-queue-size", "4", "--force"], "drop --max-queue-size"),
        (["--force"], "needs both --capacity and --deadline"),
    ):
        assert export_main([*args, *extra]) == 2, extra
        assert problem in capsys.readouterr().err, extra


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("pytriton") is None, reason="needs Triton (pip install '.[serve]')")
def test_a_burst_beyond_the_queue_is_answered_or_rejected_never_lost(triton_server, images, tmp_path) -> None:
    """dgla_burst of the shared server: queues of 2, one preprocessing instance. A 12 MP photo, so
    that decoding one (tens of ms) is far slower than sending the next, even on a busy machine."""
    from inputs import photo_jpeg

    first = tmp_path / "photo.jpg"
    first.write_bytes(photo_jpeg(images[0][1], (4000, 3000)))
    burst = []
    for index in range(96):
        burst.append(tmp_path / f"burst-{index}.jpg")
        shutil.copyfile(first, burst[-1])
    url = triton_server.grpc_url
    # the image path: its preprocessing step is the door a burst of photos meets
    (alone,) = classify([first], url=url, model="dgla_burst", send="image")
    # 96 requests in flight at once against queues of 2: most must be turned away, none lost
    answers = classify(burst, url=url, model="dgla_burst", concurrency=96, timeout=60, send="image")
    answered = [a for a in answers if a.probs is not None]
    rejected = [a for a in answers if a.probs is None]
    assert len(answered) + len(rejected) == len(burst)
    assert rejected and all(REJECTED in (a.error or "") for a in rejected), {a.error for a in rejected}
    assert answered, "nothing was answered under the burst"
    err = max(float(np.abs(a.probs - alone.probs).max()) for a in answered)
    assert err < 1e-5, f"an answer under load differs from the one alone by {err:.2e}"
    (after,) = classify([first], url=url, model="dgla_burst", send="image")  # the server recovered
    assert float(np.abs(after.probs - alone.probs).max()) < 1e-5


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("pytriton") is None, reason="needs Triton (pip install '.[serve]')")
def test_a_preprocessing_process_killed_under_load_is_replaced(tiny_onnx, images, tmp_path) -> None:
    import os
    import signal
    import threading
    import time

    import dgla_export as dx
    from dgla_export.triton.supervisor import stub_processes
    from triton_repository.serving import free_ports

    repository = tmp_path / "repo"
    write_repository(tiny_onnx["fp32"], repository)
    photo = tmp_path / "photo.png"
    Image.fromarray(images[0][1]).save(photo)
    http, grpc, metrics = free_ports(3)
    log: list[tuple[float, float, str | None]] = []  # (sent, answered, error) of every request
    after_needed, watched = 24, 10.0  # answers sent once the model is back (past the 2 s allowed), and for how long
    with dx.serve(repository, http_port=http, grpc_port=grpc, metrics_port=metrics) as server:
        # The load runs until the event is measured: 3 s before the kill, the kill, the reload, then
        # 10 s of answers after it (a second, spurious reload or a late failure would show there),
        # at least 24 of them; bounded: 60 s at most, every client stops by itself.
        deadline = time.monotonic() + 60

        def recovered_at() -> float:
            done = server.recoveries
            return done[0].noticed_at + done[0].seconds + 2.0 if done else float("inf")

        def enough() -> bool:
            recovered = recovered_at()
            after = sum(1 for sent, _, _ in log if sent > recovered)
            return after >= after_needed and time.monotonic() > recovered + watched

        def client() -> None:  # bounded: stops by itself
            while time.monotonic() < deadline and not enough():
                sent = time.monotonic()
                try:
                    (answer,) = classify([photo], url=server.grpc, timeout=10, send="image")  # through the victim
                    error = answer.error
                except ClientError as err:  # the server is restarting: no server there, or not ready yet
                    error = str(err)
                log.append((sent, time.monotonic(), error))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(3)
        victim = next(pid for pid, model in stub_processes(server.pid).items() if model == "dgla_preprocess")
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        for thread in threads:
            thread.join()
        recoveries = server.recoveries
    assert [r.model for r in recoveries] == ["dgla_preprocess"] and recoveries[0].error is None, recoveries
    failed = [(s - killed, a - killed, e) for s, a, e in log if e is not None]
    assert all(s > -1.0 for s, _, _ in failed), failed  # nothing failed before the kill
    # in flight: the dead stub's error or the stopping server's; during the restart: no server, or not
    # ready yet; each one clear line
    assert all(e.strip() and "\n" not in e and "Traceback" not in e for _, _, e in failed), failed
    recovered = recoveries[0].noticed_at - killed + recoveries[0].seconds
    late = [f for f in failed if f[0] > recovered + 2.0]
    assert not late, f"requests still failed {late[0][0]:.1f} s after the kill (back {recovered:.1f} s after it)"
    after = [e for s, _, e in log if s - killed > recovered + 2.0]
    assert len(after) >= after_needed and not any(after), after
    print(f"killed stub: {len(failed)} requests failed, the server was back {recovered:.1f} s after the kill")
