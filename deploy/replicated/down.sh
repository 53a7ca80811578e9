#!/usr/bin/env bash
# Stop what deploy/replicated/up.sh DIR started: workers first (they hand back their
# leases), then the balancer, the frontends, the storage nodes and Redis. Each gets
# SIGTERM, then SIGKILL if it is still there after 20 s. Data stays in DIR.
set -uo pipefail
dir=${1:?usage: deploy/replicated/down.sh DIR}
[ -d "$dir" ] || { echo "down.sh: no directory $dir" >&2; exit 1; }

stop() {  # stop NAME...: all at once, then wait for each
  local name pid pids=()
  for name in "$@"; do
    [ -f "$dir/$name.pid" ] || continue
    pid=$(cat "$dir/$name.pid")
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 200); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  for name in "$@"; do rm -f "$dir/$name.pid"; done
}

stop worker-1 worker-2
stop haproxy
stop frontend-1 frontend-2
stop storage-1 storage-2
stop redis
echo "down.sh: stopped (data and logs kept in $dir)"
