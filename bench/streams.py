#!/usr/bin/env python3
"""L4 (TCP) proxying side by side: Tidegate `[[streams]]`, nginx `stream`
and HAProxy `mode tcp`, each in front of one nginx origin.

Usage: python3 bench/streams.py [--tidegate PATH] [--threads N] [--rounds R]
                                [--size-mib M] [--conns C] [--duration D]

Two scenarios, the targets taken in turn each round, medians reported:

- transfer: one `curl` download of an M MiB file (default 1024) through the
  proxy: MB/s (curl's own time) and the proxy's CPU seconds per GiB;
- short connections (nginx with `proxy_half_close on` unless told
  otherwise: half-closes passed on, as Tidegate and HAProxy do):
  `wrk -H "Connection: close"` on a 100-byte response
  at C connections (default 50) for D seconds: a new TCP connection (and
  a new upstream one) per request; connections per second and the
  proxy's CPU per 10k connections.

The origin itself (`origin` row) is the baseline. Everything on
127.0.0.1; every process started is stopped at the end. Needs nginx with
its stream module (Debian: libnginx-mod-stream), haproxy, wrk, curl.
Reuses bench/run.py's helpers (processes, CPU accounting, wrk parsing).
"""
import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as h  # noqa: E402

STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def tidegate_conf(port, oport, threads):
    return f"""[server]
threads = {threads}
access_log = "off"
log_level = "warn"

[[streams]]
address = "127.0.0.1:{port}"
upstream = "origin"

[upstreams.origin]
servers = ["127.0.0.1:{oport}"]
balance = "round_robin"
"""


def nginx_conf(tmp, port, oport, threads, half_close):
    return (f"load_module {STREAM_MODULE};\n" + h.NGINX_COMMON.format(tmp=tmp, name="nginx", nofile=h.NOFILE)
            + f"""worker_processes {threads};
stream {{
  upstream o {{ server 127.0.0.1:{oport}; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    proxy_pass o;
    proxy_half_close {"on" if half_close else "off"};
  }}
}}
""")


def haproxy_conf(port, oport, threads):
    return f"""global
  nbthread {threads}
  maxconn 9000

defaults
  mode tcp
  maxconn 9000
  timeout connect 10s
  timeout client 300s
  timeout server 300s

frontend fe
  bind 127.0.0.1:{port}
  default_backend be

backend be
  server o 127.0.0.1:{oport}
"""


def transfer(port, size, pids):
    """One download of /large: MB/s by curl's time, CPU-s per GiB."""
    c0 = h.cpu_seconds(pids)
    rc, out = h.curl(["--max-time", "600", "-o", "/dev/null", "-w",
                      "%{http_code} %{size_download} %{time_total}",
                      f"http://127.0.0.1:{port}/large"], timeout=660)
    c1 = h.cpu_seconds(pids)
    if rc != 0 or out[:2] != ["200", str(size)]:
        return {"errors": 1, "curl": out}
    return {"errors": 0, "mb_s": size / float(out[2]) / 1e6,
            "cpu_s_per_gib": (c1 - c0) / (size / (1 << 30))}


def short(port, conns, duration, pids, origin_pids):
    res = h.run_wrk(f"http://127.0.0.1:{port}/small", conns, duration, pids, origin_pids,
                    headers=("Connection: close",))
    return {"conn_s": res.get("rps"), "cpu_per_10k": res.get("cpu_per_10k"),
            "errors": res.get("errors"), "failed": res.get("failed")}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tidegate", default=os.path.join(h.ROOT, "target/release/tidegate"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--nginx-half-close", choices=("on", "off"), default="on",
                   help="nginx's proxy_half_close (on: half-closes passed on, as Tidegate and "
                        "HAProxy do; off, nginx's default: the session ends when either side closes)")
    args = p.parse_args()
    for tool in ("nginx", "haproxy", "wrk", "curl"):
        if not h.which(tool):
            sys.exit(f"missing {tool}")
    if not os.path.exists(STREAM_MODULE):
        sys.exit(f"missing {STREAM_MODULE}: apt-get install libnginx-mod-stream")
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, h.on_signal)
    h.raise_nofile()
    tmp = tempfile.mkdtemp(prefix="tidegate-streams-", dir="/tmp")
    os.chmod(tmp, 0o755)
    raw = {}
    try:
        www = os.path.join(tmp, "www")
        os.makedirs(www)
        size = args.size_mib * h.MIB
        h.write_file(os.path.join(www, "large"), size)
        nginx = h.which("nginx")

        def conf(name, text):
            path = os.path.join(tmp, name)
            with open(path, "w") as f:
                f.write(text)
            return path

        oport, tport, nport, hport = h.free_ports(4)
        origin = h.Server("origin", [nginx, "-p", tmp + "/", "-c", conf("origin.conf", h.origin_conf(tmp, oport)),
                                     "-e", f"{tmp}/origin.error.log"], oport, f"{tmp}/origin.out")
        origin.wait_ready()
        servers = {"origin": origin}
        path = conf("tidegate.toml", tidegate_conf(tport, oport, args.threads))
        servers["tidegate"] = h.Server("tidegate", [args.tidegate, "--config", path], tport, f"{tmp}/tidegate.out")
        servers["nginx"] = h.Server("nginx", [nginx, "-p", tmp + "/", "-c",
                                              conf("nginx.conf", nginx_conf(tmp, nport, oport, args.threads,
                                                                      args.nginx_half_close == "on")),
                                              "-e", f"{tmp}/nginx.error.log"], nport, f"{tmp}/nginx.out")
        servers["haproxy"] = h.Server("haproxy", [h.which("haproxy"), "-db", "-f",
                                                  conf("haproxy.cfg", haproxy_conf(hport, oport, args.threads))],
                                      hport, f"{tmp}/haproxy.out")
        for s in servers.values():
            s.wait_ready()
        origin_pids = origin.pids()
        names = ["tidegate", "nginx", "haproxy", "origin"]
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                srv = servers[name]
                pids = srv.pids()
                print(f"round {r + 1}: {name}", file=sys.stderr)
                raw.setdefault((name, "transfer"), []).append(transfer(srv.port, size, pids))
                raw.setdefault((name, "short"), []).append(
                    short(srv.port, args.conns, args.duration, pids, origin_pids))
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        for srv in reversed(h.STARTED):
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def med(name, scenario, key):
        vals = [x[key] for x in raw.get((name, scenario), []) if x.get(key) is not None]
        return statistics.median(vals) if vals else None

    def errs(name, scenario):
        return sum(x.get("errors") or 0 for x in raw.get((name, scenario), []))

    print(f"L4 proxying, {args.threads} thread(s)/worker(s) each, {args.rounds} rounds, medians; "
          f"transfer {args.size_mib} MiB, short connections c={args.conns} {args.duration}s; "
          f"nginx proxy_half_close {args.nginx_half_close}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'target':10} {'MB/s':>9} {'CPU s/GiB':>10} {'conn/s':>9} {'CPU/10k conn':>13} {'errors':>7}")
    for name in ["tidegate", "nginx", "haproxy", "origin"]:
        row = [med(name, "transfer", "mb_s"), med(name, "transfer", "cpu_s_per_gib"),
               med(name, "short", "conn_s"), med(name, "short", "cpu_per_10k")]
        cells = ["-" if v is None else f"{v:.2f}" if v < 100 else f"{v:.0f}" for v in row]
        print(f"{name:10} {cells[0]:>9} {cells[1]:>10} {cells[2]:>9} {cells[3]:>13} "
              f"{errs(name, 'transfer') + errs(name, 'short'):>7}")
    for peer in ("nginx", "haproxy"):
        t, o = med("tidegate", "transfer", "mb_s"), med(peer, "transfer", "mb_s")
        c, oc = med("tidegate", "short", "cpu_per_10k"), med(peer, "short", "cpu_per_10k")
        g, og = med("tidegate", "transfer", "cpu_s_per_gib"), med(peer, "transfer", "cpu_s_per_gib")
        if None not in (t, o, c, oc, g, og):
            print(f"tidegate/{peer}: MB/s {t / o:.2f}x, CPU per GiB {g / og:.2f}x, "
                  f"CPU per short connection {c / oc:.2f}x")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt as e:
        print(f"interrupted ({e}); all started processes were stopped", file=sys.stderr)
        sys.exit(130)
