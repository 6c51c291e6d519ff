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
.venv/bin/ruff format --check .
say "mypy --strict (router, adapters)"
.venv/bin/mypy router adapters
say "pytest"
# Integration tests must not skip for lack of services here: CI=true makes that a failure.
# Tests run in parallel (pytest-xdist; CRMSYNC_TEST_WORKERS, or "-n 0" among the
# arguments to run them in this process): each has its own vhost, databases and tmp_path.
# Most of the suite waits on the broker and on child processes: on the 2-core CI machine
# 4 workers measured fastest; more fight RabbitMQ, PostgreSQL and MariaDB for the cores.
# worksteal: an idle worker takes over tests queued behind a half-minute one.
code=0
CI="${CI:-true}" .venv/bin/python -m pytest -m "not slow" -p no:cacheprovider \
    -n "${CRMSYNC_TEST_WORKERS:-4}" --dist worksteal "$@" || code=$?
if [ "$code" = 5 ]; then
    echo "error: pytest collected no tests (exit 5): the selection matched nothing" >&2
fi
exit "$code"
