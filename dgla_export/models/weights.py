"""Checkpoints in and out, strict key checking, and the deterministic demo weights."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from dgla_export.errors import UserError, listed, option
from dgla_export.io import atomic_path, cache_dir
from dgla_export.models.arl import ARLBottleneck, spatial_softmax
from dgla_export.models.attention import GlobalLocalAttention
from dgla_export.models.resnet import ResNet

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "LoadReport",
    "apply_demo_weights",
    "check_finite",
    "demo_weight_sources",
    "load_weights",
    "read_checkpoint",
    "state_dict_sha256",
]

log = logging.getLogger(__name__)
DEMO_SEED = 20240107
DEMO_LOGIT_STD = 3.0
DEMO_ENERGY_STD = 3.0
DEMO_ALPHA_BETA = 0.5
DEMO_GAMMA = 1.0
DEMO_RESIDUAL_SCALE = 0.15


class CheckpointError(UserError, ValueError):
    """A checkpoint file that cannot be read as a state dict."""


class CheckpointMismatchError(CheckpointError):
    """A state dict whose keys or shapes do not match the model."""


@dataclasses.dataclass(frozen=True)
class LoadReport:
    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    wrong_shape: tuple[str, ...]

    @property
    def skipped(self) -> tuple[str, ...]:
        return self.missing + self.unexpected + self.wrong_shape

    def describe(self, limit: int | None = 3) -> str:
        """Counts per kind with the first ``limit`` keys of each (all with ``limit=None``)."""
        lines = [f"{len(self.loaded)} tensors match"]
        for label, keys in (
            ("missing from the checkpoint", self.missing),
            ("unexpected in the checkpoint", self.unexpected),
            ("of the wrong shape", self.wrong_shape),
        ):
            if keys:
                shown = keys if limit is None else keys[:limit]
                more = f", ... ({len(keys) - len(shown)} more)" if len(shown) < len(keys) else ""
                lines.append(f"{len(keys)} {label}: {', '.join(shown)}{more}")
        return "\n".join(lines)


def _is_torch_archive(path: Path) -> bool:
    """torch.save's format: a zip archive holding ``*/data.pkl``."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .pt/.pth (``weights_only=True``) or .safetensors."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give the checkpoint file (.pt, .pth or .safetensors) inside it")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (give a .pt, .pth or .safetensors)")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own SafetensorError
            raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    if suffix not in (".pt", ".pth"):
        raise CheckpointError(f"{path}: unsupported checkpoint type {suffix!r}; use .pt, .pth or .safetensors")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err) and _is_torch_archive(path):
            raise CheckpointError(
                f"{path} holds Python objects beyond tensors and is refused (weights_only=True); "
                "re-save it with torch.save(model.state_dict(), path)"
            ) from err
        raise CheckpointError(f"{path} is corrupt or not a PyTorch checkpoint (it does not unpickle)") from err
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is corrupt or truncated ({first}); save or download it again") from err
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    check_finite(state, str(path))
    return state


def check_finite(state: Mapping[str, torch.Tensor], where: str) -> None:
    """Refuse weights holding NaN or Inf, naming the tensors: every output computed from them would
    be NaN, and a comparison with NaN on both sides can look like agreement."""
    bad = []
    for name, tensor in state.items():
        if tensor.is_floating_point():
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                nan = int(torch.isnan(tensor).sum())
                bad.append(f"{name} ({nan} NaN, {int((~finite).sum()) - nan} Inf)")
    if bad:
        raise CheckpointError(
            f"{where} holds non-finite values in {len(bad)} tensors: {listed(bad)}; the training "
            "diverged or the file is damaged: use an earlier checkpoint"
        )


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, partial: bool = False) -> LoadReport:
    """Copy ``state_dict`` into ``model``.

    Strict by default: any missing, unexpected or wrong-shape key raises one error naming all
    of them. ``partial=True`` loads every tensor that matches (e.g. a torchvision ResNet50
    into a GLA model) and returns the report of what it skipped.
    """
    own = model.state_dict()
    missing = tuple(k for k in own if k not in state_dict)
    unexpected = tuple(k for k in state_dict if k not in own)
    wrong_shape = tuple(
        f"{k} (checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)})"
        for k, v in state_dict.items()
        if k in own and v.shape != own[k].shape
    )
    loadable = {k: v for k, v in state_dict.items() if k in own and v.shape == own[k].shape}
    report = LoadReport(tuple(loadable), missing, unexpected, wrong_shape)
    if report.skipped and not partial:
        raise CheckpointMismatchError(
            "checkpoint does not match the model:\n"
            + report.describe()
            + f"\nCheck {option('--model', 'the model')}; or pass {option('--partial', 'partial=True')} to load only "
            f"the matching tensors ({option('-v', 'LoadReport.describe(limit=None)')} lists all keys)."
        )
    model.load_state_dict(loadable, strict=False)
    if report.skipped:
        log.warning("partial load: %s", report.describe())
    return report


def state_dict_sha256(model: nn.Module) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of the state dict (order-independent)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _seeded_init(model: ResNet, generator: torch.Generator) -> None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
            std = (2.0 / fan_out) ** 0.5
            if name.endswith((".query", ".key")):
                # Unit-scale q and k give energies of std ~ sqrt(DEMO_ENERGY_STD): a soft
                # attention rather than an arg-max, so the demo is well conditioned.
                std = (DEMO_ENERGY_STD / module.out_channels**0.5) ** 0.5 / module.in_channels**0.5
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
        elif isinstance(module, nn.BatchNorm2d):
            # Damped residual branches (the last BN of each block), as zero-init-residual
            # schemes do: an untrained network of unit-gain blocks is chaotic, and FP16 rounding
            # through 16 blocks and two branches then moved the logits by ~3%.
            nn.init.constant_(module.weight, DEMO_RESIDUAL_SCALE if name.endswith(".bn3") else 1.0)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
                module.bias.zero_()
        elif isinstance(module, GlobalLocalAttention):
            with torch.no_grad():
                module.ha.alpha.fill_(DEMO_ALPHA_BETA)
                module.va.beta.fill_(DEMO_ALPHA_BETA)
                # softmax <= 1, so gamma bounds how much LA can amplify one position; a gamma
                # of the order of H*W (to undo the softmax's 1/(H*W)) blew up the 448 branch.
                module.gamma.fill_(DEMO_GAMMA)


def _calibrate(model: ResNet) -> None:
    """Set BatchNorm statistics from real images, then scale ``fc`` to a sane logit range.

    In eval mode, each BN takes the mean and variance of the first input it sees (the main
    branch's batch) before normalising it, so the calibration pass is exactly the forward of
    the final weights and every BN output is normalised. (Train-mode recalibration mixes the
    two branches' statistics and diverged in eval mode.) Runs in float64 and rounds to
    float32 at the end, so the result does not depend on SIMD width or thread count.
    """
    from dgla_export.data import sample_images
    from dgla_export.preprocess import preprocess_batch

    bundled = [image for _, image in sample_images()]
    inputs = [torch.from_numpy(a) for a in preprocess_batch(bundled, model.config, method="exact")]
    calibrated: set[int] = set()

    def set_statistics(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if id(module) in calibrated:
            return
        calibrated.add(id(module))
        x = args[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False))

    def set_attention_scale(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        # ARL: alpha such that the attention weight of a channel's hottest position, times alpha, is
        # 1 on average over the bundled photos: the attention term doubles the shortcut there and
        # stays bounded. (alpha = the number of positions, 3,136 in layer1 at 224 px, let activations
        # grow block after block until the FP32 logits came from cancelling 1e4-sized terms.)
        if id(module) in calibrated:
            return
        calibrated.add(id(module))
        peaks = spatial_softmax(module.residual_branch(args[0])).amax(dim=(2, 3))  # its BNs calibrate here
        module.alpha.fill_(float(1 / peaks.mean()))

    pooled: list[torch.Tensor] = []
    hooks = [model.fc.register_forward_pre_hook(lambda _m, args: pooled.append(args[0]))]
    hooks += [m.register_forward_pre_hook(set_statistics) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    hooks += [m.register_forward_pre_hook(set_attention_scale) for m in model.modules() if isinstance(m, ARLBottleneck)]
    model.double().eval()
    try:
        with torch.no_grad():
            model(*(x.double() for x in inputs))
    finally:
        for hook in hooks:
            hook.remove()
    features = pooled[0]
    with torch.no_grad():
        logits = (features - features.mean(dim=0)) @ model.fc.weight.t()
        model.fc.weight.mul_(DEMO_LOGIT_STD / logits.std())
        model.fc.bias.copy_(-(features.mean(dim=0) @ model.fc.weight.t()))
    model.float().eval()


def demo_weight_sources() -> list[Path]:
    """The files whose code computes the demo weights: every one is part of their cache key."""
    from dgla_export import data, decode, preprocess

    modules = (data, decode, preprocess)
    return [*sorted(Path(__file__).parent.glob("*.py")), *(Path(m.__file__) for m in modules)]


def apply_demo_weights(model: ResNet) -> ResNet:
    """Deterministic, untrained demo weights: seeded init + BN calibrated on bundled images.

    alpha, beta and gamma are non-zero so that every branch (HA, VA, LA, DBI fusion) changes
    the output. The result is cached per config under ``$DGLA_EXPORT_CACHE`` (default
    ``~/.cache/dgla_export``) because calibrating the full model takes tens of seconds.
    """
    # Keyed on the config and on the source of everything the weights depend on: the model
    # package, and the images and preprocessing the calibration runs (a hand-kept list of
    # constants did not invalidate it, nor did a key without the preprocessing).
    digest = hashlib.sha256(repr(sorted(model.config.to_dict().items())).encode())
    for source in demo_weight_sources():
        digest.update(source.read_bytes())
    config_key = digest.hexdigest()[:16]
    cache = cache_dir() / f"demo-{model.config.name}-{config_key}.safetensors"
    if cache.is_file():
        try:
            load_weights(model, read_checkpoint(cache))
            return model.eval()
        except CheckpointError:
            log.warning("ignoring unreadable demo-weight cache %s", cache)
    generator = torch.Generator().manual_seed(DEMO_SEED)
    _seeded_init(model, generator)
    _calibrate(model)
    _write_cache(model, cache)
    return model.eval()


def _write_cache(model: nn.Module, cache: Path) -> None:
    from safetensors.torch import save_file

    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    except OSError as err:  # a read-only home must not break the demo
        log.warning("could not cache demo weights at %s: %s", cache, err)
