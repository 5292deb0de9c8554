# Two commands for a fresh machine: `make demo` (main job on the embedded default) and `make test`.
# Python 3.11 to 3.13: `make demo PYTHON=python3.12` for another interpreter (a fresh .venv each).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# constraints.txt pins what CI runs (Python 3.11, the CPU torch wheel on disk here); other Pythons
# install the package's own ranges (and torch from the registry).
CONSTRAINTS = $(shell $(PYTHON) -c "import sys; print('-c constraints.txt' if sys.version_info[:2] == (3, 11) else '')")

# The package alone: what `make demo` needs. Torch first, so pip takes the CPU wheel on disk
# (2.13.0), not a multi-GB CUDA wheel; the package itself only asks for ranges.
$(VENV)/.package: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(CONSTRAINTS) torch
	$(BIN)/pip install --quiet $(CONSTRAINTS) -e .
	touch $@

# What the tests also use: pytest and friends, a real Triton server (serve), DALI's CPU operators,
# the clinic's formats (HEIC, DICOM), OpenVINO (the CPU runtime beside ONNX Runtime).
$(VENV)/.extras: $(VENV)/.package
	$(BIN)/pip install --quiet $(CONSTRAINTS) -e '.[test,serve,dali,formats,openvino,deploy]'
	touch $@

# An environment like the bare GPU box's (scripts/gpubox-requirements.txt): numpy 2, torch, and of the
# package's dependencies only what the box has; the GPU check carries the rest (docs/gpu.md).
GPUBOX := .venv-gpubox
$(GPUBOX)/.ready: scripts/gpubox-requirements.txt
	$(PYTHON) -m venv $(GPUBOX)
	$(GPUBOX)/bin/pip install --quiet --upgrade pip
	$(GPUBOX)/bin/pip install --quiet $(CONSTRAINTS) torch
	$(GPUBOX)/bin/pip install --quiet -r scripts/gpubox-requirements.txt
	touch $@

.PHONY: install demo test test-fast lint
install: $(VENV)/.extras

# Demo weights, scikit-image's bundled images, CPU: export FP32 + FP16 ONNX and validate both.
demo: $(VENV)/.package
	$(BIN)/dgla-export info
	$(BIN)/dgla-export onnx --output build/dgla_resnet50.onnx --report build/validate_fp32.json --force
	$(BIN)/dgla-export onnx --precision fp16 --output build/dgla_resnet50_fp16.onnx --report build/validate_fp16.json --force

test: $(VENV)/.extras $(GPUBOX)/.ready
	$(BIN)/ruff check dgla_export tests benchmarks scripts
	$(BIN)/python scripts/check_tensorrt_names.py
	$(BIN)/python scripts/check_lower_bounds.py
	PYTHON=$(BIN)/python scripts/gpu_check.sh prepare
	PYTHON=$(GPUBOX)/bin/python scripts/gpu_check.sh pytest -q -m "not slow" tests/test_preprocess.py \
	  tests/test_compare.py tests/runtimes/test_runners.py tests/export/test_onnx_export.py
	DGLA_GPUBOX_PYTHON=$(CURDIR)/$(GPUBOX)/bin/python $(BIN)/python -m pytest -q

# The quick loop while working: everything but the tests marked slow.
test-fast: $(VENV)/.extras
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(VENV)/.extras
	$(BIN)/ruff check dgla_export tests benchmarks scripts
