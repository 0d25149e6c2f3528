#!/usr/bin/env bash
# Throwaway PostgreSQL, Redis and RabbitMQ of their own, for the chaos suite: free ports,
# data under DIR, pid files, so that a test may kill -9, stop and restart each one without
# touching the shared services scripts/services.sh starts on 5432/6379/5672.
#
#   private_services.sh start DIR [pg|redis|rabbitmq ...]   start (all by default); ports chosen
#                                                         once and kept in DIR/ports for restarts
#   private_services.sh stop DIR SERVICE [graceful|kill]  stop one (graceful by default; `kill`
#                                                         is kill -9 of its processes)
#   private_services.sh urls DIR                          DATABASE_URL=... REDIS_URL=... RABBITMQ_URL=...
#   private_services.sh ctl DIR ARGS...                   rabbitmqctl ARGS on the private broker
#   private_services.sh down DIR                          kill every one and delete their data
#
# `bash scripts/services.sh private ...` is the same command. Runs as root (as the CI does) or
# as a plain user: as root, PostgreSQL runs as the postgres user with its data in a directory
# of its own under /tmp (DIR may not be readable by it); RabbitMQ shares the machine's epmd.
set -u
action=${1:?usage: private_services.sh start|stop|urls|ctl|down DIR ...}
DIR=${2:?the directory of the private services}
shift 2
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
PORTS="$DIR/ports"
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
RABBIT_BIN=/usr/lib/rabbitmq/bin

answers() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
# Ports below the kernel's ephemeral range (32768-60999 here), for the service and for
# RabbitMQ's distribution port (port + DIST_OFFSET): a port in that range can be taken by
# any outgoing connection's local end between this check and the server's bind, and a
# RabbitMQ whose distribution port is taken never comes up (a 120 s hang in a CI run).
DIST_OFFSET=4000
free_port() {
  local port
  for _ in $(seq 200); do
    port=$((20000 + RANDOM % 8000))
    answers "$port" || answers $((port + DIST_OFFSET)) || { echo "$port"; return 0; }
  done
  return 1
}
wait_for() { # port name tenths
  for _ in $(seq "$3"); do
    answers "$1" && return 0
    sleep 0.1
  done
  echo "private services: $2 is NOT answering on 127.0.0.1:$1 (logs in $DIR)" >&2
  return 1
}
port_of() { grep "^$1=" "$PORTS" | cut -d= -f2; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pid_alive() { [ -f "$1" ] && kill -0 "$(head -n1 "$1")" 2>/dev/null; }

ensure_ports() {
  [ -f "$PORTS" ] && return 0
  { echo "pg=$(free_port)"; echo "redis=$(free_port)"; echo "rabbitmq=$(free_port)"; } >"$PORTS"
}

pg_data() {
  if [ ! -f "$DIR/pg.datadir" ]; then
    if [ "$(id -u)" = 0 ]; then
      mktemp -d /tmp/agentrunner-private-pg.XXXXXX >"$DIR/pg.datadir"
      chown postgres "$(cat "$DIR/pg.datadir")"
    else
      mkdir -p "$DIR/pg" && echo "$DIR/pg" >"$DIR/pg.datadir"
    fi
  fi
  cat "$DIR/pg.datadir"
}

start_pg() {
  local data port
  data=$(pg_data) port=$(port_of pg)
  if [ ! -f "$data/PG_VERSION" ]; then
    as_postgres "$PG_BIN/initdb" -D "$data" -U postgres -A trust --no-sync >"$DIR/pg-initdb.log" 2>&1 ||
      { cat "$DIR/pg-initdb.log" >&2; return 1; }
  fi
  # fsync off: the data is thrown away; crash recovery after `stop -m immediate` still runs.
  as_postgres "$PG_BIN/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start -o \
    "-p $port -k $data -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" >/dev/null ||
    { cat "$data/server.log" >&2; return 1; }
  as_postgres "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -qtAc \
    "SELECT 1 FROM pg_database WHERE datname='agentrunner'" | grep -q 1 ||
    as_postgres "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres agentrunner
}

stop_pg() { # graceful: fast shutdown; kill: immediate (no checkpoint, recovery on next start)
  local data
  data=$(pg_data)
  [ -f "$data/postmaster.pid" ] || return 0
  as_postgres "$PG_BIN/pg_ctl" -D "$data" -w -t 60 stop -m "$([ "$1" = kill ] && echo immediate || echo fast)" >/dev/null
}

start_redis() {
  local port
  port=$(port_of redis)
  mkdir -p "$DIR/redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir "$DIR/redis" --pidfile "$DIR/redis/redis.pid" --logfile "$DIR/redis/redis.log" >/dev/null &&
    wait_for "$port" redis 100
}

stop_redis() {
  pid_alive "$DIR/redis/redis.pid" || return 0
  local pid
  pid=$(cat "$DIR/redis/redis.pid")
  if [ "$1" = kill ]; then kill -9 "$pid"; else kill -TERM "$pid"; fi
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -f "$DIR/redis/redis.pid"
}

rabbit_env() {
  local port
  port=$(port_of rabbitmq)
  mkdir -p "$DIR/rabbitmq"
  [ -f "$DIR/rabbitmq/enabled_plugins" ] || echo "[]." >"$DIR/rabbitmq/enabled_plugins"
  : >"$DIR/rabbitmq/rabbitmq-env.conf"
  export HOME="$DIR/rabbitmq" # its own Erlang cookie, which rabbitmqctl below reads too
  export RABBITMQ_NODENAME="agentrunner-private-$port@localhost" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT=$((port + DIST_OFFSET))
  export RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq/rabbitmq-env.conf"
  export RABBITMQ_CONFIG_FILE="$DIR/rabbitmq/rabbitmq" RABBITMQ_ADVANCED_CONFIG_FILE="$DIR/rabbitmq/advanced.config"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/rabbitmq/enabled_plugins"
  export RABBITMQ_MNESIA_BASE="$DIR/rabbitmq/mnesia" RABBITMQ_LOG_BASE="$DIR/rabbitmq/log"
  export RABBITMQ_PID_FILE="$DIR/rabbitmq/rabbitmq.pid"
}

start_rabbitmq() {
  (
    rabbit_env
    nohup "$RABBIT_BIN/rabbitmq-server" >"$DIR/rabbitmq/server.out" 2>&1 </dev/null &
    # 90 s, under the tests' 120 s timeout: a broker that does not come up fails here, with
    # the end of its output, rather than as a timeout that says nothing.
    wait_for "$RABBITMQ_NODE_PORT" rabbitmq 900 || { tail -n 40 "$DIR/rabbitmq/server.out" >&2; exit 1; }
  )
}

stop_rabbitmq() {
  (
    rabbit_env
    pid_alive "$RABBITMQ_PID_FILE" || exit 0
    pid=$(cat "$RABBITMQ_PID_FILE")
    if [ "$1" = kill ]; then kill -9 "$pid"; else "$RABBIT_BIN/rabbitmqctl" -q stop >/dev/null 2>&1 || kill -TERM "$pid"; fi
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    rm -f "$RABBITMQ_PID_FILE"
  )
}

case "$action" in
  start)
    ensure_ports
    services=("$@")
    ((${#services[@]})) || services=(pg redis rabbitmq)
    for service in "${services[@]}"; do
      "start_$service" || exit 1
    done
    ;;
  stop)
    service=${1:?stop DIR pg|redis|rabbitmq [graceful|kill]}
    "stop_$service" "${2:-graceful}"
    ;;
  urls)
    echo "DATABASE_URL=postgresql+asyncpg://postgres:postgres@127.0.0.1:$(port_of pg)/agentrunner"
    echo "REDIS_URL=redis://127.0.0.1:$(port_of redis)/0"
    echo "RABBITMQ_URL=amqp://guest:guest@127.0.0.1:$(port_of rabbitmq)/"
    ;;
  ctl)
    (rabbit_env && "$RABBIT_BIN/rabbitmqctl" -q "$@")
    ;;
  down)
    [ -f "$PORTS" ] || exit 0
    stop_rabbitmq kill
    stop_redis kill
    stop_pg kill 2>/dev/null
    [ -f "$DIR/pg.datadir" ] && rm -rf "$(cat "$DIR/pg.datadir")" "$DIR/pg.datadir"
    rm -rf "$DIR/rabbitmq/mnesia" "$DIR/redis"
    ;;
  *)
    echo "usage: private_services.sh start|stop|urls|ctl|down DIR ..." >&2
    exit 2
    ;;
esac
