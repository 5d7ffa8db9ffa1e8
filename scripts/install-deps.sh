#!/usr/bin/env bash
# Installs the system packages a purpose needs, from the distribution's packages, when missing.
#   install-deps.sh test    what `make test` needs (redis-server for distributed rate limits)
#   install-deps.sh run     what `make run` needs
#   install-deps.sh bench   what `make bench` needs (nginx, wrk, h2load)
set -euo pipefail

need=()
case "${1:-test}" in
  test) cmds=(curl redis-server) ;;
  run) cmds=(curl openssl) ;;
  bench) cmds=(curl nginx wrk h2load) ;;
  *) echo "usage: $0 test|run|bench" >&2; exit 2 ;;
esac
declare -A pkg=([curl]=curl [nginx]=nginx [wrk]=wrk [h2load]=nghttp2-client [redis-server]=redis-server [openssl]=openssl)
for c in "${cmds[@]}"; do
  command -v "$c" >/dev/null 2>&1 || need+=("${pkg[$c]}")
done
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
