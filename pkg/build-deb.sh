#!/usr/bin/env bash
# Builds the Debian package: target/debian/tidegate_VERSION-1_ARCH.deb.
#
#   pkg/build-deb.sh          # the plain release build (cargo build --release)
#   PGO=1 pkg/build-deb.sh    # the profile-guided one (bench/pgo.sh, ~9 more
#                             # minutes; needs what bench/pgo.sh needs)
#
# Generates the man pages and the bash/zsh/fish completions with the built
# binary into target/pkg, then packs everything with `cargo deb --no-build`
# (cargo-deb: `cargo install --locked cargo-deb`); what goes where is
# [package.metadata.deb] in Cargo.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null 2>&1 || {
  echo "pkg/build-deb.sh: needs cargo-deb: cargo install --locked cargo-deb" >&2
  exit 1
}

if [ "${PGO:-0}" = 1 ]; then
  # bench/pgo.sh builds into target/pgo-use (with --target-dir); cargo-deb
  # takes the binary from the target dir it is given the same way.
  TIDEGATE_BUILD=pgo bench/pgo.sh
  export CARGO_TARGET_DIR=$PWD/target/pgo-use
else
  cargo build --release --locked
fi
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/tidegate
"$bin" --version

out=target/pkg
rm -rf "$out"
mkdir -p "$out/man" "$out/completions"
"$bin" man --dir "$out/man"
gzip -9n "$out"/man/*.1
"$bin" completions bash > "$out/completions/tidegate.bash"
"$bin" completions zsh > "$out/completions/_tidegate"
"$bin" completions fish > "$out/completions/tidegate.fish"

# The binary is stripped (the release profile keeps line tables for
# backtraces; the package does not need them).
cargo deb --no-build --strip --locked
ls -1 target/debian/*.deb
