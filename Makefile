# Two commands do all the set-up on a fresh machine with Python >= 3.10 and pip:
#   make demo   - the main job (compress an ogbn-arxiv-shaped activation with every preset)
#   make test   - the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml requirements/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint requirements/cpu.txt torch
	$(PY) -m pip install --quiet --constraint requirements/cpu.txt -e ".[test,triton]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m iexact presets

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/roundtrip_cpu.py

clean:
	rm -rf $(VENV)
