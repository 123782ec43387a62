# Two commands do all the set-up on a fresh machine with Python >= 3.10 and pip:
#   make demo   - the main job (train GraphSAGE with INT2 activations on a synthetic graph)
#   make test   - the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test presets bench memory clean

$(STAMP): pyproject.toml requirements/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint requirements/cpu.txt torch
	$(PY) -m pip install --quiet --constraint requirements/cpu.txt -e ".[test,triton,plot]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m iexact train --dataset synthetic --epochs 60

presets: $(STAMP)
	$(PY) -m iexact presets

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/roundtrip_cpu.py

memory: $(STAMP)
	$(PY) benchmarks/activation_memory.py

clean:
	rm -rf $(VENV)
