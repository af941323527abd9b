# The two set-up commands of the README, and the steps they share. Each target installs what it needs first.
#   make run    the main job on the bundled example_apps/: emperor-dev up
#   make test   lint, type check and the test suite (what CI runs); with CI=true, the suite on every supported
#               Python (make matrix)
#   make stress the whole suite STRESS_RUNS times (default 5) with every CPU saturated; 0 failures is the bar

PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: run test matrix stress lint type venvs clean

# The venv, with this package (editable) and its test extras; `pip install uwsgi` compiles the real binary.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# The example apps' own virtualenvs (home = venv-...), built for the Python that uwsgi embeds.
venvs: $(BIN)/.installed
	$(BIN)/python example_apps/make_venvs.py

# Every example app under a real emperor behind the router at http://<app>.api.localhost:8080/ (Ctrl-C stops all).
run: venvs
	cd example_apps && ../$(BIN)/emperor-dev up

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks example_apps

type: $(BIN)/.installed
	$(BIN)/mypy

test: venvs lint type
ifeq ($(CI),true)
	$(MAKE) matrix
else
	$(BIN)/pytest -n 2
endif

# tox, in a venv of its own (it creates one venv per Python, each compiling that Python's uwsgi).
TOX_VENV ?= .venv-tox
$(TOX_VENV)/bin/tox:
	$(PYTHON) -m venv $(TOX_VENV)
	$(TOX_VENV)/bin/python -m pip install --quiet tox

# The suite on every supported Python (tox's envlist), one after the other (the example apps' venvs are built for
# each in turn). .ci/pythons puts the pyenv builds on PATH and fails if one is missing: no interpreter is skipped.
MATRIX ?= py39,py310,py311,py312,py313
matrix: $(TOX_VENV)/bin/tox
	prefix="$$(.ci/pythons)" && PATH="$$prefix$$PATH" $(TOX_VENV)/bin/tox run -e $(MATRIX) --skip-missing-interpreters false

STRESS_RUNS ?= 5
stress: venvs
	$(BIN)/python tests/stress.py --runs $(STRESS_RUNS)

clean:
	rm -rf $(VENV) $(TOX_VENV) .tox example_apps/*/venv-*
