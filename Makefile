# Two commands are the contract (see README.md):
#   make demo   installs everything into .venv and runs `edge-distill build --profile rpi4`
#   make test   installs the Debian packages the tests use (tests/system-packages.txt; as root with apt-get,
#               otherwise it names them and their tests skip), installs everything into .venv and runs the
#               default (fast) test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow install system-deps wheel clean

$(STAMP): pyproject.toml setup.py tests/constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned to the CPU build; a looser requirement can pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	# -c: every package the requirements reach at the version the tests ran with (tests/test_docs.py keeps the file current)
	$(BIN)/python -m pip install --quiet -e ".[test,text,pretrained]" -c tests/constraints.txt
	touch $(STAMP)

install: $(STAMP)

# The one place the tests' Debian packages get installed: CI runs `make test` and nothing else.
system-deps:
	@sh tests/system_deps.sh

demo: $(STAMP)
	$(BIN)/edge-distill build --profile rpi4

test: system-deps $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: system-deps $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# The wheel, into dist/.  --no-build-isolation builds with .venv's setuptools and wheel (pyproject's build-system
# requires; already there as torch's and tensorflow's dependencies, so the pip line costs nothing) instead of
# downloading them into a throwaway env on every build: faster, and offline.  build/ goes first: setuptools packs
# whatever build/lib holds, stale files of a removed module included.
wheel: $(STAMP)
	$(BIN)/python -m pip install --quiet "setuptools>=68" wheel
	rm -rf build
	$(BIN)/python -m pip wheel --no-deps --no-build-isolation --no-index -w dist .

clean:
	rm -rf $(VENV) runs .pytest_cache build dist
