# upscale-stream: the two commands are `make demo` and `make test`.
# Both create .venv on first use (only Python 3.11, pip and make are needed).

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Every extra that some test needs: a skipped test proves nothing.
TEST_EXTRAS := dev,ray,otel,fast,sr,browser

.PHONY: venv demo test lint typecheck unit bench bench-quick bench-ray chaos serve clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(TEST_EXTRAS)]'
	touch $(STAMP)

venv: $(STAMP)

# make demo ENGINE=neural: the embedded server upscales with Real-ESRGAN (docs/engines.md).
ENGINE ?= pillow

demo: $(STAMP)
	$(BIN)/upscale-stream demo --engine $(ENGINE)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q < /dev/null  # no test may wait on a terminal

test: lint typecheck unit

BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[$(TEST_EXTRAS),bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.ray_scaling --markdown benchmarks/ray_scaling.md --write benchmarks/ray_scaling.json
	$(BIN)/python -m benchmarks.sr_bench --markdown benchmarks/sr_bench.md
	$(BIN)/python -m benchmarks.harness

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.harness --quick

bench-ray: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.ray_scaling --write benchmarks/ray_scaling.json

chaos: $(STAMP)
	$(BIN)/python -m tests.chaos.runner --tasks 200000 --seed 1

serve: $(STAMP)
	$(BIN)/upscale-stream serve --host 127.0.0.1 --port 8765

clean:
	rm -rf $(VENV) .venv-compat .mypy_cache .ruff_cache .pytest_cache .hypothesis demo
	find . -name __pycache__ -type d -not -path "./.git/*" -prune -exec rm -rf {} +
