# coact: `make all` runs the default study end to end (fetching the offline
# assets first when needed); `make test` runs the test suite.

# Builds live outside the clone so that repeated runs (and CI) stay incremental.
CARGO_TARGET_DIR ?= $(HOME)/.cache/coact/target
export CARGO_TARGET_DIR
CONFIG ?= pipeline.yaml
COACT := $(CARGO_TARGET_DIR)/debug/coact
RUN := $(COACT) --config $(CONFIG)

.PHONY: all setup build tokenize extract train compete evals report status query clean test bench lint

all: setup build
	$(RUN) run

setup:
	stages/setup.sh data/raw

build:
	cargo build -p coact-pipeline --bin coact

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
# SAE step (steps/s, tokens/s, guided over plain, encoder GFLOP/s vs candle)
# and the Gemma forward (early exit to the study layer vs candle-transformers'
# quantized_gemma3 on the same batch); the compete stage's co-firing pass.
bench: setup
	cargo test -p coact --test sae_speed --test lm_speed --test competition -- --ignored --nocapture --test-threads 1

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
