#!/usr/bin/env bash
# A feature of Tidegate against nginx's equivalent, on and off, side by
# side: one nginx origin (1 worker); Tidegate and an nginx proxy, both 2
# threads/workers, loaded in turn with wrk, R rounds, C connections, D
# seconds each. Prints per run req/s, the proxy's CPU ticks per 10k
# requests (nginx: master and workers) and bytes per response, then the
# medians.
#
#   FEATURE=compress BIN=target/release/tidegate LEVEL=6 C=50 R=5 D=5 bench/feature.sh
#   FEATURE=limit_req BIN=target/release/tidegate C=50 R=5 D=5 bench/feature.sh
#   FEATURE=cache SIZE=1k BIN=target/release/tidegate C=50 R=5 D=5 bench/feature.sh
#   FEATURE=proxy_protocol BIN=target/release/tidegate C=50 R=5 D=5 bench/feature.sh
#   FEATURE=static SIZE=1k BIN=target/release/tidegate C=1000 R=5 D=5 bench/feature.sh
#
# CASES picks the runs ("proxy on|off accept", `;`-separated; the defaults
# are below); the proxy `tidegate-b` is Tidegate run from BIN_B, to set two
# builds side by side in the same rounds:
#   FEATURE=cache SIZE=100k BIN=old BIN_B=new CASES="tidegate on none;tidegate-b on none;nginx on none" bench/feature.sh
#
# FEATURE=compress: a 100 KiB HTML page; Tidegate's `compress` (gzip at
# LEVEL) against nginx's `gzip on` at the same level, wrk sending
# `Accept-Encoding: gzip` (or none: compression present but not asked
# for), and both off. nginx runs as bench/run.py's proxy
# (proxy_buffering off, as Tidegate streams) and, as "nginx-buffered",
# with its default proxy_buffering on.
#
# nginx does the header work Tidegate does on every request (bench/run.py's
# `--headers same`: X-Forwarded-*, Host kept, Via both ways).
#
# FEATURE=limit_req: the 100-byte /small; a rate limit keyed on the client
# address, generous enough to admit everything (Tidegate's
# `[rate_limits]`, nginx's `limit_req_zone $binary_remote_addr` +
# `limit_req ... nodelay`), on against off.
#
# FEATURE=cache: cache hits of a SIZE (1k or 100k) object that the origin
# marks `Cache-Control: max-age=3600`: Tidegate's `[caches]` (memory)
# against nginx's `proxy_cache` (its files stay in the page cache) and
# Varnish (`-s malloc`, 2 thread pools, as a proxy in front of the same
# origin), and the proxies with no cache (every request to the origin).
# nginx runs with proxy_buffering on here (it caches only what it
# buffers).
#
# FEATURE=proxy_protocol: the 100-byte /small through HAProxy (TCP mode,
# 1 thread) in front of each proxy, HAProxy sending `send-proxy-v2` and
# the proxy reading it (Tidegate `proxy_protocol = { from = [...] }`,
# nginx `listen ... proxy_protocol` with `real_ip_header proxy_protocol`),
# on against off; only the proxy's CPU is counted. Cases with accept
# `close` send `Connection: close`: a new connection, so a header read,
# per request (the worst case); `none` keeps connections alive.
#
# FEATURE=static: a SIZE (1k, 100k or 1g) file served from disk (no
# origin involved): Tidegate's route `static = { root = ... }` against
# nginx's `root` with `sendfile on` (its default build's way; tokio has
# no sendfile: Tidegate reads large files on the blocking pool). `on`:
# each one's full checks (Tidegate's defaults: symlinks kept inside the
# root, the .br/.zst/.gz siblings looked for when the client names
# codings; nginx `gzip_static on`), `off`: the least work, nginx's way
# (Tidegate `symlinks = "any", precompressed = false, io = "inline"`;
# nginx `gzip_static off`). For 1g, MB/s is req/s x 1024; use C=1..4 and D
# long enough for a few transfers.
#
# Needs nginx, wrk, curl, python3 (and varnishd for FEATURE=cache, haproxy
# for FEATURE=proxy_protocol). Stops everything it starts.
set -u
BIN=${BIN:-target/release/tidegate}
C=${C:-50}; R=${R:-5}; D=${D:-5}; LEVEL=${LEVEL:-6}; FEATURE=${FEATURE:-compress}
ulimit -n 20000
OUT=$(mktemp -d /tmp/tidegate-feature.XXXXXX)
chmod 755 "$OUT"   # nginx's workers (nobody) read the page
PIDS=""
trap 'kill $PIDS ${P_PID:-} ${H_PID:-} 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$OUT"' EXIT
source "$(dirname "$0")/lib.sh"

# The page: the README's text as HTML paragraphs, 100 KiB.
python3 - "$(dirname "$0")/../README.md" "$OUT/page.html" <<'PY'
import html, sys
text = open(sys.argv[1], encoding="utf-8").read()
body = "".join(f"<p>{html.escape(p)}</p>\n" for p in text.split("\n\n"))
page = ("<!doctype html><html><head><title>bench</title></head><body>\n" + body) * 4
open(sys.argv[2], "w", encoding="utf-8").write(page[:102400])
PY

ORIGIN=$(free_port)
cat > "$OUT/origin.conf" <<CONF
worker_processes 1; daemon off; pid $OUT/origin.pid; error_log $OUT/origin.err warn; worker_rlimit_nofile 20000;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 1000000; types { text/html html; }
  client_body_temp_path $OUT/t1; proxy_temp_path $OUT/t2; fastcgi_temp_path $OUT/t3; uwsgi_temp_path $OUT/t4; scgi_temp_path $OUT/t5;
  server { listen 127.0.0.1:$ORIGIN backlog=4096; root $OUT; location = /page.html { }
    location = /1k { expires 1h; } location = /100k { expires 1h; }
    location = /small { return 200 "tidegate-bench-small-response-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"; } } }
CONF
nginx -c "$OUT/origin.conf" & PIDS="$PIDS $!"

head -c 1024 "$OUT/page.html" > "$OUT/1k"; cp "$OUT/page.html" "$OUT/100k"
case $FEATURE in
  compress) URL_PATH=/page.html ;;
  limit_req) URL_PATH=/small ;;
  cache) URL_PATH=/${SIZE:-1k} ;;
  proxy_protocol) URL_PATH=/small ;;
  static)
    URL_PATH=/${SIZE:-1k}
    # 1g: written once (page cache), not a sparse file nginx could skip.
    [ "${SIZE:-1k}" = 1g ] && head -c 1073741824 /dev/urandom > "$OUT/1g" ;;
  *) echo "FEATURE is compress, limit_req, cache, proxy_protocol or static" >&2; exit 2 ;;
esac

# name on|off: starts the proxy with the feature on or off, its PID in
# P_PID and port in P_PORT.
start_proxy() {
  local name=$1 on=$2
  P_PORT=$(free_port)
  # The feature's lines: Tidegate's route, Tidegate's top level, nginx's
  # http block, nginx's location.
  local tg_route="" tg_top="" tg_listener="" ngx_http="" ngx_loc="" ngx_listen=""
  # FEATURE=static: the route's action and nginx's whole location.
  local tg_action='upstream = "o"' ngx_server=""
  case $FEATURE in
    compress)
      [ "$on" = on ] && tg_route="compress = { algorithms = [\"gzip\"], gzip_level = $LEVEL }"
      ngx_http="gzip $on; gzip_comp_level $LEVEL; gzip_proxied any; gzip_vary on; gzip_min_length 1024;" ;;
    limit_req)
      if [ "$on" = on ]; then
        tg_route='rate_limit = "l"'
        tg_top=$'[rate_limits.l]\nkey = "client_ip"\nrate = "1000000/s"\nburst = 1000000'
        ngx_http="limit_req_zone \$binary_remote_addr zone=z:10m rate=1000000r/s;"
        ngx_loc="limit_req zone=z burst=1000000 nodelay;"
      fi ;;
    cache)
      if [ "$on" = on ]; then
        tg_route='cache = "c"'
        tg_top=$'[caches.c]\nmemory = "64MiB"'
        ngx_http="proxy_cache_path $OUT/ngx-cache keys_zone=c:10m max_size=64m;"
        ngx_loc="proxy_cache c; add_header X-Cache \$upstream_cache_status always;"
      fi ;;
    static)
      if [ "$on" = on ]; then
        tg_action="static = { root = \"$OUT\" }"
        ngx_server="location / { root $OUT; sendfile on; gzip_static on; }"
      else
        tg_action="static = { root = \"$OUT\", symlinks = \"any\", precompressed = false, io = \"inline\" }"
        ngx_server="location / { root $OUT; sendfile on; gzip_static off; }"
      fi ;;
    proxy_protocol)
      if [ "$on" = on ]; then
        tg_listener='proxy_protocol = { from = ["127.0.0.1"] }'
        ngx_listen="proxy_protocol"
        ngx_http="set_real_ip_from 127.0.0.1; real_ip_header proxy_protocol;"
      fi ;;
  esac
  if [ "$name" = varnish ]; then
    cat > "$OUT/v.vcl" <<VCL
vcl 4.1;
backend o { .host = "127.0.0.1"; .port = "$ORIGIN"; }
VCL
    varnishd -F -f "$OUT/v.vcl" -a "127.0.0.1:$P_PORT" -n "$OUT/varnish" -s malloc,64m \
      -p thread_pools=2 > "$OUT/varnish.log" 2>&1 &
    P_PID=$!
  elif [ "$name" = tidegate ] || [ "$name" = tidegate-b ]; then
    local bin=$BIN
    [ "$name" = tidegate-b ] && bin=${BIN_B:?BIN_B: the binary of the tidegate-b cases}
    cat > "$OUT/tidegate.toml" <<TOML
[server]
access_log = "off"
[limits]
max_requests_per_connection = 1000000
[[listeners]]
address = "127.0.0.1:$P_PORT"
$tg_listener
[upstreams.o]
servers = ["127.0.0.1:$ORIGIN"]
$tg_top
[[routes]]
$tg_action
$tg_route
TOML
    "$bin" --config "$OUT/tidegate.toml" --threads 2 --log-level error > "$OUT/tidegate.log" 2>&1 &
    P_PID=$!
  else
    # nginx-buffered: nginx's default proxy_buffering on (the response
    # read into its buffers, then compressed in larger steps).
    local buffering=off
    [ "$name" = nginx-buffered ] && buffering=on
    # nginx caches only what it buffers.
    [ "$FEATURE" = cache ] && buffering=on
    local location="location / { proxy_pass http://o; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering $buffering; $ngx_loc
      proxy_set_header Host \$http_host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Forwarded-Host \$http_host;
      proxy_set_header Via \"1.1 nginx\"; add_header Via \"1.1 nginx\" always; }"
    [ -n "$ngx_server" ] && location=$ngx_server
    cat > "$OUT/nginx.conf" <<CONF
worker_processes 2; daemon off; pid $OUT/nginx.pid; error_log $OUT/nginx.err warn; worker_rlimit_nofile 20000;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $OUT/p1; proxy_temp_path $OUT/p2; fastcgi_temp_path $OUT/p3; uwsgi_temp_path $OUT/p4; scgi_temp_path $OUT/p5;
  upstream o { server 127.0.0.1:$ORIGIN; keepalive 64; }
  $ngx_http
  server { listen 127.0.0.1:$P_PORT $ngx_listen backlog=4096;
    $location } }
CONF
    nginx -c "$OUT/nginx.conf" &
    P_PID=$!
  fi
  L_PORT=$P_PORT
  if [ "$FEATURE" = proxy_protocol ]; then
    # HAProxy in front: wrk loads it, the proxy behind it is measured.
    L_PORT=$(free_port)
    local send=""
    [ "$on" = on ] && send="send-proxy-v2"
    cat > "$OUT/front.cfg" <<CFG
global
  nbthread 1
  maxconn 9000
defaults
  mode tcp
  timeout connect 10s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:$L_PORT
  default_backend be
backend be
  server p 127.0.0.1:$P_PORT $send
CFG
    haproxy -db -f "$OUT/front.cfg" > "$OUT/front.log" 2>&1 &
    H_PID=$!
  fi
  for i in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$L_PORT$URL_PATH" && break; sleep 0.1; done
}

# CASES: "proxy compress accept" triples, `;`-separated.
DEFAULT_CASES="tidegate on gzip;nginx on gzip;nginx-buffered on gzip;tidegate off gzip;nginx off gzip;tidegate on none;nginx on none"
[ "$FEATURE" = limit_req ] && DEFAULT_CASES="tidegate on none;nginx on none;tidegate off none;nginx off none"
[ "$FEATURE" = proxy_protocol ] && DEFAULT_CASES="tidegate on none;tidegate off none;nginx on none;nginx off none;tidegate on close;tidegate off close;nginx on close;nginx off close"
[ "$FEATURE" = cache ] && DEFAULT_CASES="tidegate on none;nginx on none;varnish on none;tidegate off none;nginx off none"
[ "$FEATURE" = static ] && DEFAULT_CASES="tidegate on none;nginx on none;tidegate off none;nginx off none"
IFS=';' read -ra CASE_LIST <<< "${CASES:-$DEFAULT_CASES}"
RESULTS="$OUT/results"
for r in $(seq 1 "$R"); do
  for case in "${CASE_LIST[@]}"; do
    set -- $case
    name=$1 on=$2 accept=$3
    start_proxy "$name" "$on"
    hdr=(); [ "$accept" = gzip ] && hdr=(-H "Accept-Encoding: gzip")
    [ "$accept" = close ] && hdr=(-H "Connection: close")
    bytes=$(curl -s -o /dev/null -w '%{size_download}' "${hdr[@]}" "http://127.0.0.1:$L_PORT$URL_PATH")
    t0=$(ticks $P_PID)
    res=$(wrk -t2 -c"$C" -d"${D}s" "${hdr[@]}" "http://127.0.0.1:$L_PORT$URL_PATH" 2>&1)
    t1=$(ticks $P_PID)
    rps=$(echo "$res" | awk '/Requests\/sec/{print $2}')
    reqs=$(echo "$res" | awk '/requests in/{print $1}')
    errs=$(echo "$res" | awk '/Socket errors|Non-2xx/{print}' | tr '\n' ' ')
    per=$(python3 -c "print(round(($t1-$t0)/$reqs*10000,2))")
    echo "round $r $name $FEATURE=$on accept=$accept: rps=$rps ticks/10k=$per bytes=$bytes $errs"
    echo "$name-$on-$accept $per $rps $bytes" >> "$RESULTS"
    kill -TERM "$P_PID"; wait "$P_PID" 2>/dev/null
    if [ -n "${H_PID:-}" ]; then kill -TERM "$H_PID"; wait "$H_PID" 2>/dev/null; H_PID=""; fi
  done
done
echo "medians (CPU ticks per 10k requests; req/s; bytes per response):"
python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    k, per, rps, size = line.split()
    rows.setdefault(k, []).append((float(per), float(rps), int(size)))
for k, v in rows.items():
    print(f"  {k:22} {statistics.median(p for p, _, _ in v):8.2f} {statistics.median(r for _, r, _ in v):10.0f} {v[0][2]:8}")
PY
