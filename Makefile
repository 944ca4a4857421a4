# Two commands on a fresh machine: `make run` and `make test`. Each builds .venv as it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The newest Python that pyproject.toml's requires-python allows, for `make test-3.13`: pyenv's
# 3.13 (a pyenv shim for python3.13 fails unless 3.13 is the selected version), else the PATH's.
PYENV_3_13 = $(wildcard $(addsuffix /versions/3.13*/bin/python3.13,$(PYENV_ROOT) $(HOME)/.pyenv))
PYTHON_3_13 ?= $(or $(firstword $(PYENV_3_13)),python3.13)
VENV_3_13 := .venv-3.13
# pytest on one process per core (pytest-xdist), each with its own servers and browser; worksteal
# hands a worker that finishes early tests from the other's queue, as the fuzz tests run long.
PARALLEL := -n auto --dist worksteal

.PHONY: run run-proxy test test-3.13 stress fuzz bench bench-proxy ladder features screenshots clean

run: $(VENV)/.runtime
	$(BIN)/python app.py

# The app behind the shipped nginx (deploy/), as on a server: https://127.0.0.1:8443/ (or $PORT),
# with a self-signed certificate made on first use. Needs nginx and openssl.
run-proxy: $(VENV)/.runtime
	$(BIN)/python -m deploy.run_proxy

# bandit: the app strictly; tests, bench and deploy's local runner may assert and start servers,
# wrk, nginx and openssl (B101, B404, B603, B607).
test: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/bandit -q -r . -x ./$(VENV),./$(VENV_3_13),./tests,./bench,./deploy
	$(BIN)/bandit -q -r tests bench deploy -s B101,B404,B603,B607
	$(BIN)/pytest $(PARALLEL)

# The same tests on Python 3.13, in .venv-3.13 (the lint is the same on any Python: not again).
# Fails without Python 3.13 rather than skip, so CI cannot pass without running them.
test-3.13: $(VENV_3_13)/.dev
	$(VENV_3_13)/bin/pytest $(PARALLEL)

# PNGs of the page's four states for the docs, from the app served as in production.
screenshots: $(VENV)/.dev
	PYTHONPATH=tests $(BIN)/python tests/browser/screenshots.py docs/screenshots

# The tests that load real servers for longer than `make test` should take: the abuse tests,
# and the benchmark script against every target (make test runs it on the app and floor only).
stress: $(VENV)/.dev
	$(BIN)/pytest -m stress

# The fuzz tests with many more examples than `make test` gives them.
fuzz: $(VENV)/.dev
	FUZZ_PROFILE=deep $(BIN)/pytest tests/test_fuzz.py

# Not part of `make test`: numbers, not pass/fail (tests/test_bench.py runs a tiny one). Needs wrk.
bench: $(VENV)/.dev
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install -y wrk"; exit 1; }
	$(BIN)/python bench/bench.py

# What several instances buy: through nginx with 1 and with N instances (bench/proxy.py;
# N is the number of CPUs, or `make bench-proxy INSTANCES=4`).
bench-proxy: $(VENV)/.dev
	@command -v wrk >/dev/null || { echo "make bench-proxy needs wrk: apt-get install -y wrk"; exit 1; }
	$(BIN)/python bench/proxy.py $(if $(INSTANCES),--instances $(INSTANCES))

# Where the app's POST time goes: Bottle alone, then with parsing and rendering (bench/ladder.py).
ladder: $(VENV)/.dev
	@command -v wrk >/dev/null || { echo "make ladder needs wrk: apt-get install -y wrk"; exit 1; }
	$(BIN)/python bench/bench.py --targets floor fixed parse render parse_render app \
		--rounds 5 --seconds 4 --growth --rss-requests 0 --output bench/ladder.md

# What each of the app's own features costs per POST, in-process (bench/features.py). No wrk.
features: $(VENV)/.dev
	$(BIN)/python bench/features.py

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

$(VENV_3_13)/.dev: requirements.txt requirements-dev.txt
	@$(PYTHON_3_13) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null || { \
		echo "make test-3.13 needs Python 3.13 ($(PYTHON_3_13) is not it):"; \
		echo "  pyenv install 3.13, or put python3.13 on the PATH, or make PYTHON_3_13=/path/to/it"; \
		exit 1; }
	$(PYTHON_3_13) -m venv $(VENV_3_13)
	$(VENV_3_13)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

clean:
	rm -rf $(VENV) $(VENV_3_13) .pytest_cache .ruff_cache .hypothesis .run
