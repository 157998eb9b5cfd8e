#!/usr/bin/env bash
# Checks that vendor/hyper is hyper as published on crates.io plus
# vendor/hyper.patch, nothing else, and that Cargo really builds with it
# (a dependency that needs a newer hyper would make [patch.crates-io]
# silently stop applying: cargo only warns "Patch ... was not used").
#
#   vendor/check-hyper.sh            # run by .ci/run
#
# To change a patch: edit vendor/hyper, then regenerate the patch file
# with `vendor/check-hyper.sh --write`, and describe the change in
# vendor/hyper/TIDEGATE-PATCH.md and vendor/hyper/UPSTREAM.md.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
VERSION=1.12.0
# crates.io index checksum of hyper-1.12.0.crate
SHA256=2c3e324da4c95177d6291d4c8730197c0d1822f8a9766814a4a44fa5ab797c9c
OWN=(--exclude TIDEGATE-PATCH.md --exclude UPSTREAM.md)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -sSfL --retry 3 -o "$tmp/hyper.crate" \
  "https://static.crates.io/crates/hyper/hyper-$VERSION.crate"
echo "$SHA256  $tmp/hyper.crate" | sha256sum -c --quiet
tar xzf "$tmp/hyper.crate" -C "$tmp"
pristine=$tmp/hyper-$VERSION
rm -f "$pristine/Cargo.toml.orig"

if [ "${1:-}" = --write ]; then
  (cd "$tmp" && diff -ruN "${OWN[@]}" "hyper-$VERSION" "$repo/vendor/hyper" || true) |
    sed -E -e "s#^--- hyper-$VERSION/([^\t]*).*#--- a/\1#" \
      -e "s#^\+\+\+ $repo/vendor/hyper/([^\t]*).*#+++ b/\1#" -e '/^diff -ruN/d' \
      > vendor/hyper.patch
  echo "wrote vendor/hyper.patch ($(grep -c '^@@' vendor/hyper.patch) hunks)"
  exit 0
fi

(cd "$pristine" && patch -p1 --quiet --no-backup-if-mismatch < "$repo/vendor/hyper.patch")
if ! diff -r "${OWN[@]}" "$pristine" vendor/hyper > "$tmp/diff"; then
  echo "vendor/hyper is not hyper $VERSION plus vendor/hyper.patch:" >&2
  head -50 "$tmp/diff" >&2
  exit 1
fi

# The patched hyper is the one in the build, and cargo has no unused patch.
if ! tree=$(cargo tree -e normal -i "hyper@$VERSION" 2>&1); then
  echo "cargo tree failed:" >&2
  echo "$tree" >&2
  exit 1
fi
if grep -q "was not used" <<<"$tree"; then
  echo "[patch.crates-io] hyper is not used:" >&2
  echo "$tree" >&2
  exit 1
fi
if ! grep -q "^hyper v$VERSION ($repo/vendor/hyper)" <<<"$tree"; then
  echo "the hyper in the build is not vendor/hyper:" >&2
  echo "$tree" | head -5 >&2
  exit 1
fi
echo "vendor/hyper = hyper $VERSION + vendor/hyper.patch ($(grep -c '^@@' vendor/hyper.patch) hunks), and it is the hyper in the build"
