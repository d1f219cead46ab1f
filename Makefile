# The two commands: `make demo` and `make test`.  Each sets up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/homefeed demo

lint: $(STAMP)
	@! grep -rnE '^(<<<<<<<|>>>>>>>) ' --include='*.py' --include='*.md' --include='*.toml' --include=Makefile . \
		--exclude-dir=.venv --exclude-dir=.git || { echo "merge conflict markers left in the files above"; exit 1; }
	$(BIN)/ruff check homefeed tests benchmarks
	$(BIN)/ruff format --check homefeed tests benchmarks

test: lint
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/sim_throughput.py
	$(BIN)/python benchmarks/data_pipeline.py
	$(BIN)/python benchmarks/features.py
	$(BIN)/python benchmarks/evaluation.py
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/own_logs.py

clean:
	rm -rf $(VENV) .homefeed .pytest_cache .ruff_cache
