# Two commands do all the set-up on a fresh machine with Python >= 3.10 and pip:
#   make demo   - the main job: FP32 beside INT2 GraphSAGE training on a synthetic graph
#   make test   - the test suite
# and, for whoever works on iexact:
#   make docs   - the documentation site, into site/ (mkdocs --strict)
#   make check  - ruff (lint and format), mypy, and the wheel and sdist checked by twine
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.dev-installed
THREADS ?= 2

.PHONY: demo test docs check codec memory clean

$(STAMP): pyproject.toml requirements/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint requirements/cpu.txt torch
	$(PY) -m pip install --quiet --constraint requirements/cpu.txt -e ".[test,triton,plot,lightning]"
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --constraint requirements/cpu.txt -e ".[test,triton,plot,lightning,docs,dev]"
	touch $(DEV_STAMP)

demo: $(STAMP)
	$(PY) -m iexact bench train --dataset synthetic --epochs 60 --configs fp32,default --threads $(THREADS) --out demo-results --overwrite

test: $(STAMP)
	$(PY) -m pytest -q

docs: $(DEV_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

check: $(DEV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	rm -rf dist
	$(PY) -m build --quiet --outdir dist .
	$(PY) -m twine check --strict dist/*

codec: $(STAMP)
	$(PY) -m iexact bench codec --sweep --threads $(THREADS)

memory: $(STAMP)
	$(PY) -m iexact bench memory --threads $(THREADS)

clean:
	rm -rf $(VENV) site dist
