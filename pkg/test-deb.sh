#!/usr/bin/env bash
# Checks the built .deb (pkg/build-deb.sh) the way a user meets it, as root
# on a machine without Tidegate installed (CI):
#   lintian reports no error; dpkg -i installs it and creates the
#   `tidegate` user; systemd-analyze verify accepts the installed unit;
#   the installed binary, run as that user with the shipped config
#   (/etc/tidegate/tidegate.toml: 127.0.0.1:8080 -> 127.0.0.1:9000), proxies
#   a request to a small backend and logs it; the installed unit runs under
#   a systemd booted for it (pkg/test-systemd.sh: start, reload, upgrade,
#   watchdog, stop); dpkg -r keeps the conffile, dpkg --purge removes it
#   and the user.
# Whatever happens, every process started here is stopped and the package
# purged.
set -euo pipefail
cd "$(dirname "$0")/.."

deb=${1:-$(ls -t target/debian/tidegate_*.deb | head -n 1)}
echo "== $deb"
if dpkg -s tidegate >/dev/null 2>&1; then
  echo "pkg/test-deb.sh: tidegate is installed already; this test installs and purges it" >&2
  exit 1
fi

dir=$(mktemp -d)
chmod 755 "$dir"
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  dpkg --purge tidegate >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
source pkg/lib.sh

echo "== lintian"
# Errors fail the build; warnings are printed (README "Install" lists the
# expected ones).
lintian --fail-on error --tag-display-limit 0 "$deb"

echo "== dpkg -i"
dpkg -i "$deb"
getent passwd tidegate >/dev/null || fail "no tidegate user"
[ -x /usr/bin/tidegate ] || fail "no /usr/bin/tidegate"
/usr/bin/tidegate --version
grep -qx ' /etc/tidegate/tidegate.toml [0-9a-f]*' <(dpkg-query -W -f='${Conffiles}\n' tidegate) ||
  fail "/etc/tidegate/tidegate.toml is not a conffile"
for f in /usr/lib/systemd/system/tidegate.service /etc/logrotate.d/tidegate \
  /usr/share/man/man1/tidegate.1.gz /usr/share/man/man1/tidegate-check.1.gz \
  /usr/share/bash-completion/completions/tidegate /usr/share/zsh/vendor-completions/_tidegate \
  /usr/share/fish/vendor_completions.d/tidegate.fish /usr/share/doc/tidegate/copyright; do
  [ -f "$f" ] || fail "$f is not installed"
done
man -w tidegate >/dev/null || fail "man tidegate finds no page"
if command -v systemd-analyze >/dev/null 2>&1; then
  systemd-analyze verify /usr/lib/systemd/system/tidegate.service
fi
if command -v logrotate >/dev/null 2>&1; then
  logrotate --debug /etc/logrotate.d/tidegate 2>&1 | grep -qi "error" &&
    fail "logrotate rejects /etc/logrotate.d/tidegate"
fi
/usr/bin/tidegate check --config /etc/tidegate/tidegate.toml

echo "== the shipped config, run as the tidegate user"
conf=/etc/tidegate/tidegate.toml
backend_for_shipped_config
# setpriv execs the binary (no wrapper process): $! is tidegate itself.
setpriv --reuid=tidegate --regid=tidegate --init-groups \
  /usr/bin/tidegate --config "$conf" 2>"$dir/tidegate.log" &
tidegate=$!
pids+=("$tidegate")
until_ok grep -q "listening on http://$listen" "$dir/tidegate.log" ||
  { cat "$dir/tidegate.log" >&2; fail "tidegate does not listen on $listen"; }
got=$(curl -fsS "http://$listen/hello.txt")
[ "$got" = "hello from the backend" ] || fail "through tidegate: $got"
until_ok grep -q '"GET /hello.txt HTTP/1.1" 200' /var/log/tidegate/access.log ||
  fail "no access-log line in /var/log/tidegate/access.log"
kill -TERM "$tidegate"
status=0
wait "$tidegate" || status=$?
[ "$status" = 0 ] || { cat "$dir/tidegate.log" >&2; fail "tidegate exited $status on SIGTERM"; }
pids=("${pids[@]:0:1}")
echo "proxied, logged and stopped"

echo "== the unit under a real systemd"
pkg/test-systemd.sh

echo "== dpkg -r, dpkg --purge"
dpkg -r tidegate
[ ! -e /usr/bin/tidegate ] || fail "/usr/bin/tidegate left after dpkg -r"
[ -f "$conf" ] || fail "dpkg -r removed the conffile"
dpkg --purge tidegate
[ ! -e "$conf" ] || fail "$conf left after purge"
[ ! -e /var/log/tidegate ] || fail "/var/log/tidegate left after purge"
! getent passwd tidegate >/dev/null || fail "the tidegate user is left after purge"
echo "pkg/test-deb.sh: ok"
