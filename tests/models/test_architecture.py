"""The architecture contract and ARL-CNN: what each member declares, and ARL against the spec."""

from __future__ import annotations

import re

import pytest
import reference
import torch
from inputs import torch_inputs

from dgla_export.models import create_model, get_config, list_models
from dgla_export.models.registry import TINY
from dgla_export.models.weights import load_weights

FAMILY = ("resnet50", "dbi_resnet50", "gla_resnet50", "dgla_resnet50", "arl_cnn50")


@pytest.mark.parametrize("name", list_models())
def test_every_model_declares_its_contract(name) -> None:
    config = get_config(name)
    contract = config.architecture
    assert [i.name for i in contract.inputs] == list(config.input_names)
    assert contract.input_sizes == config.input_sizes and contract.display_size == max(config.input_sizes.values())
    assert contract.class_names == config.class_names and contract.outputs == ("logits", "probs")
    assert re.fullmatch(r"(dgla|arl)-spec/\d+", contract.spec_version), contract.spec_version
    assert contract.cam_shape() == (config.input_size // 32,) * 2


@pytest.mark.parametrize("name", FAMILY)
def test_units_and_islands_name_real_parameters(name) -> None:
    """Every Conv/Linear weight falls in a unit of the contract, and every FP32 island pattern
    names at least one parameter (a renamed module would otherwise silently go FP16)."""
    model = create_model(name, **TINY)
    contract = model.config.architecture
    weights = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    units = {contract.unit_of(w) for w in weights}
    stages = {f"layer{i}.0.conv" for i in range(1, 5)}
    assert {"stem", "fc"} | stages <= units, sorted(units)
    assert ("fusion" in units) == (len(contract.inputs) == 2)
    assert any(u.endswith(".attention") for u in units) == (model.config.block == "gla")
    names = [n for n, _ in model.named_parameters()]
    for pattern in contract.fp32_parameters:
        assert any(n.startswith(pattern) or n.endswith(pattern) for n in names), f"{pattern} names no parameter"


def test_arl_adds_one_scalar_per_block_to_torchvision_names() -> None:
    """arl_cnn50's state dict is ResNet50's (torchvision's names) plus one ``alpha`` per block, so a
    torchvision checkpoint loads into it with --partial, and only the 16 alphas stay as built (0)."""
    resnet, arl = create_model("resnet50"), create_model("arl_cnn50")
    extra = set(arl.state_dict()) - set(resnet.state_dict())
    assert extra == {f"layer{s}.{b}.alpha" for s, n in enumerate((3, 4, 6, 3), 1) for b in range(n)}
    assert set(resnet.state_dict()) <= set(arl.state_dict())
    report = load_weights(arl, resnet.state_dict(), partial=True)
    assert sorted(report.missing) == sorted(extra) and not report.unexpected and not report.wrong_shape
    assert all(float(arl.get_submodule(k.removesuffix(".alpha")).alpha.detach()) == 0.0 for k in extra)


def test_arl_with_alpha_zero_is_resnet(images) -> None:
    resnet = create_model("resnet50", weights="demo", **TINY)
    arl = create_model("arl_cnn50", **TINY)
    load_weights(arl, resnet.state_dict(), partial=True)
    (x,) = torch_inputs(images, resnet.config)
    with torch.no_grad():
        err = float((arl(x) - resnet(x)).abs().max())
    assert err == 0.0, f"ARL with alpha = 0 differs from ResNet by {err:.2e}"


def test_arl_equals_the_independent_reference(images) -> None:
    """The package's ARL (demo weights: alpha calibrated on the bundled photos, so attention moves the logits)
    against the plain reference of tests/reference.py."""
    arl = create_model("arl_tiny", weights="demo")
    assert all(float(m.alpha.detach()) > 1 for n, m in arl.named_modules() if n.count(".") == 1 and hasattr(m, "alpha"))
    (x,) = torch_inputs(images, arl.config)
    with torch.no_grad():
        actual = arl(x)
        expected = reference.forward(arl.state_dict(), x)
        without = reference.forward({k: (v * 0 if k.endswith("alpha") else v) for k, v in arl.state_dict().items()}, x)
    err = float((actual - expected).abs().max() / expected.abs().max())
    assert err < 1e-5, f"ARL vs the reference: max rel error {err:.2e}"
    moved = float((expected - without).abs().max() / expected.abs().max())
    assert moved > 0.05, f"the attention term moves the demo logits by only {moved:.3f}: the test would not see it"
