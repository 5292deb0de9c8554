"""The pipeline as a library: every stage the commands run, callable from Python, validated by default.

Each function checks its inputs before slow work, writes its artefacts beside their destination
and renames them into place (never over a user's file without ``force``), returns a typed result
(a dataclass with ``to_dict()``), and raises the package's typed errors: :class:`UserError` (bad
input; exit code 2 on the command line) and :class:`ValidationFailedError` (an artefact whose
numbers are not good enough; exit code 3). The commands are thin shells over these functions
(``dgla_export.tools``). ``progress`` takes a callable that hears each step (``print`` will do).
What the stages share comes as option records: :class:`ImageOptions` (which images, how they are
preprocessed and limited, the clinical acceptance) and :class:`WeightOptions` (which weights, and
whether a partial checkpoint may load); a plain images folder or weights path will do where the
defaults suit.

    import dgla_export as dx

    exported = dx.export_onnx("dgla.onnx", precision="fp16")       # exported, then validated
    report = dx.validate("dgla.onnx", images="lesions/")            # again, on your images
    repo = dx.write_triton_repository("dgla.onnx", "triton-repo")
    with dx.serve("triton-repo") as server:
        print(server.grpc)

One module per stage: :mod:`.graphs` (export, validate, debug), :mod:`.engine` (TensorRT),
:mod:`.bench`, :mod:`.serving` (Triton), :mod:`.deploy` (Kubernetes); :mod:`.common` holds what they share.
"""

from __future__ import annotations

from dgla_export.api.bench import bench
from dgla_export.api.common import (
    EngineResult,
    ExportResult,
    ImageOptions,
    ValidationFailedError,
    WeightOptions,
    load_model,
)
from dgla_export.api.deploy import DeploymentResult, write_kubernetes
from dgla_export.api.engine import EngineOptions, build_engine
from dgla_export.api.graphs import Int8Options, debug, export_onnx, validate
from dgla_export.api.serving import (
    RepositoryResult,
    ServerEndpoints,
    activate_version,
    serve,
    write_triton_repository,
)
from dgla_export.clinical import Acceptance

__all__ = [
    "Acceptance",
    "DeploymentResult",
    "EngineOptions",
    "EngineResult",
    "ExportResult",
    "ImageOptions",
    "Int8Options",
    "RepositoryResult",
    "ServerEndpoints",
    "ValidationFailedError",
    "WeightOptions",
    "activate_version",
    "bench",
    "build_engine",
    "debug",
    "export_onnx",
    "load_model",
    "serve",
    "validate",
    "write_kubernetes",
    "write_triton_repository",
]
