"""bench/lib.py: what the benchmark scripts' Python shares.

bench/lib.sh puts bench/ on PYTHONPATH (bench_init), so the scripts' heredocs and the helpers
they write into their temp dirs `import lib`.
"""
import json, os, re, sys, time
from pathlib import Path

UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}  # wrk's units, in ms
_U = r"(us|ms|s|m|h)"


def wrk(path):
    """wrk --latency output -> rps, requests, elapsed, errs (connect, read, write, timeout),
    non2xx, and the latencies p50, p99 and max in ms (nan when missing)."""
    t = Path(path).read_text()
    m = re.search(r"^Requests/sec:\s+([\d.]+)", t, re.M)
    if not m:
        sys.exit(f"cannot parse {path}:\n{t}")
    se = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
    n2 = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    req = re.search(r"(\d+) requests in ([\d.]+\w+)", t)
    lat = re.search(r"^\s*Latency\s+([\d.]+)%s\s+([\d.]+)%s\s+([\d.]+)%s" % (_U, _U, _U), t, re.M)

    def pct(p):
        x = re.search(r"^\s*%s%%\s+([\d.]+)%s\s*$" % (p, _U), t, re.M)
        return float(x.group(1)) * UNIT[x.group(2)] if x else float("nan")

    return {
        "rps": float(m.group(1)),
        "requests": int(req.group(1)) if req else 0,
        "elapsed": req.group(2) if req else "?",
        "errs": tuple(int(x) for x in se.groups()) if se else (0, 0, 0, 0),
        "non2xx": int(n2.group(1)) if n2 else 0,
        "p50": pct(50),
        "p99": pct(99),
        "max": float(lat.group(5)) * UNIT[lat.group(6)] if lat else float("nan"),
    }


def children(pid):
    """The pids whose parent is pid, from /proc."""
    kids = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    s = f.read()
            except OSError:
                continue
            if int(s[s.rindex(")") + 2:].split()[1]) == pid:
                kids.add(int(d))
    return kids


def reloaded(master, old, nworkers, since, what):
    """Wait until the reload is over: master's children are nworkers processes, none of them
    in old (the workers before it). Exit, `what` in the message, if master dies or 30 s after
    since (a time.perf_counter()) it is not over."""
    while True:
        try:
            os.kill(master, 0)
        except ProcessLookupError:
            sys.exit(f"{what}: the master died")
        now = children(master)
        if len(now) == nworkers and not (now & old):
            return
        if time.perf_counter() - since > 30:
            sys.exit(f"{what} not finished after 30 s: workers now {sorted(now)}, before {sorted(old)}")
        time.sleep(0.002)


def committed(p, what):
    """The JSON reply of `moltctl reload --json` (p: its subprocess.run result with text
    output), or exit with `what` in the message unless the reload committed."""
    try:
        o = json.loads(p.stdout)
    except ValueError:
        sys.exit(f"{what}: moltctl exited {p.returncode} without JSON: {p.stdout!r} {p.stderr!r}")
    if p.returncode != 0 or not o.get("ok") or o.get("result") != "committed":
        sys.exit(f"{what} did not commit: {o.get('result')} in phase {o.get('phase')}: "
                 f"{o.get('reason') or o.get('error')}")
    return o


def kv_keys(mb, vsize):
    """How many values of vsize bytes make mb MB (10**6 bytes), rounded up."""
    return (mb * 1000 * 1000 + vsize - 1) // vsize


def kv_value(i, vsize):
    """The value of kv key i: its number repeated to vsize bytes, so every key differs."""
    head = b"%08d:" % i
    return (head * (vsize // len(head) + 1))[:vsize]


def kv_check(c, n, vsize):
    """Over the HTTP connection c, kv must list n keys and every value must be kv_value's;
    exit saying what differs otherwise."""
    c.request("GET", "/kv/")
    r = c.getresponse()
    keys = json.loads(r.read())
    if r.status != 200 or len(keys) != n:
        sys.exit(f"kv: lists {len(keys)} keys, expected {n}")
    bad = 0
    for i in range(n):
        c.request("GET", "/kv/key%06d" % i)
        r = c.getresponse()
        body = r.read()
        bad += r.status != 200 or body != kv_value(i, vsize)
    if bad:
        sys.exit(f"kv: {bad} of {n} values differ after the reloads")


def write_atomic(out, text):
    """Write text to the file out (directories made), through a rename."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out + ".tmp").write_text(text)
    os.replace(out + ".tmp", out)


# --- added for upgrade.sh ----------------------------------------------------------------------

def canary(dur):
    """The stall canary (lib.sh canary_start runs it): sleep 5 ms at a time
    for dur seconds (0: until SIGTERM) and print how often, and by how much at most, it woke more
    than 20 ms late. A long oversleep means the whole machine (or VM) stalled."""
    import signal
    end = time.monotonic() + (dur or 1e9)
    late = []
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while time.monotonic() < end and not stop:
        t = time.monotonic()
        time.sleep(0.005)
        d = (time.monotonic() - t - 0.005) * 1e3
        if d > 20:
            late.append(d)
    print(f"{len(late)} late, worst {max(late, default=0):.0f} ms")


def flagged(cpu, canary_line):
    """True when a run is not to be trusted: other processes used more than 10 % of the CPUs
    (cpu: other_cpu's figure, a string) or the canary woke more than 50 ms late."""
    m = re.match(r"(\d+) late, worst (\d+) ms", canary_line or "")
    return (m is not None and int(m.group(2)) > 50) or (cpu.isdigit() and int(cpu) > 10)


def kids(pid):
    """The children of pid: /proc/PID/task/*/children (cheap), else a scan of /proc."""
    try:
        out = set()
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out.update(int(x) for x in f.read().split())
        return out
    except FileNotFoundError:
        return children(pid) if alive(pid) else set()
    except OSError:
        return set()


def alive(pid):
    """pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return False
    return s[s.rindex(")") + 2] not in "ZX"


def runs_file(pid, path):
    """True when process pid's executable is the file at path now (same inode): after a binary
    upgrade, the process runs the file deployed last."""
    try:
        a, b = os.stat(f"/proc/{pid}/exe"), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


# --- the reports of reload.sh and upgrade.sh ----------------------------------------------------

def read(p, default="-"):
    return p.read_text().strip() if p.exists() else default


def med(xs):
    import statistics
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def mx(xs):
    xs = [x for x in xs if x is not None]
    return max(xs) if xs else float("nan")


def f1(x):
    return "-" if x is None or x != x else f"{x:.1f}"


FLAGGED = []  # runs marked by mark(), for flag_note()


def mark(name, cpu, canary_line, where):
    """name, or "name (!)" (and remembered) when the run is flagged()."""
    if flagged(cpu, canary_line):
        FLAGGED.append(f"{where}: {name}")
        return f"{name} (!)"
    return name


def flag_note(summary):
    """The paragraph saying which runs were marked (or that none was); also into summary."""
    if FLAGGED:
        print("**(!)**: during these runs another process used more than 10 % of the CPUs or the "
              "stall canary woke more than 50 ms late, so their latency (and throughput) figures say more "
              "about the machine than about the server: " + "; ".join(FLAGGED) + ".\n")
        summary.append(("Flagged runs (machine busy or stalled)", FLAGGED))
    else:
        print("No run was flagged: no other process used more than 10 % of the CPUs and the stall "
              "canary never woke more than 50 ms late.\n")
