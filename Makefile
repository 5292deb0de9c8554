# Two commands for a fresh machine: `make demo` (main job on the embedded default) and `make test`.
# Python 3.11 to 3.13: `make demo PYTHON=python3.12` for another interpreter (a fresh .venv each).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# constraints.txt pins what CI runs (Python 3.11, the CPU torch wheel on disk here); other Pythons
# install the package's own ranges (and torch from the registry).
CONSTRAINTS = $(shell $(PYTHON) -c "import sys; print('-c constraints.txt' if sys.version_info[:2] == (3, 11) else '')")

# --no-compile: Python compiles what is imported on first use, instead of pip compiling every module
# of every wheel (torch alone: 32 s against 12 s to install, measured; docs/development.md).
PIP := pip install --quiet --no-compile

# The package alone: what `make demo` needs. Torch first, so pip takes the CPU wheel on disk
# (2.13.0), not a multi-GB CUDA wheel; the package itself only asks for ranges.
$(VENV)/.package: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/$(PIP) --upgrade pip
	$(BIN)/$(PIP) $(CONSTRAINTS) torch
	$(BIN)/$(PIP) $(CONSTRAINTS) -e .
	touch $@

# What the tests also use: pytest and friends, a real Triton server (serve), DALI's CPU operators,
# the clinic's formats (HEIC, DICOM), OpenVINO (the CPU runtime beside ONNX Runtime), the PACS results.
$(VENV)/.extras: $(VENV)/.package
	$(BIN)/$(PIP) $(CONSTRAINTS) -e '.[test,serve,dali,formats,openvino,deploy,pacs]'
	touch $@

# An environment like the bare GPU box's (scripts/gpubox-requirements.txt): numpy 2, torch, and of the
# package's dependencies only what the box has; the GPU check carries the rest (docs/gpu.md).
GPUBOX := .venv-gpubox
$(GPUBOX)/.ready: scripts/gpubox-requirements.txt
	$(PYTHON) -m venv $(GPUBOX)
	$(GPUBOX)/bin/$(PIP) --upgrade pip
	$(GPUBOX)/bin/$(PIP) $(CONSTRAINTS) torch
	$(GPUBOX)/bin/$(PIP) -r scripts/gpubox-requirements.txt
	touch $@

.PHONY: install demo test test-fast lint checks prepared gpubox-tests suite
install: $(VENV)/.extras

# Demo weights, scikit-image's bundled images, CPU: export FP32 + FP16 ONNX and validate both.
demo: $(VENV)/.package
	$(BIN)/dgla-export info
	$(BIN)/dgla-export onnx --output build/dgla_resnet50.onnx --report build/validate_fp32.json --force
	$(BIN)/dgla-export onnx --precision fp16 --output build/dgla_resnet50_fp16.onnx --report build/validate_fp16.json --force

# Two phases, each on both cores: the two environments side by side; then everything at once: the
# static checks, the GPU box's tests, and every test on two pytest-xdist workers (a test module
# stays on one worker, the tests of the shared Triton server share one, the units that take
# minutes start first: tests/conftest.py). Each pytest run's output comes whole when it ends, with
# its slowest 30 tests.
XDIST := -n 2 --dist loadscope
test:
	$(MAKE) --no-print-directory -j2 --output-sync=target $(VENV)/.extras $(GPUBOX)/.ready
	$(MAKE) --no-print-directory -j3 --output-sync=target checks gpubox-tests suite

checks: $(VENV)/.extras
	$(BIN)/ruff check dgla_export tests benchmarks scripts
	$(BIN)/python scripts/check_tensorrt_names.py
	$(BIN)/python scripts/check_lower_bounds.py

# The wheels the GPU check carries (build/gpu-check), for the GPU box's tests and the dry run's.
prepared: $(VENV)/.extras
	PYTHON=$(BIN)/python scripts/gpu_check.sh prepare

# The GPU box's environment (numpy 2, the carried wheels) on the tests that run there.
gpubox-tests: prepared $(GPUBOX)/.ready
	PYTHON=$(GPUBOX)/bin/python scripts/gpu_check.sh pytest -q -m "not slow" tests/test_preprocess.py \
	  tests/test_compare.py tests/runtimes/test_runners.py tests/export/test_onnx_export.py

suite: prepared $(GPUBOX)/.ready
	DGLA_GPUBOX_PYTHON=$(CURDIR)/$(GPUBOX)/bin/python $(BIN)/python -m pytest -q $(XDIST)

# The quick loop while working: everything but the tests marked slow.
test-fast: $(VENV)/.extras
	$(BIN)/python -m pytest -q -m "not slow" $(XDIST)

lint: $(VENV)/.extras
	$(BIN)/ruff check dgla_export tests benchmarks scripts
