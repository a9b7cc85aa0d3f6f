# Two commands are the contract (see README.md):
#   make demo   installs everything into .venv and runs `edge-distill build --profile rpi4`
#   make test   installs everything into .venv and runs the default (fast) test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned to the CPU build; a looser requirement can pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[test,text]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edge-distill build --profile rpi4

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs .pytest_cache
