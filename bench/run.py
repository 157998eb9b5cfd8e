#!/usr/bin/env python3
"""Tidegate benchmark harness: Tidegate vs nginx vs HAProxy vs the bare origin.

Usage: python3 bench/run.py [--quick] [--json FILE] [--tidegate PATH] [--threads N]
                            [--rounds R] [--install] [--keep-tmp]
                            [--metrics] [--access-log json] [--rate-limit] [--cache]

Everything runs on 127.0.0.1.  One nginx origin (1 worker) serves /small, /1k,
/large and /upload; Tidegate, an nginx proxy and HAProxy sit in front of it on
their own ports.  Each proxy also has an h2c port (HTTP/2 cleartext, prior
knowledge) and a TLS port (TLS 1.3, ALPN h2 and http/1.1) with one self-signed
ECDSA P-256 certificate made at start.  Every scenario round-robins over the
targets, R rounds, and the table reports medians (errors are summed).  Stdlib
only.  Every process it starts is stopped at the end (by PID / process group),
also on Ctrl-C.

With --cache, every proxy caches (Tidegate [caches], nginx proxy_cache,
HAProxy's cache) and Varnish joins as a fourth target; the run is then cache
hits of a 1 KiB and a 100 KiB object at 50 and 1,000 connections, nothing else.
"""
import argparse
import datetime
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APT_CMD = "apt-get install -y nginx-light haproxy wrk nghttp2-client"
TARGETS = ["tidegate", "nginx", "haproxy", "origin"]  # "varnish" joins with --cache
PROXIES = ["tidegate", "nginx", "haproxy"]  # h2c and TLS: the origin speaks plain HTTP/1.1 only
# The certificate's DNS name (and an IP SAN for 127.0.0.1).  "localhost", not
# a made-up name: wrk takes the TLS SNI from its URL and cannot be pointed at
# another address, and an IP address is not a valid SNI (rustls ignores it
# with a warning per handshake).  /etc/hosts maps localhost to 127.0.0.1.
SNI = "localhost"
NOFILE = 20000
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
SMALL_BODY = "tidegate-bench-small-response-" + "x" * 69 + "\n"  # 100 bytes
STARTED = []  # every long-running Server we started, for cleanup


# --------------------------------------------------------------- processes
def which(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else NOFILE
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def proc_stat(pid):
    """(ppid, utime+stime ticks) from /proc/PID/stat, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rfind(")") + 2:].split()  # rest[0] is field 3 (state)
    return int(rest[1]), int(rest[11]) + int(rest[12])  # fields 4, 14, 15


def proc_tree(root):
    """root and all its descendants (nginx master + workers, etc.)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st:
                children.setdefault(st[0], []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids):
    return sum((proc_stat(p) or (0, 0))[1] for p in pids) / CLK_TCK


def machine_busy_seconds():
    """CPU seconds the whole machine spent running processes (all cores,
    /proc/stat). Interrupt and softirq time are left out: most of it is the
    loopback network work of the run itself, which no process is charged
    for (about 10% of the machine when wrk drives the origin directly)."""
    with open("/proc/stat") as f:
        user, nice, system = map(int, f.readline().split()[1:4])
    return (user + nice + system) / CLK_TCK


def children_cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def mem_kib(pids, field="VmRSS"):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class RssSampler(threading.Thread):
    """Samples summed VmRSS of a process tree every `period` s; keeps the max."""

    def __init__(self, pids, period=0.05):
        super().__init__(daemon=True)
        self.pids, self.period, self.peak = pids, period, 0
        self.stop_evt = threading.Event()

    def run(self):
        while not self.stop_evt.is_set():
            self.peak = max(self.peak, mem_kib(self.pids))
            self.stop_evt.wait(self.period)

    def stop(self):
        self.stop_evt.set()
        self.join()
        self.peak = max(self.peak, mem_kib(self.pids))
        return self.peak


class Server:
    def __init__(self, name, cmd, port, log, ports=None):
        """`port`: plain HTTP/1.1; `ports`: {"h1": .., "h2c": .., "tls": ..}."""
        self.name, self.cmd, self.port, self.log = name, cmd, port, log
        self.ports = ports or {"h1": port}
        self.exit_code = None
        with open(log, "ab") as lf:
            # own session => own process group, so we can kill the whole tree
            self.proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        STARTED.append(self)

    def pids(self):
        return proc_tree(self.proc.pid)

    def wait_ready(self, timeout=15):
        deadline = time.time() + timeout
        for port in sorted(set(self.ports.values())):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise RuntimeError(f"{self.name} not listening on {port} after {timeout}s: "
                                           f"{self.log_tail()}")
                    time.sleep(0.1)

    def log_tail(self, n=800):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-n:].strip()
        except OSError:
            return ""

    def stop(self, grace=10):
        """SIGTERM the leader (clean shutdown), then SIGKILL its process group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.exit_code = self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.exit_code = "timeout (killed)"
        elif self.exit_code is None:
            self.exit_code = self.proc.returncode
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # leftovers (workers)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n):
    """n distinct free ports (all sockets held open until all are chosen)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ----------------------------------------------------------------- configs
NGINX_COMMON = """worker_rlimit_nofile {nofile};
pid {tmp}/{name}.pid;
error_log {tmp}/{name}.error.log warn;
daemon off;
master_process on;
events {{ worker_connections 20000; }}
"""
TEMP_PATHS = "".join(f"  {k}_temp_path {{tmp}}/{{name}}_{k};\n"
                     for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


def origin_conf(tmp, port):
    return (NGINX_COMMON + "worker_processes 1;\nhttp {{\n" + TEMP_PATHS + """\
  access_log off;
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  keepalive_timeout 120s;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {tmp}/www;
    client_max_body_size 0;
    location = /small {{ return 200 "{small}"; }}
    location = /1k {{ }}
    location = /large {{ }}
    # --cache: objects any cache may keep for an hour.
    location ^~ /cache/ {{ expires 1h; }}
    # /upload: the mirror module reads the WHOLE request body (kept in memory,
    # up to 512m) before the content phase, so the 200 only goes out after the
    # last byte arrived; the static handler's 404/405 is then mapped to 200.
    location /upload {{
      client_body_buffer_size 512m;
      mirror /upload_sink;
      mirror_request_body on;
      error_page 403 404 405 =200 /upload_ok;
    }}
    location = /upload_sink {{ internal; return 204; }}
    location = /upload_ok {{ internal; return 200 "ok\\n"; }}
  }}
}}
""").format(tmp=tmp, name="origin", port=port, small=SMALL_BODY.replace("\n", "\\n"), nofile=NOFILE)


NGINX_PROXY_LOCATION = """\
    client_max_body_size 0;
    location / {{
      proxy_pass http://o;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering {buffering};
      proxy_request_buffering off;
      proxy_read_timeout 300s;
      proxy_send_timeout 300s;
{headers}{limit_req}{cache}    }}
"""

# With `--headers same` (the default), nginx and HAProxy do the header work
# Tidegate does on every request: X-Forwarded-For (appended to),
# X-Forwarded-Proto, X-Forwarded-Host, the client's Host kept, and Via on the
# request and on the response. Left at their defaults they add none of it,
# which is less work per request than Tidegate's.
NGINX_SAME_HEADERS = """\
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header Via "1.1 nginx";
      add_header Via "1.1 nginx" always;
"""
HAPROXY_SAME_HEADERS = """\
  option forwardfor
  http-request set-header X-Forwarded-Proto https if { ssl_fc }
  http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request add-header Via "1.1 haproxy"
  http-response add-header Via "1.1 haproxy"
"""


def nginx_proxy_conf(tmp, ports, origin_port, threads, tls, headers, pin):
    # nginx 1.22 has no `http2 on;` (1.25.1+): `listen ... http2` on a plain
    # port speaks h2c with prior knowledge only, hence three server blocks.
    return (NGINX_COMMON + "worker_processes {threads};\n"
            + ("worker_cpu_affinity auto;\n" if pin == "auto" else "")
            + "http {{\n" + TEMP_PATHS + """\
{access_log}
{limit_req_zone}{cache_path}  keepalive_requests 100000;
  keepalive_timeout 120s;
  upstream o {{
    server 127.0.0.1:{oport};
    keepalive 256;
    keepalive_requests 100000;
    keepalive_timeout 120s;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
""" + NGINX_PROXY_LOCATION + """\
  }}
  server {{
    listen 127.0.0.1:{h2c} http2 backlog=4096;
""" + NGINX_PROXY_LOCATION + """\
  }}
  server {{
    listen 127.0.0.1:{tls} ssl http2 backlog=4096;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.3;
""" + NGINX_PROXY_LOCATION + """\
  }}
""" + ("""\
  server {{
    listen 127.0.0.1:{metrics};
    location / {{ stub_status; }}
  }}
""" if "metrics" in ports else "") + """\
}}
""").format(metrics=ports.get("metrics"), access_log=nginx_access_log(tmp, ports), tmp=tmp, name="nginx", port=ports["h1"], h2c=ports["h2c"], tls=ports["tls"],
             cert=tls["cert"], key=tls["key"], oport=origin_port, threads=threads, nofile=NOFILE,
             headers=NGINX_SAME_HEADERS if headers == "same" else "",
             limit_req_zone=NGINX_LIMIT_ZONE if RATE_LIMIT[0] else "",
             limit_req=NGINX_LIMIT_REQ if RATE_LIMIT[0] else "",
             # nginx caches only what it buffers.
             buffering="on" if CACHE[0] else "off",
             cache_path=f"  proxy_cache_path {tmp}/nginx_cache keys_zone=bench:10m max_size=64m;\n"
             if CACHE[0] else "",
             cache="      proxy_cache bench;\n" if CACHE[0] else "")


# Set from --access-log: every proxy writes JSON lines to a file.
JSON_LOG = [False]
# Set from --rate-limit: every proxy limits requests per client address,
# generously enough to admit all of them (the check's cost, never a refusal):
# Tidegate's [rate_limits] (GCRA, keyed on client_ip), nginx's limit_req
# (nodelay), HAProxy's stick table with a request-rate deny.
RATE_LIMIT = [False]
NGINX_LIMIT_ZONE = "  limit_req_zone $binary_remote_addr zone=bench:10m rate=1000000r/s;\n"
NGINX_LIMIT_REQ = "      limit_req zone=bench burst=1000000 nodelay;\n"
HAPROXY_LIMIT = """\
  stick-table type ip size 100k expire 10s store http_req_rate(1s)
  http-request track-sc0 src
  http-request deny deny_status 429 if { sc_http_req_rate(0) gt 1000000 }
"""
# Set from --cache: every proxy keeps what the origin marks cacheable, in
# 64 MiB of memory (nginx: files it reads back from the page cache).
CACHE = [False]
HAPROXY_CACHE = """
cache bench
  total-max-size 64
  max-object-size 1048576
  max-age 3600
"""
VARNISH_VCL = """vcl 4.1;
backend o {{ .host = "127.0.0.1"; .port = "{port}"; }}
"""
TIDEGATE_LIMIT = """
[rate_limits.bench]
key = "client_ip"
rate = "1000000/s"
burst = 1000000
"""


def nginx_access_log(tmp, ports):
    """`access_log off`, or JSON lines to a file (the `--access-log json` runs)."""
    if not JSON_LOG[0]:
        return "  access_log off;"
    fmt = ("'{\"time\":\"$time_iso8601\",\"client\":\"$remote_addr\",\"method\":\"$request_method\","
           "\"uri\":\"$request_uri\",\"protocol\":\"$server_protocol\",\"status\":$status,"
           "\"bytes_sent\":$body_bytes_sent,\"upstream\":\"$upstream_addr\",\"duration\":$request_time,"
           "\"host\":\"$host\",\"referer\":\"$http_referer\",\"user_agent\":\"$http_user_agent\"}'")
    return (f"  log_format j escape=json {fmt};\n"
            f"  access_log {tmp}/nginx-access.log j;")


def haproxy_cpu_map(threads):
    """HAProxy `global` lines putting thread i on the i-th CPU this process
    may use, as Tidegate's cpu_affinity = "auto" and nginx's
    worker_cpu_affinity auto do. (HAProxy 2.6 applies only the `auto:` form:
    threads a-b onto as many CPUs, in order; more threads than CPUs take
    several lines.)"""
    cpus = sorted(os.sched_getaffinity(0))
    lines = ""
    for first in range(0, threads, len(cpus)):
        n = min(len(cpus), threads - first)
        lines += f"  cpu-map auto:1/{first + 1}-{first + n} {' '.join(map(str, cpus[:n]))}\n"
    return lines


def haproxy_conf(ports, origin_port, threads, tls, headers, pin):
    # maxconn 9000 -> HAProxy needs ~2*9000 fds, which fits the 20000 limit.
    cpu_map = haproxy_cpu_map(threads) if pin == "auto" else ""
    log_global, log_fe = "", ""
    if JSON_LOG[0]:
        # HAProxy logs to a syslog target; stdout (a file here) is its
        # cheapest, with a JSON-encoded log-format.
        log_global = "  log stdout format raw local0\n"
        log_fe = ("  log global\n  log-format '{\"time\":\"%t\",\"client\":\"%ci\",\"method\":\"%HM\","
                  "\"uri\":\"%HU\",\"protocol\":\"%HV\",\"status\":%ST,\"bytes_sent\":%B,"
                  "\"upstream\":\"%si:%sp\",\"duration\":%Ta,\"host\":\"%[capture.req.hdr(0)]\"}'\n"
                  '  http-request capture req.hdr(host) len 64\n')
    cache_use = ("  http-request cache-use bench\n  http-response cache-store bench\n"
                 if CACHE[0] else "")
    stats = ""
    if "metrics" in ports:
        stats = (f"frontend stats\n  bind 127.0.0.1:{ports['metrics']}\n"
                 "  http-request use-service prometheus-exporter\n")
    return f"""global
  nbthread {threads}
{cpu_map}  maxconn 9000
{log_global}
defaults
  mode http
  option http-keep-alive
  http-reuse always
  maxconn 9000
  timeout connect 10s
  timeout client 300s
  timeout server 300s
  timeout http-request 60s
  timeout http-keep-alive 120s

frontend fe
  bind 127.0.0.1:{ports["h1"]}
  bind 127.0.0.1:{ports["h2c"]} proto h2
  bind 127.0.0.1:{ports["tls"]} ssl crt {tls["pem"]} alpn h2,http/1.1 ssl-min-ver TLSv1.3
{log_fe}{HAPROXY_LIMIT if RATE_LIMIT[0] else ""}  default_backend be

backend be
  server o 127.0.0.1:{origin_port}
{HAPROXY_SAME_HEADERS if headers == "same" else ""}{cache_use}
{stats}{HAPROXY_CACHE if CACHE[0] else ""}"""


def tidegate_conf(ports, origin_port, threads, tls, pin, tmp=""):
    # What `--listen --upstream` (quick mode) builds, plus a TLS listener.
    # The plain listener serves HTTP/1.1 and h2c (prior knowledge) alike.
    return f"""[server]
threads = {threads}
cpu_affinity = "{pin}"
{'access_log = "' + tmp + '/tidegate-access.log"' + chr(10) + 'access_log_format = "json"' if JSON_LOG[0] else 'access_log = "off"'}
log_level = "warn"

# As nginx's keepalive_requests below (h2load does not reconnect after a
# GOAWAY, so the default 1000 would fail its long runs, nginx's too).
[limits]
max_requests_per_connection = 100000

[[listeners]]
address = "127.0.0.1:{ports["h1"]}"

[[listeners]]
address = "127.0.0.1:{ports["tls"]}"

[listeners.tls]
certificates = [{{ cert = "{tls["cert"]}", key = "{tls["key"]}" }}]
min_version = "1.3"

[[routes]]
upstream = "origin"
{'rate_limit = "bench"' if RATE_LIMIT[0] else ""}
{'cache = "bench"' if CACHE[0] else ""}

[upstreams.origin]
servers = ["http://127.0.0.1:{origin_port}"]
balance = "round_robin"
""" + (TIDEGATE_LIMIT if RATE_LIMIT[0] else "") + (
    '\n[caches.bench]\nmemory = "64MiB"\n' if CACHE[0] else "") + (f'\n[admin]\naddress = "127.0.0.1:{ports["metrics"]}"\n'
       if "metrics" in ports else "")


def make_cert(tmp):
    """One self-signed ECDSA P-256 certificate for every proxy; HAProxy wants
    certificate and key in one PEM file."""
    tls = {k: os.path.join(tmp, f) for k, f in
           (("cert", "cert.pem"), ("key", "key.pem"), ("pem", "haproxy.pem"))}
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "30", "-subj", f"/CN={SNI}",
                    "-addext", f"subjectAltName=DNS:{SNI},IP:127.0.0.1",
                    "-keyout", tls["key"], "-out", tls["cert"]],
                   check=True, capture_output=True, timeout=60)
    with open(tls["pem"], "w") as out:
        for k in ("cert", "key"):
            with open(tls[k]) as f:
                out.write(f.read())
    return tls


def write_file(path, size):
    """A real (non-sparse) file of `size` bytes of random-looking data."""
    block = os.urandom(MIB)
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            f.write(block)
        f.write(block[: size % MIB])


def start_servers(tmp, args, threads, notes):
    www = os.path.join(tmp, "www")
    os.makedirs(www)
    write_file(os.path.join(www, "1k"), 1024)
    os.makedirs(os.path.join(www, "cache"))
    for name, size in CACHE_OBJECTS:
        write_file(os.path.join(www, "cache", name), size)
    write_file(os.path.join(www, "large"), args.large_mib * MIB)
    write_file(os.path.join(tmp, "upload.bin"), args.upload_mib * MIB)
    nginx = which("nginx")

    def conf(name, text):
        path = os.path.join(tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def start_nginx(name, text, ports):
        if isinstance(ports, int):
            ports = {"h1": ports}
        return Server(name, [nginx, "-p", tmp + "/", "-c", conf(name + ".conf", text),
                             "-e", f"{tmp}/{name}.error.log"], ports["h1"], f"{tmp}/{name}.out", ports)

    oport = free_port()
    origin = start_nginx("origin", origin_conf(tmp, oport), oport)
    origin.wait_ready()
    servers = {"origin": origin}
    tls = make_cert(tmp)

    def tidegate(ports):
        path = conf("tidegate.toml", tidegate_conf(ports, oport, threads, tls, args.pin, tmp))
        check = subprocess.run([args.tidegate, "check", "--config", path],
                               capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"tidegate check: {(check.stdout + check.stderr).strip()}")
        return Server("tidegate", [args.tidegate, "--config", path], ports["h1"],
                      f"{tmp}/tidegate.out", ports)

    candidates = []
    if args.tidegate and os.access(args.tidegate, os.X_OK):
        candidates.append(("tidegate", tidegate))
    else:
        notes.append(f"tidegate skipped: no executable at {args.tidegate} "
                     "(build it with `cargo build --release`)")
    candidates.append(("nginx", lambda ports: start_nginx(
        "nginx", nginx_proxy_conf(tmp, ports, oport, threads, tls, args.headers, args.pin), ports)))
    candidates.append(("haproxy", lambda ports: Server(
        "haproxy", [which("haproxy"), "-db", "-f", conf("haproxy.cfg", haproxy_conf(ports, oport, threads, tls, args.headers, args.pin))],
        ports["h1"], f"{tmp}/haproxy.out", ports)))
    if CACHE[0]:
        candidates.append(("varnish", lambda ports: Server(
            "varnish", [which("varnishd"), "-F", "-f", conf("varnish.vcl", VARNISH_VCL.format(port=oport)),
                        "-a", f"127.0.0.1:{ports['h1']}", "-n", f"{tmp}/varnish", "-s", "malloc,64m",
                        "-p", f"thread_pools={threads}"],
            ports["h1"], f"{tmp}/varnish.out", {"h1": ports["h1"]})))
    for name, start in candidates:
        try:
            ports = dict(zip(("h1", "h2c", "tls", "metrics"), free_ports(4)))
            if not args.metrics:
                del ports["metrics"]
            if name == "tidegate":
                ports["h2c"] = ports["h1"]  # one plain listener: HTTP/1.1 and h2c
            srv = start(ports)
            srv.wait_ready()
            servers[name] = srv
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            notes.append(f"{name} skipped: failed to start: {e}")
    return servers, tls


# ------------------------------------------------------------- load tools
def curl(args, timeout=300):
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", "Expect:"] + args,
                       capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout.split()


def smoke_check(port):
    """Every path answers 200 with the expected size through this target."""
    expect = {"/small": len(SMALL_BODY), "/1k": 1024}
    for path, size in expect.items():
        rc, out = curl(["-w", "%{http_code} %{size_download}", f"http://127.0.0.1:{port}{path}"], 30)
        if rc != 0 or out != ["200", str(size)]:
            return f"GET {path}: curl rc={rc}, got {out}, want 200 {size}"
    return None


def proto_check(srv, tls):
    """h2c, TLS + h2 and TLS + HTTP/1.1 each answer /small with 200 in the
    expected HTTP version; the certificate verifies against our CA file."""
    want = f"200 {len(SMALL_BODY)}"
    tls_port = srv.ports["tls"]
    checks = [
        (["--http2-prior-knowledge", f"http://127.0.0.1:{srv.ports['h2c']}/small"], "2"),
        (["--http2", "--cacert", tls["cert"], "--resolve", f"{SNI}:{tls_port}:127.0.0.1",
          f"https://{SNI}:{tls_port}/small"], "2"),
        (["--http1.1", "--cacert", tls["cert"], "--resolve", f"{SNI}:{tls_port}:127.0.0.1",
          f"https://{SNI}:{tls_port}/small"], "1.1"),
    ]
    for cargs, version in checks:
        rc, out = curl(["-w", "%{http_code} %{size_download} %{http_version}"] + cargs, 30)
        if rc != 0 or out != want.split() + [version]:
            return f"curl {' '.join(cargs)}: rc={rc}, got {out}, want {want} {version}"
    return None


def tls_params(port, tmp):
    """Protocol, cipher suite, key exchange, ALPN as OpenSSL's client sees them,
    and whether a second connection resumes the first one's session."""
    sess = os.path.join(tmp, "tls.session")
    req = f"GET /small HTTP/1.1\r\nHost: {SNI}\r\nConnection: close\r\n\r\n"
    base = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", SNI, "-ign_eof"]
    try:
        first = subprocess.run(base + ["-brief", "-alpn", "http/1.1", "-sess_out", sess],
                               input=req, capture_output=True, text=True, errors="replace", timeout=15)
        again = subprocess.run(base + ["-sess_in", sess], input=req, capture_output=True, text=True,
                               errors="replace", timeout=15)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    keep = ("Protocol version", "Ciphersuite", "Peer signature type", "Server Temp Key")
    out = [line.strip() for line in first.stderr.splitlines() if line.strip().startswith(keep)]
    resumed = re.search(r"^(Reused|New), (TLS\S+)", again.stdout, re.M)
    out.append(f"second connection: {resumed.group(1) if resumed else '?'}")
    return "; ".join(out)


LAT_RE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def parse_wrk(text):
    res = {"requests": None, "rps": None, "connect": 0, "read": 0, "write": 0, "timeout": 0, "non2xx": 0}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        res["rps"] = float(m.group(1))
    for pct, val, unit in LAT_RE.findall(text):
        res[f"p{pct}_ms"] = float(val) * UNIT_MS[unit]
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        res.update(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        res["non2xx"] = int(m.group(1))
    res["errors"] = sum(res[k] for k in ("connect", "read", "write", "timeout", "non2xx"))
    return res


def measure(cmd, timeout, parse, target_pids, origin_pids):
    """Runs a load tool; CPU of target and origin read just before and after."""
    c0, o0 = cpu_seconds(target_pids), cpu_seconds(origin_pids)
    m0, w0, t0 = machine_busy_seconds(), children_cpu_seconds(), time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    c1, o1 = cpu_seconds(target_pids), cpu_seconds(origin_pids)
    m1, w1, t1 = machine_busy_seconds(), children_cpu_seconds(), time.monotonic()
    res = parse(r.stdout)
    res["rc"] = r.returncode
    # CPU used by anything but target, origin and the load tool: other load skewing the run
    ours = (c1 - c0) + (0 if target_pids == origin_pids else o1 - o0) + (w1 - w0)
    res["foreign_cpu_pct"] = max(0.0, (m1 - m0) - ours) / (t1 - t0) / os.cpu_count() * 100
    if r.returncode != 0 or not res["requests"]:
        res["failed"] = (r.stdout + r.stderr)[-500:]
        res["errors"] = None  # unknown: reported as a NOTE instead
        return res
    res["cpu_per_10k"] = (c1 - c0) / res["requests"] * 10000
    res["origin_cpu_per_10k"] = (o1 - o0) / res["requests"] * 10000
    return res


def run_wrk(url, conns, duration, target_pids, origin_pids, headers=()):
    """wrk GET `url` (/small, plain or https)."""
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{duration}s", "--timeout", "5s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    return measure(cmd + [url], duration + 60, parse_wrk, target_pids, origin_pids)


H2_REQ_RE = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                       r"(\d+) failed, (\d+) errored, (\d+) timeout")
H2_STATUS_RE = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
H2_TIME_RE = re.compile(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)")


def parse_h2load(text):
    """h2load's summary: req/s, the request counters, status classes and the
    mean request time (it prints no percentiles; those come from --log-file)."""
    res = {"requests": None, "rps": None}
    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", text)
    if m:
        res["rps"] = float(m.group(2))
    m = H2_REQ_RE.search(text)
    if m:
        keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
        res.update(zip(("req_" + k for k in keys), map(int, m.groups())))
        res["requests"] = res["req_succeeded"]
    m = H2_STATUS_RE.search(text)
    if m:
        res.update(zip(("s2xx", "s3xx", "s4xx", "s5xx"), map(int, m.groups())))
    m = H2_TIME_RE.search(text)
    if m:
        v = m.groups()
        res["mean_ms"] = float(v[4]) * UNIT_MS[v[5]]
        res["max_ms"] = float(v[2]) * UNIT_MS[v[3]]
    # errored and timeout requests are counted in `failed` too
    res["errors"] = res.get("req_failed", 0) + sum(res.get(k, 0) for k in ("s3xx", "s4xx", "s5xx"))
    return res


def log_percentiles(path):
    """p50/p99 (ms) of the per-request times in an h2load --log-file
    (start us, status, duration us, tab-separated)."""
    times = []
    try:
        with open(path) as f:
            for line in f:
                cols = line.split("\t")
                if len(cols) >= 3:
                    times.append(int(cols[2]))
    except (OSError, ValueError):
        return {}
    if not times:
        return {}
    times.sort()
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))] / 1000.0  # noqa: E731
    return {"p50_ms": pick(0.50), "p75_ms": pick(0.75), "p90_ms": pick(0.90), "p99_ms": pick(0.99),
            "logged": len(times)}


def run_h2load(url, conns, streams, duration, target_pids, origin_pids, log, extra=()):
    """h2load GET `url` over HTTP/2 (h2c prior knowledge for http://, ALPN h2 for https://)."""
    cmd = ["h2load", "-t2", f"-c{conns}", f"-m{streams}", f"-D{duration}", f"--log-file={log}",
           *extra, url]
    res = measure(cmd, duration + 60, parse_h2load, target_pids, origin_pids)
    res.update(log_percentiles(log))
    try:
        os.unlink(log)
    except OSError:
        pass
    return res


def download(port, size, streams, pids):
    """`streams` parallel curls of /large; aggregate MB/s and peak RSS."""
    fmt = "%{http_code} %{size_download} %{time_total}"
    cmd = ["curl", "-s", "-o", "/dev/null", "--max-time", "300", "-w", fmt,
           f"http://127.0.0.1:{port}/large"]
    sampler = RssSampler(pids)
    sampler.start()
    procs = []
    try:
        t0 = time.monotonic()
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(streams)]
        outs = [(p.communicate(timeout=330)[0].split(), p.returncode) for p in procs]
        wall = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        peak = sampler.stop()
    errors = sum(1 for out, rc in outs if rc != 0 or out[:2] != ["200", str(size)])
    total = sum(int(out[1]) for out, rc in outs if len(out) == 3)
    if errors:
        mbs = None
    elif streams == 1:
        mbs = total / float(outs[0][0][2]) / 1e6  # curl's own transfer time
    else:
        mbs = total / wall / 1e6
    return {"mb_s": mbs, "errors": errors, "peak_rss_kib": peak, "bytes": total, "wall_s": wall}


def upload(port, path, size):
    rc, out = curl(["--max-time", "300", "-T", path, "-X", "POST", "-w",
                    "%{http_code} %{size_upload} %{time_total}", f"http://127.0.0.1:{port}/upload"])
    ok = rc == 0 and out[:2] == ["200", str(size)]
    return {"mb_s": size / float(out[2]) / 1e6 if ok else None, "errors": 0 if ok else 1,
            "curl": out, "curl_rc": rc}


# --------------------------------------------------------------- scenarios
def run_all(servers, args, notes, tls):
    names = [t for t in TARGETS if t in servers]
    proxies = [t for t in PROXIES if t in servers]
    raw = {n: {} for n in names}
    origin = servers["origin"]

    def add(name, key, val):
        raw[name].setdefault(key, []).append(val)

    def rounds(label, fn, targets=names):
        for r in range(args.rounds):
            order = targets[r % len(targets):] + targets[:r % len(targets)]  # rotate start
            for name in order:
                print(f"  [{label}] round {r + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
                fn(name, servers[name])
                time.sleep(args.pause)

    for name in names:
        add(name, "rss_idle_kib", mem_kib(servers[name].pids()))
        problem = smoke_check(servers[name].port)
        if problem:
            notes.append(f"{name}: smoke check failed: {problem}")
        if name in proxies:
            problem = proto_check(servers[name], tls)
            if problem:
                notes.append(f"{name}: h2c/TLS smoke check failed: {problem}")
            args.tls_params[name] = tls_params(servers[name].ports["tls"], args.tmp)
        subprocess.run(["wrk", "-t2", "-c50", "-d1s", f"http://127.0.0.1:{servers[name].port}/small"],
                       capture_output=True, timeout=60)  # warm-up, not recorded

    def record(name, srv, tag, res, what, rss_after=False):
        add(name, f"{what.split()[0]}_{tag}", res)  # wrk_TAG or h2load_TAG: the whole result
        if "failed" in res:
            notes.append(f"{name}: {what} failed: {res['failed']!r}")
        add(name, "foreign_cpu_pct", res["foreign_cpu_pct"])
        for k in ("rps", "p50_ms", "p99_ms", "cpu_per_10k", "origin_cpu_per_10k", "errors"):
            if res.get(k) is not None:
                add(name, f"{k}_{tag}", res[k])
        if rss_after:
            add(name, f"rss_after_{tag}_kib", mem_kib(srv.pids()))

    def cache_hits(obj, size, conns):
        """wrk on /cache/OBJ once each target has it stored (two GETs first:
        a cache may store only what it saw twice)."""
        def fn(name, srv):
            url = f"http://127.0.0.1:{srv.port}/cache/{obj}"
            for _ in range(2):
                rc, out = curl(["-w", "%{http_code} %{size_download}", url], 30)
                if rc != 0 or out != ["200", str(size)]:
                    notes.append(f"{name}: GET /cache/{obj}: curl rc={rc}, got {out}")
            res = run_wrk(url, conns, args.duration, srv.pids(), origin.pids())
            record(name, srv, f"hit{obj}_c{conns}", res, f"wrk -c{conns} /cache/{obj}")
        rounds(f"cache hits {obj} c={conns}", fn)

    def wrk_scenario(conns, duration, tag, rss_after=False):
        def fn(name, srv):
            res = run_wrk(f"http://127.0.0.1:{srv.port}/small", conns, duration, srv.pids(), origin.pids())
            record(name, srv, tag, res, f"wrk -c{conns}", rss_after)
        rounds(f"wrk c={conns}", fn)

    def finish():
        for name in names:
            add(name, "hwm_end_kib", mem_kib(servers[name].pids(), "VmHWM"))
        return raw

    if CACHE[0]:
        for obj, size in CACHE_OBJECTS:
            for conns in (50, 1000):
                cache_hits(obj, size, conns)
        return finish()

    large, up_size = args.large_mib * MIB, args.upload_mib * MIB
    up_path = os.path.join(args.tmp, "upload.bin")

    def dl(streams, tag):
        def fn(name, srv):
            res = download(srv.port, large, streams, srv.pids())
            add(name, f"dl_{tag}", res)
            add(name, f"mbs_{tag}", res["mb_s"])
            add(name, f"errors_{tag}", res["errors"])
            if res["errors"]:
                notes.append(f"{name}: {res['errors']} of {streams} downloads failed or were short")
            if streams > 1:
                add(name, "rss_peak_dl8_kib", res["peak_rss_kib"])
        rounds(f"download x{streams}", fn)

    dl(1, "dl1")
    dl(8, "dl8")

    def up(name, srv):
        res = upload(srv.port, up_path, up_size)
        add(name, "upload", res)
        add(name, "errors_up", res["errors"])
        if res["mb_s"] is not None:
            add(name, "mbs_up", res["mb_s"])
        else:
            notes.append(f"{name}: upload failed: curl rc={res['curl_rc']} {res['curl']}")
    rounds("upload", up)

    wrk_scenario(50, args.duration, "c50")
    wrk_scenario(1000, args.duration, "c1000", rss_after=True)
    wrk_scenario(8000, args.duration_8000, "c8000", rss_after=True)

    # HTTP/2 and TLS: the proxies only (the origin speaks plain HTTP/1.1).
    d, log = args.duration_proto, os.path.join(args.tmp, "h2load.log")

    def h2c(name, srv):
        res = run_h2load(f"http://127.0.0.1:{srv.ports['h2c']}/small", 50, 10, d,
                         srv.pids(), origin.pids(), log)
        record(name, srv, "h2c", res, "h2load h2c")
    rounds("h2c h2load c=50 m=10", h2c, proxies)

    def tls_url(srv):
        return f"https://{SNI}:{srv.ports['tls']}/small"

    def tls_h1(name, srv):
        res = run_wrk(tls_url(srv), 50, d, srv.pids(), origin.pids())
        record(name, srv, "tls_h1", res, "wrk https c=50")
    rounds("TLS HTTP/1.1 wrk c=50", tls_h1, proxies)

    def tls_h2(name, srv):
        res = run_h2load(tls_url(srv), 50, 10, d, srv.pids(), origin.pids(), log,
                         [f"--connect-to=127.0.0.1:{srv.ports['tls']}"])
        record(name, srv, "tls_h2", res, "h2load TLS h2")
    rounds("TLS h2 h2load c=50 m=10", tls_h2, proxies)

    def tls_hs(name, srv):
        # wrk reconnects after each response; its OpenSSL client offers the
        # session ticket of the previous connection (TLS 1.3 PSK + ECDHE)
        res = run_wrk(tls_url(srv), 50, d, srv.pids(), origin.pids(), headers=["Connection: close"])
        record(name, srv, "tls_hs", res, "wrk https Connection: close")
    rounds("TLS handshake per request, wrk c=50", tls_hs, proxies)
    return finish()


# ------------------------------------------------------------------ report
def load_rows(tag, label):
    """The rows of one load scenario (wrk or h2load results under `tag`)."""
    return (
        (f"rps_{tag}", f"{label}: req/s", "median", 1),
        (f"p50_ms_{tag}", f"{label}: p50 latency ms", "median", 1),
        (f"p99_ms_{tag}", f"{label}: p99 latency ms", "median", 1),
        (f"errors_{tag}", f"{label}: errors (sum)", "sum", 1),
        (f"cpu_per_10k_{tag}", f"{label}: target CPU s/10k req", "median", 1),
        (f"origin_cpu_per_10k_{tag}", f"{label}: origin CPU s/10k req", "median", 1),
    )


# (key, label, how to aggregate over rounds, scale[, raw key if not `key`])
ROWS = [
    ("rps_c50", "small c=50: req/s", "median", 1),
    ("p50_ms_c50", "small c=50: p50 latency ms", "median", 1),
    ("p99_ms_c50", "small c=50: p99 latency ms", "median", 1),
    ("errors_c50", "small c=50: errors (sum)", "sum", 1),
    ("cpu_per_10k_c50", "small c=50: target CPU s/10k req", "median", 1),
    ("origin_cpu_per_10k_c50", "small c=50: origin CPU s/10k req", "median", 1),
    ("rps_c1000", "small c=1000: req/s", "median", 1),
    ("p50_ms_c1000", "small c=1000: p50 latency ms", "median", 1),
    ("p99_ms_c1000", "small c=1000: p99 latency ms", "median", 1),
    ("errors_c1000", "small c=1000: errors (sum)", "sum", 1),
    ("cpu_per_10k_c1000", "small c=1000: target CPU s/10k req", "median", 1),
    ("origin_cpu_per_10k_c1000", "small c=1000: origin CPU s/10k req", "median", 1),
    ("rps_c8000", "small c=8000: req/s", "median", 1),
    ("p99_ms_c8000", "small c=8000: p99 latency ms", "median", 1),
    ("errors_c8000", "small c=8000: errors (sum)", "sum", 1),
    ("cpu_per_10k_c8000", "small c=8000: target CPU s/10k req", "median", 1),
] + [row for tag, label in (("h2c", "h2c c=50 m=10"), ("tls_h1", "TLS h1 c=50"),
                            ("tls_h2", "TLS h2 c=50 m=10"), ("tls_hs", "TLS new conn/req c=50"))
     for row in load_rows(tag, label)] + [
    ("mbs_dl1", "large download x1: MB/s", "median", 1),
    ("mbs_dl8", "large download x8: aggregate MB/s", "median", 1),
    ("mbs_up", "upload: MB/s", "median", 1),
    ("errors_dl1", "download x1 errors (sum)", "sum", 1),
    ("errors_dl8", "download x8 errors (sum)", "sum", 1),
    ("errors_up", "upload errors (sum)", "sum", 1),
    ("rss_idle_kib", "RSS idle MiB", "median", 1 / 1024),
    ("rss_after_c1000_kib", "RSS after c=1000 run MiB", "median", 1 / 1024),
    ("rss_peak_dl8_kib", "peak RSS during x8 downloads MiB", "median", 1 / 1024),
    ("rss_after_c8000_kib", "RSS after c=8000 run MiB", "median", 1 / 1024),
    ("hwm_end_kib", "lifetime peak RSS (sum VmHWM) MiB", "median", 1 / 1024),
    ("foreign_cpu_pct", "noise: median CPU % used by other processes in load runs", "median", 1),
    ("foreign_cpu_pct_max", "noise: max CPU % used by other processes in a load run", "max", 1,
     "foreign_cpu_pct"),
]


CACHE_OBJECTS = (("1k", 1024), ("100k", 100 * 1024))
CACHE_ROWS = [row for obj, _ in CACHE_OBJECTS for conns in (50, 1000)
              for row in load_rows(f"hit{obj}_c{conns}", f"cache hit {obj} c={conns}")
              ] + [row for row in ROWS if row[0].startswith(("rss_idle", "hwm_end", "foreign"))]


def rows():
    return CACHE_ROWS if CACHE[0] else ROWS


def summarize(raw):
    med = {}
    for name, metrics in raw.items():
        med[name] = {}
        for key, _, how, _scale, *src in rows():
            vals = [v for v in metrics.get(src[0] if src else key, []) if v is not None]
            if vals:
                agg = {"sum": sum, "max": max, "median": statistics.median}[how]
                med[name][key] = agg(vals)
    return med


def fmt(v):
    if v is None:
        return "-"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def ratio(a, b):
    if a is None or b is None:
        return "-"
    if b == 0:
        return "=" if a == 0 else "inf"
    return f"{a / b:.2f}x"


def table(med):
    peers = [t for t in TARGETS if t not in ("tidegate", "origin")]
    cols = TARGETS + [f"tidegate/{p}" for p in peers]
    lines = ["| metric | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for key, label, _, scale, *_ in rows():
        vals = [med.get(t, {}).get(key) for t in TARGETS]
        vals = [None if v is None else v * scale for v in vals]
        tg = vals[0]
        ratios = (["-"] * len(peers) if key.startswith("foreign")
                  else [ratio(tg, vals[TARGETS.index(p)]) for p in peers])
        lines.append(f"| {label} | " + " | ".join([fmt(v) for v in vals] + ratios) + " |")
    return "\n".join(lines)


def machine_info(threads, args):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def version(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"
    return {
        "command": " ".join(shlex.quote(a) for a in ["python3"] + sys.argv),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(), "cpu": cpu, "kernel": os.uname().release,
        "threads": threads, "rounds": args.rounds, "duration_s": args.duration,
        "duration_8000_s": args.duration_8000, "large_mib": args.large_mib, "upload_mib": args.upload_mib,
        "nginx": version([which("nginx"), "-v"]), "haproxy": version([which("haproxy"), "-v"]),
        "wrk": version(["wrk", "-v"]), "curl": version(["curl", "--version"]),
        "h2load": version(["h2load", "--version"]), "openssl": version(["openssl", "version"]),
        "duration_proto_s": args.duration_proto,
        "tidegate": args.tidegate, "headers": args.headers, "pin": args.pin, "metrics": args.metrics, "access_log": args.access_log,
        "rate_limit": args.rate_limit, "cache": args.cache,
        "varnish": version([which("varnishd") or "varnishd", "-V"]) if args.cache else None,
        "git": version(["git", "-C", ROOT, "describe", "--always", "--dirty"]),
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
    }


# -------------------------------------------------------------------- main
def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 round, short runs (~1 minute)")
    p.add_argument("--json", metavar="FILE", help="write raw and median numbers as JSON")
    p.add_argument("--tidegate", metavar="PATH", default=os.path.join(ROOT, "target", "release", "tidegate"),
                   help="tidegate binary (default: target/release/tidegate; skipped if missing)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="proxy threads/workers (default: nproc)")
    p.add_argument("--rounds", type=int, help="rounds per scenario (default 3, quick 1)")
    p.add_argument("--headers", choices=("same", "default"), default="same",
                   help="same: nginx and HAProxy add the forwarding fields Tidegate adds "
                        "(X-Forwarded-*, Via); default: their own defaults, which add none")
    p.add_argument("--pin", choices=("auto", "off"), default="auto",
                   help="auto: each proxy binds worker/thread i to the i-th CPU (Tidegate cpu_affinity, "
                        "nginx worker_cpu_affinity auto, HAProxy cpu-map); off: the kernel places them")
    p.add_argument("--metrics", action="store_true",
                   help="metrics on: Tidegate's [admin] listener, nginx's stub_status, "
                        "HAProxy's Prometheus exporter (each on a port of its own)")
    p.add_argument("--access-log", choices=("off", "json"), default="off",
                   help="json: every proxy writes a JSON line per request to a file "
                        "(nginx log_format escape=json, HAProxy log-format %%{+json}o to stdout)")
    p.add_argument("--rate-limit", action="store_true",
                   help="a rate limit per client address on every proxy, generous enough to admit all "
                        "(Tidegate [rate_limits], nginx limit_req nodelay, HAProxy stick table + deny)")
    p.add_argument("--cache", action="store_true",
                   help="cache hits only: every proxy caches (Tidegate [caches], nginx proxy_cache, "
                        "HAProxy cache), Varnish joins; 1 KiB and 100 KiB objects at c=50 and c=1000")
    p.add_argument("--install", action="store_true", help="apt-get install missing tools")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    a = p.parse_args()
    a.rounds = a.rounds or (1 if a.quick else 3)
    # Full mode takes about 6.5 minutes, quick mode about 1 (the issue asks
    # for a few minutes at most). 8000 connections need 3 s to be opened
    # and used in either mode.
    a.duration = 2 if a.quick else 5
    a.duration_8000 = 3
    a.duration_proto = 2 if a.quick else 3  # h2c and TLS scenarios
    a.tls_params = {}
    a.large_mib = 128 if a.quick else 512
    a.upload_mib = 256
    a.pause = 0.3 if a.quick else 0.5
    return a


def check_tools(install, cache):
    tools = ("nginx", "haproxy", "wrk", "curl", "h2load", "openssl") + (("varnishd",) if cache else ())
    apt = APT_CMD + (" varnish" if cache else "")
    missing = [t for t in tools if not which(t)]
    if not missing:
        return
    if install:
        print(f"installing: {apt}", file=sys.stderr)
        subprocess.run(["apt-get", "update"], check=False)
        if subprocess.run(apt.split()).returncode == 0 and all(which(t) for t in missing):
            return
    print(f"missing tools: {', '.join(missing)}. Install them with:\n  {apt}\n"
          "(or rerun with --install)", file=sys.stderr)
    sys.exit(2)


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    args = parse_args()
    check_tools(args.install, args.cache)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    nofile = raise_nofile()  # inherited by every child (servers, wrk, curl)
    if nofile < 17000:
        print(f"warning: open-files limit is {nofile}; the 8000-connection run may fail", file=sys.stderr)
    threads = args.threads
    JSON_LOG[0] = args.access_log == "json"
    RATE_LIMIT[0] = args.rate_limit
    CACHE[0] = args.cache
    if args.cache:
        TARGETS.insert(3, "varnish")
    args.tmp = tempfile.mkdtemp(prefix="tidegate-bench-", dir="/tmp")
    os.chmod(args.tmp, 0o755)  # nginx workers run as an unprivileged user
    info = machine_info(threads, args)
    notes, servers, raw = [], {}, {}
    t0 = time.time()
    try:
        print(f"temp dir {args.tmp}; starting servers", file=sys.stderr)
        servers, tls = start_servers(args.tmp, args, threads, notes)
        raw = run_all(servers, args, notes, tls)
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)  # let the cleanup finish
        for srv in reversed(STARTED):
            srv.stop()
        for name, srv in servers.items():
            if srv.exit_code not in (0, None) and name == "tidegate":
                notes.append(f"tidegate exit status after SIGTERM: {srv.exit_code} "
                             f"(log tail: {srv.log_tail(300)!r})")
            if name == "tidegate":
                warned = [line for line in srv.log_tail(10 ** 7).splitlines() if " WARN " in line
                          or " ERROR " in line]
                if warned:
                    notes.append(f"tidegate logged {len(warned)} warnings/errors, the last: {warned[-1]!r}")
        if args.keep_tmp:
            print(f"kept {args.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(args.tmp, ignore_errors=True)
    med = summarize(raw)
    info["elapsed_s"] = round(time.time() - t0, 1)
    info["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    info["tls"] = args.tls_params
    print()
    print(f"Command: {info['command']}")
    print(f"Date: {info['date']}   nproc: {info['nproc']}   CPU: {info['cpu']}   kernel: {info['kernel']}")
    print(f"Proxy threads/workers: {threads}; origin: nginx, 1 worker; rounds: {args.rounds} (median; errors summed); "
          f"wrk -t2, {args.duration}s (c=8000: {args.duration_8000}s); /large {args.large_mib} MiB; "
          f"upload {args.upload_mib} MiB; h2c/TLS runs {args.duration_proto}s (h2load -t2, wrk -t2); "
          f"elapsed {info['elapsed_s']}s")
    print("Forwarding fields: " + ("nginx and HAProxy add X-Forwarded-For/-Proto/-Host and Via, as Tidegate does"
                                   if args.headers == "same" else "nginx and HAProxy at their defaults (add none)")
          + "; CPU binding: " + ("each proxy's worker/thread i on CPU i (Tidegate cpu_affinity = auto, "
                                 "nginx worker_cpu_affinity auto, HAProxy cpu-map)" if args.pin == "auto"
                                 else "none (the kernel places the threads)"))
    if args.rate_limit:
        print("Rate limit on every proxy, per client address, 1,000,000/s with a burst of 1,000,000 (admits all): "
              "Tidegate [rate_limits] key = client_ip, nginx limit_req nodelay, HAProxy stick table "
              "http_req_rate(1s) + deny")
    if args.cache:
        print("Cache on every proxy, 64 MiB in memory: Tidegate [caches] (route cache), nginx proxy_cache "
              "(proxy_buffering on: it caches only what it buffers), HAProxy cache (cache-use/cache-store), "
              f"{info['varnish']} (-s malloc,64m, thread_pools={threads}, default VCL); each object "
              "fetched twice before the load")
    print(f"tidegate: {info['tidegate']} (git {info['git']}) | {info['nginx']} | {info['haproxy']} | {info['wrk']}"
          f" | {info['h2load']} | {info['openssl']}")
    for name, params in info["tls"].items():
        print(f"TLS as OpenSSL's client sees {name}: {params}")
    print(f"loadavg at start: {' '.join(info['loadavg_start'])}; at end: {' '.join(info['loadavg_end'])} "
          "(anything else busy on the machine skews all targets; rounds alternate targets to spread it)")
    print()
    print(table(med))
    print()
    print("req/s, MB/s: higher is better; latency, errors, CPU, RSS: lower is better. "
          "MB = 10^6 bytes. CPU = utime+stime of all the target's processes.")
    worst = max((m.get("foreign_cpu_pct_max", 0) for m in med.values()), default=0)
    if worst > 10:
        notes.append(f"other processes used up to {worst:.0f}% of the machine's CPU during load runs "
                     "(see the 'noise' rows): the machine was not always idle, numbers are skewed")
    for n in notes:
        print(f"NOTE: {n}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "notes": notes, "median": med, "raw": raw}, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt as e:
        print(f"interrupted ({e}); all started processes were stopped", file=sys.stderr)
        sys.exit(130)
