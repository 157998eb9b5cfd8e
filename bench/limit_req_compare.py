#!/usr/bin/env python3
"""nginx `limit_req` against Tidegate's `[rate_limits]`, request by request.

Both proxies stand in front of the same origin (a Python http.server that
answers 200 at once) with the same limit: nginx

    limit_req_zone $binary_remote_addr zone=z:1m rate=10r/s;
    limit_req zone=z burst=5 [nodelay];
    limit_req_status 429;   # nginx's default is 503; 429 to compare

and Tidegate

    [rate_limits.z]
    rate = "10/s"
    burst = 5
    mode = "reject" | "delay"     # nodelay | nginx's default

Each mode and each proxy gets a fresh process (no state carried over) and
the same schedule: 30 requests at once (each on its own connection, all
from 127.0.0.1), then one every 50 ms for 2 s (40 more). Printed: each
request's status and completion time per proxy, then the totals admitted
and refused and the longest delay of an admitted request.

Usage: python3 bench/limit_req_compare.py [--tidegate PATH] [--nginx PATH]
(default target/release/tidegate, else target/debug/tidegate; /usr/sbin/nginx).
Standard library only; everything on 127.0.0.1, on ports the kernel picks.
"""

import argparse
import http.client
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BURST_AT_ONCE = 30
PACED = 40  # one every 50 ms for 2 s
PACE = 0.050


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *a):
        pass


def start_origin():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def nginx_conf(tmp, port, origin, nodelay):
    return f"""daemon off;
master_process off;
worker_processes 1;
error_log {tmp}/nginx-error.log warn;
pid {tmp}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  limit_req_zone $binary_remote_addr zone=z:1m rate=10r/s;
  limit_req_status 429;
  upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      limit_req zone=z burst=5{' nodelay' if nodelay else ''};
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def tidegate_conf(port, origin, mode):
    return f"""[server]
threads = 2
access_log = "off"
log_level = "error"

[[listeners]]
address = "127.0.0.1:{port}"

[rate_limits.z]
key = "client_ip"
rate = "10/s"
burst = 5
mode = "{mode}"

[[routes]]
upstream = "origin"
rate_limit = "z"

[upstreams.origin]
servers = ["http://127.0.0.1:{origin}"]
"""


def wait_listening(port, proc, what):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    sys.exit(f"{what} is not listening on {port} after 20 s")


def run(cmd, port, what):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_listening(port, proc, what)
        return run_schedule(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_schedule(port):
    """The schedule, with one clock for all: 30 at once at 0, then one
    every 50 ms."""
    out = [None] * (BURST_AT_ONCE + PACED)
    start = threading.Barrier(BURST_AT_ONCE)
    t0 = time.monotonic() + 0.2  # every thread started by then
    threads = [threading.Thread(target=timed, args=(port, 0.0, t0, out, i, start))
               for i in range(BURST_AT_ONCE)]
    threads += [threading.Thread(target=timed, args=(port, PACE * (j + 1), t0, out, BURST_AT_ONCE + j))
                for j in range(PACED)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def timed(port, sent_at, t0, out, i, start=None):
    if start is not None:
        start.wait()
    delay = t0 + sent_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    sent = time.monotonic() - t0
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/", headers={"Connection": "close"})
        r = c.getresponse()
        r.read()
        status = r.status
        c.close()
    except OSError as e:
        status = f"error: {e}"
    out[i] = (sent, status, time.monotonic() - t0)


def summary(res):
    ok = [r for r in res if r and r[1] == 200]
    refused = [r for r in res if r and r[1] == 429]
    other = [r for r in res if not r or r[1] not in (200, 429)]
    burst_ok = sum(1 for r in res[:BURST_AT_ONCE] if r and r[1] == 200)
    max_delay = max((r[2] - r[0] for r in ok), default=0.0)
    return len(ok), len(refused), len(other), burst_ok, max_delay


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = "target/release/tidegate"
    if not os.path.exists(default):
        default = "target/debug/tidegate"
    ap.add_argument("--tidegate", default=default)
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    args = ap.parse_args()
    origin = start_origin()
    oport = origin.server_address[1]
    tmp = tempfile.mkdtemp(prefix="limit-req-")
    print(f"origin 127.0.0.1:{oport}; tidegate {args.tidegate}; nginx {args.nginx}")
    print(f"schedule: {BURST_AT_ONCE} requests at t=0, then 1 every {int(PACE * 1000)} ms "
          f"to t={PACE * PACED:.1f} s; rate 10/s, burst 5; each request on its own connection")
    totals = {}
    try:
        for mode, nodelay in (("reject", True), ("delay", False)):
            results = {}
            port = free_port()
            conf = os.path.join(tmp, f"nginx-{mode}.conf")
            with open(conf, "w") as f:
                f.write(nginx_conf(tmp, port, oport, nodelay))
            results["nginx"] = run([args.nginx, "-c", conf, "-p", tmp], port, "nginx")
            port = free_port()
            conf = os.path.join(tmp, f"tidegate-{mode}.toml")
            with open(conf, "w") as f:
                f.write(tidegate_conf(port, oport, mode))
            results["tidegate"] = run([args.tidegate, "--config", conf], port, "tidegate")
            label = "nodelay / reject" if nodelay else "delay (nginx default) / delay"
            print(f"\n== {label} ==")
            print(f"{'#':>3} {'sent ms':>8} | {'nginx':>6} {'done ms':>8} | {'tidegate':>8} {'done ms':>8}")
            for i in range(BURST_AT_ONCE + PACED):
                n, t = results["nginx"][i], results["tidegate"][i]
                cell = lambda r: (f"{r[1]!s:>6} {r[2] * 1000:8.0f}" if r else f"{'-':>6} {'-':>8}")
                print(f"{i:3} {n[0] * 1000 if n else 0:8.0f} | {cell(n)} | {cell(t):>17}")
            for who in ("nginx", "tidegate"):
                totals[(label, who)] = summary(results[who])
    finally:
        origin.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n== totals ==")
    print(f"{'mode':32} {'proxy':9} {'admitted':>8} {'refused':>8} {'other':>6} {'of first 30':>12} {'max delay ms':>13}")
    for (label, who), (ok, refused, other, burst_ok, max_delay) in totals.items():
        print(f"{label:32} {who:9} {ok:8} {refused:8} {other:6} {burst_ok:12} {max_delay * 1000:13.0f}")


if __name__ == "__main__":
    main()
