#!/usr/bin/env bash
# Takes docs/status.png: the admin listener's /status page under load,
# shot with headless Chromium (Debian package `chromium`).
#
#   cargo build --release && docs/status-screenshot.sh
#
# Two demo origins, a server that refuses connections (ejected), one
# drained through the admin API; wrk sends load on loopback for about
# 20 seconds while the page is taken.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/tidegate
. bench/lib.sh
dir=$(mktemp -d)
pids=()
kill_on_exit "$dir"
o1=$(free_port); o2=$(free_port); dead=$(free_port); proxy=$(free_port); admin=$(free_port)
"$bin" demo --listen "127.0.0.1:$o1" >"$dir/o1.log" 2>&1 & pids+=($!)
"$bin" demo --listen "127.0.0.1:$o2" >"$dir/o2.log" 2>&1 & pids+=($!)
cat >"$dir/tidegate.toml" <<TOML
[server]
threads = 2
log_level = "warn"

[admin]
address = "127.0.0.1:$admin"

[[listeners]]
address = "127.0.0.1:$proxy"

[[routes]]
name = "api"
path_prefix = "/bytes/"
upstream = "api"

[[routes]]
name = "web"
path_prefix = "/"
upstream = "web"

[upstreams.web]
servers = ["127.0.0.1:$o1", "127.0.0.1:$o2", "127.0.0.1:$dead"]
[upstreams.web.outlier]
consecutive_failures = 1
base_ejection = "5m"

[upstreams.api]
servers = ["127.0.0.1:$o1", "127.0.0.1:$o2"]
TOML
"$bin" --config "$dir/tidegate.toml" >"$dir/proxy.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.1; done
curl -sf -X POST "http://127.0.0.1:$admin/upstreams/api/servers/127.0.0.1:$o2/drain" >/dev/null
wrk -t1 -c20 -d20s "http://127.0.0.1:$proxy/" >/dev/null & pids+=($!)
wrk -t1 -c5 -d20s "http://127.0.0.1:$proxy/bytes/20000" >/dev/null & pids+=($!)
sleep 12
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --window-size=1100,900 --screenshot="$PWD/docs/status.png" \
  "http://127.0.0.1:$admin/status" 2>/dev/null
curl -sf "http://127.0.0.1:$admin/status.json" >"$dir/status.json" && head -c 600 "$dir/status.json"; echo
echo "wrote docs/status.png"
