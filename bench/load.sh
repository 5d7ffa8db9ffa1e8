#!/usr/bin/env bash
# Load comparison: portico-proxy against nginx, one core each, in front of the same upstream.
#
#   bench/load.sh                      (what `make bench` runs after the criterion benches)
#   BENCH_DURATION=5 BENCH_ROUNDS=1 bench/load.sh    a quicker, noisier run
#
# Setup, all on 127.0.0.1 (a 2-core machine is assumed; core 0 and core 1 below):
#   upstream   portico-sample-backend --workers 1, answering /bench with 12 bytes, on core 1
#   proxies    portico-proxy --workers 1 and nginx (worker_processes 1, upstream keepalive 64),
#              both on core 0, both started once and measured in turn, alternating
#   load       wrk -t1 on core 1, a warm-up of BENCH_WARMUP s, then BENCH_DURATION s measured
# Scenarios: 64 keep-alive connections, 1,000 keep-alive connections, a new connection for each
# request (Connection: close, 16 connections). For each: requests/s, p50/p99 latency, the proxy's
# CPU seconds during the measured run (utime+stime from /proc/PID/stat), requests per CPU second,
# and Portico's figure as a ratio to nginx's. Each scenario runs BENCH_ROUNDS times per proxy; the
# round with the most requests/s is reported. Then Portico's RSS idle, and with 10,000 Ingresses
# (with as many Services and EndpointSlices) loaded: RSS, time to ready, and requests/s through one
# of those routes as a ratio to the single-route run.
# Results: a markdown table on stdout and in .bench/results.md; raw wrk output in .bench/.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/.bench
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
ROUNDS=${BENCH_ROUNDS:-2}
ROUTES=${BENCH_ROUTES:-10000}
UPSTREAM=127.0.0.1:19000
PORTICO=127.0.0.1:18080
PORTICO_HTTPS=127.0.0.1:18443
PORTICO_ADMIN=127.0.0.1:19901
NGINX=127.0.0.1:18081
PROXY_CORE=0
LOAD_CORE=1
TICKS=$(getconf CLK_TCK)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench/load.sh: %s\n' "$*" >&2; exit 1; }

port_taken() { timeout 1 bash -c "exec 3<>/dev/tcp/${1%:*}/${1##*:}" 2>/dev/null; }
for addr in $UPSTREAM $PORTICO $PORTICO_HTTPS $PORTICO_ADMIN $NGINX; do
  if port_taken "$addr"; then die "$addr is already in use"; fi
done
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (proxy on core 0, upstream and wrk on core 1)"

scripts/install-deps.sh bench
command -v taskset >/dev/null || die "taskset (util-linux) is required"

log "building release binaries"
cargo build --release -p portico-proxy -p portico-sample-backend
BIN=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN=${BIN:-$ROOT/target}/release

# 1,000 client connections plus as many upstream ones need more descriptors than the usual 1024.
ulimit -n "$(ulimit -Hn)"

rm -rf "$WORK"
mkdir -p "$WORK"/nginx/logs "$WORK"/nginx/tmp
pids=()
cleanup() {
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- helpers ---------------------------------------------------------------------------------

# CPU ticks (user + system) used so far by the given processes, threads included.
cpu_ticks() {
  local total=0 pid t
  for pid in "$@"; do
    # Fields after "pid (comm) ": state is 1st, utime 12th, stime 13th.
    t=$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
    total=$((total + t))
  done
  echo "$total"
}
# Resident memory in KiB of the given processes.
rss_kib() {
  local total=0 pid k
  for pid in "$@"; do
    k=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
    total=$((total + k))
  done
  echo "$total"
}
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
# Waits until a URL answers 200 (up to $2 seconds).
wait_ok() {
  local url=$1 limit=$2 i
  for i in $(seq 1 $((limit * 10))); do
    [ "$(curl -s -m 1 -o /dev/null -w '%{http_code}' "$url")" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}
# Latency field of wrk's --latency distribution ("50%" or "99%") in milliseconds.
wrk_latency_ms() {
  awk -v p="$2" '$1 == p {
    v = $2; unit = v; sub(/^[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v)
    if (unit == "us") v /= 1000; else if (unit == "s") v *= 1000; else if (unit == "m") v *= 60000
    printf "%.2f", v; exit }' "$1"
}
wrk_requests() { awk '/ requests in / {print $1; exit}' "$1"; }
wrk_rps() { awk '/^Requests\/sec:/ {printf "%.0f", $2; exit}' "$1"; }
# Socket errors and non-2xx answers, summed ("0" when wrk reported none).
wrk_errors() {
  awk '/Socket errors:/ {gsub(/,/, ""); e += $4 + $6 + $8 + $10}
       /Non-2xx or 3xx responses:/ {e += $5}
       END {print e + 0}' "$1"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# run_wrk NAME ADDR HOST CONNS EXTRA... : warm-up, then a measured run whose output goes to
# $WORK/NAME.txt; prints "requests rps p50 p99 cpu_s errors" for the proxy pids in PROXY_PIDS.
run_wrk() {
  local name=$1 addr=$2 host=$3 conns=$4
  shift 4
  local out=$WORK/$name.txt
  taskset -c $LOAD_CORE wrk -t1 -c"$conns" -d"${WARMUP}s" -H "Host: $host" "$@" \
    "http://$addr/bench" >/dev/null 2>&1 || true
  local before after
  before=$(cpu_ticks "${PROXY_PIDS[@]}")
  taskset -c $LOAD_CORE wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 5s --latency \
    -H "Host: $host" "$@" "http://$addr/bench" >"$out" 2>&1 || true
  after=$(cpu_ticks "${PROXY_PIDS[@]}")
  local requests rps p50 p99 cpu
  requests=$(wrk_requests "$out")
  rps=$(wrk_rps "$out")
  p50=$(wrk_latency_ms "$out" 50%)
  p99=$(wrk_latency_ms "$out" 99%)
  cpu=$(awk -v t=$((after - before)) -v hz="$TICKS" 'BEGIN {printf "%.2f", t / hz}')
  echo "${requests:-0} ${rps:-0} ${p50:-n/a} ${p99:-n/a} $cpu $(wrk_errors "$out")"
}

# --- the upstream and the two proxies --------------------------------------------------------

log "starting the upstream on $UPSTREAM (core $LOAD_CORE)"
taskset -c $LOAD_CORE "$BIN/portico-sample-backend" --listen $UPSTREAM --name bench --workers 1 \
  >"$WORK/upstream.log" 2>&1 &
pids+=($!)

bench/gen-ingresses.sh 1 "$WORK/manifests-1" "${UPSTREAM##*:}"
start_portico() { # DIR -> sets PORTICO_PID
  taskset -c $PROXY_CORE "$BIN/portico-proxy" --manifests "$1" --workers 1 \
    --http $PORTICO --https $PORTICO_HTTPS --admin $PORTICO_ADMIN --drain-timeout 1s \
    --log-format text >"$WORK/portico.log" 2>&1 &
  PORTICO_PID=$!
  pids+=("$PORTICO_PID")
}
stop_portico() {
  kill -TERM "$PORTICO_PID" 2>/dev/null || true
  wait "$PORTICO_PID" 2>/dev/null || true
}

log "starting portico-proxy --workers 1 (core $PROXY_CORE) on $PORTICO"
start_portico "$WORK/manifests-1"
wait_ok "http://$PORTICO_ADMIN/readyz" 30 || { tail "$WORK/portico.log" >&2; die "portico-proxy not ready"; }

log "starting nginx, worker_processes 1 (core $PROXY_CORE) on $NGINX"
cat >"$WORK/nginx/nginx.conf" <<EOF
# Generated by bench/load.sh: one worker, upstream keep-alive, no logging per request.
daemon off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events {
    worker_connections 8192;
}
http {
    access_log off;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    keepalive_requests 1000000;
    upstream bench {
        server $UPSTREAM;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen $NGINX backlog=4096;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
        }
    }
}
EOF
taskset -c $PROXY_CORE nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/logs/error.log" \
  >"$WORK/nginx/logs/stdout.log" 2>&1 &
NGINX_PID=$!
pids+=("$NGINX_PID")
wait_ok "http://$NGINX/bench" 10 || { cat "$WORK/nginx/logs/error.log" >&2; die "nginx not answering"; }
# The master and its worker(s): the worker does the proxying, the master is counted for fairness.
children_of() {
  awk -v p="$1" '{ sub(/^.*\) /, ""); if ($2 == p) print FILENAME }' /proc/[0-9]*/stat 2>/dev/null |
    sed 's|/proc/\([0-9]*\)/stat|\1|'
}
mapfile -t workers < <(children_of "$NGINX_PID")
[ ${#workers[@]} -gt 0 ] || die "no nginx worker process found under $NGINX_PID"
NGINX_PIDS=("$NGINX_PID" "${workers[@]}")

# A request through each, to fail early and loudly when routing is wrong.
[ "$(curl -s -m 2 -H 'Host: svc-1.bench.localhost' "http://$PORTICO/bench")" = "hello world" ] ||
  die "portico-proxy does not route svc-1.bench.localhost/bench to the upstream: $(curl -s -m 2 -i -H 'Host: svc-1.bench.localhost' "http://$PORTICO/bench" | head -5)"

sleep 1
PORTICO_IDLE_RSS=$(rss_kib "$PORTICO_PID")
NGINX_IDLE_RSS=$(rss_kib "${NGINX_PIDS[@]}")

# --- the runs --------------------------------------------------------------------------------

scenarios=("64 keep-alive connections|64|" "1,000 keep-alive connections|1000|"
  "new connection per request (16 conns, Connection: close)|16|Connection: close")
declare -A best
for s in "${!scenarios[@]}"; do
  IFS='|' read -r title conns header <<<"${scenarios[$s]}"
  extra=()
  [ -n "$header" ] && extra=(-H "$header")
  for round in $(seq 1 "$ROUNDS"); do
    for proxy in portico nginx; do
      if [ $proxy = portico ]; then
        PROXY_PIDS=("$PORTICO_PID") addr=$PORTICO
      else
        PROXY_PIDS=("${NGINX_PIDS[@]}") addr=$NGINX
      fi
      log "$title: $proxy, round $round"
      result=$(run_wrk "s$s-$proxy-r$round" "$addr" svc-1.bench.localhost "$conns" "${extra[@]}")
      read -r _ rps _ _ _ _ <<<"$result"
      read -r _ best_rps _ _ _ _ <<<"${best[$s-$proxy]:-0 0 0 0 0 0}"
      if [ -z "${best[$s-$proxy]:-}" ] || [ "$rps" -gt "$best_rps" ]; then
        best[$s-$proxy]=$result
      fi
      log "  requests rps p50ms p99ms cpu_s errors: $result"
    done
  done
done
PORTICO_LOADED_RSS=$(rss_kib "$PORTICO_PID")

# --- 10,000 Ingresses ------------------------------------------------------------------------

log "generating $ROUTES Ingresses, Services and EndpointSlices"
bench/gen-ingresses.sh "$ROUTES" "$WORK/manifests-many" "${UPSTREAM##*:}"
stop_portico
log "starting portico-proxy on $ROUTES routes"
t0=$(date +%s.%N)
start_portico "$WORK/manifests-many"
wait_ok "http://$PORTICO_ADMIN/readyz" 120 || { tail "$WORK/portico.log" >&2; die "portico-proxy not ready with $ROUTES routes"; }
t1=$(date +%s.%N)
MANY_READY_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
sleep 1
MANY_RSS=$(rss_kib "$PORTICO_PID")
middle=svc-$((ROUTES / 2)).bench.localhost
[ "$(curl -s -m 2 -H "Host: $middle" "http://$PORTICO/bench")" = "hello world" ] ||
  die "portico-proxy does not route $middle with $ROUTES routes"
PROXY_PIDS=("$PORTICO_PID")
log "64 keep-alive connections through $middle"
MANY=$(run_wrk "many-portico" $PORTICO "$middle" 64)
log "  requests rps p50ms p99ms cpu_s errors: $MANY"

# --- the report ------------------------------------------------------------------------------

{
  echo "Load comparison, \`make bench\` (\`bench/load.sh\`, BENCH_DURATION=$DURATION BENCH_WARMUP=$WARMUP BENCH_ROUNDS=$ROUNDS):"
  echo "portico-proxy --workers 1 vs nginx $(nginx -v 2>&1 | sed 's/.*nginx\///') worker_processes 1, each pinned to one core;"
  echo "upstream (portico-sample-backend, 12-byte body) and wrk -t1 pinned to the other core; $(nproc) x $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)."
  echo "Best of $ROUNDS rounds of ${DURATION} s (after ${WARMUP} s warm-up) per scenario; ratio = Portico / nginx."
  echo
  echo "| scenario | Portico req/s | nginx req/s | ratio | Portico p50 / p99 ms | nginx p50 / p99 ms | Portico CPU-s | nginx CPU-s | Portico req/CPU-s | nginx req/CPU-s | ratio | errors P / n |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for s in "${!scenarios[@]}"; do
    IFS='|' read -r title _ _ <<<"${scenarios[$s]}"
    read -r pr prps pp50 pp99 pcpu perr <<<"${best[$s-portico]}"
    read -r nr nrps np50 np99 ncpu nerr <<<"${best[$s-nginx]}"
    ppc=$(awk -v r="$pr" -v c="$pcpu" 'BEGIN { if (c > 0) printf "%.0f", r / c; else print "n/a" }')
    npc=$(awk -v r="$nr" -v c="$ncpu" 'BEGIN { if (c > 0) printf "%.0f", r / c; else print "n/a" }')
    echo "| $title | $prps | $nrps | $(ratio "$prps" "$nrps") | $pp50 / $pp99 | $np50 / $np99 | $pcpu | $ncpu | $ppc | $npc | $(ratio "$ppc" "$npc") | $perr / $nerr |"
  done
  read -r _ mrps mp50 mp99 _ merr <<<"$MANY"
  read -r _ srps _ _ _ _ <<<"${best[0-portico]}"
  echo
  echo "| memory and scale | Portico | nginx |"
  echo "|---|---:|---:|"
  echo "| RSS idle, 1 route | $(mib "$PORTICO_IDLE_RSS") MiB | $(mib "$NGINX_IDLE_RSS") MiB (master + worker) |"
  echo "| RSS after the runs above, 1 route | $(mib "$PORTICO_LOADED_RSS") MiB | |"
  echo "| RSS idle, $ROUTES Ingresses + Services + EndpointSlices | $(mib "$MANY_RSS") MiB | |"
  echo "| time from start to /readyz, $ROUTES Ingresses | ${MANY_READY_S} s | |"
  echo "| req/s, 64 conns, one of $ROUTES routes (p50 / p99 ms) | $mrps ($mp50 / $mp99), errors $merr | |"
  echo "| ratio to the single-route run | $(ratio "$mrps" "$srps") | |"
} | tee "$WORK/results.md"
