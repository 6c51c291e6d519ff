#!/usr/bin/env bash
# Everything the test suite needs (RabbitMQ with plugins, PostgreSQL, MariaDB, .venv with
# test tools), then lint, strict typing and the tests. Extra arguments go to pytest.
source "$(dirname "$0")/setup.sh"
ensure_rabbitmq
ensure_postgres
ensure_mariadb
ensure_venv test
cd "$ROOT"
say "ruff"
.venv/bin/ruff check .
say "mypy --strict (router, adapters)"
.venv/bin/mypy router adapters
say "pytest"
# Integration tests must not skip for lack of services here: CI=true makes that a failure.
CI="${CI:-true}" exec .venv/bin/python -m pytest -m "not slow" -p no:cacheprovider "$@"
