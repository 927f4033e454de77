# coact: `make all` runs the default study end to end (fetching the offline
# assets first when needed); `make test` runs the test suite.

# Builds live outside the clone so that repeated runs (and CI) stay incremental.
CARGO_TARGET_DIR ?= $(HOME)/.cache/coact/target
export CARGO_TARGET_DIR
CONFIG ?= pipeline.yaml
COACT := $(CARGO_TARGET_DIR)/debug/coact
RUN := $(COACT) --config $(CONFIG)

.PHONY: all setup build help tokenize extract train compete evals report status query clean test bench lint

all: setup build
	$(RUN) run

setup:
	stages/setup.sh data/raw

build:
	cargo build -p coact-pipeline --bin coact

# The targets, then the stages and benchmarks as the registry lists them.
help: build
	@echo "make all | setup | test | bench | lint | status | clean | query SQL=... | evals (the bench stage)"
	@echo "make <stage> runs one stage and what it needs; stages with their own target: tokenize extract train compete report"
	@echo "any stage: $(COACT) run <stage>"
	@echo
	@$(COACT) --help | sed -n '/^Stages, in dependency order:/,$$p'

# One target per stage; each also runs whatever the stage needs first.
tokenize extract train compete report: build
	$(RUN) run $@

# The benchmark stage (SAEBench-style evaluations). `make bench` is reserved
# for speed benchmarks.
evals: build
	$(RUN) run bench

status: build
	$(RUN) status

# make query SQL="select split, count(*) from tokenize_sequences group by split"
query: build
	@test -n "$(SQL)" || { echo 'usage: make query SQL="select ..."; the tables:'; $(RUN) query --tables; exit 2; }
	$(RUN) query "$(SQL)"

clean: build
	$(RUN) clean

test: setup
	cargo test --workspace

# Speed benchmarks: figures printed, ratios measured within one run.
# The matrix backend (CPU flags, each path's peak, coact's shapes as shares of
# it), the bf16 forward's accuracy, the SAE step (f32 and bf16, guided over
# plain; fresh, then with AuxK on), the Gemma forward (f32 and bf16), the
# compete stage's co-firing pass;
# then, where present, the peers of ../shared/peers in the same run: numpy's
# OpenBLAS peak, and with torch + transformers the HF forward and the dense
# PyTorch SAE step. PEERS_PYTHON names the interpreter that has them (e.g. a
# local venv: make bench PEERS_PYTHON=../peers-venv/bin/python).
PEERS ?= ../shared/peers
PEERS_PYTHON ?= python3
bench: setup
	cargo test -p coact --test linalg -- --ignored --nocapture gemm_rates
	cargo test -p coact --test lm_bf16 -- --nocapture
	cargo test -p coact --test sae_speed --test lm_speed --test competition -- --ignored --nocapture --test-threads 1
	@echo "The step with AuxK on every step (every latent counted dead), as in a run where most latents die:"
	SAE_SPEED_AUXK=1 SAE_SPEED_F=4096 SAE_SPEED_K=32 SAE_SPEED_TAU0=0 cargo test -p coact --test sae_speed -- --ignored --nocapture step_speed
	@if [ -f $(PEERS)/gemm_peak.py ] && $(PEERS_PYTHON) -c 'import numpy' 2>/dev/null; then \
	  echo "numpy OpenBLAS f32 GFLOP/s, [4096,640]x[640,4096] and square 2048:"; \
	  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PEERS_PYTHON) $(PEERS)/gemm_peak.py; \
	else echo "(numpy or $(PEERS)/gemm_peak.py missing for $(PEERS_PYTHON): the OpenBLAS reference is not measured)"; fi
	@if [ -f $(PEERS)/hf_forward_speed.py ] && $(PEERS_PYTHON) -c 'import torch, transformers, gguf, accelerate' 2>/dev/null; then \
	  log=$${TMPDIR:-/tmp}/coact-peers.log; json=$${TMPDIR:-/tmp}/coact-peer-sae-step.json; : > $$log; \
	  echo "HF transformers forward to block 6 (f32, bf16 autocast) and PyTorch's matmul rates:"; \
	  out=$$($(PEERS_PYTHON) $(PEERS)/hf_forward_speed.py data/raw 6 2>>$$log) && echo "$$out" | tail -n 1 \
	    || echo "(hf_forward_speed.py failed; its messages are in $$log)"; \
	  echo "dense PyTorch TopK SAE step (ms, median of 7; dictionary_learning where installed):"; \
	  $(PEERS_PYTHON) $(PEERS)/peer_sae_step_cpu.py $$json > /dev/null 2>>$$log \
	    && $(PEERS_PYTHON) -c 'import sys, json; [print("  %-20s F %5d k %2d: %7.1f ms" % (r["impl"], r["d_sae"], r["k"], r["median_ms"])) for r in json.load(open(sys.argv[1]))["results"]]' $$json \
	    || echo "(peer_sae_step_cpu.py failed; its messages are in $$log)"; \
	else echo "($(PEERS)/hf_forward_speed.py, or torch, transformers, gguf or accelerate for $(PEERS_PYTHON), missing: the HF forward and PyTorch SAE step peers are not measured)"; fi

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
