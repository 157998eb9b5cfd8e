# Sourced by the bench shell scripts (ab.sh, callgrind.sh, steady.sh,
# syscalls.sh, train.sh).

# kill_on_exit DIR: when the script exits, kills every process whose PID
# is in the array `pids` (the caller adds them) and removes DIR.
kill_on_exit() {
  _exit_dir=$1
  trap _on_exit EXIT
}
_on_exit() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$_exit_dir"
}

# CPU ticks of a process and its children (nginx's workers).
ticks() {
  local total=0 p
  for p in $1 $(pgrep -P "$1"); do
    total=$((total + $(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null || echo 0)))
  done
  echo $total
}

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_origin DIR PORT: a one-worker nginx on 127.0.0.1:PORT serving
# /small, the same 100-byte body as bench/run.py's origin (and /cached,
# the same with `Expires` and `Cache-Control: max-age=3600`), with its
# config and files in DIR; started in the background, its PID in
# ORIGIN_PID.
start_origin() {
  local dir=$1 port=$2
  cat > "$dir/origin.conf" <<CONF
worker_processes 1; daemon off; pid $dir/origin.pid; error_log $dir/origin.err warn; worker_rlimit_nofile 20000;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $dir/t1; proxy_temp_path $dir/t2; fastcgi_temp_path $dir/t3; uwsgi_temp_path $dir/t4; scgi_temp_path $dir/t5;
  server { listen 127.0.0.1:$port backlog=4096; location /small { return 200 "tidegate-bench-small-response-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"; }
    location /cached { expires 1h; return 200 "tidegate-bench-small-response-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"; } } }
CONF
  nginx -c "$dir/origin.conf" &
  ORIGIN_PID=$!
}

# render_config SRC DST PROXY ORIGIN: the TOML file SRC with @PROXY@ and
# @ORIGIN@ replaced by those ports and @CONFIG_DIR@ by SRC's folder (for
# files beside it), written to DST.
render_config() {
  local dir
  dir=$(cd "$(dirname "$1")" && pwd)
  sed -e "s/@PROXY@/$3/g" -e "s/@ORIGIN@/$4/g" -e "s|@CONFIG_DIR@|$dir|g" "$1" > "$2"
}

# from_run EXPR: a value from bench/run.py (its nginx and HAProxy lines), so
# that the shell harnesses configure the proxies as it does.
from_run() { python3 -c "import sys; sys.path.insert(0, '$(dirname "${BASH_SOURCE[0]}")'); import run; print($1, end='')"; }

# nginx_proxy_conf DIR PORT ORIGIN WORKERS [MAIN] [LOCATION]: writes
# DIR/p.conf, nginx as the benchmarks run it in front of ORIGIN (upstream
# keep-alive, no buffering, no access log) on PORT with WORKERS workers;
# MAIN is added to the main context (CPU binding), LOCATION to the proxied
# location (the forwarding fields Tidegate adds: run.NGINX_SAME_HEADERS).
nginx_proxy_conf() {
  cat > "$1/p.conf" <<CONF
worker_processes $4; ${5:-} daemon off; pid $1/p.pid; error_log $1/p.err warn; worker_rlimit_nofile 20000;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 100000;
  client_body_temp_path $1/u1; proxy_temp_path $1/u2; fastcgi_temp_path $1/u3; uwsgi_temp_path $1/u4; scgi_temp_path $1/u5;
  upstream o { server 127.0.0.1:$3; keepalive 256; keepalive_requests 100000; }
  server { listen 127.0.0.1:$2 backlog=4096; location / { proxy_pass http://o; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; proxy_request_buffering off; ${6:-} } } }
CONF
}
