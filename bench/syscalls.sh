#!/usr/bin/env bash
# System calls per proxied request, Tidegate against nginx: both proxies
# (one thread / one worker, in front of one nginx origin serving /small;
# nginx configured as bench/steady.sh configures it)
# traced with `strace -c -f -p` while h2load sends REQUESTS (default
# 20000) keep-alive requests over 50 connections to each in turn.
# Prints each proxy's strace summary.
#
#   bench/syscalls.sh [REQUESTS] [BINARY]
#
# Needs strace, nginx, h2load (nghttp2-client) and curl. Stops everything
# it starts.
set -euo pipefail
N=${1:-20000}
BIN=${2:-target/release/tidegate}
source "$(dirname "$0")/lib.sh"
OUT=$(mktemp -d /tmp/tidegate-syscalls.XXXXXX)
PIDS=""
trap 'kill $PIDS 2>/dev/null || true; sleep 0.3; rm -rf "$OUT"' EXIT
ORIGIN=$(free_port); PT=$(free_port); PN=$(free_port)
start_origin "$OUT" "$ORIGIN"; PIDS="$PIDS $ORIGIN_PID"
"$BIN" --listen "127.0.0.1:$PT" --upstream "http://127.0.0.1:$ORIGIN" --threads 1 \
  --log-level error > "$OUT/tg.log" 2>&1 & TG=$!; PIDS="$PIDS $TG"
# The same nginx as bench/steady.sh's (one worker), adding the same
# forwarding fields as Tidegate.
nginx_proxy_conf "$OUT" "$PN" "$ORIGIN" 1 "" "$(from_run run.NGINX_SAME_HEADERS)"
nginx -c "$OUT/p.conf" & NG=$!; PIDS="$PIDS $NG"
for p in $PT $PN; do
  for _ in $(seq 100); do curl -s -o /dev/null "127.0.0.1:$p/small" && break; sleep 0.1; done
done
trace() { # NAME PID PORT
  strace -c -f -p "$2" -o "$OUT/$1.txt" 2>/dev/null & local st=$!
  sleep 0.5
  h2load --h1 -n "$N" -c 50 -t 1 "http://127.0.0.1:$3/small" | grep "status codes"
  kill -INT $st; wait $st || true
  echo "== $1 ($N requests)"; sed -n '1,16p' "$OUT/$1.txt"
}
trace tidegate "$TG" "$PT"
trace nginx "$(pgrep -P "$NG" | head -1)" "$PN"
