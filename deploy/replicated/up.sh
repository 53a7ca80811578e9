#!/usr/bin/env bash
# Start the replicated setup on this host, everything on 127.0.0.1 (docs/SCALING.md):
#
#   redis-server (AOF on)  <- scheduler state, action cache
#   storage-1, storage-2   <- the CAS, mirrored (reapi-server, storage.toml)
#   frontend-1, frontend-2 <- stateless replicas (reapi-server, frontend.toml)
#   haproxy                <- TCP, round robin over the frontends: the endpoint
#   worker-1, worker-2     <- reapi-worker through haproxy (worker.toml)
#
#   deploy/replicated/up.sh DIR      # DIR/endpoint holds grpc://127.0.0.1:PORT
#   deploy/replicated/down.sh DIR    # stops them all
#
# DIR gets one pid file and one log per process, and their data. Waits until every
# process is ready, then exits 0; on a failure it says which, stops what it started
# and exits 1. Needs redis-server and haproxy (deploy/bootstrap.sh --test installs
# them) and the venv (deploy/bootstrap.sh); $REAPI_BIN overrides where reapi-server
# and reapi-worker are found.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
dir=${1:?usage: deploy/replicated/up.sh DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
bin=${REAPI_BIN:-$repo/.venv/bin}
python=$bin/python
ready_timeout=${REAPI_READY_TIMEOUT:-60}

for tool in redis-server haproxy; do
  command -v "$tool" >/dev/null || { echo "up.sh: $tool is not installed (deploy/bootstrap.sh --test)" >&2; exit 1; }
done
[ -x "$bin/reapi-server" ] || { echo "up.sh: no $bin/reapi-server (run deploy/bootstrap.sh)" >&2; exit 1; }
for pidfile in "$dir"/*.pid; do
  [ -e "$pidfile" ] || continue
  if kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "up.sh: $pidfile: already running (deploy/replicated/down.sh $dir first)" >&2
    exit 1
  fi
  rm -f "$pidfile"
done

started=()
fail() {
  echo "up.sh: $*" >&2
  "$here/down.sh" "$dir" >/dev/null 2>&1 || true
  exit 1
}

# start NAME COMMAND...: in its own session (it outlives this script), logging to DIR/NAME.log.
start() {
  local name=$1
  shift
  stat -c %s "$dir/$name.log" 2>/dev/null >"$dir/$name.offset" || echo 0 >"$dir/$name.offset"
  setsid "$@" >>"$dir/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
  [[ " ${started[*]} " == *" $name "* ]] || started+=("$name")
}

# this_run NAME: what NAME logged since its latest start (the log is appended to across
# restarts, so an old "listening on" or "in use" must not count).
this_run() {
  tail -c +$(($(cat "$dir/$1.offset") + 1)) "$dir/$1.log" 2>/dev/null
}

# up NAME PATTERN: 0 once DIR/NAME.log matches PATTERN (PATTERN "" : once its port
# answers), 1 if NAME exited first; fails the whole start after the ready timeout.
up() {
  local name=$1 pattern=$2 deadline=$((SECONDS + ready_timeout))
  while true; do
    if [ -n "$pattern" ]; then
      grep -qE "$pattern" < <(this_run "$name") && return 0
    elif "$python" -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.5)" 2>/dev/null; then
      return 0
    fi
    kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null || return 1
    [ $SECONDS -lt $deadline ] || fail "$name: not ready after ${ready_timeout}s:
$(tail -n 20 "$dir/$name.log")"
    sleep 0.1
  done
}

free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_listening NAME PATTERN COMMAND...: start COMMAND with every "{port}" in it replaced
# by a free port ($port afterwards) and wait until it is up. On a busy host another
# process may take the port between the pick and the bind: then it starts again on a
# new port, up to five times.
start_listening() {
  local name=$1 pattern=$2 attempt
  shift 2
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    start "$name" "${@//\{port\}/$port}"
    up "$name" "$pattern" && return 0
    grep -qiE "in use|cannot bind" < <(this_run "$name") || break
    echo "up.sh: $name: port $port was taken meanwhile; trying another" >&2
  done
  fail "$name exited before it was ready:
$(tail -n 20 "$dir/$name.log")"
}

mkdir -p "$dir/redis"
start_listening redis "" redis-server --port "{port}" --bind 127.0.0.1 --protected-mode no --dir "$dir/redis" \
  --appendonly yes --appendfsync everysec --save ""
export REDIS_URL="redis://127.0.0.1:$port/0"

for n in 1 2; do
  start_listening "storage-$n" "listening on" env STORAGE_LISTEN="127.0.0.1:{port}" STORAGE_DATA="$dir/storage-$n" \
    "$bin/reapi-server" --config "$here/storage.toml"
  export STORAGE_$n="127.0.0.1:$port"
done

for n in 1 2; do
  start_listening "frontend-$n" "listening on" env FRONTEND_LISTEN="127.0.0.1:{port}" \
    "$bin/reapi-server" --config "$here/frontend.toml"
  export FRONTEND_$n="127.0.0.1:$port"
done

start_listening haproxy "" env HAPROXY_BIND="127.0.0.1:{port}" haproxy -db -f "$here/haproxy.cfg"
endpoint="grpc://127.0.0.1:$port"

for n in 1 2; do
  REAPI_ENDPOINT=$endpoint WORKER_ID="worker-$n" WORKER_DIR="$dir/worker-$n" \
    start "worker-$n" "$bin/reapi-worker" --config "$here/worker.toml"
done
for n in 1 2; do up "worker-$n" "bot session .* created" || fail "worker-$n exited before it connected:
$(tail -n 20 "$dir/worker-$n.log")"; done

echo "$endpoint" >"$dir/endpoint"
echo "up.sh: ${started[*]} ready; endpoint $endpoint (logs and pid files in $dir)"
