# tpa-gis — two commands on a fresh machine:
#   make run    virtual env, PostGIS, database, migrations, demo region, serve on :8000
#   make test   the same set-up on a throwaway database, then pytest
# DATABASE_URL overrides the local default.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/tpa
HOST   ?= 127.0.0.1
PORT   ?= 8000
WORKERS ?= 1
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2
export DATABASE_URL

.PHONY: run test long scale images setup-run setup-test db demo openapi lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	touch $@ $(VENV)/.run-installed

setup-run: $(VENV)/.run-installed
	scripts/ensure-postgis.sh

setup-test: $(VENV)/.dev-installed
	scripts/ensure-postgis.sh --server-only
	scripts/ensure-test-tools.sh

db: setup-run
	$(BIN)/tpa db upgrade

demo: db
	$(BIN)/tpa demo load --if-empty

# Secrets come only from the environment. For a local run, random ones are made once in .tpa/secrets.env
# (not in git); a deployment sets TPA_JITTER_KEY and TPA_PSEUDONYM_KEY itself.
.tpa/secrets.env:
	mkdir -p .tpa
	umask 077; { echo "TPA_JITTER_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))')"; \
	  echo "TPA_PSEUDONYM_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))')"; } > $@

run: demo .tpa/secrets.env
	set -a; . ./.tpa/secrets.env; set +a; \
	$(BIN)/tpa serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

# Two parts: most tests on $(PYTEST_WORKERS) processes (a file per process at a time, each process with its own
# throwaway databases), then the timing-sensitive ones (marked serial) alone. Exit code 5 = nothing selected.
# The demo region is loaded once into a template database that both pytest runs and all their workers copy
# (TPA_TEST_DEMO_TEMPLATE); it is dropped when the recipe ends, failed or not.
test: setup-test
	@template=$$($(BIN)/python tests/tpa_testing.py demo-template) || exit 1; \
	trap '$(BIN)/python tests/tpa_testing.py drop "$$template"' EXIT; \
	export TPA_TEST_DEMO_TEMPLATE=$$template; set -x; \
	{ $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not serial and not long" $(PYTEST_ARGS) \
	  || [ $$? -eq 5 ]; } && \
	{ $(BIN)/python -m pytest -m "serial and not long" $(PYTEST_ARGS) || [ $$? -eq 5 ]; }

# The scale runs (README "National scale", docs/operations.md#scale): a province-sized region (5.1 million
# households, 20,400 villages) against the demo, served and analysed; bench/results-scale.md. The province's
# database is built once (about 30 minutes, 9 GB of disk) and kept; SCALE_ARGS=--quick for a short run.
scale: setup-test
	$(BIN)/python bench/scale.py --reuse $(SCALE_ARGS)

# The long runs (documented in README "Reliability and security"): 10,000+ fuzzed requests, 64 clients for 60 s,
# a PostgreSQL restart under load, and the tests marked long. Figures are written to .tpa/reports/.
long: setup-test
	TPA_FUZZ_EXAMPLES=$${TPA_FUZZ_EXAMPLES:-40} TPA_FUZZ_MAX_TIME=$${TPA_FUZZ_MAX_TIME:-300} \
	TPA_FUZZ_MIN_REQUESTS=10000 TPA_LOAD_SECONDS=60 TPA_LOAD_CLIENTS=64 \
	TPA_REPORT_DIR=.tpa/reports $(BIN)/python -m pytest -p no:cacheprovider -s tests/test_fuzz.py \
	  tests/test_reliability.py $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m long $(PYTEST_ARGS) || [ $$? -eq 5 ]

# The container image, built where no registry serves base images (a Debian base made with debootstrap), then run
# as docker-compose.yml runs it, with host networking: health, the demo, a job on the worker container, a clean
# stop. Needs Docker; not part of make test. docs/operations.md#containers
images:
	scripts/images.sh

openapi: $(VENV)/.run-installed
	$(BIN)/tpa openapi export -o openapi/openapi.json

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check app tests migrations

clean:
	rm -rf $(VENV) .pytest_cache
