# Two commands for a fresh machine: `make demo` (main job on the embedded default) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# Exact versions from constraints.txt; torch first, so pip takes the CPU wheel on disk (2.13.0),
	# not a multi-GB CUDA wheel. The package itself only asks for ranges.
	$(BIN)/pip install --quiet -c constraints.txt torch
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,serve,dali]'
	touch $(STAMP)

.PHONY: install demo test lint
install: $(STAMP)

# Demo weights, scikit-image's bundled images, CPU: export FP32 + FP16 ONNX and validate both.
demo: $(STAMP)
	$(BIN)/dgla-export info
	$(BIN)/dgla-export onnx --output build/dgla_resnet50.onnx --report build/validate_fp32.json --force
	$(BIN)/dgla-export onnx --precision fp16 --output build/dgla_resnet50_fp16.onnx --report build/validate_fp16.json --force

test: $(STAMP)
	$(BIN)/ruff check dgla_export tests benchmarks scripts
	$(BIN)/python scripts/check_tensorrt_names.py
	$(BIN)/python scripts/check_lower_bounds.py
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check dgla_export tests benchmarks scripts
