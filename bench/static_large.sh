#!/usr/bin/env bash
# A large static file, downloaded from each server in turn (issue 17's
# row: MB/s ≥ 0.8x nginx's with `sendfile on`): Tidegate with its
# default `sendfile = true`, Tidegate with `sendfile = false` (every byte
# read and written through the proxy), and nginx (`sendfile on`), 2
# threads or workers each, the file (random bytes) in the page cache.
# Each round downloads it once from each server with
# `curl -o /dev/null`; per server: the median MB/s (curl's own), the
# range, and the server's CPU per GiB sent (utime + stime of the
# process, in ticks of 10 ms). The ratio is Tidegate's median over
# nginx's.
#
# Usage: BIN=target/release/tidegate [N=5] [SIZE_MIB=1024] bench/static_large.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
BIN=${BIN:-target/release/tidegate}
N=${N:-5}
SIZE_MIB=${SIZE_MIB:-1024}
dir=$(mktemp -d /tmp/tg-static-large.XXXXXX)
pids=()
kill_on_exit "$dir"
# (nginx's workers, not root, read it too.)
chmod 755 "$dir"
mkdir -p "$dir/www"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$dir/www/big.bin"
cat "$dir/www/big.bin" > /dev/null # in the page cache

ports=()
names=(tidegate tidegate-nosendfile nginx)
for name in tidegate tidegate-nosendfile; do
  port=$(free_port)
  more=""
  [ "$name" = tidegate-nosendfile ] && more=', sendfile = false'
  cat > "$dir/$name.toml" <<TOML
[server]
threads = 2
log_level = "error"
[[listeners]]
address = "127.0.0.1:$port"
[[routes]]
static = { root = "$dir/www"$more }
TOML
  "$BIN" --config "$dir/$name.toml" &
  pids+=($!)
  ports+=("$port")
done
port=$(free_port)
cat > "$dir/nginx.conf" <<CONF
worker_processes 2; daemon off; pid $dir/nginx.pid; error_log $dir/nginx.err warn;
events { worker_connections 1024; }
http { access_log off; sendfile on;
  client_body_temp_path $dir/t1; proxy_temp_path $dir/t2; fastcgi_temp_path $dir/t3; uwsgi_temp_path $dir/t4; scgi_temp_path $dir/t5;
  server { listen 127.0.0.1:$port; location / { root $dir/www; } } }
CONF
nginx -c "$dir/nginx.conf" &
pids+=($!)
ports+=("$port")
for p in "${ports[@]}"; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.1; done
done

: > "$dir/results"
for round in $(seq "$N"); do
  for i in "${!names[@]}"; do
    before=$(ticks "${pids[$i]}")
    speed=$(curl -s -o /dev/null -w '%{speed_download}' "http://127.0.0.1:${ports[$i]}/big.bin")
    after=$(ticks "${pids[$i]}")
    echo "${names[$i]} $round $speed $((after - before))" >> "$dir/results"
  done
done

python3 - "$dir/results" "$SIZE_MIB" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
gib = int(sys.argv[2]) / 1024
by = {}
for name, _, speed, ticks in rows:
    by.setdefault(name, []).append((float(speed) / 1e6, int(ticks) / gib))
med = {}
print(f"{'server':22} {'median MB/s':>12} {'range':>16} {'ticks per GiB':>14}")
for name, xs in by.items():
    mbs = sorted(x[0] for x in xs)
    med[name] = statistics.median(mbs)
    t = statistics.median(x[1] for x in xs)
    print(f"{name:22} {med[name]:12.0f} {mbs[0]:7.0f}-{mbs[-1]:<8.0f} {t:14.1f}")
for name in ("tidegate", "tidegate-nosendfile"):
    print(f"{name} / nginx: {med[name] / med['nginx']:.2f}x MB/s")
PY
