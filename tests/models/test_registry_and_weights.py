from __future__ import annotations

import pytest
import torch

from dgla_export import create_model, list_models
from dgla_export.models import UnknownModelError
from dgla_export.models.weights import (
    CheckpointError,
    CheckpointMismatchError,
    load_weights,
    read_checkpoint,
    state_dict_sha256,
)


def spec_keys(depths=(3, 4, 6, 3), dual=True) -> set[str]:
    """The state-dict layout of dgla-spec.md, written out from its text."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", "fc.weight", "fc.bias"} | {f"bn1.{s}" for s in bn}
    for n, depth in enumerate(depths, start=1):
        for i in range(depth):
            p = f"layer{n}.{i}"
            keys |= {f"{p}.conv1.weight", f"{p}.conv3.weight"}
            keys |= {f"{p}.{b}.{s}" for b in ("bn1", "bn2", "bn3") for s in bn}
            if i == 0:
                keys |= {f"{p}.downsample.0.weight"} | {f"{p}.downsample.1.{s}" for s in bn}
            for axis, scalar in (("ha", "alpha"), ("va", "beta")):
                keys |= {f"{p}.gla.{axis}.{w}.weight" for w in ("query", "key", "value")}
                keys.add(f"{p}.gla.{axis}.{scalar}")
            keys |= {f"{p}.gla.la.convs.{j}.weight" for j in (0, 3, 6)}
            keys |= {f"{p}.gla.la.convs.{j}.{s}" for j in (1, 4, 7) for s in bn}
            keys.add(f"{p}.gla.gamma")
    if dual:
        keys |= {f"fuse.{k}.weight" for k in range(3)}
    return keys


def test_registry_lists_the_ablation_rows() -> None:
    assert {"dgla_resnet50", "gla_resnet50", "dbi_resnet50", "resnet50"} <= set(list_models())


def test_weights_are_spelled_as_on_the_command_line() -> None:
    """ "random", "demo" or a file: what --weights and export_onnx(weights=) take, create_model takes."""
    torch.manual_seed(0)
    random = create_model("dgla_tiny", weights="random")
    torch.manual_seed(0)
    unnamed = create_model("dgla_tiny")
    demo = create_model("dgla_tiny", weights="demo")
    for key, value in random.state_dict().items():
        assert torch.equal(value, unnamed.state_dict()[key]), key
    assert any(not torch.equal(v, demo.state_dict()[k]) for k, v in random.state_dict().items())


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(UnknownModelError, match="dgla_resnet50"):
        create_model("dgla_resnet5O")


def test_state_dict_keys_are_the_spec_layout() -> None:
    model = create_model("dgla_resnet50")
    assert set(model.state_dict()) == spec_keys()
    assert set(create_model("gla_resnet50").state_dict()) == spec_keys(dual=False)


def test_cost_matches_the_spec_estimate() -> None:
    from dgla_export.models.cost import measure_cost

    cost = measure_cost(create_model("dgla_resnet50"))
    assert abs(cost.params - 52.7e6) < 0.1e6, cost.params
    assert 34e9 < cost.macs < 40e9, f"{cost.macs / 1e9:.2f} GMACs, spec says about 36"


def test_single_and_dual_inputs() -> None:
    for name, count in (("resnet50", 1), ("gla_resnet50", 1), ("dbi_resnet50", 2), ("dgla_resnet50", 2)):
        config = create_model(name, widths=(8, 8, 8, 8), stem_width=8, input_size=64, aux_input_size=128).config
        assert len(config.input_names) == count


def test_torchvision_resnet50_initialises_every_shared_tensor() -> None:
    # resnet50 here uses torchvision's module names (320 state-dict entries, as torchvision's).
    torchvision_like = create_model("resnet50", num_classes=1000).state_dict()
    assert len(torchvision_like) == 320
    model = create_model("dgla_resnet50")
    report = load_weights(model, torchvision_like, partial=True)
    assert {k.split(".")[-2] for k in report.unexpected} == {"conv2"}
    assert [w.split(" ")[0] for w in report.wrong_shape] == ["fc.weight", "fc.bias"]
    shared = set(torchvision_like) & set(model.state_dict()) - {"fc.weight", "fc.bias"}
    assert set(report.loaded) == shared
    for key in shared:
        assert torch.equal(model.state_dict()[key], torchvision_like[key]), key


def test_strict_load_names_every_problem() -> None:
    state = create_model("dgla_tiny").state_dict()
    state.pop("fc.bias")
    state["extra.weight"] = torch.zeros(1)
    state["conv1.weight"] = torch.zeros(1, 2, 3)
    with pytest.raises(CheckpointMismatchError) as info:
        load_weights(create_model("dgla_tiny"), state)
    message = str(info.value)
    # from Python the keyword; a command says --partial (tests/tools/test_contract.py)
    for needle in ("fc.bias", "extra.weight", "conv1.weight", "partial=True"):
        assert needle in message


def test_checkpoint_round_trip(tmp_path, tiny) -> None:
    from safetensors.torch import save_file

    torch.save({"state_dict": tiny.state_dict()}, tmp_path / "ckpt.pt")
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(tmp_path / "ckpt.safetensors"))
    for name in ("ckpt.pt", "ckpt.safetensors"):
        model = create_model("dgla_tiny", weights=tmp_path / name)
        assert state_dict_sha256(model) == state_dict_sha256(tiny)


def test_checkpoint_with_pickled_objects_is_refused(tmp_path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(1)}, "optimizer": object()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        read_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "bad.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unsupported"):
        read_checkpoint(tmp_path / "bad.onnx")


def test_demo_weights_are_deterministic_and_sane(tiny, images, tmp_path, monkeypatch) -> None:
    from inputs import torch_inputs

    monkeypatch.setenv("DGLA_EXPORT_CACHE", str(tmp_path))  # recompute, do not read the cache
    threads = torch.get_num_threads()  # the fixture's (one under pytest-xdist, the cores' count without)
    other = 2 if threads == 1 else 1
    torch.set_num_threads(other)
    try:
        again = create_model("dgla_tiny", weights="demo")
    finally:
        torch.set_num_threads(threads)
    assert state_dict_sha256(again) == state_dict_sha256(tiny), f"demo weights differ on {other} threads"
    scalars = [p.item() for n, p in tiny.named_parameters() if n.endswith(("alpha", "beta", "gamma"))]
    assert scalars and all(s != 0 for s in scalars)
    with torch.no_grad():
        logits = tiny(*torch_inputs(images, tiny.config))
    assert 0.5 < logits.abs().max() < 30, f"logit scale {logits.abs().max():.2f}"


@pytest.mark.parametrize("branch", ["alpha", "beta", "gamma", "fuse"])
def test_every_branch_changes_the_demo_output(tiny, images, branch) -> None:
    from inputs import torch_inputs

    inputs = torch_inputs(images, tiny.config)
    ablated = create_model("dgla_tiny")
    ablated.load_state_dict(tiny.state_dict())
    with torch.no_grad():
        for name, p in ablated.named_parameters():
            if name.endswith(branch) or name.startswith(branch):
                p.zero_()
        base, changed = tiny(*inputs), ablated(*inputs)
    change = ((base - changed).abs().max() / base.abs().max()).item()
    assert change > 1e-2, f"zeroing {branch} changed the logits by only {change:.2e}"


def test_corrupt_and_truncated_checkpoints_are_called_so(tmp_path, tiny) -> None:
    (tmp_path / "noise.pt").write_bytes(bytes(range(256)) * 16)
    with pytest.raises(CheckpointError, match="corrupt or not a PyTorch checkpoint"):
        read_checkpoint(tmp_path / "noise.pt")
    torch.save(tiny.state_dict(), tmp_path / "whole.pt")
    data = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as info:
        read_checkpoint(tmp_path / "half.pt")
    assert len(str(info.value)) < 300, str(info.value)


def test_a_large_mismatch_is_summarised_with_counts() -> None:
    state = {f"renamed.{k}": v for k, v in create_model("dgla_tiny").state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as info:
        load_weights(create_model("dgla_tiny"), state)
    message = str(info.value)
    count = len(state)
    assert f"{count} missing from the checkpoint" in message and f"{count} unexpected in the checkpoint" in message
    assert f"({count - 3} more)" in message and len(message) < 1000, message


def test_the_demo_weight_cache_is_keyed_on_every_module_the_calibration_runs(tmp_path) -> None:
    """Calibrating demo weights runs code beyond the model package (the bundled images, the
    preprocessing): a change to any of it must invalidate the cache, so each is in the key."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from dgla_export import create_model\n"
        "from dgla_export.models.weights import demo_weight_sources\n"
        "before = set(sys.modules)\n"
        "create_model('dgla_tiny', weights='demo')\n"
        "ran = sorted(m.__file__ for n, m in sys.modules.items() if n.startswith('dgla_export') and n not in before\n"
        "             or n in ('dgla_export.preprocess', 'dgla_export.data'))\n"
        "print(json.dumps({'ran': ran, 'key': [str(p) for p in demo_weight_sources()]}))\n"
    )
    env = {**__import__("os").environ, "DGLA_EXPORT_CACHE": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    record = json.loads(result.stdout.strip().splitlines()[-1])
    writing = ("dgla_export/io.py", "dgla_export/errors.py")  # write the cache file; no number comes from them
    missing = [f for f in record["ran"] if f not in record["key"] and not f.endswith(writing)]
    assert not missing, f"the calibration ran {missing}, which the cache key ignores"
    assert any(f.endswith("dgla_export/preprocess.py") for f in record["ran"])


def test_a_config_written_before_a_precision_existed_gets_its_default_tolerance(tiny) -> None:
    from dgla_export.models.config import DEFAULT_TOLERANCES, ModelConfig

    record = tiny.config.to_dict()
    del record["tolerances"]["tf32"]  # as configs were written before TF32 was judged
    record["tolerances"]["fp32"]["logits_rel"] = 2e-4  # a saved bound stays the saved one
    config = ModelConfig.from_dict(record)
    assert config.tolerances["tf32"] == DEFAULT_TOLERANCES["tf32"]
    assert config.tolerances["fp32"].logits_rel == 2e-4
