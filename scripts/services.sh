#!/usr/bin/env bash
# Installs (when missing), configures and starts the services agentrunner's distributed
# mode and its test suite use: PostgreSQL, Redis and RabbitMQ, all on 127.0.0.1; and
# installs Debian's chromium, the browser the dashboard's test drives (Playwright with
# executable_path: no browser download).
# Idempotent: a second run with everything up takes well under a second.
#
# Result (override with the variables below):
#   postgresql://postgres:postgres@127.0.0.1:5432/agentrunner_test
#   redis://127.0.0.1:6379/0
#   amqp://guest:guest@127.0.0.1:5672/
#
# `services.sh private start|stop|urls|down DIR ...` runs throwaway instances of the three on
# free ports instead (scripts/private_services.sh), which the chaos suite kills and restarts.
set -u
if [ "${1:-}" = private ]; then
  shift
  exec bash "$(dirname "$0")/private_services.sh" "$@"
fi
PG_PORT=${PG_PORT:-5432}
REDIS_PORT=${REDIS_PORT:-6379}
AMQP_PORT=${AMQP_PORT:-5672}
PG_PASSWORD=${PG_PASSWORD:-postgres}
TEST_DB=${TEST_DB:-agentrunner_test}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
answers() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
wait_for() { # port name seconds
  for _ in $(seq "$3"); do
    answers "$1" && { echo "services: $2 up on 127.0.0.1:$1"; return 0; }
    sleep 1
  done
  echo "services: $2 is NOT answering on 127.0.0.1:$1" >&2
  return 1
}

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
if ((${#missing[@]})); then
  echo "services: installing ${missing[*]} with apt-get"
  as_root apt-get update -qq &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
    { echo "services: apt-get install ${missing[*]} failed" >&2; exit 1; }
fi

status=0
if ! answers "$PG_PORT"; then
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
fi
wait_for "$PG_PORT" postgresql 30 || status=1
if [ $status = 0 ]; then
  as_root su postgres -c "psql -qc \"ALTER ROLE postgres PASSWORD '$PG_PASSWORD'\"" >/dev/null
  as_root su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='$TEST_DB'\"" | grep -q 1 ||
    as_root su postgres -c "createdb $TEST_DB"
fi

if ! answers "$REDIS_PORT"; then
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no >/dev/null
fi
wait_for "$REDIS_PORT" redis 20 || status=1

if ! answers "$AMQP_PORT"; then
  # -detached needs a writable home for the Erlang cookie; fall back to a background run.
  as_root rabbitmq-server -detached 2>/dev/null || (as_root rabbitmq-server >"$(mktemp)" 2>&1 &)
fi
wait_for "$AMQP_PORT" rabbitmq 90 || status=1
exit $status
