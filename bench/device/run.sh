#!/usr/bin/env bash
# Runs bench/scaling.py with the binaries bench/device/prepare.sh put in
# .carry/scale/ (carry that path along). From the repository root:
#   bench/device/run.sh [extra scaling.py options]
# Writes scaling.txt (what it prints) and scaling.json to $OUT, or to a new
# temp dir when OUT is unset. The whole run is capped at 380 s (SIGTERM; the
# script then stops its servers and still prints what it measured).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd -P)
cd "$root"
carry=$root/.carry/scale
for t in python3 timeout ldd; do
    command -v "$t" >/dev/null || { echo "run.sh: this machine has no $t" >&2; exit 1; }
done
chmod u+x "$carry/tidegate" "$carry"/bin/* "$carry"/real/* 2>/dev/null || true  # in case the copy lost modes
[ -x "$carry/tidegate" ] || { echo "run.sh: no $carry/tidegate: run bench/device/prepare.sh first" >&2; exit 1; }
if [ -z "${OUT:-}" ]; then
    OUT=$(mktemp -d /tmp/tidegate-scale-out-XXXXXX)
    echo "OUT not set; writing to $OUT"
fi
mkdir -p "$OUT"
# nginx, haproxy, wrk: wrappers that give only themselves LD_LIBRARY_PATH=$carry/lib
export PATH="$carry/bin:$PATH"

echo "nproc: $(nproc)"
lscpu | sed -n 1,20p || true
for b in nginx haproxy wrk tidegate; do
    libs=$(LD_LIBRARY_PATH="$carry/lib" ldd "$carry/real/$b" 2>&1 || true)
    case $libs in *"not found"*) echo "$libs" >&2; echo "run.sh: $b lacks a library" >&2; exit 1 ;; esac
done
nginx -v 2>&1
haproxy -v | sed -n 1p  # sed reads it all: no SIGPIPE under pipefail
wrk_v=$(wrk -v 2>&1 || true)  # wrk -v exits 1 after printing its version
case $wrk_v in wrk*) echo "${wrk_v%%$'\n'*}" ;; *) echo "run.sh: wrk does not start: $wrk_v" >&2; exit 1 ;; esac
"$carry/tidegate" --version
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
echo "open files limit: $(ulimit -n)"

start=$(date +%s)
set +e
timeout -k 20 380 python3 -u bench/scaling.py --tidegate "$carry/tidegate" --tls-dir "$carry/tls" \
    --json "$OUT/scaling.json" "$@" 2>&1 | tee "$OUT/scaling.txt"
rc=${PIPESTATUS[0]}
set -e
echo "scaling.py exit status $rc after $(($(date +%s) - start)) s" | tee -a "$OUT/scaling.txt"

# Anything still running from the carried binaries is ours (only if the time
# guard had to SIGKILL scaling.py before it stopped its servers); nginx
# rewrites its command line, hence /proc/PID/exe.
for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    case $exe in
        "$carry"/*)
            echo "run.sh: stopping leftover $exe (pid ${p#/proc/})"
            kill -9 "${p#/proc/}" 2>/dev/null || true ;;
    esac
done
exit "$rc"
