# Two commands do all the set-up on a fresh machine with Python >= 3.10 and pip:
#   make demo   - the main job: FP32 beside INT2 GraphSAGE training on a synthetic graph
#   make test   - the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
THREADS ?= 2

.PHONY: demo test codec memory clean

$(STAMP): pyproject.toml requirements/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint requirements/cpu.txt torch
	$(PY) -m pip install --quiet --constraint requirements/cpu.txt -e ".[test,triton,plot]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m iexact bench train --dataset synthetic --epochs 60 --configs fp32,default --threads $(THREADS) --out demo-results --overwrite

test: $(STAMP)
	$(PY) -m pytest -q

codec: $(STAMP)
	$(PY) -m iexact bench codec --sweep --threads $(THREADS)

memory: $(STAMP)
	$(PY) -m iexact bench memory --threads $(THREADS)

clean:
	rm -rf $(VENV)
