#!/usr/bin/env bash
# Load comparison: portico-proxy against nginx, one core each, in front of the same upstream.
#
#   bench/load.sh                                     what `make bench` runs after criterion
#   BENCH_DURATION=5 BENCH_ROUNDS=1 bench/load.sh     a quicker, noisier run
#
# Setup, all on 127.0.0.1 (2 cores assumed, called core 0 and core 1 below):
#   upstream  portico-sample-backend --workers 1 answering /bench with 12 bytes, on core 1
#   proxies   portico-proxy --workers 1 and nginx (worker_processes 1, upstream keepalive 64),
#             both pinned to core 0, started once and measured in turn, alternating
#   load      wrk -t1 (h2load -t1 for h2c) on core 1: a BENCH_WARMUP s warm-up, then
#             BENCH_DURATION s measured
# Scenarios: 64 keep-alive connections; 1,000 keep-alive connections; a new connection for every
# request (Connection: close, 16 connections); h2c with prior knowledge (64 connections x 10
# streams). For each: requests/s, p50/p99 latency, the proxy's CPU seconds during the measured run
# (utime+stime from /proc/PID/stat, all threads; for nginx master + worker), requests per CPU
# second, and Portico's figures as ratios to nginx's; then each proxy's user and system time per
# request, which shows how much of a request is the kernel's work that any proxy pays. Each
# scenario runs BENCH_ROUNDS times per proxy and the round with the most requests/s is reported:
# other work on the machine only ever lowers a result.
# Then memory and scale: RSS idle and after the runs, and a second portico-proxy with
# BENCH_ROUTES (10,000) Ingresses, Services and EndpointSlices (bench/gen-ingresses.sh): its
# time to ready, its RSS, and requests/s through one of its routes as a ratio to the single-route
# proxy, the two measured alternately.
# The upstream and the load generator share core 1, so a proxy that needs less than a whole core
# is not the bottleneck: requests per CPU-second is the figure that compares the proxies' cost.
# Results: a markdown table on stdout and in .bench/results.md; raw outputs in .bench/.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/.bench
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
ROUNDS=${BENCH_ROUNDS:-2}
# The one-route / 10,000-route comparison looks for a 5% difference between two runs of the
# same proxy, under the machine's wall-clock noise: it gets twice the rounds.
SCALE_ROUNDS=${BENCH_SCALE_ROUNDS:-$((ROUNDS * 2))}
ROUTES=${BENCH_ROUTES:-10000}
UPSTREAM=127.0.0.1:19000
PORTICO=127.0.0.1:18080
PORTICO_HTTPS=127.0.0.1:18443
PORTICO_ADMIN=127.0.0.1:19901
MANY=127.0.0.1:18090
MANY_HTTPS=127.0.0.1:18453
MANY_ADMIN=127.0.0.1:19902
NGINX=127.0.0.1:18081
NGINX_H2C=127.0.0.1:18082
PROXY_CORE=0
LOAD_CORE=1
TICKS=$(getconf CLK_TCK)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench/load.sh: %s\n' "$*" >&2; exit 1; }

port_taken() { timeout 1 bash -c "exec 3<>/dev/tcp/${1%:*}/${1##*:}" 2>/dev/null; }
for addr in $UPSTREAM $PORTICO $PORTICO_HTTPS $PORTICO_ADMIN $MANY $MANY_HTTPS $MANY_ADMIN \
  $NGINX $NGINX_H2C; do
  if port_taken "$addr"; then die "$addr is already in use"; fi
done
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (proxy on core 0, upstream and load on core 1)"

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
mkdir -p "$WORK"
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

# --- measuring -------------------------------------------------------------------------------

# CPU ticks used so far by the given processes, threads included: "user system".
cpu_ticks() {
  local user=0 sys=0 pid u s
  for pid in "$@"; do
    # Fields after "pid (comm) ": state is the 1st, utime the 12th, stime the 13th.
    read -r u s < <(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12, $13}')
    user=$((user + u)) sys=$((sys + s))
  done
  echo "$user $sys"
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
# Seconds in a number of CPU ticks.
seconds() { awk -v t="$1" -v hz="$TICKS" 'BEGIN {printf "%.2f", t / hz}'; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
# Waits until a URL answers 200, for up to $2 seconds.
wait_ok() {
  local url=$1 limit=$2
  for _ in $(seq 1 $((limit * 10))); do
    [ "$(curl -s -m 1 -o /dev/null -w '%{http_code}' "$url")" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}

# wrk's output: total requests, requests/s, a --latency percentile in ms, errors (socket errors
# plus non-2xx answers).
wrk_requests() { awk '/ requests in / {print $1; exit}' "$1"; }
wrk_rps() { awk '/^Requests\/sec:/ {printf "%.0f", $2; exit}' "$1"; }
wrk_latency_ms() {
  awk -v p="$2" '$1 == p {
    v = $2; unit = v; sub(/^[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v)
    if (unit == "us") v /= 1000; else if (unit == "s") v *= 1000; else if (unit == "m") v *= 60000
    printf "%.2f", v; exit }' "$1"
}
wrk_errors() {
  awk '/Socket errors:/ {gsub(/,/, ""); e += $4 + $6 + $8 + $10}
       /Non-2xx or 3xx responses:/ {e += $5}
       END {print e + 0}' "$1"
}
# h2load's output and --log-file (start µs, status, duration µs per request).
h2_requests() { awk '/^requests:/ {print $8; exit}' "$1"; }
h2_rps() { awk '/^finished in/ {gsub(/,/, ""); printf "%.0f", $4; exit}' "$1"; }
h2_errors() {
  awk '/^requests:/ {gsub(/,/, ""); e += $10 + $12 + $14}
       /^status codes:/ {gsub(/,/, ""); e += $7 + $9}
       END {print e + 0}' "$1"
}
h2_latency_ms() { # LOG PERCENT
  cut -f3 "$1" | sort -n | awk -v p="$2" '{v[NR] = $1}
    END { if (NR == 0) { print "n/a"; exit } i = int(NR * p / 100); if (i < 1) i = 1
          printf "%.2f", v[i] / 1000 }'
}

# Per target: the address for HTTP/1.1, for h2c, the Host to send, and the processes to charge.
declare -A ADDR H2C_ADDR HOST PIDS
# measure TARGET TOOL CONNS HEADER NAME: a warm-up, then a measured run whose raw output is kept
# in $WORK/NAME.*; prints "requests rps p50_ms p99_ms cpu_s errors user_s system_s" (cpu_s is
# user + system).
measure() {
  local target=$1 tool=$2 conns=$3 header=$4 name=$5
  local addr=${ADDR[$target]} host=${HOST[$target]} out=$WORK/$name.txt
  local extra=() pids
  read -r -a pids <<<"${PIDS[$target]}"
  [ -n "$header" ] && extra=(-H "$header")
  local requests rps p50 p99 errors u0 s0 u1 s1
  if [ "$tool" = wrk ]; then
    taskset -c $LOAD_CORE wrk -t1 -c"$conns" -d"${WARMUP}s" -H "Host: $host" "${extra[@]}" \
      "http://$addr/bench" >/dev/null 2>&1 || true
    read -r u0 s0 < <(cpu_ticks "${pids[@]}")
    taskset -c $LOAD_CORE wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 5s --latency \
      -H "Host: $host" "${extra[@]}" "http://$addr/bench" >"$out" 2>&1 || true
    read -r u1 s1 < <(cpu_ticks "${pids[@]}")
    requests=$(wrk_requests "$out") rps=$(wrk_rps "$out") errors=$(wrk_errors "$out")
    p50=$(wrk_latency_ms "$out" 50%) p99=$(wrk_latency_ms "$out" 99%)
  else
    addr=${H2C_ADDR[$target]}
    taskset -c $LOAD_CORE h2load -t1 -c"$conns" -m10 -D"$WARMUP" -H ":authority: $host" \
      "http://$addr/bench" >/dev/null 2>&1 || true
    read -r u0 s0 < <(cpu_ticks "${pids[@]}")
    taskset -c $LOAD_CORE h2load -t1 -c"$conns" -m10 -D"$DURATION" -H ":authority: $host" \
      --log-file="$WORK/$name.tsv" "http://$addr/bench" >"$out" 2>&1 || true
    read -r u1 s1 < <(cpu_ticks "${pids[@]}")
    requests=$(h2_requests "$out") rps=$(h2_rps "$out") errors=$(h2_errors "$out")
    p50=$(h2_latency_ms "$WORK/$name.tsv" 50) p99=$(h2_latency_ms "$WORK/$name.tsv" 99)
  fi
  local cpu user sys
  cpu=$(seconds $((u1 - u0 + s1 - s0))) user=$(seconds $((u1 - u0))) sys=$(seconds $((s1 - s0)))
  echo "${requests:-0} ${rps:-0} ${p50:-n/a} ${p99:-n/a} $cpu ${errors:-0} $user $sys"
}

# compare KEY TOOL CONNS HEADER TARGET... : BENCH_ROUNDS rounds, each target in turn; keeps the
# best round of each target in BEST[KEY-TARGET].
declare -A BEST
compare() {
  local key=$1 tool=$2 conns=$3 header=$4
  shift 4
  local round target result rps best_rps
  for round in $(seq 1 "$ROUNDS"); do
    for target in "$@"; do
      log "$key: $target, round $round/$ROUNDS"
      result=$(measure "$target" "$tool" "$conns" "$header" "$key-$target-r$round")
      log "   requests rps p50_ms p99_ms cpu_s errors user_s system_s: $result"
      read -r _ rps _ <<<"$result"
      read -r _ best_rps _ <<<"${BEST[$key-$target]:-0 0}"
      if [ -z "${BEST[$key-$target]:-}" ] || [ "$rps" -gt "$best_rps" ]; then
        BEST[$key-$target]=$result
      fi
    done
  done
}

# --- the upstream and the proxies ------------------------------------------------------------

log "starting the upstream on $UPSTREAM (core $LOAD_CORE)"
taskset -c $LOAD_CORE "$BIN/portico-sample-backend" --listen $UPSTREAM --name bench --workers 1 \
  >"$WORK/upstream.log" 2>&1 &
pids+=($!)

# start_portico NAME DIR HTTP HTTPS ADMIN: sets STARTED_PID; log in $WORK/NAME.log.
start_portico() {
  taskset -c $PROXY_CORE "$BIN/portico-proxy" --manifests "$2" --workers 1 \
    --http "$3" --https "$4" --admin "$5" --drain-timeout 1s --access-log off >"$WORK/$1.log" 2>&1 &
  STARTED_PID=$!
  pids+=("$STARTED_PID")
}

bench/gen-ingresses.sh 1 "$WORK/manifests-1" "${UPSTREAM##*:}"
log "starting portico-proxy --workers 1 (core $PROXY_CORE) on $PORTICO, 1 route"
start_portico portico "$WORK/manifests-1" $PORTICO $PORTICO_HTTPS $PORTICO_ADMIN
ADDR[portico]=$PORTICO H2C_ADDR[portico]=$PORTICO HOST[portico]=svc-1.bench.localhost
PIDS[portico]=$STARTED_PID
wait_ok "http://$PORTICO_ADMIN/readyz" 30 ||
  { tail "$WORK/portico.log" >&2; die "portico-proxy not ready"; }

log "starting nginx, worker_processes 1 (core $PROXY_CORE) on $NGINX (h2c on $NGINX_H2C)"
# shellcheck source=bench/nginx.conf.sh
. bench/nginx.conf.sh
nginx_conf "$WORK/nginx" $UPSTREAM $NGINX $NGINX_H2C
taskset -c $PROXY_CORE nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" \
  -e "$WORK/nginx/logs/error.log" >"$WORK/nginx/logs/stdout.log" 2>&1 &
NGINX_PID=$!
pids+=("$NGINX_PID")
wait_ok "http://$NGINX/bench" 10 || { cat "$WORK/nginx/logs/error.log" >&2; die "nginx not answering"; }
# The master and its worker: the worker does the proxying, the master is charged too.
children_of() {
  awk -v p="$1" '{ sub(/^.*\) /, ""); if ($2 == p) print FILENAME }' /proc/[0-9]*/stat 2>/dev/null |
    sed 's|/proc/\([0-9]*\)/stat|\1|'
}
mapfile -t workers < <(children_of "$NGINX_PID")
[ ${#workers[@]} -gt 0 ] || die "no nginx worker process found under $NGINX_PID"
ADDR[nginx]=$NGINX H2C_ADDR[nginx]=$NGINX_H2C HOST[nginx]=svc-1.bench.localhost
PIDS[nginx]="$NGINX_PID ${workers[*]}"

log "generating $ROUTES Ingresses, Services and EndpointSlices"
bench/gen-ingresses.sh "$ROUTES" "$WORK/manifests-many" "${UPSTREAM##*:}"
log "starting a second portico-proxy on $MANY with $ROUTES routes"
t0=$(date +%s.%N)
start_portico many "$WORK/manifests-many" $MANY $MANY_HTTPS $MANY_ADMIN
wait_ok "http://$MANY_ADMIN/readyz" 120 ||
  { tail "$WORK/many.log" >&2; die "portico-proxy not ready with $ROUTES routes"; }
t1=$(date +%s.%N)
MANY_READY_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
ADDR[many]=$MANY H2C_ADDR[many]=$MANY HOST[many]=svc-$((ROUTES / 2)).bench.localhost
PIDS[many]=$STARTED_PID

# A request through each, to fail early and loudly when routing is wrong.
for target in portico nginx many; do
  got=$(curl -s -m 2 -H "Host: ${HOST[$target]}" "http://${ADDR[$target]}/bench")
  [ "$got" = "hello world" ] ||
    die "$target does not route ${HOST[$target]}/bench to the upstream: $(curl -s -m 2 -i -H "Host: ${HOST[$target]}" "http://${ADDR[$target]}/bench" | head -3)"
done

sleep 1
read -r -a nginx_pids <<<"${PIDS[nginx]}"
RSS_PORTICO_IDLE=$(rss_kib "${PIDS[portico]}")
RSS_NGINX_IDLE=$(rss_kib "${nginx_pids[@]}")
RSS_MANY_IDLE=$(rss_kib "${PIDS[many]}")

# --- the runs --------------------------------------------------------------------------------

titles=("64 keep-alive connections" "1,000 keep-alive connections"
  "new connection per request (16 conns, Connection: close)" "h2c, 64 connections x 10 streams (h2load)")
compare s0 wrk 64 "" portico nginx
compare s1 wrk 1000 "" portico nginx
compare s2 wrk 16 "Connection: close" portico nginx
compare s3 h2load 64 "" portico nginx
ROUNDS=$SCALE_ROUNDS compare scale wrk 64 "" portico many
RSS_PORTICO_AFTER=$(rss_kib "${PIDS[portico]}")
RSS_NGINX_AFTER=$(rss_kib "${nginx_pids[@]}")
RSS_MANY_AFTER=$(rss_kib "${PIDS[many]}")

# --- the report ------------------------------------------------------------------------------

per_cpu() { awk -v r="$1" -v c="$2" 'BEGIN { if (c > 0) printf "%.0f", r / c; else print "n/a" }'; }
{
  echo "\`make bench\` (\`bench/load.sh\`; BENCH_DURATION=$DURATION BENCH_WARMUP=$WARMUP BENCH_ROUNDS=$ROUNDS):"
  echo "portico-proxy --workers 1 vs nginx $(nginx -v 2>&1 | sed 's/.*nginx\///') (worker_processes 1, upstream keepalive 64), each pinned to core $PROXY_CORE;"
  echo "upstream (portico-sample-backend, 12-byte body) and the load generator share core $LOAD_CORE; $(nproc) x $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(uname -r)."
  echo "Best of $ROUNDS alternating rounds of $DURATION s (after $WARMUP s of warm-up). Ratios are Portico / nginx."
  echo
  echo "| scenario | req/s Portico | req/s nginx | ratio | p50 / p99 ms Portico | p50 / p99 ms nginx | CPU-s Portico | CPU-s nginx | req per CPU-s Portico | req per CPU-s nginx | ratio | errors P / n |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for i in "${!titles[@]}"; do
    read -r pr prps pp50 pp99 pcpu perr _ <<<"${BEST[s$i-portico]}"
    read -r nr nrps np50 np99 ncpu nerr _ <<<"${BEST[s$i-nginx]}"
    ppc=$(per_cpu "$pr" "$pcpu") npc=$(per_cpu "$nr" "$ncpu")
    echo "| ${titles[$i]} | $prps | $nrps | $(ratio "$prps" "$nrps") | $pp50 / $pp99 | $np50 / $np99 | $pcpu | $ncpu | $ppc | $npc | $(ratio "$ppc" "$npc") | $perr / $nerr |"
  done
  echo
  echo "Where the CPU goes, µs per request (user / system, from /proc/PID/stat). \"Ceiling\" is the"
  echo "req per CPU-s ratio a proxy with no user-space cost at all and nginx's kernel time per request"
  echo "would reach: the kernel's share (TCP over loopback, wake-ups, epoll) bounds what any proxy"
  echo "making the same socket calls can gain in that scenario."
  echo
  echo "| scenario | Portico user | Portico system | nginx user | nginx system | ceiling |"
  echo "|---|---:|---:|---:|---:|---:|"
  for i in "${!titles[@]}"; do
    read -r pr _ _ _ _ _ pu ps <<<"${BEST[s$i-portico]}"
    read -r nr _ _ _ _ _ nu ns <<<"${BEST[s$i-nginx]}"
    awk -v t="${titles[$i]}" -v pr="$pr" -v pu="$pu" -v ps="$ps" -v nr="$nr" -v nu="$nu" -v ns="$ns" \
      'BEGIN { if (pr > 0 && nr > 0 && ns > 0)
                 printf "| %s | %.2f | %.2f | %.2f | %.2f | %.2f× |\n", t, pu * 1e6 / pr, ps * 1e6 / pr,
                   nu * 1e6 / nr, ns * 1e6 / nr, (nu + ns) / ns }'
  done
  read -r sr srps sp50 sp99 scpu serr _ <<<"${BEST[scale-portico]}"
  read -r mr mrps mp50 mp99 mcpu merr _ <<<"${BEST[scale-many]}"
  echo
  echo "| memory and scale | Portico | nginx |"
  echo "|---|---:|---:|"
  echo "| RSS idle, 1 route | $(mib "$RSS_PORTICO_IDLE") MiB | $(mib "$RSS_NGINX_IDLE") MiB (master + worker) |"
  echo "| RSS after all the runs, 1 route | $(mib "$RSS_PORTICO_AFTER") MiB | $(mib "$RSS_NGINX_AFTER") MiB |"
  echo "| RSS idle, $ROUTES Ingresses + Services + EndpointSlices loaded | $(mib "$RSS_MANY_IDLE") MiB | |"
  echo "| RSS after its runs, $ROUTES routes | $(mib "$RSS_MANY_AFTER") MiB | |"
  echo "| start to /readyz, $ROUTES routes | $MANY_READY_S s | |"
  echo "| 64 keep-alive conns, 1 route: req/s, p50 / p99 ms, req per CPU-s | $srps, $sp50 / $sp99, $(per_cpu "$sr" "$scpu") | |"
  echo "| same through route $((ROUTES / 2)) of $ROUTES | $mrps, $mp50 / $mp99, $(per_cpu "$mr" "$mcpu") | |"
  echo "| ratio $ROUTES routes / 1 route (best of $SCALE_ROUNDS rounds each): req/s, req per CPU-s | $(ratio "$mrps" "$srps"), $(ratio "$(per_cpu "$mr" "$mcpu")" "$(per_cpu "$sr" "$scpu")") | |"
  [ "$serr$merr" = 00 ] || echo "| errors (1 route / $ROUTES routes) | $serr / $merr | |"
} | tee "$WORK/results.md"
