#!/usr/bin/env bash
# Builds a profile-guided (PGO) release binary: target/pgo/tidegate.
#
#   bench/pgo.sh            # then: python3 bench/run.py --tidegate target/pgo/tidegate
#   BOLT=1 bench/pgo.sh     # and then BOLT on top (needs llvm-bolt)
#
# 1. builds Tidegate instrumented (-Cprofile-generate) in target/pgo-gen;
# 2. trains it with bench/train.sh: `bench/run.py --quick` (HTTP/1.1 at
#    50, 1000 and 8000 connections, h2c, TLS, large downloads, uploads),
#    then each feature operators turn on (access log, metrics, request IDs,
#    rate limit, cache, basic auth, static files, L4 streams) for a few
#    seconds; Tidegate writes the profiles when it exits;
# 3. merges them with llvm-profdata and builds again with -Cprofile-use
#    in target/pgo-use, copied to target/pgo/tidegate;
# 4. with BOLT=1: instruments that binary with llvm-bolt, trains it the same
#    way and lets llvm-bolt lay its code out by the measured counts.
# Same source, same Cargo profile (fat LTO, one codegen unit); LLVM only
# inlines and lays out code by the measured counts. 8-10 minutes on 2
# cores, BOLT=1 included (measured: 8m21s without, 7m50s-9m44s with,
# before bench/train.sh added the features' minute).
#
# Needs llvm-profdata of rustc's LLVM major version (Debian: llvm-N, where
# N is what `rustc -vV` says; BOLT=1: bolt-N too), plus what bench/run.py
# needs.
set -euo pipefail
cd "$(dirname "$0")/.."
major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
find_tool() { # NAME: NAME-MAJOR, or rustup's llvm-tools copy of NAME
  local c
  for c in "$1-$major" "$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/$1"; do
    if command -v "$c" >/dev/null 2>&1; then echo "$c"; return; fi
  done
}
PROFDATA=${PROFDATA:-$(find_tool llvm-profdata)}
if [ -z "$PROFDATA" ]; then
  echo "bench/pgo.sh: needs llvm-profdata for LLVM $major: apt-get install llvm-$major" >&2
  echo "  (or rustup component add llvm-tools), or PROFDATA=/path/to/llvm-profdata" >&2
  exit 1
fi
if [ "${BOLT:-0}" = 1 ]; then
  LLVM_BOLT=$(find_tool llvm-bolt); MERGE_FDATA=$(find_tool merge-fdata)
  if [ -z "$LLVM_BOLT" ] || [ -z "$MERGE_FDATA" ]; then
    echo "bench/pgo.sh: BOLT=1 needs llvm-bolt and merge-fdata: apt-get install bolt-$major" >&2
    exit 1
  fi
fi
GEN=$PWD/target/pgo-gen
train() { # BINARY: bench/train.sh's traffic through it
  bench/train.sh "$1" > "$GEN/train.txt" 2>&1 ||
    { echo "bench/pgo.sh: training run failed; see $GEN/train.txt" >&2; exit 1; }
}

echo "== instrumented build (target/pgo-gen)" >&2
RUSTFLAGS="-Cprofile-generate=$GEN/profiles" cargo build --release --target-dir "$GEN"
rm -rf "$GEN/profiles" # the build scripts' own
echo "== training: bench/train.sh" >&2
train "$GEN/release/tidegate"
"$PROFDATA" merge -o "$GEN/merged.profdata" "$GEN"/profiles/*.profraw
# A new name for new counts: cargo does not see a file's content change.
sum=$(sha256sum "$GEN/merged.profdata" | cut -c1-16)
rm -f "$GEN"/merged-*.profdata
mv "$GEN/merged.profdata" "$GEN/merged-$sum.profdata"

echo "== optimised build (target/pgo-use)" >&2
RUSTFLAGS="-Cprofile-use=$GEN/merged-$sum.profdata -Cllvm-args=-pgo-warn-missing-function=false -Clink-arg=-Wl,--emit-relocs" \
  cargo build --release --target-dir target/pgo-use
mkdir -p target/pgo
cp target/pgo-use/release/tidegate target/pgo/tidegate

if [ "${BOLT:-0}" = 1 ]; then
  echo "== BOLT: instrumented copy, training, layout" >&2
  rm -f "$GEN"/bolt.fdata*
  "$LLVM_BOLT" target/pgo-use/release/tidegate -instrument -o "$GEN/tidegate.bolt-inst" \
    --instrumentation-file="$GEN/bolt.fdata" --instrumentation-file-append-pid
  train "$GEN/tidegate.bolt-inst"
  "$MERGE_FDATA" "$GEN"/bolt.fdata.* > "$GEN/bolt.fdata"
  "$LLVM_BOLT" target/pgo-use/release/tidegate -o target/pgo/tidegate -data="$GEN/bolt.fdata" \
    -reorder-blocks=ext-tsp -reorder-functions=cdsort -split-functions -split-all-cold \
    -icf=1 -use-gnu-stack
fi
echo "built target/pgo/tidegate" >&2
