# Shared set-up for scripts/demo.sh and scripts/test.sh: make sure RabbitMQ (and, for
# tests, PostgreSQL and MariaDB) are installed and running, then build .venv.
# Sourced, not run. Idempotent: a second run only checks.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

say() { printf '==> %s\n' "$*"; }

apt_install() {
    if ! command -v apt-get >/dev/null; then
        echo "error: $* missing and this is not a Debian/Ubuntu machine; install it by hand" >&2
        exit 1
    fi
    say "installing $*"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2; shift 2
    for _ in $(seq "$seconds"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    echo "error: $what did not come up within ${seconds}s" >&2
    exit 1
}

ensure_rabbitmq() {
    if ! command -v rabbitmq-server >/dev/null; then
        apt_install rabbitmq-server
    fi
    if ! $SUDO rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
        say "starting RabbitMQ"
        $SUDO rabbitmq-server -detached >/dev/null 2>&1 || true
        wait_for 90 "RabbitMQ" $SUDO rabbitmq-diagnostics -q ping
    fi
    # consistent-hash: router partitions; management: per-test vhosts and the demo's vhost.
    local enabled
    enabled="$($SUDO rabbitmq-plugins list -e -m 2>/dev/null || true)"
    if ! grep -q rabbitmq_consistent_hash_exchange <<<"$enabled" \
        || ! grep -q '^rabbitmq_management$' <<<"$enabled"; then
        say "enabling RabbitMQ plugins"
        $SUDO rabbitmq-plugins enable -q rabbitmq_consistent_hash_exchange rabbitmq_management >/dev/null
    fi
    wait_for 60 "RabbitMQ management API" \
        curl -sf -u guest:guest http://127.0.0.1:15672/api/overview
}

ensure_postgres() {
    if ! command -v pg_ctlcluster >/dev/null; then
        apt_install postgresql
    fi
    if ! pg_isready -q -h 127.0.0.1 -p 5432; then
        say "starting PostgreSQL"
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start \
            || true
        wait_for 60 "PostgreSQL" pg_isready -q -h 127.0.0.1 -p 5432
    fi
    if ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
        local version hba
        version="$(ls /etc/postgresql | sort -V | tail -1)"
        hba="/etc/postgresql/$version/main/pg_hba.conf"
        say "allowing trusted local connections to database test (tests only)"
        if ! $SUDO grep -q 'crmsync-tests' "$hba"; then
            $SUDO sed -i '1i host test all 127.0.0.1/32 trust # crmsync-tests' "$hba"
            $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main reload
        fi
        $SUDO -u postgres createdb test 2>/dev/null || true
    fi
}

ensure_mariadb() {
    if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
        apt_install mariadb-server
    fi
    if ! mariadb -uroot -h127.0.0.1 -e 'select 1' >/dev/null 2>&1; then
        say "starting MariaDB"
        $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
        wait_for 60 "MariaDB" mariadb -uroot -h127.0.0.1 -e 'select 1'
    fi
    mariadb -uroot -h127.0.0.1 -e 'CREATE DATABASE IF NOT EXISTS test' >/dev/null
}

ensure_venv() {  # ensure_venv [EXTRAS]
    local extras=${1:-}
    if ! command -v python3 >/dev/null; then apt_install python3 python3-venv; fi
    if [ ! -x "$ROOT/.venv/bin/python" ]; then
        say "creating .venv"
        python3 -m venv "$ROOT/.venv" || { apt_install python3-venv; python3 -m venv "$ROOT/.venv"; }
    fi
    say "installing crmsync${extras:+ [$extras]} into .venv"
    "$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT${extras:+[$extras]}"
}
