# The two commands of README.md:  make demo   and   make test
# Each creates (or reuses) the virtual environment .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is installed first and by exact version, so that no requirement pulls another build
TORCH  ?= torch==2.13.0

.PHONY: demo test venv clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	PATH="$(abspath $(VENV))/bin:$$PATH" bash examples/demo.sh

test: venv
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) demo-work
