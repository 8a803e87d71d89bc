# The two commands a fresh clone needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: run test lint check-compose check-deploy clean-run

$(VENV)/.run-deps: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.test-deps: $(VENV)/.run-deps requirements-dev.txt
	$(PIP) install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

## Start the whole system (embedded PostgreSQL + Redis unless DATABASE_URL / REDIS_URL are set).
run: $(VENV)/.run-deps
	$(PY) -m aiops_site.launch

## Run the whole test suite on real PostgreSQL + Redis (embedded under .run/test unless set).
# As the superuser: pytest-django creates and flushes the test database (tests/hardening/
# test_db_roles.py checks that the app role `make run` uses really has only row access).
test: $(VENV)/.test-deps
	AIOPS_DB_USER=postgres $(PY) -m aiops_site.embedded --run-dir .run/test -- $(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.test-deps
	$(VENV)/bin/ruff check .

check-compose:
	docker-compose -f docker-compose.yml config --quiet

## Check the deployment files without Docker or a cluster: compose config (with .env.example filled
## in), both kustomize overlays against the kubernetes client's models and the tools' RBAC,
## promtool/amtool on the monitoring configs, the dashboard's metric names.
check-deploy: $(VENV)/.test-deps
	AIOPS_DB_USER=postgres $(PY) -m aiops_site.embedded --run-dir .run/test -- $(PY) -m pytest -q tests/deploy -m "not integration"

clean-run:
	rm -rf .run
