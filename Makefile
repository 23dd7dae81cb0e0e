# The commands of CONTRIBUTING.md (`make demo`, `make test`, `make docs`...). They set everything up first:
# a virtualenv in .venv with the locked versions of constraints.txt (what CI tested).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The build backend (hatchling) is installed in an isolated build env; pin it there too.
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install browser demo test lint typecheck unit matrix-venvs bench bench-deployment bench-scale bench-batch bench-celery clean lock test-matrix dist docs

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "pip==$$(sed -n 's/^pip==//p' constraints.txt)"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,docs]"
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for tests/ui: Debian's package, never a browser download (no `playwright install`).
# A fast no-op when it is there; where it cannot be installed (not root, no apt-get, apt fails) this
# says why and goes on, and the browser tests skip with that reason.
CHROMIUM ?= $(or $(GETIMAGE_CHROMIUM),/usr/bin/chromium)
browser:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "browser: $(CHROMIUM) missing and no apt-get here: the browser tests will skip"; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "browser: $(CHROMIUM) missing and not root (apt-get install chromium needs root): the browser tests will skip"; \
	else \
	  echo "browser: installing Debian's chromium (apt-get, about a minute)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  out=$$( { apt-get -qq -o DPkg::Lock::Timeout=300 update \
	    && apt-get -qq -o DPkg::Lock::Timeout=300 install -y --no-install-recommends chromium fonts-liberation; \
	  } 2>&1 ) || { echo "$$out" | tail -n 20; echo "browser: apt-get install chromium failed: the browser tests will skip"; }; \
	fi

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The tests that are not e2e run first, in PYTEST_WORKERS pytest-xdist processes that each take a
# whole test file at a time (--dist loadfile: a module's fixture, say one build or one DAG run, is
# made once), the slowest files first (tests/conftest.py); most of them wait on emulator latencies,
# not the CPU. The e2e tests (real deployments, PostgreSQL databases, kills timed against a running
# DAG) run after them in one process, alone.
# The e2e part lists its 12 slowest tests (CI's time budget, CONTRIBUTING.md "CI").
# Both parts always run; the exit status is the first failure's. PYTEST_WORKERS=0: no workers.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL = -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

unit: $(STAMP) browser
	status=0; \
	$(BIN)/python -m pytest -m "not e2e" $(PYTEST_PARALLEL) || status=$$?; \
	$(BIN)/python -m pytest -m e2e --durations=12 || { rc=$$?; [ $$status != 0 ] || status=$$rc; }; \
	exit $$status

test: lint typecheck unit

# The version matrix (CONTRIBUTING.md "Versions and locks"): the suite minus the real-process e2e tests on
# each older Airflow of MATRIX, in .venv-airflow-X.Y locked by constraints/airflow-X.Y.txt.
# Airflow 3.3 (constraints.txt) is the one `make test` runs.
MATRIX ?= 3.0

.venv-airflow-%/.installed-stamp: pyproject.toml constraints/airflow-%.txt
	rm -rf .venv-airflow-$*
	$(PYTHON) -m venv .venv-airflow-$*
	.venv-airflow-$*/bin/python -m pip install --quiet "pip==$$(sed -n 's/^pip==//p' constraints/airflow-$*.txt)"
	PIP_CONSTRAINT=$(CURDIR)/constraints/airflow-$*.txt .venv-airflow-$*/bin/python -m pip install --quiet -e ".[dev]"
	touch $@

# The venvs alone: .ci/run builds them while `make test` runs.
matrix-venvs: $(foreach version,$(MATRIX),.venv-airflow-$(version)/.installed-stamp)

test-matrix: matrix-venvs
	@set -e; for version in $(MATRIX); do \
	  echo "== Airflow $$(.venv-airflow-$$version/bin/python -c 'import importlib.metadata as m; print(m.version("apache-airflow"))'): pytest -m 'not e2e'"; \
	  .venv-airflow-$$version/bin/python -m pytest -m "not e2e" -q $(PYTEST_PARALLEL); \
	done

# Wheel and sdist in dist/ (hatchling pinned by constraints.txt), checked by twine.
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

# Trigger polling benchmark (benchmarks/README.md), run as a module from the repository root: the
# polling phase (N = 100, 1000, 5000; 7-10 minutes on 2 cores) then the start phase (a fresh
# triggerer's start cost and steady poll, N = 1000 at 3, 11 and 31 polls; about 10 minutes). Not CI.
# Then the deployment check: 200 mapped deferred generations on real Airflow processes (10-15 min).
bench: $(STAMP)
	$(BIN)/python -m benchmarks.trigger_polling --n 100 1000 5000 --repeats 3 --interval 2 --latency 6 \
	  --start-n 1000 --start-polls 3 11 31 --start-interval 1 --start-repeats 5 --json bench-results.json
	$(MAKE) bench-deployment

bench-deployment: $(STAMP)
	$(BIN)/python -m benchmarks.deployment_check --n 200 --json bench-deployment.json

# One triggerer, N = 3,000 deferred generations polled every 5 s against an emulator that takes
# R = 200 requests/s (demand 3x R): per-trigger 429 handling vs the connection's shared limiter
# (max_requests_per_second = R), whose CPU per poll is compared with a limiter-free run polling
# every N / R = 15 s (the same R polls/s); then the Celery deployment at scale (`make bench-celery`,
# below; it needs Redis and PostgreSQL). About 5 + 15 minutes on 2 cores; exits 1 when a target
# fails. Not CI.
bench-scale: $(STAMP)
	$(BIN)/python -m benchmarks.trigger_polling --phases scale --scale-n 3000 --scale-rate 200 \
	  --scale-interval 5 --scale-latency 60 --scale-jitter 5 --check --json bench-scale.json
	$(MAKE) bench-celery

# Batch benchmark (issue 12): 2,000 prompts as one GetImageBatchOperator task, then 200 mapped
# deferrable tasks, on one real deployment (PostgreSQL); exits 1 when a target fails. Not CI;
# about 25 minutes on 2 cores (benchmarks/README.md has the settings and the numbers).
bench-batch: $(STAMP)
	$(BIN)/python -m benchmarks.batch_check --batch-n 2000 --mapped-n 200 --check --json bench-batch.json

# Celery deployment (issue 15): 500 mapped deferrable generations and a batch of 2,000 together on
# CeleryExecutor (2 workers, 2 triggerers; Redis, PostgreSQL), one worker and one triggerer
# SIGKILLed at 60 s; exits 1 on a wrong submission count or a failed task. Not CI.
bench-celery: $(STAMP)
	$(BIN)/python -m benchmarks.celery_check --mapped-n 500 --batch-n 2000 --kill-at 60 --check \
	  --json bench-celery.json

# Re-resolve the dependencies and rewrite constraints.txt (then commit it).
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	PIP_CONSTRAINT= .lock-venv/bin/python -m pip install --quiet --upgrade pip
	PIP_CONSTRAINT= .lock-venv/bin/python -m pip install --quiet -e ".[dev,docs]" hatchling
	{ echo "# Locked versions for make install/test/demo (make lock rewrites this file)."; \
	  .lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v '^setuptools=='; } > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .venv-airflow-* .demo demo-output bench-results.json bench-deployment.json bench-scale.json bench-batch.json bench-celery.json .mypy_cache .ruff_cache .pytest_cache build dist docs/_build

# The documentation site (docs/, Sphinx; pinned in constraints.txt through the `docs` extra), built
# into docs/_build/html with every warning an error. CI runs it after `make test`.
docs: $(STAMP)
	rm -rf docs/_build/html docs/_build/doctrees
	$(BIN)/sphinx-build -W --keep-going -b html -d docs/_build/doctrees docs docs/_build/html
