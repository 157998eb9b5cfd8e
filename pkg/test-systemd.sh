#!/usr/bin/env bash
# Runs the installed package's unit (/usr/lib/systemd/system/tidegate.service,
# with its hardening) under a real systemd, as root: CI has no systemd
# running, so one is booted as PID 1 of its own PID and mount namespace
# (unshare), with a private /run and cgroup2, and driven with systemctl
# through nsenter. Called by pkg/test-deb.sh while the .deb is installed.
#   - `systemctl start` returns once Tidegate says READY=1 (Type=notify);
#     MainPID is the pid file's; a request goes through.
#   - `systemctl reload` (ExecReload=tidegate reload) succeeds, and fails
#     with the reason for a broken config while the old one serves on.
#   - A binary upgrade (`tidegate upgrade`) under a stream of requests:
#     none fails, MainPID moves to the new process, the unit stays active
#     and is not restarted; done twice.
#   - With WatchdogSec=2s (a drop-in) the unit is not restarted over three
#     watchdog periods.
#   - `systemctl stop` drains and ends with Result=success.
# Every process started here (the backend, the namespace's systemd and all
# it runs) is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

UNTIL_OK_S=60
source pkg/lib.sh
for tool in unshare nsenter curl python3; do
  command -v "$tool" >/dev/null 2>&1 || fail "needs $tool"
done
systemd=/lib/systemd/systemd
[ -x "$systemd" ] || fail "needs $systemd (apt-get install systemd)"
[ -f /usr/lib/systemd/system/tidegate.service ] || fail "the .deb is not installed"

dir=$(mktemp -d)
chmod 755 "$dir"
conf=/etc/tidegate/tidegate.toml
cp "$conf" "$dir/tidegate.toml.orig"
pids=()
ns=
cleanup() {
  # SIGKILL to a PID namespace's init ends every process in it.
  [ -n "$ns" ] && kill -KILL "$ns" 2>/dev/null || true
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  cp "$dir/tidegate.toml.orig" "$conf"
  rm -rf "$dir"
}
trap cleanup EXIT
# Inside the namespace: its /run, its PIDs, its systemd.
in_ns() { nsenter -t "$ns" -m -p -- "$@"; }
sc() { timeout 60 nsenter -t "$ns" -m -p -- systemctl "$@"; }
prop() { sc show -p "$1" --value tidegate; }
show_log() {
  echo "--- tidegate's stderr" >&2
  cat "$dir/tidegate.log" >&2 || true
  sc status --no-pager tidegate >&2 || true
  echo "--- systemd's log (the kernel's, where PID 1 writes)" >&2
  dmesg 2>/dev/null | grep 'systemd\[1\]' | tail -n 40 >&2 || true
}

backend_for_shipped_config

echo "== systemd, booted in its own PID and mount namespace"
# This systemd sees only the installed unit (copied as it is) and a drop-in:
# none of the machine's own units, whose sysinit.target would run
# systemd-tmpfiles (wiping the shared /tmp), sysctl, udev and the like on
# the machine itself. So the drop-in turns off the unit's default
# dependencies (sysinit.target, basic.target: not there), sends its output
# to a file (no journald here) and sets a watchdog. (What systemd still does
# to the machine as PID 1: it brings up lo, already up, and sets
# fs.file-max to its maximum, as at every boot.)
mkdir -p "$dir/units/tidegate.service.d"
cp /usr/lib/systemd/system/tidegate.service "$dir/units/"
printf '[Unit]\nDescription=pkg/test-systemd.sh\nDefaultDependencies=no\n' \
  > "$dir/units/tidegate-ci.target"
printf '[Unit]\nDefaultDependencies=no\n[Service]\nStandardOutput=append:%s/tidegate.log\nStandardError=append:%s/tidegate.log\nWatchdogSec=2s\n' \
  "$dir" "$dir" > "$dir/units/tidegate.service.d/ci.conf"
cat > "$dir/boot.sh" <<EOF
#!/bin/sh
set -e
mount -t proc proc /proc
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /sys/fs/cgroup
mount -t cgroup2 cgroup2 /sys/fs/cgroup
export container=tidegate-ci SYSTEMD_UNIT_PATH=$dir/units
exec $systemd --system --unit=tidegate-ci.target --log-level=info --log-target=kmsg
EOF
chmod +x "$dir/boot.sh"
unshare --pid --fork --mount --uts --propagation private "$dir/boot.sh" \
  >"$dir/boot.log" 2>&1 &
pids+=($!)
until_ok pgrep -P "$!" || fail "the namespace did not start"
ns=$(pgrep -P "$!")
until_ok sh -c "nsenter -t $ns -m -p -- systemctl is-system-running | grep -Eq 'running|degraded'" ||
  { cat "$dir/boot.log" >&2; fail "systemd did not come up"; }

echo "== systemctl start"
sc start tidegate || { show_log; fail "systemctl start tidegate failed"; }
[ "$(sc is-active tidegate)" = active ] || { show_log; fail "not active after start"; }
main=$(prop MainPID)
[ "$main" = "$(in_ns cat /run/tidegate/tidegate.pid)" ] || fail "MainPID $main is not the pid file's"
[ "$(prop User)" = tidegate ] || fail "runs as $(prop User)"
[ "$(curl -fsS "http://$listen/hello.txt")" = "hello from the backend" ] || fail "no answer through tidegate"
echo "active, MainPID $main, proxying"

echo "== systemctl reload"
sc reload tidegate || { show_log; fail "systemctl reload failed"; }
grep -q "reloaded" "$dir/tidegate.log" || { show_log; fail "no reload in the log"; }
printf '\n[listeners]\nbogus = 1\n' >> "$conf"
if sc reload tidegate 2>"$dir/reload.err"; then
  fail "systemctl reload accepted a broken config"
fi
cp "$dir/tidegate.toml.orig" "$conf"
[ "$(sc is-active tidegate)" = active ] || { show_log; fail "not active after a refused reload"; }
[ "$(prop MainPID)" = "$main" ] || fail "MainPID changed on a refused reload"
curl -fsS "http://$listen/hello.txt" >/dev/null || fail "no answer after a refused reload"
echo "reloaded; a broken config refused, the old one serving"

echo "== binary upgrade under requests, twice"
for round in 1 2; do
  before=$(prop MainPID)
  ( ok=0; bad=0
    while [ ! -e "$dir/stop-load" ]; do
      if curl -fsS -o /dev/null "http://$listen/hello.txt"; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
    done
    echo "$ok $bad" > "$dir/load.$round" ) &
  load=$!
  until_ok grep -q '"GET /hello.txt' /var/log/tidegate/access.log
  in_ns /usr/bin/tidegate upgrade --pid-file /run/tidegate/tidegate.pid ||
    { show_log; fail "tidegate upgrade failed (round $round)"; }
  until_ok sh -c "[ \"\$(nsenter -t $ns -m -p -- systemctl show -p MainPID --value tidegate)\" != $before ]" ||
    { show_log; fail "MainPID stayed $before after the upgrade"; }
  after=$(prop MainPID)
  [ "$after" = "$(in_ns cat /run/tidegate/tidegate.pid)" ] || fail "MainPID $after is not the pid file's"
  # The old process drains and exits; the unit stays active throughout.
  until_ok sh -c "! nsenter -t $ns -m -p -- kill -0 $before" || fail "the old process $before did not exit"
  touch "$dir/stop-load"
  wait "$load"
  rm -f "$dir/stop-load"
  read -r ok bad < "$dir/load.$round"
  [ "$(sc is-active tidegate)" = active ] || { show_log; fail "not active after upgrade $round"; }
  [ "$(prop NRestarts)" = 0 ] || fail "systemd restarted the unit"
  [ "$bad" = 0 ] && [ "$ok" -gt 0 ] || fail "upgrade $round: $bad of $((ok + bad)) requests failed"
  echo "upgrade $round: MainPID $before -> $after, $ok requests, none failed"
done

echo "== watchdog"
[ "$(prop WatchdogUSec)" = 2s ] || fail "WatchdogUSec is $(prop WatchdogUSec)"
# Three watchdog periods without a restart (pings every second).
sleep 6
[ "$(sc is-active tidegate)" = active ] && [ "$(prop NRestarts)" = 0 ] ||
  { show_log; fail "the watchdog restarted the unit"; }
echo "no restart over three periods"

echo "== systemctl stop"
sc stop tidegate || { show_log; fail "systemctl stop failed"; }
[ "$(prop Result)" = success ] || { show_log; fail "Result=$(prop Result) after stop"; }
echo "pkg/test-systemd.sh: ok"
