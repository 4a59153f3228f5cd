# RadLoop: the two commands the README gives.
#   make run    set up (venv, requirements, migrations, demo users and studies) and start the app
#   make test   set up and run the whole test suite on real PostgreSQL and Redis
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Tests use the machine's real services; override to point elsewhere.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/radloop
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: run test setup services system-test-deps clean-var

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.runtime-installed: requirements.txt | $(VENV)/bin/activate
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(VENV)/bin/activate
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime-installed

# The viewer bundle (frontend/ -> static/dist/): npm ci when the lock file changes, a build when a source does.
FRONTEND_SOURCES := frontend/package.json frontend/vite.config.js $(shell find frontend/src -type f 2>/dev/null)
frontend/node_modules/.ci-stamp: frontend/package-lock.json
	@command -v npm >/dev/null || { echo "The viewer is built with Node.js >= 20.19 and npm (not found on PATH)." >&2; exit 1; }
	cd frontend && npm ci --no-audit --no-fund --loglevel=error
	touch $@

static/dist/.built: frontend/node_modules/.ci-stamp $(FRONTEND_SOURCES)
	cd frontend && npm run build --silent
	touch $@

setup: $(VENV)/.runtime-installed static/dist/.built
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0

run: setup
	@echo "Demo users:"
	@$(PY) manage.py ensure_demo_users
	@echo "Demo studies (synthetic CT phantoms; the first run takes a minute):"
	@$(PY) manage.py seed_demo
	$(PY) manage.py runstack --demo-logins

# PostgreSQL and Redis: start them when installed but not running (installed on a bare Debian box).
services:
	@if ! command -v pg_ctlcluster >/dev/null; then apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; fi
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -n1) main start
	@for i in $$(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
	@if ! command -v redis-server >/dev/null; then apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; fi
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { mkdir -p /var/lib/redis /var/log/redis; redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log; }
	@for i in $$(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done

# dcmtk (dcmdump validates our DICOM writer) and Chromium (browser tests), from Debian.
system-test-deps:
	@missing=""; command -v dcmdump >/dev/null || missing="$$missing dcmtk"; \
	  [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; fi

test: $(VENV)/.dev-installed static/dist/.built services system-test-deps
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(PY) -m pytest

clean-var:
	rm -rf var
