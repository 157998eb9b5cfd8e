#!/usr/bin/env bash
# The cost ACME adds to a TLS handshake: one certificate (ECDSA P-256,
# made here) served three ways, each loaded in turn by a Python client
# (a full TLS 1.3 handshake with SNI and one request per connection, no
# resumption; `openssl s_time` sends no SNI) for D seconds, R rounds:
#   file:   Tidegate, the certificate in `tls.certificates`;
#   acme:   Tidegate, the same certificate in the ACME storage, the name in
#           `tls.acme` (looked up among the ACME certificates first; the
#           CA is never asked: the certificate is not due);
#   nginx:  nginx (1 worker), `ssl_certificate` (no ACME of its own).
# Prints per run the handshakes per second and the server's CPU
# milliseconds per 100 handshakes (utime + stime from /proc), then the
# medians.
#
#   BIN=target/release/tidegate R=5 D=5 bench/acme_handshake.sh
#
# Needs openssl, python3 and nginx. Stops everything it starts.
set -u
BIN=${BIN:-target/release/tidegate}
R=${R:-5}
D=${D:-5}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)

name=bench.tidegate.test
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -subj "/CN=$name" -addext "subjectAltName=DNS:$name" \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
mkdir -p "$work/acme/certificates"
cat "$work/key.pem" "$work/cert.pem" > "$work/acme/certificates/$name.pem"

start_tidegate() { # $1: file|acme, $2: port
  local tls
  if [ "$1" = file ]; then
    tls="tls = { certificates = [{ cert = \"$work/cert.pem\", key = \"$work/key.pem\" }] }"
  else
    tls="tls = { acme = [\"$name\"] }"
  fi
  cat > "$work/$1.toml" <<EOF
[server]
threads = 1
[[listeners]]
address = "127.0.0.1:$2"
$tls
[[routes]]
respond = { status = 200, body = "ok\n" }
EOF
  if [ "$1" = acme ]; then
    # A directory nobody answers: the certificate is not due, so it is
    # never asked.
    printf '[acme]\nstorage = "%s"\ndirectory = "https://127.0.0.1:9/dir"\n' "$work/acme" >> "$work/$1.toml"
  fi
  "$BIN" -c "$work/$1.toml" >"$work/$1.out" 2>"$work/$1.log" &
  pids+=($!)
  echo $!
}

start_nginx() { # $1: port
  mkdir -p "$work/nginx"
  cat > "$work/nginx.conf" <<EOF
worker_processes 1;
error_log $work/nginx/error.log;
pid $work/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  server {
    listen 127.0.0.1:$1 ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    location / { return 200 "ok\n"; }
  }
}
EOF
  nginx -c "$work/nginx.conf" -g 'daemon off;' >/dev/null 2>&1 &
  pids+=($!)
  echo $!
}

wait_port() { for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

cat > "$work/client.py" <<'EOF'
import socket, ssl, sys, time
port, name, secs = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
end, n = time.time() + secs, 0
while time.time() < end:
    with socket.create_connection(("127.0.0.1", port)) as s:
        with ctx.wrap_socket(s, server_hostname=name) as t:
            t.sendall(b"GET / HTTP/1.1\r\nHost: " + name.encode() + b"\r\nConnection: close\r\n\r\n")
            got = b""
            while True:
                b = t.recv(4096)
                if not b:
                    break
                got += b
            assert got.startswith(b"HTTP/1.1 200"), got[:80]
    n += 1
print(n)
EOF

declare -A rates cpus
for kind in file acme nginx; do
  port=$(free_port)
  if [ "$kind" = nginx ]; then pid=$(start_nginx "$port"); else pid=$(start_tidegate "$kind" "$port"); fi
  wait_port "$port"
  [ "$kind" = nginx ] && sleep 0.3 # the worker, not the master, does the work
  for r in $(seq "$R"); do
    procs=$pid
    [ "$kind" = nginx ] && procs="$pid $(pgrep -P "$pid" | tr '\n' ' ')"
    before=0; for p in $procs; do before=$((before + $(cpu_ticks "$p"))); done
    n=$(python3 "$work/client.py" "$port" "$name" "$D")
    after=0; for p in $procs; do after=$((after + $(cpu_ticks "$p"))); done
    rate=$(python3 -c "print(round($n / $D, 1))")
    cpu=$(python3 -c "print(round(($after - $before) * 1000 / $tck / max($n, 1) * 100, 2))")
    echo "$kind round $r: $rate handshakes/s, server CPU ${cpu} ms per 100 handshakes"
    rates[$kind]+="$rate "
    cpus[$kind]+="$cpu "
  done
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
done
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" $1; }
echo
for kind in file acme nginx; do
  echo "median $kind: $(median "${rates[$kind]}") handshakes/s, $(median "${cpus[$kind]}") ms CPU per 100 handshakes"
done
