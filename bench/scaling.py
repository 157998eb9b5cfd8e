#!/usr/bin/env python3
"""Multi-core scaling: Tidegate vs nginx vs HAProxy at 1, 2, 4, 8 proxy threads.

What it measures: for each proxy thread count N (--threads, default 1,2,4,8)
each proxy (Tidegate, an nginx proxy with N workers, HAProxy with nbthread N)
runs on its own CPUs 0..N-1, told to use N threads/workers and to bind
thread/worker i to the i-th of those CPUs (Tidegate cpu_affinity = "auto",
nginx worker_cpu_affinity auto MASK, HAProxy cpu-map). An nginx origin (4
workers, pinned) and wrk (-t4, pinned) run on CPUs of their own, so neither
competes with the proxy. wrk drives HTTP/1.1 keep-alive GET /small (100 bytes)
for D seconds at 64 connections per proxy thread; targets alternate within
each of R rounds. Per (N, target) it reports medians of req/s, p50/p99
latency and the proxy's CPU-seconds per 10k requests (utime+stime of its
process tree from /proc), errors summed, req/s relative to the target's own
N=1, how busy the proxy's, the origin's and wrk's CPUs were (an origin or wrk
near 100% means they, not the proxy, set the limit), and the Tidegate/nginx
and Tidegate/HAProxy ratios.

Default layout (`--layout 16`, needs CPUs 0-15): proxy CPUs 0-7, origin on
8-11 (4 workers), wrk on 12-15 (-t4). On a smaller machine `--layout small`
puts the proxy on CPU 0 and origin and wrk together on CPU 1 (N=1, 2 s,
1 round: a smoke test, not a measurement); --proxy-cpus, --origin-cpus and
--wrk-cpus set any other layout. It refuses to run when the machine lacks a
CPU the layout names.

Run it from the repository root on a machine with >= 16 CPUs:
    python3 bench/scaling.py --json scaling.json
(nginx, haproxy, wrk on PATH or in /usr/sbin; openssl, or --tls-dir with
cert.pem, key.pem and haproxy.pem: every proxy config run.py makes has a TLS
listener.) On the borrowed 16-core machine: bench/device/prepare.sh here,
bench/device/run.sh there. Default run: 4 thread counts x 3 targets x 3
rounds x 5 s = 180 s of load, about 4 minutes in all. Stdlib only; the
configs and the measurement come from bench/run.py. Every process it starts
is stopped (by PID / process group), also on Ctrl-C or SIGTERM.
"""
import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import run as harness  # noqa: E402

TARGETS = harness.PROXIES  # tidegate, nginx, haproxy
LAYOUTS = {  # CPU lists; thread counts, duration and rounds are the defaults for the layout
    "16": {"proxy": "0-7", "origin": "8-11", "wrk": "12-15", "threads": "1,2,4,8", "duration": 5, "rounds": 3},
    "small": {"proxy": "0", "origin": "1", "wrk": "1", "threads": "1", "duration": 2, "rounds": 1},
}
TLS_FILES = {"cert": "cert.pem", "key": "key.pem", "pem": "haproxy.pem"}


def cpu_list(text):
    """'0-3,8' -> [0, 1, 2, 3, 8]."""
    out = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return sorted(set(out))


def span(cpus):
    return ",".join(map(str, cpus)) if len(cpus) < 3 or cpus != list(range(cpus[0], cpus[-1] + 1)) \
        else f"{cpus[0]}-{cpus[-1]}"


@contextlib.contextmanager
def pinned(cpus):
    """This (main) thread on `cpus` for a while: what it starts inherits them,
    and harness.haproxy_cpu_map reads them."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def patched(text, old, new):
    """text with `old` replaced; refuses if run.py no longer generates `old`."""
    if old not in text:
        raise RuntimeError(f"bench/run.py changed: generated config lacks {old!r}")
    return text.replace(old, new, 1)


def nginx_affinity(text, workers, cpus):
    """nginx config with `workers` workers, worker i bound to the i-th CPU of
    `cpus` (auto + mask: plain `auto` would count from CPU 0 whatever the
    master's affinity). As root, workers stay root (no www-data/nobody lookup,
    no permission issues in the temp dir)."""
    mask = "".join("1" if c in cpus else "0" for c in range(max(cpus), -1, -1))
    text, count = re.subn(r"(?m)^worker_processes \d+;\n",
                          f"worker_processes {workers};\nworker_cpu_affinity auto {mask};\n", text)
    if count != 1:
        raise RuntimeError("bench/run.py changed: no single `worker_processes N;` line in its nginx config")
    return ("user root root;\n" if os.geteuid() == 0 else "") + text


def start_nginx(tmp, name, text, ports):
    path = os.path.join(tmp, name + ".conf")
    with open(path, "w") as f:
        f.write(text)
    return harness.Server(name, [harness.which("nginx"), "-p", tmp + "/", "-c", path,
                                 "-e", f"{tmp}/{name}.error.log"], ports["h1"], f"{tmp}/{name}.out", ports)


def get_small(port):
    """None if GET /small answers 200 with the expected body, else the problem."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/small")
        r = c.getresponse()
        body = r.read()
        c.close()
    except OSError as e:
        return str(e)
    return None if (r.status, body) == (200, harness.SMALL_BODY.encode()) else f"status {r.status}, {len(body)} bytes"


def start_proxies(tmp, args, n, oport, tls, notes):
    """The proxies with n threads/workers each, affinity = proxy CPUs 0..n-1;
    one that fails to start or to answer is left out with a note."""
    out = {}
    for name in TARGETS:
        try:
            srv = start_proxy(name, tmp, args, n, oport, tls)
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            notes.append(f"N={n} {name} left out: {e}")
            print(f"  NOTE: N={n} {name} left out: {e}", file=sys.stderr, flush=True)
            continue
        out[name] = srv
    return out


def start_proxy(name, tmp, args, n, oport, tls):
    cpus = args.proxy_cpus[:n]
    ports = dict(zip(("h1", "h2c", "tls"), harness.free_ports(3)))
    with pinned(cpus):
        if name == "tidegate":
            ports["h2c"] = ports["h1"]  # one plain listener serves both
            path = os.path.join(tmp, "tidegate.toml")
            with open(path, "w") as f:
                f.write(harness.tidegate_conf(ports, oport, n, tls, "auto", tmp))
            srv = harness.Server(name, [args.tidegate, "--config", path], ports["h1"],
                                 f"{tmp}/tidegate.out", ports)
        elif name == "nginx":
            text = harness.nginx_proxy_conf(tmp, ports, oport, n, tls, args.headers, "auto")
            text = patched(text, "worker_cpu_affinity auto;\n", "")
            srv = start_nginx(tmp, name, nginx_affinity(text, n, cpus), ports)
        else:
            path = os.path.join(tmp, "haproxy.cfg")
            with open(path, "w") as f:  # cpu-map from this thread's affinity (pinned)
                f.write(harness.haproxy_conf(ports, oport, n, tls, args.headers, "auto"))
            srv = harness.Server(name, [harness.which("haproxy"), "-db", "-f", path], ports["h1"],
                                 f"{tmp}/haproxy.out", ports)
    try:
        srv.wait_ready()
        problem = get_small(srv.port)
        if problem:
            raise RuntimeError(f"GET /small through it failed: {problem}")
    except BaseException:
        stop([srv])
        raise
    return srv


def thread_cpus(pids):
    """{Cpus_allowed_list: how many threads} over every thread of `pids`:
    shows that the pinning took (tidegate's workers: one CPU each)."""
    out = {}
    for p in pids:
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/status") as f:
                    cpus = next(line.split()[1] for line in f if line.startswith("Cpus_allowed_list:"))
            except (OSError, StopIteration):
                continue
            out[cpus] = out.get(cpus, 0) + 1
    return dict(sorted(out.items()))


def stop(servers):
    for srv in servers:
        srv.stop()
        if srv in harness.STARTED:
            harness.STARTED.remove(srv)  # stopped and reaped: never signal that PID again


def wrk_cmd(args, port, conns, duration):
    return [harness.which("wrk"), f"-t{args.wrk_threads}", f"-c{conns}", f"-d{duration}s",
            "--timeout", "5s", "--latency", f"http://127.0.0.1:{port}/small"]


def load(args, srv, origin, n):
    """One wrk run (on the wrk CPUs) against srv: run.py's wrk numbers plus how
    busy the proxy's, the origin's and wrk's CPUs were."""
    conns = args.conns_per_thread * n
    w0 = harness.children_cpu_seconds()
    with pinned(args.wrk_cpus):
        res = harness.measure(wrk_cmd(args, srv.port, conns, args.duration), args.duration + 60,
                              harness.parse_wrk, srv.pids(), origin.pids())
    res["wrk_busy_pct"] = (harness.children_cpu_seconds() - w0) / args.duration / len(args.wrk_cpus) * 100
    res["conns"] = conns
    if "cpu_per_10k" in res:
        secs = res["requests"] / 1e4 / args.duration  # CPU-s per second = cores used
        res["proxy_busy_pct"] = res["cpu_per_10k"] * secs / n * 100
        res["origin_busy_pct"] = res["origin_cpu_per_10k"] * secs / len(args.origin_cpus) * 100
    return res


def median(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarize(runs, threads):
    summ = {}
    for n in threads:
        for t in TARGETS:
            rs = [r for r in runs if r["n"] == n and r["target"] == t]
            if not rs:
                continue
            s = {k: median(rs, k) for k in ("rps", "p50_ms", "p99_ms", "cpu_per_10k", "proxy_busy_pct",
                                            "origin_busy_pct", "wrk_busy_pct", "foreign_cpu_pct", "conns")}
            errs = [r.get("errors") for r in rs]
            s["errors"] = None if None in errs else sum(errs)
            s["runs"] = len(rs)
            summ.setdefault(str(n), {})[t] = s
    base = str(threads[0])
    for n, per in summ.items():
        for t, s in per.items():
            b = summ.get(base, {}).get(t, {}).get("rps")
            s["rps_rel"] = s["rps"] / b if s["rps"] and b else None
    return summ


def tables(summ, base):
    f = harness.fmt
    head = ["N", "target", "conns", "req/s", f"x N={base}", "p50 ms", "p99 ms", "errors", "CPU s/10k req",
            "proxy CPUs busy %", "origin busy %", "wrk busy %"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for n, per in summ.items():
        for t, s in per.items():
            cells = [n, t, f(s["conns"]), f(s["rps"]), "-" if s["rps_rel"] is None else f"{s['rps_rel']:.2f}x",
                     f(s["p50_ms"]), f(s["p99_ms"]), f(s["errors"]), f(s["cpu_per_10k"]),
                     f(s["proxy_busy_pct"]), f(s["origin_busy_pct"]), f(s["wrk_busy_pct"])]
            lines.append("| " + " | ".join(cells) + " |")
    head = ["N", "tidegate/nginx req/s", "tidegate/haproxy req/s", "tidegate/nginx CPU per req",
            "tidegate/haproxy CPU per req"]
    lines += ["", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for n, per in summ.items():
        g = lambda t, k: per.get(t, {}).get(k)  # noqa: E731
        lines.append(f"| {n} | " + " | ".join(harness.ratio(g("tidegate", k), g(o, k)) for k in
                                               ("rps", "cpu_per_10k") for o in ("nginx", "haproxy")) + " |")
    return "\n".join(lines)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layout", choices=sorted(LAYOUTS), default="16",
                   help="CPU layout and defaults: 16 (proxy 0-7, origin 8-11, wrk 12-15; N=1,2,4,8, 5 s, "
                        "3 rounds) or small (proxy 0, origin and wrk 1; N=1, 2 s, 1 round)")
    p.add_argument("--proxy-cpus", help="CPUs for the proxies; N threads use the first N")
    p.add_argument("--origin-cpus", help="CPUs for the nginx origin (one worker each)")
    p.add_argument("--wrk-cpus", help="CPUs for wrk")
    p.add_argument("--threads", help="proxy thread counts, comma-separated (layout 16: 1,2,4,8)")
    p.add_argument("--rounds", type=int, help="rounds per thread count (layout 16: 3)")
    p.add_argument("--duration", type=int, help="seconds per wrk run (layout 16: 5)")
    p.add_argument("--conns-per-thread", type=int, default=64, help="wrk connections per proxy thread (64)")
    p.add_argument("--origin-workers", type=int, help="origin nginx workers (default: one per origin CPU)")
    p.add_argument("--wrk-threads", type=int, help="wrk -t (default: one per wrk CPU)")
    p.add_argument("--pause", type=float, default=0.5, help="seconds between runs (0.5)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of unrecorded wrk per proxy and N (1)")
    p.add_argument("--headers", choices=("same", "default"), default="same", help="as in run.py")
    p.add_argument("--tidegate", default=os.path.join(harness.ROOT, "target", "release", "tidegate"),
                   help="tidegate binary (default target/release/tidegate)")
    p.add_argument("--tls-dir", help="dir with cert.pem, key.pem, haproxy.pem (default: made with openssl)")
    p.add_argument("--json", metavar="FILE", help="write every run and the medians as JSON")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    a = p.parse_args()
    lay = LAYOUTS[a.layout]
    a.proxy_cpus = cpu_list(a.proxy_cpus or lay["proxy"])
    a.origin_cpus = cpu_list(a.origin_cpus or lay["origin"])
    a.wrk_cpus = cpu_list(a.wrk_cpus or lay["wrk"])
    a.threads = [int(x) for x in (a.threads or lay["threads"]).split(",")]
    a.rounds = a.rounds or lay["rounds"]
    a.duration = a.duration or lay["duration"]
    a.origin_workers = a.origin_workers or len(a.origin_cpus)
    a.wrk_threads = a.wrk_threads or len(a.wrk_cpus)
    return a


def check_layout(a):
    """None, or why this machine cannot run the layout."""
    have = sorted(os.sched_getaffinity(0))
    need = set(a.proxy_cpus[:max(a.threads)]) | set(a.origin_cpus) | set(a.wrk_cpus)
    layout = (f"proxy CPUs {span(a.proxy_cpus)}, origin {span(a.origin_cpus)}, wrk {span(a.wrk_cpus)}, "
              f"N = {','.join(map(str, a.threads))}")
    if max(a.threads) > len(a.proxy_cpus):
        return f"N={max(a.threads)} proxy threads need {max(a.threads)} proxy CPUs; the layout has " \
               f"{len(a.proxy_cpus)} ({layout})"
    missing = sorted(need - set(have))
    if missing:
        return (f"this machine lets us use {len(have)} CPUs ({span(have)}; nproc {os.cpu_count()}), but the "
                f"layout needs CPUs {span(sorted(need))} ({layout}); CPUs {span(missing)} are missing.\n"
                "On a small machine use --layout small (a smoke test), or choose CPUs with "
                "--proxy-cpus/--origin-cpus/--wrk-cpus and --threads.")
    return None


def smt_notes(a):
    """Warnings where a proxy CPU shares a physical core (SMT siblings, as
    /sys reports them) with another CPU of the layout: the numbers then mix
    in the sibling's load. lscpu's output in run.sh shows the topology too."""
    roles = {c: "origin" for c in a.origin_cpus}
    roles.update({c: "wrk" for c in a.wrk_cpus})
    roles.update({c: "proxy" for c in a.proxy_cpus[:max(a.threads)]})
    notes = []
    for c in a.proxy_cpus[:max(a.threads)]:
        try:
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list") as f:
                sib = [x for x in cpu_list(f.read()) if x != c and x in roles]
        except (OSError, ValueError):
            continue
        if sib:
            notes.append(f"proxy CPU {c} shares a physical core with CPU(s) "
                         + ", ".join(f"{x} ({roles[x]})" for x in sib))
    return notes


def tls_files(args, tmp):
    if args.tls_dir:
        tls = {k: os.path.join(os.path.abspath(args.tls_dir), f) for k, f in TLS_FILES.items()}
        missing = [p for p in tls.values() if not os.path.isfile(p)]
        if not missing:
            return tls
        raise RuntimeError(f"--tls-dir lacks {', '.join(missing)}")
    if not shutil.which("openssl"):
        raise RuntimeError("no openssl to make a certificate: pass --tls-dir (bench/device/prepare.sh makes one)")
    return harness.make_cert(tmp)


def info_dict(args):
    """run.py's machine_info, less the fields of its own scenarios."""
    own = dict(rounds=args.rounds, duration=args.duration, tidegate=args.tidegate, headers=args.headers, pin="auto")
    other = ("duration_8000", "large_mib", "upload_mib", "duration_proto", "metrics", "access_log", "rate_limit")
    info = harness.machine_info(None, types.SimpleNamespace(**own, **dict.fromkeys(other)))
    for k in other + ("threads", "duration_8000_s", "curl", "h2load", "openssl"):
        info.pop(k, None)
    try:
        r = subprocess.run([args.tidegate, "--version"], capture_output=True, text=True, timeout=10)
        info["tidegate_version"] = ((r.stdout + r.stderr).strip().splitlines() or ["?"])[0]
    except OSError as e:
        info["tidegate_version"] = str(e)
    info.update(layout=args.layout, threads=args.threads, proxy_cpus=args.proxy_cpus, origin_cpus=args.origin_cpus,
                wrk_cpus=args.wrk_cpus, origin_workers=args.origin_workers, wrk_threads=args.wrk_threads,
                conns_per_thread=args.conns_per_thread,
                binaries={t: harness.which(t) for t in ("nginx", "haproxy", "wrk")})
    return info


def estimate_s(a):
    """Load, pauses, warm-ups and about 0.3 s per server start/stop (measured:
    --layout small took 11 s where this says 12 s)."""
    per_n = len(TARGETS) * (a.rounds * (a.duration + a.pause + 0.2) + a.warmup + 0.3)
    return round(len(a.threads) * per_n + 2)


def main():
    args = parse_args()
    problem = check_layout(args)
    if problem:
        print(f"scaling.py: cannot run this layout here: {problem}", file=sys.stderr)
        sys.exit(2)
    missing = [t for t in ("nginx", "haproxy", "wrk") if not harness.which(t)]
    missing += [] if os.access(args.tidegate, os.X_OK) else [args.tidegate]
    if missing:
        print(f"scaling.py: missing: {', '.join(missing)} (apt-get install nginx-light haproxy wrk; "
              "cargo build --release)", file=sys.stderr)
        sys.exit(2)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, harness.on_signal)
    harness.raise_nofile()
    tmp = tempfile.mkdtemp(prefix="tidegate-scaling-", dir="/tmp")
    os.chmod(tmp, 0o755)
    info = info_dict(args)
    print(f"layout: proxy CPUs {span(args.proxy_cpus)}, origin CPUs {span(args.origin_cpus)} "
          f"({args.origin_workers} worker(s)), wrk CPUs {span(args.wrk_cpus)} (-t{args.wrk_threads}); "
          f"N = {args.threads}; {args.rounds} round(s) x {args.duration} s; estimated {estimate_s(args)} s; "
          f"temp dir {tmp}", file=sys.stderr, flush=True)
    runs, notes, t0 = [], smt_notes(args), time.time()
    for note in notes:
        print(f"  NOTE: {note}", file=sys.stderr, flush=True)
    try:
        tls = tls_files(args, tmp)
        oport = harness.free_port()
        text = nginx_affinity(harness.origin_conf(tmp, oport), args.origin_workers, args.origin_cpus)
        with pinned(args.origin_cpus):
            origin = start_nginx(tmp, "origin", text, {"h1": oport})
        origin.wait_ready()
        info["thread_cpus"] = {"origin": thread_cpus(origin.pids())}
        print(f"  origin: threads on CPUs {info['thread_cpus']['origin']}", file=sys.stderr, flush=True)
        for n in args.threads:
            ntmp = os.path.join(tmp, f"n{n}")
            os.makedirs(ntmp)
            os.chmod(ntmp, 0o755)
            servers = {}
            try:
                servers = start_proxies(ntmp, args, n, oport, tls, notes)
                if not servers:
                    continue
                for name, srv in servers.items():  # warm-up, not recorded
                    with pinned(args.wrk_cpus):
                        subprocess.run(wrk_cmd(args, srv.port, args.conns_per_thread * n, args.warmup),
                                       capture_output=True, timeout=args.warmup + 30)
                    info["thread_cpus"][f"N={n} {name}"] = thread_cpus(srv.pids())
                    print(f"  N={n} {name}: threads on CPUs {info['thread_cpus'][f'N={n} {name}']}",
                          file=sys.stderr, flush=True)
                for r in range(args.rounds):
                    names = [t for t in TARGETS if t in servers]
                    order = names[r % len(names):] + names[:r % len(names)]
                    for name in order:
                        res = load(args, servers[name], origin, n)
                        res.update(n=n, target=name, round=r + 1)
                        runs.append(res)
                        if "failed" in res:
                            notes.append(f"N={n} {name} round {r + 1}: wrk failed: {res['failed']!r}")
                        print(f"  N={n} round {r + 1}/{args.rounds} {name}: {harness.fmt(res.get('rps'))} req/s, "
                              f"{harness.fmt(res.get('cpu_per_10k'))} CPU-s/10k, errors {res.get('errors')}",
                              file=sys.stderr, flush=True)
                        time.sleep(args.pause)
            finally:
                stop(servers.values())
                for name, srv in servers.items():
                    if name == "tidegate" and srv.exit_code not in (0, None):
                        notes.append(f"N={n} tidegate exit status after SIGTERM: {srv.exit_code} "
                                     f"(log tail: {srv.log_tail(300)!r})")
    except (RuntimeError, OSError, subprocess.SubprocessError, KeyboardInterrupt) as e:
        # report what was measured so far (e.g. when run.sh's time guard sends SIGTERM)
        notes.append(f"stopped early: {type(e).__name__}: {e}")
        print(f"scaling.py: {e}", file=sys.stderr)
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)  # let the cleanup finish
        stop(list(reversed(harness.STARTED)))
        if args.keep_tmp:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    info["elapsed_s"] = round(time.time() - t0, 1)
    info["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    summ = summarize(runs, args.threads)
    for n, per in summ.items():
        for t, s in per.items():
            for who in ("origin", "wrk"):
                if (s[f"{who}_busy_pct"] or 0) > 90:
                    notes.append(f"N={n} {t}: {who} CPUs {s[f'{who}_busy_pct']:.0f}% busy: {who}, not the "
                                 "proxy, may set the limit")
            if (s["foreign_cpu_pct"] or 0) > 10:
                notes.append(f"N={n} {t}: other processes used {s['foreign_cpu_pct']:.0f}% of the machine")
    print()
    print(f"Command: {info['command']}")
    print(f"Date: {info['date']}   nproc: {info['nproc']}   CPU: {info['cpu']}   kernel: {info['kernel']}")
    print(f"tidegate: {info['tidegate_version']} (git {info['git']}) | {info['nginx']} | {info['haproxy']} | "
          f"{info['wrk']}")
    print(f"Layout: proxy on CPUs {span(args.proxy_cpus[:max(args.threads)])} (N threads/workers on the first N, "
          f"each bound to its own CPU), origin nginx {args.origin_workers} worker(s) on CPUs {span(args.origin_cpus)}, "
          f"wrk -t{args.wrk_threads} on CPUs {span(args.wrk_cpus)}; GET /small (100 B), HTTP/1.1 keep-alive, "
          f"{args.conns_per_thread} connections per proxy thread, {args.duration} s per run, {args.rounds} round(s) "
          f"(medians; errors summed); elapsed {info['elapsed_s']} s")
    print()
    print(tables(summ, args.threads[0]))
    print()
    print("CPU s/10k req: utime+stime of the proxy's process tree per 10,000 requests (lower is better); "
          "busy %: CPU-seconds used / (run seconds x CPUs of that role).")
    for note in notes:
        print(f"NOTE: {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "notes": notes, "summary": summ, "runs": runs}, f, indent=1)
        print(f"wrote {args.json}")
    return 1 if not runs or any(n.startswith("stopped early") or " left out: " in n for n in notes) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        print(f"interrupted ({e}); all started processes were stopped", file=sys.stderr)
        sys.exit(130)
