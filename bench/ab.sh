#!/usr/bin/env bash
# A/B two Tidegate binaries against one nginx origin (1 worker), alternating
# them R rounds, with wrk at C connections for D seconds each; prints req/s,
# the proxy's CPU ticks per 10k requests and its RSS right after each run.
#
#   A=path/to/old B=path/to/new C=8000 R=3 D=5 bench/ab.sh
#
# Needs nginx, wrk, curl, python3. Stops everything it starts.
set -u
A=${A:?path of binary A}; B=${B:?path of binary B}
C=${C:-8000}; R=${R:-3}; D=${D:-5}
ulimit -n 20000
OUT=$(mktemp -d /tmp/tidegate-ab.XXXXXX)
NGX=""
trap 'kill $NGX 2>/dev/null; rm -rf "$OUT"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ORIGIN=$(free_port)
cat > $OUT/origin.conf <<CONF
worker_processes 1; daemon off; pid $OUT/origin.pid; error_log $OUT/origin.err warn; worker_rlimit_nofile 20000;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $OUT/t1; proxy_temp_path $OUT/t2; fastcgi_temp_path $OUT/t3; uwsgi_temp_path $OUT/t4; scgi_temp_path $OUT/t5;
  server { listen 127.0.0.1:$ORIGIN backlog=4096; location /small { return 200 "tidegate-bench-small-response-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"; } } }
CONF
nginx -c $OUT/origin.conf & NGX=$!
sleep 0.5
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
for r in $(seq 1 $R); do
  for name in A B; do
    if [ $name = A ]; then BIN=$A; else BIN=$B; fi
    P=$(free_port)
    $BIN --listen 127.0.0.1:$P --upstream http://127.0.0.1:$ORIGIN --threads 2 --log-level error > $OUT/$name.log 2>&1 &
    TG=$!
    for i in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:$P/small && break; sleep 0.1; done
    c0=$(cpu $TG)
    res=$(wrk -t2 -c$C -d${D}s http://127.0.0.1:$P/small 2>&1)
    c1=$(cpu $TG)
    rps=$(echo "$res" | awk '/Requests\/sec/{print $2}')
    reqs=$(echo "$res" | awk '/requests in/{print $1}')
    errs=$(echo "$res" | awk '/Socket errors|Non-2xx/{print}' | tr '\n' ' ')
    rss=$(awk '/VmRSS/{print $2}' /proc/$TG/status)
    echo "$name round $r: rps=$rps cpu_ticks=$((c1-c0)) reqs=$reqs ticks/10k=$(python3 -c "print(round(($c1-$c0)/$reqs*10000,2))") rss_kb=$rss $errs"
    kill -TERM $TG; wait $TG 2>/dev/null
  done
done
