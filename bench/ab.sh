#!/usr/bin/env bash
# A/B two Tidegate binaries against one nginx origin (1 worker), alternating
# them R rounds, with wrk at C connections for D seconds each; prints req/s,
# the proxy's CPU ticks per 10k requests and its RSS right after each run.
#
#   A=path/to/old B=path/to/new C=8000 R=3 D=5 bench/ab.sh
#
# A_ARGS / B_ARGS add arguments to one side (the same binary with a feature
# on against off: A=B=target/release/tidegate B_ARGS="--admin 127.0.0.1:0").
# A_CONFIG / B_CONFIG run that side from a TOML file instead of quick mode,
# with @PROXY@ and @ORIGIN@ replaced by the ports and @CONFIG_DIR@ by its
# folder (bench/configs/*.toml; bench/lib.sh render_config).
#
# Needs nginx, wrk, curl, python3. Stops everything it starts.
set -u
A=${A:?path of binary A}; B=${B:?path of binary B}
C=${C:-8000}; R=${R:-3}; D=${D:-5}
ulimit -n 20000
OUT=$(mktemp -d /tmp/tidegate-ab.XXXXXX)
NGX=""
trap 'kill $NGX 2>/dev/null; rm -rf "$OUT"' EXIT
source "$(dirname "$0")/lib.sh"
ORIGIN=$(free_port)
start_origin "$OUT" "$ORIGIN"; NGX=$ORIGIN_PID
sleep 0.5
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
for r in $(seq 1 $R); do
  for name in A B; do
    if [ $name = A ]; then BIN=$A; ARGS=${A_ARGS:-}; CFG=${A_CONFIG:-}; else BIN=$B; ARGS=${B_ARGS:-}; CFG=${B_CONFIG:-}; fi
    P=$(free_port)
    if [ -n "$CFG" ]; then
      render_config "$CFG" "$OUT/$name.toml" "$P" "$ORIGIN"
      RUN="--config $OUT/$name.toml"
    else
      RUN="--listen 127.0.0.1:$P --upstream http://127.0.0.1:$ORIGIN"
    fi
    $BIN $RUN --threads 2 --log-level error $ARGS > $OUT/$name.log 2>&1 &
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
