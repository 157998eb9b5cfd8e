#!/usr/bin/env python3
"""Memory per idle keep-alive connection: Tidegate against nginx.

Each proxy (2 threads / 2 workers) sits in front of the same one-worker
nginx origin. N client connections each send one request, read the answer,
and stay open, idle. The proxy's RSS (all its processes) is read before and
after, settled; the difference over N is the cost of one idle connection.

    python3 bench/idle_rss.py [--tidegate target/release/tidegate] [--n 10000]

Needs nginx. Stops everything it starts; loopback only.
"""
import argparse
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

BODY = b"tidegate-bench-idle\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def children(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]
    except OSError:
        return []


def settle(pids):
    """RSS once two readings a second apart agree within 1%."""
    last = rss_kib(pids)
    for _ in range(10):
        time.sleep(1)
        now = rss_kib(pids)
        if abs(now - last) <= max(last // 100, 64):
            return now
        last = now
    return last


def one_request(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /idle HTTP/1.1\r\nHost: bench.test\r\n\r\n")
    got = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(f"closed: {got!r}")
        got += chunk
        head, sep, rest = got.partition(b"\r\n\r\n")
        if sep:
            length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n")
                          if l.lower().startswith(b"content-length:"))
            if len(rest) >= length:
                return s


def measure(name, port, pids_of, n):
    pids = pids_of()
    for s in [one_request(port) for _ in range(100)]:
        s.close()
    before = settle(pids)
    conns = [one_request(port) for _ in range(n)]
    # Tidegate frees an idle connection's buffers within about 5 s.
    time.sleep(6)
    after = settle(pids_of())
    per = (after - before) / n
    print(f"{name:9} before {before / 1024:7.1f} MiB  after {after / 1024:7.1f} MiB  "
          f"{per:5.2f} KiB per idle connection  (n={n})", flush=True)
    for s in conns:
        s.close()
    return per


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tidegate", default="target/release/tidegate")
    ap.add_argument("--n", type=int, default=10000)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.n + 200 > hard:
        sys.exit(f"open files hard limit {hard} is too low for --n {args.n}")
    if not shutil.which("nginx"):
        sys.exit("needs nginx")
    tmp = tempfile.mkdtemp(prefix="tidegate-idle-")
    procs = []
    try:
        origin = free_port()
        with open(os.path.join(tmp, "origin.conf"), "w") as f:
            f.write(f"""worker_processes 1; daemon off; pid {tmp}/origin.pid; error_log {tmp}/origin.err warn;
events {{ worker_connections 1024; }}
http {{ access_log off; client_body_temp_path {tmp}/o1; proxy_temp_path {tmp}/o2; fastcgi_temp_path {tmp}/o3;
  uwsgi_temp_path {tmp}/o4; scgi_temp_path {tmp}/o5;
  server {{ listen 127.0.0.1:{origin}; location / {{ return 200 "{BODY.decode().strip()}\\n"; }} }} }}
""")
        procs.append(subprocess.Popen(["nginx", "-c", os.path.join(tmp, "origin.conf")]))
        wait_port(origin)

        tg = free_port()
        t = subprocess.Popen([args.tidegate, "--listen", f"127.0.0.1:{tg}", "--upstream",
                              f"http://127.0.0.1:{origin}", "--threads", "2", "--log-level", "error"])
        procs.append(t)
        wait_port(tg)
        measure("tidegate", tg, lambda: [t.pid], args.n)
        t.terminate()
        t.wait(30)

        ng = free_port()
        with open(os.path.join(tmp, "proxy.conf"), "w") as f:
            f.write(f"""worker_processes 2; daemon off; pid {tmp}/proxy.pid; error_log {tmp}/proxy.err warn;
worker_rlimit_nofile {hard};
events {{ worker_connections {args.n + 1000}; }}
http {{ access_log off; keepalive_timeout 300s; client_body_temp_path {tmp}/p1; proxy_temp_path {tmp}/p2;
  fastcgi_temp_path {tmp}/p3; uwsgi_temp_path {tmp}/p4; scgi_temp_path {tmp}/p5;
  upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; }}
  server {{ listen 127.0.0.1:{ng}; location / {{ proxy_pass http://origin; proxy_http_version 1.1;
    proxy_set_header Connection ""; }} }} }}
""")
        p = subprocess.Popen(["nginx", "-c", os.path.join(tmp, "proxy.conf")])
        procs.append(p)
        wait_port(ng)
        measure("nginx", ng, lambda: [p.pid] + children(p.pid), args.n)
    finally:
        for pr in procs:
            pr.terminate()
        for pr in procs:
            try:
                pr.wait(30)
            except subprocess.TimeoutExpired:
                pr.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
