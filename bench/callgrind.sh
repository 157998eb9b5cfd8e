#!/usr/bin/env bash
# Userspace instructions per proxied request, counted by callgrind: repeatable
# whatever else the machine does, unlike timings.
#
#   bench/callgrind.sh [REQUESTS] [BINARY]
#
# ARGS adds arguments to Tidegate's (ARGS="--admin 127.0.0.1:0": metrics on).
# CONFIG=FILE runs Tidegate from that TOML instead of quick mode, with
# @PROXY@ and @ORIGIN@ replaced by the ports (for settings that have no
# flag, such as a listener's request_id) and @CONFIG_DIR@ by the file's
# folder. H2LOAD_HEADER="Name: value" adds a field to every request.
# URL_PATH (default /small) is the path requested; UNIQUE=1 sends it with
# a different query each time (`?1`, `?2`, ...; wrk with a Lua counter
# for DURATION seconds, default 20, instead of h2load's REQUESTS), so
# that a cache sees a new key every time (URL_PATH=/cached UNIQUE=1:
# every request a miss that is stored).
#
# Starts a one-worker nginx origin serving a 100-byte /small on a free port,
# Tidegate (1 thread) under valgrind in front of it, sends REQUESTS
# (default 20000) keep-alive requests with h2load --h1 over 50 connections,
# and prints total/REQUESTS. The profile stays in $OUT (default
# /tmp/tidegate-callgrind) for callgrind_annotate. Needs nginx, valgrind,
# h2load (nghttp2-client) and curl.
set -euo pipefail
N=${1:-20000}
BIN=${2:-target/release/tidegate}
OUT=${OUT:-/tmp/tidegate-callgrind}
rm -rf "$OUT"; mkdir -p "$OUT"
source "$(dirname "$0")/lib.sh"
ORIGIN=$(free_port); PROXY=$(free_port)
start_origin "$OUT" "$ORIGIN"; NGINX=$ORIGIN_PID
if [ -n "${CONFIG:-}" ]; then
  render_config "$CONFIG" "$OUT/tidegate.toml" "$PROXY" "$ORIGIN"
  RUN=(--config "$OUT/tidegate.toml")
else
  RUN=(--listen "127.0.0.1:$PROXY" --upstream "http://127.0.0.1:$ORIGIN")
fi
valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" "$BIN" \
  "${RUN[@]}" --threads 1 --log-level error ${ARGS:-} \
  > "$OUT/tidegate.log" 2>&1 & VG=$!
trap 'kill $VG $NGINX 2>/dev/null || true' EXIT
for _ in $(seq 150); do curl -s -o /dev/null "127.0.0.1:$PROXY/small" && break; sleep 0.2; done
URL_PATH=${URL_PATH:-/small}
if [ "${UNIQUE:-0}" = 1 ]; then
  # h2load gives every connection the same list of URLs: wrk (one thread,
  # one Lua counter) gives each request its own, for DURATION seconds;
  # REQUESTS is then what wrk counted (plus the readiness probe's one).
  cat > "$OUT/unique.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", wrk.path .. "?" .. n)
end
LUA
  wrk -t1 -c50 -d"${DURATION:-20}s" -s "$OUT/unique.lua" "http://127.0.0.1:$PROXY$URL_PATH" > "$OUT/wrk.txt"
  grep -E "requests in|Non-2xx|Socket errors" "$OUT/wrk.txt"
  N=$(( $(awk '/requests in/{print $1}' "$OUT/wrk.txt") + 1 ))
else
  h2load --h1 -n "$N" -c 50 -t 1 ${H2LOAD_HEADER:+-H "$H2LOAD_HEADER"} \
    "http://127.0.0.1:$PROXY$URL_PATH" | grep -E "status codes"
fi
kill -TERM $VG; wait $VG || true
kill $NGINX; wait $NGINX 2>/dev/null || true
trap - EXIT
total=$(grep -E "^(summary|totals):" "$OUT/callgrind.out" | head -1 | awk '{print $2}')
echo "instructions: total $total, per request $((total / N))  (profile: $OUT/callgrind.out)"
