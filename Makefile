# Two commands do all set-up on a fresh machine:
#   make demo   create .venv if missing, install, run the default job on config.yaml
#   make test   create .venv if missing, install, lint (ruff), type-check (mypy), run the test suite
# make run ARGS="..." runs src/explainnn/main.py with ARGS in .venv (created if missing), e.g.
#   make run ARGS="discovery.target_class=7"
#   make run ARGS="--config configs/lstm_mnist_rows.yaml"
# make docs builds the documentation site (mkdocs, --strict) into site/; make docs-serve serves it locally.
# make notebook re-executes demonstration.ipynb in place (its outputs are committed).
# TORCH_SPEC picks the PyTorch build (default: the CPU wheel torch==2.13.0), e.g.
#   make demo TORCH_SPEC="torch==2.5.1"
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
STAMP := $(VENV)/.explainnn-installed

.PHONY: demo run test lint typecheck docs docs-serve notebook setup clean-venv

demo: $(STAMP)
	$(VENV)/bin/python src/explainnn/main.py --config config.yaml

run: $(STAMP)
	$(VENV)/bin/python src/explainnn/main.py $(ARGS)

test: lint typecheck
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/python -m ruff check src tests benchmarks scripts

typecheck: $(STAMP)
	$(VENV)/bin/python -m mypy

# The hook docs/hooks.py regenerates docs/configuration.md and docs/methods.md from the code first.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/python -m mkdocs build --strict --site-dir site

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/python -m mkdocs serve

notebook: $(STAMP)
	$(VENV)/bin/python scripts/run_notebook.py demonstration.ipynb

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_venv.sh
	PYTHON="$(PYTHON)" TORCH_SPEC="$(TORCH_SPEC)" bash scripts/setup_venv.sh
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
