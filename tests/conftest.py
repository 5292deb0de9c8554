"""Shared fixtures: tiny models with demo weights, real images, exported graphs (built once a run,
shared by every pytest-xdist worker: tests/built.py), and the work units that keep each test
module on one worker (its module fixtures built once) and every test of the shared Triton server
on the same one."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from built import once, run_root  # tests/ is on the path from the line above

# Two workers on two cores: each computes on one thread (torch, and the commands and servers its
# tests start), instead of four threads contending, spinning while their siblings wait for a core.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

TESTS = Path(__file__).parent
SHARED_SERVER = "triton_server"  # the fixture of tests/triton_repository/conftest.py


@functools.cache
def _scope(module: str) -> str:
    """A test module's pytest-xdist work unit: the module itself (its module-scoped fixtures, servers
    among them, built once), or "triton" for every module using the shared server (one process
    serves them: they run on one worker, one at a time)."""
    path = TESTS.parent / module
    uses = path.suffix == ".py" and path.is_file() and SHARED_SERVER in path.read_text()
    return "triton" if uses else module


# Work units that take minutes (the slowest of benchmarks/results/suite-time/), started first so that
# neither worker is left with one of them at the end; the rest follow, largest first.
FIRST = (
    "tests/test_readme.py", "triton", "tests/export/test_full_size.py", "tests/test_docs.py",
    "tests/test_quantize.py", "tests/tools/test_bench.py", "tests/tools/test_contract.py", "tests/test_api.py",
    "tests/test_gpu_check.py", "tests/test_explain.py", "tests/test_localise.py",
)  # fmt: skip


@pytest.hookimpl(optionalhook=True)  # environments without pytest-xdist (the GPU box's) run serially
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``-n 2`` (make test: ``--dist loadscope``) with the work units of ``_scope``, ``FIRST`` first.

    pytest 9.2 no longer lets pytest-xdist 3.8 rename a test by its ``xdist_group`` mark (which
    ``--dist loadgroup`` relies on), so the grouping lives here, where the controller splits the
    collected test IDs into work units."""
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid.split("::")[0])

        def _assign_work_unit(self, node) -> None:
            # the queue is largest first; a unit of FIRST still waiting goes before it
            waiting = [unit for unit in FIRST if unit in self.workqueue]
            if waiting:
                self.workqueue.move_to_end(waiting[0], last=False)
            super()._assign_work_unit(node)

    # every mode that splits the suite among workers (plain -n N is "load"); "each" runs it whole on each
    return ByModule(config, log) if config.getvalue("dist") not in ("no", "each") else None


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Demo weights are recomputed once a run (shared by its workers and subprocesses), never read
    # from a developer's cache.
    folder = run_root(tmp_path_factory) / "demo-cache"
    folder.mkdir(exist_ok=True)
    os.environ["DGLA_EXPORT_CACHE"] = str(folder)


@pytest.fixture(scope="session")
def images():
    from dgla_export.data import sample_images

    return sample_images()


@pytest.fixture(scope="session")
def held_out(tmp_path_factory):
    """A folder of real images that no calibration uses: scikit-image's other offline photos (grey
    ones as RGB), for validating INT8 graphs calibrated on the bundled set."""
    import numpy as np
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("held_out")
    for name in ("coins", "moon", "camera", "grass", "gravel", "brick"):
        image = getattr(data, name)()
        Image.fromarray(np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3]).save(
            folder / f"{name}.png"
        )
    return folder


@pytest.fixture(scope="session")
def tiny():
    from dgla_export import create_model

    return create_model("dgla_tiny", weights="demo")


def _export_tiny(tiny, folder, *, explain: bool = False) -> dict:
    """precision -> the tiny model's FP32 and FP16 graphs in ``folder``, each validated as
    ``dgla-export validate`` does it, its report (with golden answers) beside it."""
    import dgla_export as dx
    from dgla_export.export.onnx_export import ExportOptions, export_onnx
    from dgla_export.models.identity import identify

    paths = {}
    for precision in ("fp32", "fp16"):
        paths[precision] = folder / f"tiny{'_explained' if explain else ''}_{precision}.onnx"
        options = ExportOptions(precision=precision, max_batch=8, explain=explain)
        export_onnx(tiny, paths[precision], options=options, checkpoint=identify("demo", tiny))
        assert dx.validate(paths[precision], tiny).passed, precision
    return paths


@pytest.fixture(scope="session")
def tiny_onnx(tiny, tmp_path_factory):
    """(fp32 path, fp16 path) of the tiny model, exported and validated once for the run."""
    return once(tmp_path_factory, "onnx", lambda folder: _export_tiny(tiny, folder))


@pytest.fixture(scope="session")
def tiny_int8(tiny, tiny_onnx, images, tmp_path_factory):
    """target -> (INT8 graph path, QuantizationReport) of the tiny model, calibrated on the bundled images."""
    from dgla_export.quantize import QuantizationOptions, quantize_onnx

    def build(folder: Path) -> dict:
        graphs = {}
        for target in ("cpu", "tensorrt"):
            path = folder / f"tiny_int8_{target}.onnx"
            options = QuantizationOptions(target=target)
            graphs[target] = (path, quantize_onnx(tiny_onnx["fp32"], path, tiny.config, images, options=options))
        return graphs

    return once(tmp_path_factory, "int8", build)


@pytest.fixture
def immutable(tmp_path):
    """A folder nobody may write into, root included (chattr +i), as a read-only mount would be."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
        pytest.skip("cannot make an immutable folder here (chattr +i)")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.fixture(scope="session")
def tiny_explained(tiny, tmp_path_factory):
    """precision -> the tiny model's graph exported with explain (a ``cam`` output), validated."""
    return once(tmp_path_factory, "explained", lambda folder: _export_tiny(tiny, folder, explain=True))
