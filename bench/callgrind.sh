#!/usr/bin/env bash
# Userspace instructions per proxied request, counted by callgrind: repeatable
# whatever else the machine does, unlike timings.
#
#   bench/callgrind.sh [REQUESTS] [BINARY]
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
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ORIGIN=$(free_port); PROXY=$(free_port)
cat > "$OUT/origin.conf" <<CONF
worker_processes 1; daemon off; pid $OUT/origin.pid; error_log $OUT/origin.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $OUT/t1; proxy_temp_path $OUT/t2; fastcgi_temp_path $OUT/t3; uwsgi_temp_path $OUT/t4; scgi_temp_path $OUT/t5;
  server { listen 127.0.0.1:$ORIGIN; location /small { return 200 "tidegate-bench-small-response-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"; } } }
CONF
nginx -c "$OUT/origin.conf" & NGINX=$!
valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" "$BIN" \
  --listen "127.0.0.1:$PROXY" --upstream "http://127.0.0.1:$ORIGIN" --threads 1 --log-level error \
  > "$OUT/tidegate.log" 2>&1 & VG=$!
trap 'kill $VG $NGINX 2>/dev/null || true' EXIT
for _ in $(seq 150); do curl -s -o /dev/null "127.0.0.1:$PROXY/small" && break; sleep 0.2; done
h2load --h1 -n "$N" -c 50 -t 1 "http://127.0.0.1:$PROXY/small" | grep -E "status codes"
kill -TERM $VG; wait $VG || true
kill $NGINX; wait $NGINX 2>/dev/null || true
trap - EXIT
total=$(grep -E "^(summary|totals):" "$OUT/callgrind.out" | head -1 | awk '{print $2}')
echo "instructions: total $total, per request $((total / N))  (profile: $OUT/callgrind.out)"
