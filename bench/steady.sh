#!/usr/bin/env bash
# A steadier CPU-per-request comparison than bench/run.py's three rounds:
# starts one nginx origin (1 worker) and, in front of it, Tidegate (and
# optionally a second Tidegate binary), nginx and HAProxy, all with 2
# threads/workers, once; then alternates `wrk -t2 -cC -dD` between them for
# R rounds (the first target rotates) and prints, per run and as medians,
# req/s, the proxy's CPU ticks (utime+stime, 10 ms) per 10k requests and
# wrk's p99 latency.
#
#   C=50 R=5 bench/steady.sh
#   CPU=user C=50 bench/steady.sh     # userspace ticks only (CPU=sys: kernel)
#   BIN=old/tidegate BIN2=target/release/tidegate NAMES="tidegate tidegate2 nginx haproxy" bench/steady.sh
#
# Needs nginx, haproxy, wrk, curl, python3. Stops everything it starts.
set -u
C=${C:-50}; D=${D:-5}; R=${R:-5}
BIN=${BIN:-target/release/tidegate}
ulimit -n 20000
OUT=$(mktemp -d /tmp/tidegate-steady.XXXXXX)
PIDS=""
trap 'kill $PIDS 2>/dev/null; sleep 0.3; rm -rf "$OUT"' EXIT
source "$(dirname "$0")/lib.sh"
ORIGIN=$(free_port); PT=$(free_port); PN=$(free_port); PH=$(free_port); P2=$(free_port)
BIN2=${BIN2:-$BIN}
# HEADERS=same (the default) has nginx and HAProxy add the request and
# response fields Tidegate adds (X-Forwarded-For/-Proto/-Host, Via both
# ways, the client's Host kept); HEADERS=default leaves them at their own
# defaults, which add none.
# PIN=auto (the default) binds each proxy's worker/thread i to CPU i (the
# first two CPUs this script may use): Tidegate --cpu-affinity auto, nginx
# worker_cpu_affinity auto, HAProxy cpu-map. PIN=off leaves it to the kernel.
# Both take their nginx and HAProxy lines from bench/run.py (bench/lib.sh
# from_run, nginx_proxy_conf), so that the harnesses configure the proxies
# alike.
TG_PIN=""; NGINX_PIN=""; HAPROXY_PIN=""
if [ "${PIN:-auto}" = auto ]; then
  TG_PIN="--cpu-affinity auto"; NGINX_PIN="worker_cpu_affinity auto;"
  HAPROXY_PIN=$(from_run "run.haproxy_cpu_map(2)")
fi
NGINX_HEADERS=""; HAPROXY_HEADERS=""
if [ "${HEADERS:-same}" = same ]; then
  NGINX_HEADERS=$(from_run run.NGINX_SAME_HEADERS)
  HAPROXY_HEADERS=$(from_run run.HAPROXY_SAME_HEADERS)
fi
start_origin "$OUT" "$ORIGIN"; PIDS="$PIDS $ORIGIN_PID"
$BIN --listen 127.0.0.1:$PT --upstream http://127.0.0.1:$ORIGIN --threads 2 $TG_PIN --log-level error > $OUT/tg.log 2>&1 & T=$!; PIDS="$PIDS $T"
$BIN2 --listen 127.0.0.1:$P2 --upstream http://127.0.0.1:$ORIGIN --threads 2 $TG_PIN --log-level error > $OUT/tg2.log 2>&1 & T2=$!; PIDS="$PIDS $T2"
cat > $OUT/h.cfg <<CONF
global
  nbthread 2
$HAPROXY_PIN
  maxconn 9000
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout client 300s
  timeout server 300s
  timeout connect 5s
frontend f
  bind 127.0.0.1:$PH
  default_backend b
backend b
  server o 127.0.0.1:$ORIGIN
$HAPROXY_HEADERS
CONF
haproxy -f $OUT/h.cfg -db > $OUT/h.log 2>&1 & H=$!; PIDS="$PIDS $H"
nginx_proxy_conf "$OUT" "$PN" "$ORIGIN" 2 "$NGINX_PIN" "$NGINX_HEADERS"
nginx -c $OUT/p.conf & N=$!; PIDS="$PIDS $N"
sleep 0.5
for p in $PT $P2 $PN $PH; do for i in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:$p/small && break; sleep 0.1; done; wrk -t2 -c$C -d1s http://127.0.0.1:$p/small >/dev/null; done
pids_of() { case $1 in tidegate) echo $T;; tidegate2) echo $T2;; haproxy) echo $H;; nginx) echo "$N $(pgrep -P $N | tr '\n' ' ')";; esac; }
port_of() { case $1 in tidegate) echo $PT;; tidegate2) echo $P2;; haproxy) echo $PH;; nginx) echo $PN;; esac; }
# CPU=user or CPU=sys counts only that part of the ticks (utime, stime).
case ${CPU:-all} in user) TICKS='$14';; sys) TICKS='$15';; *) TICKS='$14+$15';; esac
cpu() { local s=0; for p in $(pids_of $1); do s=$((s + $(awk "{print $TICKS}" /proc/$p/stat))); done; echo $s; }
names=(${NAMES:-tidegate nginx haproxy})
N3=${#names[@]}
for r in $(seq 1 $R); do
  for k in $(seq 0 $((N3-1))); do
    name=${names[$(( (k + r) % N3 ))]}
    c0=$(cpu $name)
    res=$(wrk -t2 -c$C -d${D}s --latency http://127.0.0.1:$(port_of $name)/small 2>&1)
    c1=$(cpu $name)
    reqs=$(echo "$res" | awk '/requests in/{print $1}')
    echo "$name $(echo "$res" | awk '/Requests\/sec/{print $2}') $(python3 -c "print(round(($c1-$c0)/$reqs*10000,2))") $(echo "$res" | awk '$1=="99%"{print $2}')" | tee -a $OUT/res
  done
done
echo "== medians (req/s, ticks/10k, p99 ms)"
for n in ${names[@]}; do
  grep "^$n " $OUT/res | python3 -c "
import sys,statistics
rows=[l.split() for l in sys.stdin]
ms=lambda v: float(v[:-2]) if v.endswith('ms') else float(v[:-2]) / 1000 if v.endswith('us') else float(v[:-1]) * 1000
print('$n', round(statistics.median(float(r[1]) for r in rows)), round(statistics.median(float(r[2]) for r in rows),2),
      round(statistics.median(ms(r[3]) for r in rows),2))"
done
