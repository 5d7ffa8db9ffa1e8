#!/usr/bin/env bash
# Instructions and syscalls per request, Portico against nginx: figures that wall-clock noise on
# a shared machine does not move.
#
#   bench/icount.sh [portico|nginx|both] [SCENARIO...]     scenarios: ka64 ka1000 close (default: all)
#
# Each proxy (release portico-proxy --workers 1, or nginx with one process) runs under
# `valgrind --tool=callgrind --instr-atstart=no`; instrumentation is switched on for a bounded wrk
# run only (ICOUNT_DURATION s, default 5), then the Ir total is divided by the requests wrk
# completed. The same run is then repeated without valgrind under `strace -c -f -p`, attached for
# the measured run only, for syscalls per request (strace slows the proxy, which changes how
# many events each epoll_wait returns: compare proxies, not absolute figures). Kernel time is not
# in the Ir figure. All traffic stays on 127.0.0.1. Outputs in $ICOUNT_WORK (default
# /tmp/portico-icount; bench/load.sh wipes .bench/).
#
# ICOUNT_ROUTES=N loads N Ingresses (with their Services and EndpointSlices) into Portico and
# sends every request through the middle one: compare with the default of 1 to see what a large
# routing table costs per request, free of wall-clock noise.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${ICOUNT_WORK:-${TMPDIR:-/tmp}/portico-icount}
DURATION=${ICOUNT_DURATION:-5}
ROUTES=${ICOUNT_ROUTES:-1}
HOST=svc-$(((ROUTES + 1) / 2)).bench.localhost
UPSTREAM=127.0.0.1:19100
PROXY=127.0.0.1:18180
WHO=${1:-both}
shift || true
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(ka64 ka1000 close)
BIN=$ROOT/target/release
[ -x "$BIN/portico-proxy" ] || { echo "build first: cargo build --release -p portico-proxy -p portico-sample-backend" >&2; exit 1; }

ulimit -n "$(ulimit -Hn)"
mkdir -p "$WORK"
pids=()
cleanup() {
  trap - EXIT INT TERM
  [ ${#pids[@]} -gt 0 ] && { kill -TERM "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; }
}
trap cleanup EXIT

# Until the proxy routes HOST ($2) to the upstream: with many routes under valgrind, minutes.
wait_up() { for _ in $(seq 1 3000); do curl -sf -m 1 -o /dev/null -H "Host: $2" "http://$1/bench" && return 0; sleep 0.1; done; return 1; }

taskset -c 1 "$BIN/portico-sample-backend" --listen $UPSTREAM --name bench --workers 1 >"$WORK/upstream.log" 2>&1 &
pids+=($!)
rm -rf "$WORK/manifests"
bench/gen-ingresses.sh "$ROUTES" "$WORK/manifests" "${UPSTREAM##*:}"
# shellcheck source=bench/nginx.conf.sh
. bench/nginx.conf.sh
nginx_conf --no-master "$WORK/nginx" $UPSTREAM $PROXY

# start WRAPPER... : the proxy under a tool; sets PROXY_PID.
start() {
  local who=$1
  shift
  if [ "$who" = portico ]; then
    taskset -c 0 "$@" "$BIN/portico-proxy" --manifests "$WORK/manifests" --workers 1 \
      --http $PROXY --https 127.0.0.1:18543 --admin 127.0.0.1:19911 --log-level warn --access-log off >"$WORK/$who.log" 2>&1 &
  else
    taskset -c 0 "$@" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$WORK/$who.log" 2>&1 &
  fi
  PROXY_PID=$!
  wait_up $PROXY "$HOST" || { cat "$WORK/$who.log"; exit 1; }
}
stop() { kill -TERM "$PROXY_PID" 2>/dev/null || true; wait "$PROXY_PID" 2>/dev/null || true; }

load() { # SCENARIO OUT
  local conns=64 hdr=()
  case $1 in
    ka64) conns=64 ;;
    ka1000) conns=1000 ;;
    close) conns=16 hdr=(-H "Connection: close") ;;
  esac
  taskset -c 1 wrk -t1 -c$conns -d"${DURATION}s" --timeout 10s -H "Host: $HOST" \
    "${hdr[@]}" "http://$PROXY/bench" >"$2" 2>&1 || true
  awk '/ requests in / {print $1; exit}' "$2"
}

printf '%-8s %-8s %10s %12s %14s %12s\n' proxy scenario requests Ir/req syscalls/req errors
for who in portico nginx; do
  [ "$WHO" = both ] || [ "$WHO" = "$who" ] || continue
  for s in "${SCENARIOS[@]}"; do
    out=$WORK/$who-$s
    start "$who" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out.callgrind"
    # Warm the upstream pool, then count.
    load "$s" /dev/null >/dev/null || true
    callgrind_control -i on "$PROXY_PID" >/dev/null
    reqs=$(load "$s" "$out.wrk")
    callgrind_control -i off "$PROXY_PID" >/dev/null
    stop
    ir=$(callgrind_annotate "$out.callgrind" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(/,/, "", $1); print $1}')
    errs=$(awk '/Socket errors:/ {gsub(/,/, ""); e += $4 + $6 + $8 + $10} /Non-2xx/ {e += $5} END {print e + 0}' "$out.wrk")
    start "$who"
    load "$s" /dev/null >/dev/null || true
    strace -c -f -o "$out.strace" -p "$PROXY_PID" 2>/dev/null &
    tracer=$!
    sleep 1
    sreqs=$(load "$s" "$out.strace.wrk")
    kill -INT $tracer
    wait $tracer 2>/dev/null || true
    stop
    calls=$(awk '$NF == "total" {print $4; exit}' "$out.strace")
    printf '%-8s %-8s %10s %12s %14s %12s\n' "$who" "$s" "$reqs" \
      "$(awk -v a="$ir" -v b="$reqs" 'BEGIN {printf "%.0f", a / b}')" \
      "$(awk -v a="$calls" -v b="$sreqs" 'BEGIN {printf "%.2f", a / b}')" "$errs"
  done
done
