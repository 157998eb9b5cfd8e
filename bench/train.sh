#!/usr/bin/env bash
# The traffic bench/pgo.sh trains a build on (once for the profile-guided
# build, once more for BOLT):
#
#   bench/train.sh BINARY
#
# 1. bench/run.py --quick: the plain proxy path at 50, 1000 and 8000
#    connections, h2c, TLS, large downloads and uploads;
# 2. the features operators turn on, each from its own Tidegate (2
#    threads) in front of one nginx origin (bench/lib.sh), a few seconds
#    each: a JSON access log (50 and 1000 connections), metrics (the admin
#    listener), request IDs with trace propagation, a rate limit keyed on
#    the client address, a cache missing (a response it may not store)
#    and hitting, basic auth, static files and an L4 stream listener with
#    a new connection per request.
#
# Without step 2 the profile-guided build treats the features' code as
# cold (kept out of line, optimised for size): each feature then costs
# more in the PGO build than in the plain one. The instrumented binary
# writes its counts when each Tidegate exits (SIGTERM: a graceful stop).
# Needs what bench/run.py needs, plus h2load (nghttp2-client).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1
N=${TRAIN_REQUESTS:-30000}

# (TRAIN_FEATURES_ONLY=1: step 2 alone, to try it.)
[ "${TRAIN_FEATURES_ONLY:-0}" = 1 ] || python3 bench/run.py --quick --tidegate "$BIN"

source bench/lib.sh
ulimit -n 20000
OUT=$(mktemp -d /tmp/tidegate-train.XXXXXX)
ORIGIN=$(free_port)
start_origin "$OUT" "$ORIGIN"
NGX=$ORIGIN_PID
TG=""
trap 'kill $TG $NGX 2>/dev/null || true; rm -rf "$OUT"' EXIT

# feature NAME CONFIG PATH CONNECTIONS [TIDEGATE ARGS...]: CONFIG is a
# file of bench/configs (with @PROXY@, @ORIGIN@ and @CONFIG_DIR@), a path
# under $OUT, or - for quick mode; H2LOAD_HEADER adds a request field.
feature() {
  local name=$1 cfg=$2 path=$3 c=$4 p run
  shift 4
  p=$(free_port)
  if [ "$cfg" = - ]; then
    run=(--listen "127.0.0.1:$p" --upstream "http://127.0.0.1:$ORIGIN")
  else
    [ -f "$cfg" ] || cfg=bench/configs/$cfg
    render_config "$cfg" "$OUT/$name.toml" "$p" "$ORIGIN"
    run=(--config "$OUT/$name.toml")
  fi
  "$BIN" "${run[@]}" --threads 2 --log-level error "$@" > "$OUT/$name.log" 2>&1 &
  TG=$!
  for _ in $(seq 100); do curl -s -o /dev/null "127.0.0.1:$p$path" && break; sleep 0.1; done
  if [ "$name" = stream ]; then
    wrk -t2 -c"$c" -d3s -H "Connection: close" "http://127.0.0.1:$p$path" > "$OUT/$name.load"
  else
    h2load --h1 -n "$N" -c "$c" -t 2 ${H2LOAD_HEADER:+-H "$H2LOAD_HEADER"} \
      "http://127.0.0.1:$p$path" > "$OUT/$name.load"
  fi
  echo "train $name: $(grep -E 'status codes|requests in' "$OUT/$name.load" | head -1)"
  kill -TERM "$TG"
  wait "$TG" || true
  TG=""
}

LOG=(--access-log "$OUT/access.log" --access-log-format json)
feature json-log-50 - /small 50 "${LOG[@]}"
feature json-log-1000 - /small 1000 "${LOG[@]}"
feature metrics - /small 50 --admin 127.0.0.1:0
feature request-ids request-id-and-trace.toml /small 50
feature rate-limit rate-limit.toml /small 50
feature cache-miss cache-miss.toml /small 50
feature cache-hit cache-miss.toml /cached 50
H2LOAD_HEADER="Authorization: Basic YmVuY2g6YmVuY2g=" feature basic-auth basic-auth.toml /small 50

mkdir -p "$OUT/www"
head -c 1024 /dev/zero | tr '\0' 'x' > "$OUT/www/f.txt"
cat > "$OUT/static.in" <<TOML
[[listeners]]
address = "127.0.0.1:@PROXY@"
[[routes]]
static = { root = "@CONFIG_DIR@/www" }
TOML
feature static "$OUT/static.in" /f.txt 50

cat > "$OUT/stream.in" <<TOML
[[streams]]
address = "127.0.0.1:@PROXY@"
upstream = "origin"
[upstreams.origin]
servers = ["127.0.0.1:@ORIGIN@"]
TOML
feature stream "$OUT/stream.in" /small 50
