#!/usr/bin/env bash
# Runs the cargo-afl fuzzers of Tidegate's own parsers, one after another.
#
#   fuzz/run.sh                    # every target, 10 minutes each
#   TIME=8 fuzz/run.sh             # every target, 8 seconds each (CI)
#   TIME=60 fuzz/run.sh authority  # one target
#
# Needs cargo-afl (`cargo install cargo-afl`). Findings are kept in
# fuzz/out/TARGET/default/crashes; the summary line per target gives the
# executions and the crashes and hangs found. Exits 1 if any target found
# a crash.
set -eu
cd "$(dirname "$0")"
TIME=${TIME:-600}
TARGETS=${*:-authority connection forwarded client_ip route duration config nginx_conf htpasswd accept_encoding cache_control http_date proxy_protocol client_hello static_path byte_range}
cargo afl build --release --quiet
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_QUIET=1
failed=0
for t in $TARGETS; do
  rm -rf "out/$t"; mkdir -p out
  cargo afl fuzz -V "$TIME" -i "corpus/$t" -o "out/$t" "target/release/$t" > "out-$t.log" 2>&1 || true
  stats="out/$t/default/fuzzer_stats"
  if [ ! -f "$stats" ]; then
    echo "$t: afl-fuzz did not run; see fuzz/out-$t.log"; tail -5 "out-$t.log"; failed=1; continue
  fi
  get() { awk -F': *' -v k="$1" '$1 ~ "^"k" *$" {print $2}' "$stats"; }
  echo "$t: $(get execs_done) executions in $(get run_time) s, $(get corpus_count) paths, $(get saved_crashes) crashes, $(get saved_hangs) hangs"
  [ "$(get saved_crashes)" = 0 ] || failed=1
  rm -f "out-$t.log"
done
exit $failed
