# The two commands of the README: `make demo` and `make test`.
# Each creates .venv and installs the project into it from scratch.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-quick typecheck clean

$(STAMP): pyproject.toml benchmarks/pyproject.toml .ci/system-packages
	sh .ci/install-system-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,cv,remote,record,preview]' -e ./benchmarks
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/framebus demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# mypy --strict on the library and the apps (files and overrides: pyproject's
# [tool.mypy]); tests/test_typing.py also checks a user's script against it.
typecheck: $(STAMP)
	$(BIN)/python -m mypy --strict

bench: $(STAMP)
	$(BIN)/pip install --quiet -e './benchmarks[plots,iceoryx2]' || true
	$(BIN)/framebus bench

bench-quick: $(STAMP)
	$(BIN)/framebus bench --quick

clean:
	rm -rf $(VENV) build *.egg-info benchmarks/*.egg-info
