# Shared by pkg/test-deb.sh and pkg/test-systemd.sh (sourced, after `cd`
# to the repository root and with `dir` and `pids` set).

fail() { echo "pkg/${0##*/}: $*" >&2; exit 1; }

# Polls CONDITION (a command) up to UNTIL_OK_S seconds (default 30): only
# to catch a hang.
until_ok() {
  local i
  for i in $(seq $((${UNTIL_OK_S:-30} * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  return 1
}

# The shipped config's addresses ($listen, $backend, from $conf), and a
# small backend on $backend serving $dir/hello.txt, unless one answers
# there already (test-deb.sh's, when it runs test-systemd.sh).
backend_for_shipped_config() {
  listen=$(sed -n 's/^address = "\(.*\)"$/\1/p' "$conf")
  backend=$(sed -n 's/^servers = \["http:\/\/\(.*\)"\]$/\1/p' "$conf")
  [ -n "$listen" ] && [ -n "$backend" ] || fail "cannot read the addresses from $conf"
  if curl -fsS -o /dev/null "http://$backend/hello.txt" 2>/dev/null; then
    return 0
  fi
  echo "hello from the backend" > "$dir/hello.txt"
  python3 -m http.server --bind "${backend%:*}" --directory "$dir" "${backend##*:}" \
    >"$dir/backend.log" 2>&1 &
  pids+=($!)
  until_ok curl -fsS "http://$backend/hello.txt" || fail "the backend does not answer on $backend"
}
