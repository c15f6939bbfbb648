#!/usr/bin/env bash
# Local multi-node launcher: one redis-server and N aft-sidecar nodes on
# loopback addresses 127.0.0.1..N (one peer port, one IPC directory each),
# as a multi-node deployment runs them, on one machine.
#
#   cluster/local/launch.sh up [N] [DIR]   start (default N=3, DIR=a new temp dir)
#   cluster/local/launch.sh status DIR     show the nodes and whether they run
#   cluster/local/launch.sh down DIR       stop everything cleanly (SIGTERM, then SIGKILL)
#
# `up` prints how to reach each node and writes DIR/cluster.env (PIDs,
# addresses, ports) for scripts and benchmarks. Extra sidecar flags can be
# passed in AFT_LOCAL_EXTRA_ARGS. The binary is target/release/aft-sidecar
# (built if missing) unless AFT_SIDECAR_BIN names another.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"

free_port() {
  python3 - "$@" <<'PY'
import socket, sys
hosts = sys.argv[1:] or ["127.0.0.1"]
for _ in range(200):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    try:
        for h in hosts:
            t = socket.socket(); t.bind((h, port)); t.close()
            if port + 10000 > 65535: raise OSError
        print(port); break
    except OSError:
        continue
PY
}

wait_ready() { # file, timeout seconds
  local file=$1 deadline=$((SECONDS + $2))
  until grep -q "aft-sidecar ready" "$file" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then return 1; fi
    sleep 0.1
  done
}

up() {
  local n=${1:-3} dir=${2:-}
  [ -n "$dir" ] || dir=$(mktemp -d /tmp/aft-local.XXXXXX)
  mkdir -p "$dir"
  local bin=${AFT_SIDECAR_BIN:-$here/target/release/aft-sidecar}
  if [ ! -x "$bin" ]; then
    (cd "$here" && cargo build --release -q -p aft-sidecar)
  fi
  local hosts=() seeds=""
  for i in $(seq 1 "$n"); do hosts+=("127.0.0.$i"); seeds="$seeds${seeds:+,}127.0.0.$i"; done
  local redis_port peer_port
  redis_port=$(free_port)
  peer_port=$(free_port "${hosts[@]}")
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly yes \
    --dir "$dir" --logfile "$dir/redis.log" --daemonize no >/dev/null 2>&1 &
  local redis_pid=$!
  for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  {
    echo "AFT_LOCAL_DIR=$dir"
    echo "AFT_LOCAL_NODES=$n"
    echo "AFT_LOCAL_REDIS=redis://127.0.0.1:$redis_port"
    echo "AFT_LOCAL_REDIS_PID=$redis_pid"
    echo "AFT_LOCAL_PEER_PORT=$peer_port"
  } > "$dir/cluster.env"
  for i in $(seq 1 "$n"); do
    local addr="127.0.0.$i" metrics_port
    metrics_port=$(free_port)
    # shellcheck disable=SC2086
    "$bin" --ipc-dir "$dir/node$i" --storage "redis://127.0.0.1:$redis_port" \
      --node-address "$addr" --peer-mode plaintext --peer-port "$peer_port" --peers "$seeds" \
      --metrics-addr "127.0.0.1:$metrics_port" ${AFT_LOCAL_EXTRA_ARGS:-} \
      > "$dir/node$i.out" 2> "$dir/node$i.log" &
    echo "AFT_LOCAL_NODE${i}_PID=$!" >> "$dir/cluster.env"
    echo "AFT_LOCAL_NODE${i}_ADDRESS=$addr" >> "$dir/cluster.env"
    echo "AFT_LOCAL_NODE${i}_IPC=$dir/node$i" >> "$dir/cluster.env"
    echo "AFT_LOCAL_NODE${i}_METRICS=http://127.0.0.1:$metrics_port" >> "$dir/cluster.env"
  done
  for i in $(seq 1 "$n"); do
    if ! wait_ready "$dir/node$i.out" 20; then
      echo "node $i did not start; its log:" >&2
      cat "$dir/node$i.log" >&2
      down "$dir"
      exit 1
    fi
  done
  echo "aft local cluster up in $dir: redis://127.0.0.1:$redis_port, peer port $peer_port"
  for i in $(seq 1 "$n"); do
    # shellcheck disable=SC1090
    . "$dir/cluster.env"
    local m="AFT_LOCAL_NODE${i}_METRICS"
    echo "  node $i: address 127.0.0.$i, executors use ipc dir $dir/node$i, metrics ${!m}/metrics"
  done
  echo "stop with: $0 down $dir"
}

status() {
  local dir=$1
  # shellcheck disable=SC1091
  . "$dir/cluster.env"
  for i in $(seq 1 "$AFT_LOCAL_NODES"); do
    local p="AFT_LOCAL_NODE${i}_PID"
    if kill -0 "${!p}" 2>/dev/null; then echo "node $i: running (pid ${!p})"; else echo "node $i: stopped"; fi
  done
}

down() {
  local dir=$1
  [ -f "$dir/cluster.env" ] || { echo "no cluster in $dir" >&2; return 1; }
  # shellcheck disable=SC1091
  . "$dir/cluster.env"
  local pids=()
  for i in $(seq 1 "$AFT_LOCAL_NODES"); do
    local p="AFT_LOCAL_NODE${i}_PID"
    [ -n "${!p:-}" ] && pids+=("${!p}")
  done
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 1 100); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
  kill -TERM "$AFT_LOCAL_REDIS_PID" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$AFT_LOCAL_REDIS_PID" 2>/dev/null || break
    [ "$(ps -o stat= -p "$AFT_LOCAL_REDIS_PID" 2>/dev/null | cut -c1)" = "Z" ] && break
    sleep 0.1
  done
  echo "aft local cluster in $dir stopped"
}

cmd=${1:-up}
shift || true
case "$cmd" in
  up) up "$@" ;;
  status) status "$@" ;;
  down) down "$@" ;;
  *) echo "usage: $0 up [N] [DIR] | status DIR | down DIR" >&2; exit 2 ;;
esac
