# shellcheck shell=bash disable=SC2034 # it sets variables for the scripts that source it
# Sourced by the benchmark scripts in bench/scripts/: building, installing the peers, starting and
# stopping processes on loopback ports. Every process started here is recorded and stopped
# (by its pid) when the script exits, however it exits.

set -euo pipefail
BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$BENCH_ROOT"
# shellcheck source=scripts/deps.sh
. scripts/deps.sh

# Where the analysis (Python) lives and where the published results go, from the repository root.
ANALYSIS=bench/analysis
RESULTS=bench/results

BENCH_PIDS=()
BENCH_WORK=""

# Every proxy started here (gridlb, nginx, HAProxy, bare-pingora) gets BENCH_THREADS worker
# threads or processes, and runs under the command BENCH_WRAP when one is set (callgrind, for
# bench/scripts/instructions: nginx then runs without a master, so that the process started is
# the one serving); BENCH_START_S bounds the seconds one may take to start.
BENCH_THREADS=2
BENCH_WRAP=()
BENCH_START_S=20

# bench_init NAME: a fresh work directory under target/bench/ and the exit trap.
bench_init() {
  BENCH_WORK="$BENCH_ROOT/target/bench/$1-$(date +%Y%m%d-%H%M%S)-$$"
  mkdir -p "$BENCH_WORK"
  trap bench_exit EXIT
  trap 'exit 130' INT TERM
}

bench_cleanup() {
  local pid
  for pid in "${BENCH_PIDS[@]}"; do stop_pid "$pid"; done
  BENCH_PIDS=()
}

# On exit: stop everything, and drop the copied binaries (logs and data stay).
bench_exit() {
  bench_cleanup
  [ -n "$BENCH_WORK" ] && rm -rf "${BENCH_WORK:?}/bin"
  return 0
}

# stop_pid PID: SIGTERM, up to 3 s to go, then SIGKILL.
stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# stop_all: stop every process started so far (between benchmark rounds).
stop_all() { bench_cleanup; }

# start_bg NAME CMD...: run CMD in the background, output in $BENCH_WORK/NAME.log; sets LAST_PID.
start_bg() {
  local name=$1; shift
  : >"$BENCH_WORK/$name.log"
  "$@" >"$BENCH_WORK/$name.log" 2>&1 &
  LAST_PID=$!
  BENCH_PIDS+=("$LAST_PID")
}

# A loopback port that was free a moment ago.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_http URL [SECONDS]: until URL answers 2xx.
wait_http() {
  local url=$1 limit=${2:-20} i
  for i in $(seq $((limit * 10))); do
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no answer from $url after ${limit}s" >&2
  return 1
}

# wait_port PORT [SECONDS]: until something listens on 127.0.0.1:PORT.
wait_port() {
  local port=$1 limit=${2:-20} i
  for i in $(seq $((limit * 10))); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$port after ${limit}s" >&2
  return 1
}

# bench_build PROFILE [PACKAGE...]: build gridlb, substation and the bench tools (and each
# workspace PACKAGE, whose binary has the package's name, e.g. bare-pingora), and copy the
# binaries to $BENCH_WORK/bin so that a rebuild during the run does not change what is measured.
bench_build() {
  local profile=$1 dir p pkgs=()
  shift
  for p in "$@"; do pkgs+=(-p "$p"); done
  ensure_build_tools
  cargo build --profile "$profile" -p gridlb -p substation -p gridlb-bench "${pkgs[@]}" --bins >&2
  dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
  mkdir -p "$BENCH_WORK/bin"
  for b in gridlb substation ev-demand load-sampler grid-agent grid-limit "$@"; do
    cp "target/$dir/$b" "$BENCH_WORK/bin/"
  done
  BIN="$BENCH_WORK/bin"
}

# ensure_oha: oha from crates.io when it is missing.
ensure_oha() {
  command -v oha >/dev/null 2>&1 && return 0
  echo "installing oha (cargo install oha --locked)..." >&2
  cargo install oha --locked >&2
}

# ensure_wrk: wrk from Debian when it is missing.
ensure_wrk() { ensure_pkg wrk wrk; }

# ensure_peers: nginx and HAProxy from Debian, without starting their system services.
ensure_peers() {
  command -v nginx >/dev/null 2>&1 && command -v haproxy >/dev/null 2>&1 && return 0
  local policy=/usr/sbin/policy-rc.d added=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod +x "$policy"; added=1
  fi
  ensure_pkg nginx nginx-light
  ensure_pkg haproxy haproxy
  [ -n "$added" ] && as_root rm -f "$policy"
  return 0
}

# ensure_venv [REQUIREMENTS...]: a Python venv at target/bench-venv with the pinned packages of
# bench/analysis/requirements.txt and of each REQUIREMENTS file, installed again only when a file
# changes; sets PY (the venv's python, which runs everything in bench/analysis/).
# shellcheck disable=SC2120 # the arguments are optional
ensure_venv() {
  local venv="$BENCH_ROOT/target/bench-venv" req stamp sum
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2 || { ensure_pkg_any python3-venv; python3 -m venv "$venv" >&2; }
  fi
  for req in "$ANALYSIS/requirements.txt" "$@"; do
    stamp="$venv/installed-$(echo "$req" | tr / _)"
    sum=$(sha256sum "$req" | cut -d' ' -f1)
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ] && continue
    echo "installing $req into $venv..." >&2
    "$venv/bin/python" -m pip install -q -r "$req" >&2
    echo "$sum" >"$stamp"
  done
  PY="$venv/bin/python"
  export PATH="$venv/bin:$PATH"
}

ensure_pkg_any() {
  if [ -z "${apt_updated:-}" ]; then as_root apt-get update -qq >&2; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >&2
}

# start_substation NAME CAPACITY_KW TIME_SCALE: sets SUB_ADDR to the address it listens on.
# SUBSTATION_ARGS (an array, empty by default) are passed on to the substation.
# (Not to be called in $(...): the process must stay a child of this shell to be stopped.)
SUBSTATION_ARGS=()
start_substation() {
  local name=$1 cap=$2 scale=$3 addr=""
  start_bg "substation-$name" "$BIN/substation" --id "$name" --listen 127.0.0.1:0 \
    --capacity-kw "$cap" --time-scale "$scale" "${SUBSTATION_ARGS[@]}"
  for _ in $(seq 100); do
    addr=$(sed -n 's/^substation .* listening on \(.*\)$/\1/p' "$BENCH_WORK/substation-$name.log" | head -1 || true)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { cat "$BENCH_WORK/substation-$name.log" >&2; return 1; }
  SUB_ADDR=$addr
}

# start_grid TIME_SCALE NAME:CAPACITY_KW...: one fresh substation each; sets SUBS (NAME=ADDR
# each, for start_gridlb), WATCH (--substation NAME=ADDR each, for load-sampler) and SUB_CAPS
# (CAPACITY_KW each, in the same order).
start_grid() {
  local scale=$1 sc name cap; shift
  SUBS=() WATCH=() SUB_CAPS=()
  for sc in "$@"; do
    name=${sc%%:*} cap=${sc#*:}
    start_substation "$name" "$cap" "$scale"
    SUBS+=("$name=$SUB_ADDR")
    WATCH+=(--substation "$name=$SUB_ADDR")
    SUB_CAPS+=("$cap")
  done
}

# save_substation_metrics PREFIX: each substation's /metrics (from $SUBS) to $BENCH_WORK/PREFIX-NAME.metrics.
save_substation_metrics() {
  local s
  for s in "${SUBS[@]}"; do
    curl -fsS --max-time 2 "http://${s#*=}/metrics" >"$BENCH_WORK/$1-${s%%=*}.metrics"
  done
}

# start_gridlb PORT ALGORITHM PROBE_MS NAME=ADDR...: gridlb on PORT; sets GRIDLB_PID.
start_gridlb() {
  local port=$1 algorithm=$2 probe_ms=$3; shift 3
  local admin conf="$BENCH_WORK/gridlb-$port.yaml" s
  admin=$(free_port)
  {
    echo "listen: 127.0.0.1:$port"
    echo "admin: { listen: 127.0.0.1:$admin }"
    echo "substations:"
    for s in "$@"; do echo "  - { name: ${s%%=*}, address: \"${s#*=}\" }"; done
    echo "probe: { interval_ms: $probe_ms, timeout_ms: $(( probe_ms * 4 / 5 )) }"
    echo "selection: { algorithm: $algorithm }"
  } >"$conf"
  start_bg "gridlb-$port" env RUST_LOG=warn "${BENCH_WRAP[@]}" "$BIN/gridlb" --config "$conf" \
    --threads "$BENCH_THREADS"
  GRIDLB_PID=$LAST_PID
  wait_http "http://127.0.0.1:$admin/readyz" "$BENCH_START_S"
}

# start_nginx PORT NAME=ADDR:WEIGHT...: nginx with least_conn, keep-alive to the upstreams and
# retry on 503 and connect errors (POST included); sets NGINX_PID.
start_nginx() {
  local port=$1; shift
  local dir="$BENCH_WORK/nginx-$port" s spec
  mkdir -p "$dir/tmp"
  {
    echo "worker_processes $BENCH_THREADS;"
    [ ${#BENCH_WRAP[@]} = 0 ] || echo "master_process off;"
    echo "pid $dir/nginx.pid;"
    echo "error_log $dir/error.log warn;"
    echo "daemon off;"
    echo "events { worker_connections 8192; }"
    echo "http {"
    echo "  access_log off;"
    echo "  client_body_temp_path $dir/tmp/body; proxy_temp_path $dir/tmp/proxy;"
    echo "  fastcgi_temp_path $dir/tmp/fcgi; uwsgi_temp_path $dir/tmp/uwsgi; scgi_temp_path $dir/tmp/scgi;"
    echo "  keepalive_requests 100000;"
    echo "  upstream substations {"
    echo "    least_conn;"
    for s in "$@"; do
      spec=${s#*=}
      echo "    server ${spec%:*} weight=${spec##*:} max_fails=0;"
    done
    echo "    keepalive 256;"
    echo "    keepalive_requests 100000;"
    echo "  }"
    echo "  server {"
    echo "    listen 127.0.0.1:$port reuseport backlog=4096;"
    echo "    location / {"
    echo "      proxy_pass http://substations;"
    echo "      proxy_http_version 1.1;"
    echo "      proxy_set_header Connection \"\";"
    echo "      proxy_next_upstream error timeout http_503 non_idempotent;"
    echo "      proxy_next_upstream_tries 3;"
    echo "      proxy_connect_timeout 1s;"
    echo "      proxy_read_timeout 10s;"
    echo "    }"
    echo "  }"
    echo "}"
  } >"$dir/nginx.conf"
  start_bg "nginx-$port" "${BENCH_WRAP[@]}" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
  NGINX_PID=$LAST_PID
  wait_port "$port" "$BENCH_START_S"
}

# start_haproxy PORT AGENT_MS NAME=ADDR:WEIGHT:AGENT_PORT...: HAProxy with leastconn, keep-alive
# to the upstreams, L7 retries on 503 and connect errors, and agent-check weights from
# grid-agent (free capacity in percent); sets HAPROXY_PID.
start_haproxy() {
  local port=$1 agent_ms=$2; shift 2
  local dir="$BENCH_WORK/haproxy-$port" s name rest addr weight agent
  mkdir -p "$dir"
  {
    echo "global"
    echo "  nbthread $BENCH_THREADS"
    echo "  maxconn 8000"
    echo "  tune.bufsize 16384"
    echo "defaults"
    echo "  mode http"
    echo "  timeout connect 1s"
    echo "  timeout client 30s"
    echo "  timeout server 10s"
    echo "  timeout http-keep-alive 30s"
    echo "  option http-keep-alive"
    echo "  http-reuse always"
    echo "  retries 2"
    echo "  option redispatch 1"
    echo "  retry-on conn-failure empty-response 503"
    echo "frontend charge"
    echo "  bind 127.0.0.1:$port"
    echo "  option http-buffer-request"
    echo "  default_backend substations"
    echo "backend substations"
    echo "  balance leastconn"
    for s in "$@"; do
      name=${s%%=*}; rest=${s#*=}
      agent=${rest##*:}; rest=${rest%:*}
      weight=${rest##*:}; addr=${rest%:*}
      echo "  server $name $addr weight $weight agent-check agent-addr 127.0.0.1 agent-port $agent agent-inter ${agent_ms}ms"
    done
  } >"$dir/haproxy.cfg"
  haproxy -c -q -f "$dir/haproxy.cfg" >&2
  start_bg "haproxy-$port" "${BENCH_WRAP[@]}" haproxy -db -f "$dir/haproxy.cfg"
  HAPROXY_PID=$LAST_PID
  wait_port "$port" "$BENCH_START_S"
}

# proc_tree PID...: the processes and all their descendants (nginx's workers, a wrapper's child).
proc_tree() {
  local pid
  for pid in "$@"; do
    echo "$pid"
    # shellcheck disable=SC2046 # one pid a word
    proc_tree $(pgrep -P "$pid" 2>/dev/null || true)
  done
}

# rss_kib PID...: resident memory of the processes and their descendants, in KiB.
rss_kib() {
  local total=0 p kib
  for p in $(proc_tree "$@"); do
    kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    total=$((total + ${kib:-0}))
  done
  echo "$total"
}

# cpu_ticks PID...: user + system CPU time of the processes (all their threads, exited ones
# included) and their descendants, in clock ticks (`getconf CLK_TCK` a second): fields 14 and
# 15 of /proc/PID/stat, read after the command name (which may hold spaces).
cpu_ticks() {
  local total=0 p t
  for p in $(proc_tree "$@"); do
    t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || true)
    total=$((total + ${t:-0}))
  done
  echo "$total"
}

# cpu_ticks_split PID...: as cpu_ticks, as two numbers: user, then system.
cpu_ticks_split() {
  local user=0 system=0 p u s
  for p in $(proc_tree "$@"); do
    read -r u s < <(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12, $13}' || true)
    user=$((user + ${u:-0})); system=$((system + ${s:-0}))
  done
  echo "$user $system"
}

# machine_json: what the results were measured on (JSON; needs ensure_venv first).
machine_json() { "$PY" "$ANALYSIS/machine.py"; }
