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

# Free ports, picked all at once so no two are the same.
read -r redis_port storage1_port storage2_port frontend1_port frontend2_port haproxy_port < <("$python" - <<'EOF'
import socket
sockets = [socket.socket() for _ in range(6)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))
EOF
)

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
  setsid "$@" >>"$dir/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
  started+=("$name")
}

# wait_for NAME WHAT PATTERN: until DIR/NAME.log matches PATTERN; fail if NAME exits.
wait_for() {
  local name=$1 what=$2 pattern=$3 deadline=$((SECONDS + ready_timeout))
  until grep -qE "$pattern" "$dir/$name.log" 2>/dev/null; do
    kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null || fail "$name exited before $what:
$(tail -n 20 "$dir/$name.log")"
    [ $SECONDS -lt $deadline ] || fail "$name: not $what after ${ready_timeout}s:
$(tail -n 20 "$dir/$name.log")"
    sleep 0.1
  done
}

wait_for_port() {
  local name=$1 port=$2 deadline=$((SECONDS + ready_timeout))
  until "$python" -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.5)" 2>/dev/null; do
    kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null || fail "$name exited:
$(tail -n 20 "$dir/$name.log")"
    [ $SECONDS -lt $deadline ] || fail "$name: nothing listens on $port after ${ready_timeout}s"
    sleep 0.1
  done
}

mkdir -p "$dir/redis"
start redis redis-server --port "$redis_port" --bind 127.0.0.1 --protected-mode no --dir "$dir/redis" \
  --appendonly yes --appendfsync everysec --save ""
wait_for_port redis "$redis_port"
export REDIS_URL="redis://127.0.0.1:$redis_port/0"

for n in 1 2; do
  port_var=storage${n}_port
  STORAGE_LISTEN="127.0.0.1:${!port_var}" STORAGE_DATA="$dir/storage-$n" \
    start "storage-$n" "$bin/reapi-server" --config "$here/storage.toml"
done
for n in 1 2; do wait_for "storage-$n" "listening" "listening on"; done
export STORAGE_1="127.0.0.1:$storage1_port" STORAGE_2="127.0.0.1:$storage2_port"

for n in 1 2; do
  port_var=frontend${n}_port
  FRONTEND_LISTEN="127.0.0.1:${!port_var}" start "frontend-$n" "$bin/reapi-server" --config "$here/frontend.toml"
done
for n in 1 2; do wait_for "frontend-$n" "listening" "listening on"; done

HAPROXY_BIND="127.0.0.1:$haproxy_port" FRONTEND_1="127.0.0.1:$frontend1_port" \
  FRONTEND_2="127.0.0.1:$frontend2_port" start haproxy haproxy -db -f "$here/haproxy.cfg"
wait_for_port haproxy "$haproxy_port"
endpoint="grpc://127.0.0.1:$haproxy_port"

for n in 1 2; do
  REAPI_ENDPOINT=$endpoint WORKER_ID="worker-$n" WORKER_DIR="$dir/worker-$n" \
    start "worker-$n" "$bin/reapi-worker" --config "$here/worker.toml"
done
for n in 1 2; do wait_for "worker-$n" "connected" "bot session .* created"; done

echo "$endpoint" >"$dir/endpoint"
echo "up.sh: ${started[*]} ready; endpoint $endpoint (logs and pid files in $dir)"
