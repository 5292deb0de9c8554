"""Offline checks of the manifests before they are written: each Kubernetes resource against the
schemas kubernetes-validate bundles (strict: an unknown field is an error, as with
``kubectl apply --validate=strict``), the InferenceService against KServe's own schema, vendored
(``schemas/SOURCE.md``). Needs the ``deploy`` extra."""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path
from typing import Any

from dgla_export.errors import UserError
from dgla_export.install import install_command

__all__ = ["KSERVE_SCHEMA", "KUBERNETES_VERSION", "ManifestError", "check_kserve", "check_kubernetes"]

KUBERNETES_VERSION = "1.30.0"  # the oldest release of the Kubernetes versions supported in 2026
KSERVE_SCHEMA = Path(__file__).parent / "schemas" / "kserve-v0.20.0-inferenceservice-v1beta1.json.gz"
INSTALL_HINT = install_command("deploy")


class ManifestError(UserError):
    """A manifest its schema refuses (or a checker that is not installed)."""


def _where(path: Any) -> str:
    return "/".join(str(p) for p in path) or "(top)"


def check_kubernetes(manifest: dict[str, Any], version: str = KUBERNETES_VERSION) -> None:
    """``manifest`` against Kubernetes ``version``'s schema for its kind, strictly."""
    try:
        import kubernetes_validate
    except ImportError as err:
        raise ManifestError(f"checking the manifests needs kubernetes-validate: {INSTALL_HINT}") from err
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        name = f"{manifest.get('kind')} {manifest.get('metadata', {}).get('name')}"
        raise ManifestError(f"{name}: {err.message} at {_where(err.path)}") from err


def _strict(schema: Any) -> Any:
    """Unknown fields refused wherever a schema lists its fields and does not keep unknown ones."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(value) for value in schema]
    return schema


@functools.cache
def _kserve_validator() -> Any:
    try:
        import jsonschema
    except ImportError as err:
        raise ManifestError(f"checking the InferenceService needs jsonschema: {INSTALL_HINT}") from err
    schema = _strict(json.loads(gzip.decompress(KSERVE_SCHEMA.read_bytes())))
    return jsonschema.Draft7Validator(schema)


def check_kserve(manifest: dict[str, Any]) -> None:
    """``manifest`` against KServe's InferenceService (v1beta1) schema, strictly."""
    if (manifest.get("apiVersion"), manifest.get("kind")) != ("serving.kserve.io/v1beta1", "InferenceService"):
        raise ManifestError("not a serving.kserve.io/v1beta1 InferenceService")
    errors = sorted(_kserve_validator().iter_errors(manifest), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        raise ManifestError(f"InferenceService: {first.message} at {_where(first.path)} ({len(errors)} problem(s))")
