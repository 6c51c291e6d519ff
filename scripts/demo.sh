#!/usr/bin/env bash
# Everything `crmsync demo` needs (RabbitMQ, .venv), then the demo itself.
# Extra arguments go to the demo: scripts/demo.sh --keep-running --records 1000
source "$(dirname "$0")/setup.sh"
ensure_rabbitmq
ensure_venv
exec "$ROOT/.venv/bin/crmsync" demo "$@"
