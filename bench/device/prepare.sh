#!/usr/bin/env bash
# Builds .carry/scale/: everything bench/device/run.sh needs on a bare
# machine that has glibc (any newer one) and python3, but no nginx, haproxy,
# wrk or openssl:
#   real/tidegate     the release binary, stripped (argument 1, default target/release/tidegate)
#   real/{nginx,haproxy,wrk}   this machine's binaries
#   tidegate, bin/{nginx,haproxy,wrk}   wrappers: LD_LIBRARY_PATH=lib for that
#                     binary only (not for python3 or the system's tools), then
#                     exec (same PID, so /proc accounting sees the real process)
#   lib/              every shared library ldd lists for the four, except glibc's own
#   tls/              one self-signed certificate (run.py's make_cert), as
#                     cert.pem, key.pem, haproxy.pem
# nginx needs nothing else: run.py's configs name every path (pid, logs, temp
# dirs under its -p dir), load no modules, include no files, and set
# access_log off (no default /var/log/nginx/access.log is opened).
# Usage: bench/device/prepare.sh [path/to/tidegate]      (from anywhere)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd -P)
src=${1:-$root/target/release/tidegate}
dest=$root/.carry/scale
[ -x "$src" ] || { echo "prepare.sh: no tidegate binary at $src (cargo build --release, or pass its path)" >&2; exit 1; }

rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/real" "$dest/lib" "$dest/tls"

# glibc's own libraries stay the target's (newer glibc is backward compatible)
glibc='^(ld-linux.*|linux-vdso|libc|libm|libmvec|libpthread|libdl|librt|libresolv|libutil|libanl|libnsl|libBrokenLocale|libthread_db|libc_malloc_debug|libnss_[a-z]+)\.so'
copy_libs() {  # every non-glibc library `ldd $1` resolves, under its soname
    local line name path
    while read -r line; do
        case $line in
            *"not found"*) echo "prepare.sh: $1: $line" >&2; exit 1 ;;
            *" => /"*) name=${line%% =>*}; path=${line#*=> }; path=${path%% (*} ;;
            *) continue ;;
        esac
        if [[ ! $name =~ $glibc ]] && [ ! -e "$dest/lib/$name" ]; then
            cp -L "$path" "$dest/lib/$name"
        fi
    done < <(ldd "$1")
}
wrapper() {  # wrapper FILE TOOL UP: FILE execs real/TOOL with lib/; FILE's dir/UP is $dest
    printf '%s\n' '#!/bin/sh' \
        "d=\$(dirname \"\$(readlink -f \"\$0\")\")/$3" \
        "LD_LIBRARY_PATH=\"\$d/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\" exec \"\$d/real/$2\" \"\$@\"" >"$1"
    chmod +x "$1"
}

cp "$src" "$dest/real/tidegate"
strip "$dest/real/tidegate"
copy_libs "$dest/real/tidegate"
wrapper "$dest/tidegate" tidegate .
for tool in nginx haproxy wrk; do
    path=$(PATH=$PATH:/usr/sbin:/sbin command -v "$tool") \
        || { echo "prepare.sh: $tool not found (apt-get install nginx-light haproxy wrk)" >&2; exit 1; }
    cp -L "$path" "$dest/real/$tool"
    copy_libs "$dest/real/$tool"
    wrapper "$dest/bin/$tool" "$tool" ..
done

python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import run; run.make_cert(sys.argv[2])' \
    "$root/bench" "$dest/tls"

# Check: with lib/ first, every non-glibc library resolves inside .carry/scale
for b in "$dest"/real/*; do
    outside=$(LD_LIBRARY_PATH="$dest/lib" ldd "$b" | grep ' => ' | grep -v " => $dest/lib/" \
              | awk '{print $1}' | grep -Ev "$glibc" || true)
    [ -z "$outside" ] || { echo "prepare.sh: $b still loads from outside: $outside" >&2; exit 1; }
done

echo "tidegate: $("$dest/tidegate" --version)"
"$dest/bin/nginx" -v 2>&1
"$dest/bin/haproxy" -v | sed -n 1p
{ "$dest/bin/wrk" -v 2>&1 || true; } | sed -n 1p
echo "libs: $(cd "$dest/lib" && echo *)"
kib=$(du -sk "$dest" | cut -f1)
echo "size of $dest: $((kib / 1024)) MiB ($kib KiB)"
[ "$kib" -lt $((60 * 1024)) ] || { echo "prepare.sh: $dest is over 60 MiB" >&2; exit 1; }
