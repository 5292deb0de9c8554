"""Argument groups the commands share (model and weights, preprocessing, -v/--debug) and typed
numbers (argparse names the option in the message of a type that fails).

Imports nothing heavy: ``dgla-client --help`` and ``dgla-serve --help`` must not load torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = [
    "add_acceptance_args",
    "add_common",
    "add_model_args",
    "add_model_name",
    "add_preprocess_args",
    "add_validation_args",
    "batch_range",
    "batch_sizes",
    "image_options",
    "pixel_count",
    "positive_float",
    "positive_int",
    "probability",
    "weight_options",
]


def add_model_name(parser: argparse.ArgumentParser, *, of_graph: bool = False) -> None:
    """--model; with ``of_graph`` its default is the model the given graph was exported from."""
    from dgla_export.models.registry import list_models  # config builders only: no torch

    default = "the graph's" if of_graph else "dgla_resnet50"
    parser.add_argument(
        "--model",
        default=None if of_graph else "dgla_resnet50",
        choices=list_models(),
        metavar="NAME",
        help=f"registered model ({', '.join(list_models())}; default {default})",
    )


def add_model_args(
    parser: argparse.ArgumentParser, *, partial: bool = True, of_graph: bool = False, of_artefact: bool = False
) -> None:
    """--model, --weights and (for commands that load checkpoints into a graph) --partial. With
    ``of_artefact`` (commands that read graphs or engines) the weights default to those the artefact
    records, and a --weights that is not those is refused."""
    add_model_name(parser, of_graph=of_graph)
    kinds = (
        "'demo' (deterministic, untrained), 'random', or a checkpoint: a .pt/.pth state dict "
        "(read with weights_only=True) or .safetensors"
    )
    parser.add_argument(
        "--weights",
        default=None if of_artefact else "demo",
        metavar="WEIGHTS",
        help=f"the weights the graph was exported from ({kinds}); default: those it records, checked by SHA-256"
        if of_artefact
        else f"{kinds}; default demo",
    )
    if partial:
        parser.add_argument(
            "--partial",
            action="store_true",
            help="load only the checkpoint tensors that match the model and report the rest "
            "(e.g. torchvision's ImageNet ResNet50)",
        )


def add_preprocess_args(parser: argparse.ArgumentParser, *, dali: bool = False, served: bool = False) -> None:
    """--preprocess, --max-pixels and --max-bytes: how images become inputs, and which are refused unread.
    ``served``: a client's, whose default is the served repository's own method."""
    from dgla_export.preprocess import METHODS

    group = parser.add_argument_group("preprocessing")
    default = "default: as the served repository reads photos, else fast" if served else "fast is the default"
    group.add_argument(
        "--preprocess",
        default=None if served else "fast",
        choices=[*METHODS, "dali"] if dali else list(METHODS),
        help=f"fast: JPEGs decoded at reduced scale, probabilities within the FP16 tolerance of exact "
        f"(docs/preprocessing.md); exact: every pixel decoded, float filter (the reference); {default}"
        + ("; dali: NVIDIA DALI on the GPU (Triton's DALI backend)" if dali else ""),
    )
    add_limit_args(group)


def add_limit_args(group: argparse._ActionsContainer) -> None:
    """--max-pixels and --max-bytes: which images are refused unread."""
    from dgla_export.preprocess import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

    group.add_argument(
        "--max-pixels",
        type=pixel_count,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse, before decoding, an image whose header announces more than N pixels, e.g. 100M "
        f"(default {DEFAULT_MAX_PIXELS // 1_000_000}M: a 61 MP clinical camera fits; image bombs cost seconds and "
        "gigabytes)",
    )
    group.add_argument(
        "--max-bytes",
        type=pixel_count,
        default=DEFAULT_MAX_BYTES,
        metavar="N",
        help=f"refuse an image file larger than N bytes, e.g. 300M (default {DEFAULT_MAX_BYTES // 1_000_000}M: a 61 MP "
        "camera's uncompressed TIFF fits)",
    )


def pixel_count(text: str) -> int:
    """argparse type: a pixel or byte count, plain or with a unit: ``100000000``, ``100M``, ``0.5G``."""
    units = {"k": 10**3, "m": 10**6, "g": 10**9}
    lowered = text.strip().lower()
    factor = units.get(lowered[-1:], 1)
    try:
        value = int(float(lowered[:-1] if factor > 1 else lowered) * factor)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (e.g. 100M or 100000000)")
    return value


def add_validation_args(parser: argparse.ArgumentParser, *, runtimes: bool = True) -> None:
    """The images, runtime and batch sizes a validation runs on, and its report (``runtimes``:
    also --runtime, for graphs; an engine has one runtime)."""
    from pathlib import Path

    parser.add_argument(
        "--images",
        type=Path,
        metavar="FOLDER",
        help="folder of images to validate on (JPEG, PNG, TIFF, WebP, HEIC, AVIF, DICOM, read as a viewer shows them; "
        "default: scikit-image's bundled photos, which are not dermoscopy)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda", "tensorrt"],
        help="ONNX Runtime provider to validate on (default cpu; cuda and tensorrt need a GPU)",
    )
    if runtimes:
        from dgla_export.runtimes import GRAPH_RUNTIMES

        parser.add_argument(
            "--runtime",
            default="onnxruntime",
            choices=GRAPH_RUNTIMES,
            help="what runs the graph: ONNX Runtime (default, on --device), or OpenVINO on the CPU "
            "(the openvino extra: pip install -e '.[openvino]' in this clone); openvino-bf16 computes in BF16, "
            "only where the CPU has it natively",
        )
    parser.add_argument(
        "--batches",
        type=batch_sizes,
        metavar="B,B,...",
        help="batch sizes to check, e.g. 1,4,8 (default: 1, 3 and the graph's maximum)",
    )
    parser.add_argument("--report", type=Path, metavar="FILE", help="also write the validation report as JSON")
    add_acceptance_args(parser)
    add_preprocess_args(parser)


def add_acceptance_args(parser: argparse.ArgumentParser, *, labels: bool = True) -> None:
    """--labels, --allow-label-subset and --max-drop: the clinical acceptance of a runtime."""
    from pathlib import Path

    group = parser.add_argument_group("clinical acceptance")
    if labels:
        group.add_argument(
            "--labels",
            type=Path,
            metavar="CSV",
            help="ISIC 2018 Task 3 ground truth (image,MEL,NV,...): the runtime is also scored next to PyTorch "
            "FP32 (balanced accuracy, melanoma sensitivity and specificity, macro AUC, with bootstrap intervals)",
        )
        group.add_argument(
            "--allow-label-subset",
            action="store_true",
            help="with --labels: score only the images that have a label, and ignore labels without an image "
            "(default: any mismatch is an error)",
        )
    group.add_argument(
        "--max-drop",
        metavar="METRIC=X,...",
        help="with --labels: fail (exit 3) when a score drops by more than X against PyTorch FP32 on the same "
        "images, e.g. balanced_accuracy=0.01,mel_sensitivity=0.02 (metrics: balanced_accuracy, mel_sensitivity, "
        "mel_specificity, macro_auc)",
    )


def image_options(args: argparse.Namespace):
    """--images, the preprocessing options and (where the command has them) the clinical acceptance
    options, as the API's record."""
    from dgla_export.api import Acceptance, ImageOptions

    acceptance = Acceptance(args.labels, args.max_drop, args.allow_label_subset) if "labels" in args else Acceptance()
    return ImageOptions(args.images, args.preprocess, args.max_pixels, args.max_bytes, acceptance)


def weight_options(args: argparse.Namespace):
    """--weights and --partial as the API's record."""
    from dgla_export.api import WeightOptions

    return WeightOptions(args.weights, getattr(args, "partial", False))


def add_common(parser: argparse.ArgumentParser, *, verbose: bool = True) -> None:
    if verbose:
        parser.add_argument("-v", "--verbose", action="store_true", help="also show the libraries' own messages")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or set DGLA_DEBUG=1)")


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse names the option in its message)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def batch_sizes(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated batch sizes, e.g. ``1,4,8``."""
    try:
        return tuple(positive_int(part) for part in text.split(","))
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: {err}; give batch sizes like 1,4,8") from None


def batch_range(text: str) -> tuple[int, int]:
    """argparse type: ``MIN:MAX`` with 1 <= MIN < MAX, e.g. ``1:32`` (the batch is the graph's dynamic
    dimension, and torch.export needs two sizes at least)."""
    parts = text.split(":")
    try:
        low, high = (positive_int(p) for p in parts) if len(parts) == 2 else (0, 0)
    except argparse.ArgumentTypeError:
        low = high = 0
    if not 1 <= low < high:
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN:MAX with 1 <= MIN < MAX (e.g. 1:32, or 1:2)")
    return low, high


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be more than 0")
    return value


def probability(text: str) -> float:
    """argparse type: a probability in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a probability in (0, 1], got {text!r}")
    return value


def add_client_security_args(parser: argparse.ArgumentParser) -> None:
    """How a client speaks to a Triton server with TLS or an inference key (dgla-client, dgla-gateway)."""
    from dgla_export.triton.security import API_KEY_ENV

    secure = parser.add_argument_group("security (gRPC; a server started with dgla-serve --tls-cert or a key)")
    secure.add_argument("--ssl", action="store_true", help="speak TLS (the system's CAs, or --root-cert)")
    secure.add_argument("--root-cert", type=Path, metavar="PEM", help="trust this CA (a hospital's private CA)")
    secure.add_argument("--client-cert", type=Path, metavar="PEM", help="mutual TLS: this client's certificate")
    secure.add_argument("--client-key", type=Path, metavar="PEM", help="mutual TLS: its private key")
    secure.add_argument(
        "--api-key-file", type=Path, metavar="FILE",
        help=f"the inference key, from a file only you can read (else ${API_KEY_ENV}); never on the command line",
    )  # fmt: skip
    secure.add_argument(
        "--insecure", action="store_true",
        help="send the inference key without TLS to a server beyond loopback (a network you trust end to end)",
    )  # fmt: skip


def client_security(args: argparse.Namespace):
    """The :class:`~dgla_export.triton.security.ClientSecurity` of :func:`add_client_security_args`' options."""
    from dgla_export.triton.security import API_KEY_ENV, ClientSecurity, read_key

    return ClientSecurity(
        ssl=args.ssl,
        root_cert=args.root_cert,
        client_cert=args.client_cert,
        client_key=args.client_key,
        api_key=read_key(args.api_key_file, API_KEY_ENV, "--api-key-file"),
        insecure=args.insecure,
    )
