# Two commands for a new machine:  `make demo` (run the monitor + a bundled call)  and  `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo serve test lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: 2.13.0 is the CPU build on local disk; unpinned pulls GBs of CUDA.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/compliance-monitor demo

serve: $(STAMP)
	$(BIN)/compliance-monitor serve

test: $(STAMP)
	$(BIN)/ruff check compliance_monitor tests scripts
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python scripts/bench_live.py --calls 1 2 4

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
