# Two commands on a fresh machine with Python 3.11 and pip:
#   make run    set up .venv, then run the tiny pipeline  -> runs/tiny/results.json
#   make test   set up .venv, then unit tests + nbval + an end-to-end papermill run
# GPU users pick their torch build, e.g.:  make run TORCH_SPEC="torch==2.9.1" PRESET=colab_t4
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
PRESET ?= tiny
ARGS ?=
BIN := $(VENV)/bin

.PHONY: setup run test unit nbval bench sweep rehearsal notebooks gpu-smoke clean FORCE

setup: $(VENV)/.installed

# The install re-runs when pyproject.toml changes, or when TORCH_SPEC or EXTRAS differ from the
# last install's (recorded in .venv/.spec, rewritten only when they change).
SPEC := $(TORCH_SPEC) [$(EXTRAS)]
$(VENV)/.spec: FORCE
	@mkdir -p $(VENV)
	@if [ "$$(cat $@ 2>/dev/null)" != '$(SPEC)' ]; then echo '$(SPEC)' > $@; fi

$(VENV)/.installed: pyproject.toml $(VENV)/.spec
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

run: setup
	$(BIN)/rlhf-workflow run --preset $(PRESET) $(ARGS)

# nbval executes the committed notebooks first, into a scratch runs dir that starts empty; the
# end-to-end tests then compare their own run with it (the same seed gives the same numbers).
TEST_RUNS := $(CURDIR)/runs/.make-test
test: setup
	rm -rf $(TEST_RUNS)
	RLHF_RUNS_DIR=$(TEST_RUNS) $(BIN)/python -m pytest -q -p no:cacheprovider --durations=12 --nbval-lax \
		--nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks tests

unit: setup
	$(BIN)/python -m pytest -q -m "not e2e" tests

nbval: setup
	$(BIN)/python -m pytest -q --nbval-lax --nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks

SEEDS ?= 3
bench: setup
	$(BIN)/rlhf-workflow bench --preset $(PRESET) --seeds $(SEEDS) $(ARGS)

# The paper's ablations over seeds: runs/sweeps/<grid>/report.{json,md} and a PNG per knob.
GRID ?= sweeps/paper_ablations.yaml
sweep: setup
	$(BIN)/rlhf-workflow sweep --preset $(PRESET) --grid $(GRID) --seeds $(SEEDS) $(ARGS)

# The hub path rehearsed offline: every notebook with colab_t4's structure on a mini hub that the
# project builds itself (a tiny Qwen2 checkpoint, hub-schema datasets). make test runs it too.
rehearsal: setup
	$(BIN)/rlhf-workflow rehearse $(ARGS)

# Hardware-only: the tiny preset on CUDA in bf16 (HF backend), then HF sampling throughput per
# batch size and KV cache (GEN_MODEL: any saved policy or hub id), e.g.
#   make gpu-smoke TORCH_SPEC="torch==2.9.1" GEN_MODEL=Qwen/Qwen2.5-0.5B-Instruct
GPU_SET := --set runtime.device=cuda --set runtime.precision=bf16 --set online.backend=hf
GEN_MODEL ?= runs/gpu-smoke/models/sft
gpu-smoke: setup
	$(BIN)/rlhf-workflow run --preset tiny --run-dir runs/gpu-smoke $(GPU_SET) $(ARGS)
	$(BIN)/rlhf-workflow bench-generation --preset tiny $(GPU_SET) --model $(GEN_MODEL) \
		--batch-sizes 256 1024 --new-tokens 128 --out runs/gpu-smoke/generation_throughput.json

notebooks: setup
	$(BIN)/rlhf-workflow notebooks

clean:
	rm -rf runs bench .pytest_cache
