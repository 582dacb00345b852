# mllm-cxr developer and user entry points. `make install` then `make demo`; `make test` runs the tests.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNS ?= runs
ACCEL ?= recipes/accelerate/cpu.yaml
# On machines that keep the torch wheels on local disk (this project's dev/CI machines) pin the
# CUDA-build pair that works with torchvision on CPU; elsewhere let pip resolve torch normally.
TORCH_PIN := $(shell ls /opt/wheels/torch-2.14.1-* >/dev/null 2>&1 && echo "torch==2.14.1 torchvision==0.29.1")

.PHONY: install test test-fast lint demo tiny phantom sft dpo grpo eval export serve bench clean

install:
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(TORCH_PIN),$(BIN)/python -m pip install -q $(TORCH_PIN))
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q -e ".[dev]"
	@$(BIN)/python -c "import torch, torchvision, transformers, trl, peft; print('installed: torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__)"

test:
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

test-fast:
	$(BIN)/python -m pytest -q -m "not slow" tests

lint:
	$(BIN)/ruff check mllm_cxr reward data_prep recipes bench tests

$(RUNS)/tiny-model/config.json:
	$(BIN)/python -m mllm_cxr.tiny $(RUNS)/tiny-model

$(RUNS)/phantom/studies.jsonl:
	$(BIN)/mllm-cxr prepare phantom --n 800 --seed 1 --out $(RUNS)/phantom/studies.jsonl

tiny: $(RUNS)/tiny-model/config.json
phantom: $(RUNS)/phantom/studies.jsonl

demo: tiny phantom
	$(BIN)/python -m mllm_cxr.demo --runs $(RUNS)

sft: tiny phantom
	$(BIN)/accelerate launch --config_file $(ACCEL) recipes/sft.py --config recipes/configs/tiny/sft.yaml

bench:
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(RUNS)

# Model-based metric backends (RadGraph extractor via radeval's patched copy; RaTEScore). radeval's own
# requirements would replace torch and downgrade numpy, so it is installed without them.
install-metrics:
	$(BIN)/python -m pip install -q -e ".[metrics]"
	$(BIN)/python -m pip install -q --no-deps "radeval==2.2.1"
