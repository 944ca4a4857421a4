# Two commands on a fresh machine: `make run` and `make test`. Each builds .venv as it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The suite on Debian 13 and on Python 3.14 (Debian unstable's), each in a root filesystem that
# .ci/rootfs builds from Debian's registry into .cache/rootfs/, with a venv of its own.
ROOTFS := .ci/rootfs
# pytest on one process per core (pytest-xdist), each with its own servers and browser; worksteal
# hands a worker that finishes early tests from the other's queue, as the fuzz tests run long.
PARALLEL := -n auto --dist worksteal
# The tests start some fifty Python processes: let Python keep their compiled modules in
# __pycache__ (ignored by git) even where the environment says not to, which saves about 4 s
# of each `make test`.
export PYTHONDONTWRITEBYTECODE :=

.PHONY: run run-proxy password audit test fmt test-bare test-debian13 test-3.14 test-systemd stress \
	fuzz mutation bench bench-proxy screenshots clean

# `make run` and `make run-proxy` first bring the database's schema up to date, once, as a deploy's
# release step does (the Procfile's release: line): the app's instances never migrate at start.
run: $(VENV)/.runtime
	$(BIN)/python -m store migrate
	$(BIN)/python app.py

# The app behind the shipped nginx (deploy/), as on a server: https://127.0.0.1:8443/ (or $PORT),
# with a self-signed certificate made on first use. Needs nginx and openssl.
run-proxy: $(VENV)/.runtime
	$(BIN)/python -m store migrate
	$(BIN)/python -m deploy.run_proxy

# The owner's password for /results and /results.csv, read from the terminal (asked twice, not
# shown) or as one line of standard input, printed as the line to set: add it to
# /etc/default/form-app, or put it before `make run` (owner.py).
password: $(VENV)/.runtime
	@$(BIN)/python -m owner --env

# A running deployment checked from outside, as a client would (deploy/audit.py): TLS, the
# certificate, headers, the edge's faults, the form, the owner's pages refused without a password.
# One line a check; fails if any check does.
#   make audit URL=https://form.example.org/ [HTTP_URL=http://form.example.org/] [INSECURE=1]
audit: $(VENV)/.audit
	@test -n "$(URL)" || { echo "usage: make audit URL=https://host[:port]/ [HTTP_URL=http://host[:port]/] [INSECURE=1]"; exit 2; }
	$(BIN)/python -m deploy.audit '$(URL)' $(if $(HTTP_URL),--http-url '$(HTTP_URL)') $(if $(filter 1,$(INSECURE)),--insecure)

# bandit: the app strictly; tests, bench and deploy's local runner may assert and start servers,
# wrk, nginx and openssl (B101, B404, B603, B607).
test: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/bandit -q -r . -x ./$(VENV),./.venv-debian13,./.venv-3.14,./.cache,./mutants,./tests,./bench,./deploy
	$(BIN)/bandit -q -r tests bench deploy -s B101,B404,B603,B607
	$(BIN)/pytest $(PARALLEL)

# What make test's ruff would fail on, fixed where ruff can: its lint fixes, then its format.
fmt: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# A newcomer's first `make test`, on Debian 12 with only Python, make and git (.ci/rootfs's bare
# root filesystem), on a fresh clone of the committed files: it must pass, and sum up what it
# skipped (the tests that need nginx, Chromium, Java, wrk, PostgreSQL) in one line
# (.ci/bare-check). Needs root.
test-bare:
	.ci/bare-check

# The tests on Debian 13 (trixie), what an operator installs today: its Python 3.13, nginx 1.26,
# systemd and PostgreSQL 17 (the storage tests start their own server). Not the browser tests: they need Chromium, test the same pages, and run on the host
# in `make test`; nor the lint, the same on any Python. Needs root (mmdebstrap, mount, chroot).
# The stress tests run there too, after the others and one at a time, as `make stress` runs them.
test-debian13: .venv-debian13/.dev
	$(ROOTFS) run trixie sh -c '$(call SUITE,.venv-debian13)'

# The same tests on Python 3.14: Debian unstable's python3, with its nginx, systemd and PostgreSQL.
test-3.14: .venv-3.14/.dev
	$(ROOTFS) run sid sh -c '$(call SUITE,.venv-3.14)'

# deploy/README.md followed as written on Debian 13 booted with systemd as PID 1, then load,
# restarts, crashes, a certificate renewal (pebble) and reboots (tests/test_systemd.py). Needs root
# (mmdebstrap, systemd-nspawn); a few minutes.
test-systemd: $(VENV)/.dev
	$(ROOTFS) boot trixie-systemd $(BIN)/pytest -p no:cacheprovider -s -m systemd tests/test_systemd.py

SUITE = $(1)/bin/pytest --ignore=tests/browser $(PARALLEL) && $(1)/bin/pytest -m stress

# PNGs of the pages' eight states for the docs, from the app served as in production.
screenshots: $(VENV)/.dev
	PYTHONPATH=.:tests $(BIN)/python tests/browser/screenshots.py docs/screenshots

# The tests that take seconds each, too long for `make test`: abusive clients, restarts and a
# crash under load, 1,700 connections at the edge, the audit's full scans, and the benchmarks
# run briefly. One at a time, so that none loads the machine under another.
stress: $(VENV)/.dev
	$(BIN)/pytest -m stress

# Mutation testing: mutmut changes app.py, guards.py, logs.py and owner.py one mutant at a time
# and runs the in-process tests on each ([tool.mutmut] in pyproject.toml); docs/testing.md has
# the score. `make mutation MUTANTS='owner.* app.x_csv_*'`: only those (globs, quoted here so
# that the shell does not expand owner.* to owner.py).
mutation: $(VENV)/.dev
	$(BIN)/pip install --quiet --disable-pip-version-check mutmut==3.8.1
	rm -rf mutants
	$(BIN)/mutmut run --max-children 2 $(foreach name,$(MUTANTS),'$(name)') || true
	$(BIN)/mutmut results

# The fuzz tests with many more examples per property than `make test`'s 100: 50,000, or
# `make fuzz EXAMPLES=5000` (CI's).
EXAMPLES ?= 50000
fuzz: $(VENV)/.dev
	FUZZ_EXAMPLES=$(EXAMPLES) $(BIN)/pytest $(PARALLEL) tests/test_fuzz.py

# What one request costs the app on one core, against the floor, the seed and the same form in
# Flask, and what storing a POST costs: against the app with a store that keeps nothing and the
# disk's durable SQLite commits (bench/bench.py); then the owner's /results and /results.csv
# with 1,000,000 stored submissions on SQLite and on a PostgreSQL it starts (bench/results.py).
# Each rewrites its table in docs/benchmark.md. Numbers, not pass/fail: tests/test_bench.py runs
# them briefly. Needs wrk and PostgreSQL; some minutes.
bench: $(VENV)/.dev
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install -y wrk"; exit 1; }
	$(BIN)/python -m bench.bench --output docs/benchmark.md
	$(BIN)/python -m bench.results --output docs/benchmark.md

# The shipped shape per machine against the stack a user would pick instead: N Waitress
# instances behind the shipped nginx, the same form in Flask on gunicorn (N gthread workers x 4
# threads) and the app on that gunicorn, behind the same nginx site; GET and stored POST
# (bench/proxy.py). N is the number of CPUs, or `make bench-proxy INSTANCES=4`; shipped rows
# with 1 and 2N instances follow, or those `ALSO="1 3"` names. Rewrites its table in
# docs/benchmark.md. Needs wrk and nginx; about 5 minutes.
bench-proxy: $(VENV)/.dev
	@command -v wrk >/dev/null || { echo "make bench-proxy needs wrk: apt-get install -y wrk"; exit 1; }
	$(BIN)/python bench/proxy.py --output docs/benchmark.md $(if $(INSTANCES),--instances $(INSTANCES)) $(if $(ALSO),--also $(ALSO))

# A consistent copy of the database while the app serves (store.py: SQLite's backup API, or
# pg_dump), in $BACKUP_DIRECTORY, else backups/ beside the SQLite file (make run's: data/backups/);
# the last 7 are kept. Restore: stop the app, `make restore FILE=...`, start it again.
.PHONY: backup restore
backup: $(VENV)/.runtime
	$(BIN)/python -m store backup

restore: $(VENV)/.runtime
	@test -n "$(FILE)" || { echo "usage: make restore FILE=data/backups/form-TIME.sqlite3 (stop the app first)"; exit 2; }
	$(BIN)/python -m store restore '$(FILE)'

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.audit: requirements.txt requirements-audit.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-audit.txt
	touch $@ $(VENV)/.runtime

$(VENV)/.dev: requirements.txt requirements-audit.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@ $(VENV)/.runtime $(VENV)/.audit

# Each root filesystem's venv, made inside it by its own Python, in the checkout (mounted there as
# /src); made again when the requirements change or the root filesystem is rebuilt.
.venv-debian13/.dev: requirements.txt requirements-dev.txt .cache/rootfs/trixie.stamp
	$(ROOTFS) run trixie sh -c 'python3 -m venv --clear .venv-debian13 && \
		.venv-debian13/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt'
	touch $@

.venv-3.14/.dev: requirements.txt requirements-dev.txt .cache/rootfs/sid.stamp
	$(ROOTFS) run sid sh -c 'python3 -m venv --clear .venv-3.14 && \
		.venv-3.14/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt'
	touch $@

# A root filesystem, built on first use; .ci/rootfs builds it again only if its recipe (Debian
# suite, packages) changed, and then writes the stamp anew.
.cache/rootfs/%.stamp: .ci/rootfs
	$(ROOTFS) build $*

# .ci/rootfs deletes the root filesystems, and refuses while one is in use or has mounts in it.
clean:
	if [ -d .cache/rootfs ]; then $(ROOTFS) clean; fi
	rm -rf $(VENV) .venv-debian13 .venv-3.14 .cache/bare .pytest_cache .ruff_cache .hypothesis .run \
		mutants
