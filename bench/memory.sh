#!/usr/bin/env bash
# bench/memory.sh: memory of molt, nginx and HAProxy at rest and after many reloads.
#
# Installs what is missing (Debian, scripts/deps.sh), builds molt in Release mode into
# build-bench/, then measures, one server at a time, each on a free 127.0.0.1 port in a
# fresh temp dir:
#
#   molt     moltd, 2 workers, the hello plugin; reloads: `moltctl reload --json` (each must
#            commit, or the script fails), config "reload": {"health": {"stable_ms": 0}}
#   molt-kv  the same plus the kv plugin (strict, replicated) filled with BENCH_MEMORY_KV_MB MB
#            (values of 40000 bytes), so every reload hands the table over; after the reloads
#            every key is read back and compared byte for byte. BENCH_MEMORY_KV_MB=0 skips it.
#   nginx    master + 2 workers (worker_processes 2, the config of bench/reload.sh);
#            reloads: SIGHUP to the master (what `nginx -s reload` sends)
#   haproxy  master-worker mode (haproxy -W), nbthread 2: master + 1 worker process with 2
#            threads (the config of bench/reload.sh); reloads: SIGUSR2 to the master
#
# For each: start, wait until it answers; a warm-up (wrk -t2 -c16 for BENCH_MEMORY_WARMUP s)
# and 1 s of rest; snapshot "rest"; BENCH_MEMORY_RELOADS reloads of the unchanged config, one
# at a time, each finished before the next (the old workers have exited and the new ones, as
# many as before, are there; no sleep in between); the same warm-up and rest; snapshot
# "after". A snapshot records, per process (molt: supervisor, worker-1, worker-2 by slot;
# nginx and HAProxy: master, worker-N by pid), VmRSS (/proc/PID/status), Pss and Private
# (Private_Clean + Private_Dirty) from /proc/PID/smaps_rollup (forked workers share pages
# with their parent, so RSS counts shared pages once per process, Pss splits them), and the
# number of open fds. Every 10 reloads the supervisor/master and the current workers are
# sampled too (RSS, Pss, fds), to show a trend.
#
# Writes markdown to ${BENCH_OUT:-bench/RESULTS-memory.md}; with BENCH_DATA set (a
# directory, created if missing), also $BENCH_DATA/memory.tsv: tab-separated, one header line
# `server process when rss_kb pss_kb`, then one line per process and snapshot; server is
# molt, molt-kv, nginx or haproxy; process supervisor (molt) or master, then worker-1, ...;
# when rest or after.
#
# Environment:
#   BENCH_MEMORY_RELOADS  reloads per server (default 100)
#   BENCH_MEMORY_KV_MB    MB held by kv in the molt-kv run, 0 = skip that run (default 10)
#   BENCH_MEMORY_WARMUP   seconds of wrk before each snapshot (default 2)
#   BENCH_OUT             markdown output (default bench/RESULTS-memory.md)
#   BENCH_DATA            directory for memory.tsv (default: none written)
#   BENCH_KEEP_TMP        1 = keep the temp dir (configs, logs, raw snapshots)
#
# Quick smoke (about 30 s): BENCH_MEMORY_RELOADS=5 BENCH_MEMORY_WARMUP=1 bench/memory.sh
# Full run (about 2 minutes): bench/memory.sh
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RELOADS=${BENCH_MEMORY_RELOADS:-100}
KV_MB=${BENCH_MEMORY_KV_MB:-10}
WARM=${BENCH_MEMORY_WARMUP:-2}
KV_VALUE=40000
SAMPLE_EVERY=10

need_int BENCH_MEMORY_RELOADS "$RELOADS" 1
need_int BENCH_MEMORY_KV_MB "$KV_MB" 0
need_int BENCH_MEMORY_WARMUP "$WARM" 1

bench_init memory
out_data memory

# --- dependencies, build ---------------------------------------------------------
# shellcheck source=../scripts/deps.sh
source scripts/deps.sh
MOLT_DEPS+=(nginx-light haproxy python3 procps)
molt_install_deps

build_molt moltd moltctl plugins/hello.so plugins/kv.so
HAPROXY=$(command -v haproxy) # absolute: the master re-executes itself on reload
NGINX=$(command -v nginx)

# --- temp dir, cleanup -------------------------------------------------------------
bench_tmp molt-memory

SERVERS=(molt)
if ((KV_MB > 0)); then SERVERS+=(molt-kv); fi
SERVERS+=(nginx haproxy)

# shellcheck disable=SC2034 # read through port_of
read -r PORT_molt PORT_molt_kv PORT_nginx PORT_haproxy < <(free_ports 4)

# --- configs -------------------------------------------------------------------------
molt_conf() { # server -> $TMP/server/molt.json
    local s=$1 dir=$TMP/$1 plugins routes reload
    mkdir -p "$dir/run"
    chmod 700 "$dir/run"
    plugins='{"name": "hello", "file": "hello.so", "config": {"body": "hello\n"}}'
    routes='{"prefix": "/", "plugin": "hello"}'
    reload='"health": {"stable_ms": 0}'
    if [[ $s == molt-kv ]]; then
        plugins="{\"name\": \"kv\", \"file\": \"kv.so\", \"config\": {\"max_value_bytes\": $KV_VALUE}},
    $plugins"
        routes="{\"prefix\": \"/kv/\", \"plugin\": \"kv\"}, $routes"
        reload="\"handoff_timeout_ms\": 60000, $reload"
    fi
    molt_config "$dir" "$(port_of "$s")" 2 "$ROOT/build-bench/plugins" $'\n    '"$plugins"$'\n  ' \
        "$routes" "$reload" >"$dir/molt.json"
    "$MOLTD" -c "$dir/molt.json" -t >"$dir/check.log" 2>&1 ||
        { cat "$dir/check.log" >&2; die "moltd -t rejected $dir/molt.json"; }
}

nginx_conf() {
    local dir=$TMP/nginx
    mkdir -p "$dir/tmp"
    nginx_config "$PORT_nginx" hello notice >"$dir/nginx.conf"
    "$NGINX" -e "$dir/error.log" -p "$dir/" -c "$dir/nginx.conf" -t -q 2>"$dir/check.log" ||
        { cat "$dir/check.log" >&2; die "nginx -t rejected $dir/nginx.conf"; }
}

haproxy_conf() {
    local dir=$TMP/haproxy
    mkdir -p "$dir"
    haproxy_config "$PORT_haproxy" hello >"$dir/haproxy.cfg"
    "$HAPROXY" -c -q -f "$dir/haproxy.cfg" >"$dir/check.log" 2>&1 ||
        { cat "$dir/check.log" >&2; die "haproxy -c rejected $dir/haproxy.cfg"; }
}

server_cmd() { # server -> argv, one per line
    case $1 in
        molt | molt-kv) printf '%s\n' "$MOLTD" -c "$TMP/$1/molt.json" ;;
        nginx) printf '%s\n' "$NGINX" -e "$TMP/nginx/error.log" -p "$TMP/nginx/" -c "$TMP/nginx/nginx.conf" ;;
        haproxy) printf '%s\n' "$HAPROXY" -W -f "$TMP/haproxy/haproxy.cfg" -p "$TMP/haproxy/haproxy.pid" ;;
    esac
}
workers_of() { case $1 in haproxy) echo 1 ;; *) echo 2 ;; esac; }
log_of() { case $1 in nginx) echo nginx/error.log ;; *) echo "$1/stderr.log" ;; esac; } # in $TMP

for s in "${SERVERS[@]}"; do
    case $s in
        molt | molt-kv) molt_conf "$s" ;;
        nginx) nginx_conf ;;
        haproxy) haproxy_conf ;;
    esac
done

# --- the measuring helper -------------------------------------------------------------
# mem.py snapshot SERVER MASTER MOLTCTL SOCK OUT.json: processes and their memory now.
# mem.py reloads SERVER MASTER NWORKERS COUNT EVERY MOLTCTL SOCK OUT.jsonl SERIES.jsonl
# mem.py kv PORT fill|check MB VALUE
cat >"$TMP/mem.py" <<'PY'
import http.client, json, os, signal, subprocess, sys, time
from lib import children, committed, kv_check, kv_keys, kv_value, reloaded

def mem(pid):
    m = {"pid": pid}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                m["rss_kb"] = int(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        r = {}
        for line in f:
            p = line.split()
            if len(p) >= 3 and p[-1] == "kB":
                r[p[0].rstrip(":")] = int(p[1])
    m["pss_kb"] = r["Pss"]
    m["private_kb"] = r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)
    m["anon_kb"] = r.get("Anonymous", 0)
    m["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return m

def status(moltctl, sock):
    p = subprocess.run([moltctl, "-s", sock, "status", "--json"], capture_output=True, text=True, check=True)
    return json.loads(p.stdout)

def procs(server, master, moltctl, sock):
    """[(name, pid)]: the supervisor/master first, then the workers."""
    kids = children(master)
    if server.startswith("molt"):
        st = status(moltctl, sock)
        gen = st["generation"]["number"]
        ws = sorted((w for w in st["workers"] if w["generation"] == gen), key=lambda w: w["slot"])
        pids = {w["pid"] for w in ws}
        if pids != kids:
            sys.exit(f"{server}: moltd's children {sorted(kids)} are not its active workers {sorted(pids)}")
        return [("supervisor", master)] + [(f"worker-{w['slot'] + 1}", w["pid"]) for w in ws]
    return [("master", master)] + [(f"worker-{i + 1}", p) for i, p in enumerate(sorted(kids))]

def snapshot(server, master, moltctl, sock):
    # The supervisor/master first: for molt, procs() asks moltd for its workers over the
    # control socket, and that connection would count among moltd's fds for a moment.
    first = mem(master)
    out = []
    for name, pid in procs(server, master, moltctl, sock):
        m = first if pid == master else mem(pid)
        m["process"] = name
        out.append(m)
    return out

cmd = sys.argv[1]
if cmd == "snapshot":
    server, master, moltctl, sock, out = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
    snap = snapshot(server, master, moltctl, sock)
    if server.startswith("molt"):
        st = status(moltctl, sock)
        extra = {"generation": st["generation"]["number"], "counts": st.get("reload", {}).get("counts")}
    else:
        extra = {}
    rd = os.path.join(os.path.dirname(sock), "")
    if server.startswith("molt"):
        extra["generation_dirs"] = len([d for d in os.listdir(rd) if d.startswith("gen-")])
    with open(out, "w") as f:
        json.dump({"procs": snap, **extra}, f)
    for m in snap:
        print(f"    {server} {m['process']:<10} pid {m['pid']:>7}  rss {m['rss_kb']:>7} kB  pss {m['pss_kb']:>7} kB  "
              f"private {m['private_kb']:>7} kB  fds {m['fds']}", file=sys.stderr)

elif cmd == "reloads":
    server, master, nworkers, count, every = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    moltctl, sock, out, series = sys.argv[7:11]
    def sample(i):
        time.sleep(0.2)  # let the new workers finish starting, moltd close the reload's connection
        snap = snapshot(server, master, moltctl, sock)
        return {"reload": i, "master": snap[0], "workers_rss_kb": sum(m["rss_kb"] for m in snap[1:]),
                "workers_pss_kb": sum(m["pss_kb"] for m in snap[1:]),
                "workers_private_kb": sum(m["private_kb"] for m in snap[1:])}
    with open(out, "w") as f, open(series, "w") as fs:
        fs.write(json.dumps(sample(0)) + "\n")
        for i in range(1, count + 1):
            old = children(master)
            if len(old) != nworkers:
                sys.exit(f"{server}: {len(old)} workers before reload {i}, expected {nworkers}")
            t0 = time.perf_counter()
            rec = {"i": i}
            if server.startswith("molt"):
                p = subprocess.run([moltctl, "-s", sock, "reload", "--json"], capture_output=True, text=True)
                o = committed(p, f"{server}: reload {i}")
                rec.update({"ms": o["ms"], "generation": o.get("generation"),
                            "handoff_bytes": (o.get("handoff") or {}).get("bytes")})
            else:
                os.kill(master, signal.SIGHUP if server == "nginx" else signal.SIGUSR2)
            reloaded(master, old, nworkers, t0, f"{server}: reload {i}")
            rec["done_ms"] = (time.perf_counter() - t0) * 1e3
            f.write(json.dumps(rec) + "\n")
            if i % every == 0 or i == count:
                s = sample(i)
                fs.write(json.dumps(s) + "\n")
                fs.flush()
                print(f"    {server} reload {i}/{count}: master rss {s['master']['rss_kb']} kB, pss "
                      f"{s['master']['pss_kb']} kB, fds {s['master']['fds']}; workers rss {s['workers_rss_kb']} kB",
                      file=sys.stderr)

elif cmd == "kv":
    port, what, mb, vsize = int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    n = kv_keys(mb, vsize)
    def value(i):
        return kv_value(i, vsize)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    if what == "fill":
        for i in range(n):
            c.request("PUT", "/kv/key%06d" % i, body=value(i))
            r = c.getresponse(); r.read()
            if r.status not in (201, 204):
                sys.exit(f"kv: PUT key{i:06d}: {r.status}")
        print(f"    kv filled: {n} keys of {vsize} bytes", file=sys.stderr)
    else:
        kv_check(c, n, vsize)
        print(f"    kv: all {n} keys read back equal", file=sys.stderr)
        print(n)
PY

# --- the runs ----------------------------------------------------------------------------
up() { # server pid: answers hello with all its workers there
    answers "http://127.0.0.1:$(port_of "$1")/" hello && (($(pgrep -c -P "$2" || true) == $(workers_of "$1")))
}

warmup() { # server when
    local s=$1 f=$TMP/$1/warmup.$2.txt
    run_helper wrk -t2 -c16 -d"${WARM}s" "http://127.0.0.1:$(port_of "$s")/" >"$f" || die "wrk failed against $s"
    if grep -qE 'Non-2xx|Socket errors' "$f"; then
        log "warning: $s: errors during the warm-up: $(grep -E 'Non-2xx|Socket errors' "$f" | tr '\n' ' ')"
    fi
    sleep 1
}

for s in "${SERVERS[@]}"; do
    mapfile -t cmd < <(server_cmd "$s")
    sock=$TMP/$s/run/control.sock
    [[ $s == molt* ]] || sock=$TMP/$s/none.sock
    log "$s: starting"
    start "$s" "${cmd[@]}"
    pid=$(pid_of "$s")
    echo "$pid" >"$TMP/$s/pid"
    wait_ready "$s" "$s" ready up "$s" "$pid"
    if [[ $s == molt-kv ]]; then
        run_helper python3 "$TMP/mem.py" kv "$(port_of "$s")" fill "$KV_MB" "$KV_VALUE"
    fi
    warmup "$s" rest
    run_helper python3 "$TMP/mem.py" snapshot "$s" "$pid" "$MOLTCTL" "$sock" "$TMP/$s/rest.json"
    log "$s: $RELOADS reloads"
    t0=$(date +%s%N)
    run_helper python3 "$TMP/mem.py" reloads "$s" "$pid" "$(workers_of "$s")" "$RELOADS" "$SAMPLE_EVERY" \
        "$MOLTCTL" "$sock" "$TMP/$s/reloads.jsonl" "$TMP/$s/series.jsonl" || die "$s: reloads failed"
    echo $((($(date +%s%N) - t0) / 1000000)) >"$TMP/$s/reloads_ms"
    if [[ $s == molt-kv ]]; then
        run_helper python3 "$TMP/mem.py" kv "$(port_of "$s")" check "$KV_MB" "$KV_VALUE" >"$TMP/$s/kv_keys"
    fi
    warmup "$s" after
    run_helper python3 "$TMP/mem.py" snapshot "$s" "$pid" "$MOLTCTL" "$sock" "$TMP/$s/after.json"
    if [[ $s == molt* ]]; then
        "$MOLTCTL" -s "$sock" status >"$TMP/$s/status.txt" 2>&1 || true
    fi
    kill -0 "$pid" 2>/dev/null || die "$s died"
    stop_server "$pid"
done

# --- report ---------------------------------------------------------------------------------
{
    meta_date
    meta_machine "; $(ram_gb) RAM; page size $(getconf PAGESIZE) B"
    meta_molt "" "; glibc $(getconf GNU_LIBC_VERSION | cut -d' ' -f2)"
    meta_peers
} >"$TMP/meta.md"
# Markdown wants literal backticks inside single-quoted formats.
# shellcheck disable=SC2016
{
    md_build
    printf 'Servers, one at a time (`$TMP` is a fresh `mktemp -d`, `$REPO` the checkout):\n\n```\n'
    for s in "${SERVERS[@]}"; do
        mapfile -t cmd < <(server_cmd "$s")
        cmdline "${cmd[@]}" | rel
    done
    printf '```\n\nReloads, one at a time, each waited for (old workers gone, new ones there):\n\n```\n'
    cmdline "$MOLTCTL" -s "$TMP/molt/run/control.sock" reload --json | rel
    echo 'kill -HUP <nginx master pid>      # what nginx -s reload sends'
    echo 'kill -USR2 <haproxy -W master pid>'
    printf '```\n\nWarm-up before each snapshot: `wrk -t2 -c16 -d%ss http://127.0.0.1:PORT/`, then 1 s of rest.\n\n' "$WARM"
    for s in "${SERVERS[@]}"; do
        case $s in
            molt | molt-kv) fence "$s config" "$TMP/$s/molt.json" json | rel ;;
            nginx) fence 'nginx config' "$TMP/nginx/nginx.conf" nginx | rel ;;
            haproxy) fence 'HAProxy config' "$TMP/haproxy/haproxy.cfg" | rel ;;
        esac
    done
    for s in "${SERVERS[@]}"; do
        if [[ -f $TMP/$s/status.txt ]]; then
            fence "\`moltctl status\` of $s at the end" "$TMP/$s/status.txt" | rel
        fi
    done
    printf 'Server logs (last 10 lines each; molt at level warn, nginx at notice):\n\n'
    for s in "${SERVERS[@]}"; do log_tails 10 "$(log_of "$s")"; done
} >"$TMP/how.md"

python3 - "$TMP" "$OUT" "$DATA" "$RELOADS" "$KV_MB" "$KV_VALUE" "$SAMPLE_EVERY" "${SERVERS[@]}" <<'PY'
import json, statistics, sys
from pathlib import Path
import lib

tmp, out, data = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
reloads, kv_mb, kv_value, every = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
servers = sys.argv[8:]
L = []
P = L.append

snaps = {s: {w: json.loads((tmp / s / f"{w}.json").read_text()) for w in ("rest", "after")} for s in servers}
rel = {s: [json.loads(l) for l in (tmp / s / "reloads.jsonl").read_text().splitlines()] for s in servers}
ser = {s: [json.loads(l) for l in (tmp / s / "series.jsonl").read_text().splitlines()] for s in servers}

def d(a, b):
    x = b - a
    return f"{x:+d}"

P("## Per process\n")
P("kB. RSS: VmRSS; Pss: proportional set size (shared pages split among the processes mapping them); "
  "private: Private_Clean + Private_Dirty (pages no other process maps). fds: open file descriptors.\n")
P("| server | process | RSS rest | RSS after | Δ | Pss rest | Pss after | Δ | private rest | private after | fds rest | fds after |")
P("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for s in servers:
    r, a = snaps[s]["rest"]["procs"], snaps[s]["after"]["procs"]
    names = [m["process"] for m in r]
    if names != [m["process"] for m in a]:
        sys.exit(f"{s}: processes differ between rest {names} and after {[m['process'] for m in a]}")
    for mr, ma in zip(r, a):
        P(f"| {s} | {mr['process']} | {mr['rss_kb']} | {ma['rss_kb']} | {d(mr['rss_kb'], ma['rss_kb'])} | "
          f"{mr['pss_kb']} | {ma['pss_kb']} | {d(mr['pss_kb'], ma['pss_kb'])} | {mr['private_kb']} | "
          f"{ma['private_kb']} | {mr['fds']} | {ma['fds']} |")
P("")
P("## Totals per server\n")
P("Sum over the server's processes. The sum of Pss is the fair total (shared pages counted once, "
  "split among the processes sharing them, including processes outside this server such as other "
  "programs using the same libc); the sum of RSS counts shared pages once per process.\n")
P("| server | processes | Σ RSS rest | Σ RSS after | Σ Pss rest | Σ Pss after | Δ Σ Pss | supervisor/master fds rest → after |")
P("|---|---:|---:|---:|---:|---:|---:|---|")
tot = {}
for s in servers:
    r, a = snaps[s]["rest"]["procs"], snaps[s]["after"]["procs"]
    rr, ra = sum(m["rss_kb"] for m in r), sum(m["rss_kb"] for m in a)
    pr, pa = sum(m["pss_kb"] for m in r), sum(m["pss_kb"] for m in a)
    tot[s] = (pr, pa)
    P(f"| {s} | {len(r)} | {rr} | {ra} | {pr} | {pa} | {d(pr, pa)} | {r[0]['fds']} → {a[0]['fds']} |")
P("")

P("## Reloads\n")
P("| server | reloads | all done | reload, median ms until old workers gone and new ones there | max | total s |")
P("|---|---:|---|---:|---:|---:|")
for s in servers:
    done = [x["done_ms"] for x in rel[s]]
    P(f"| {s} | {len(rel[s])} | {'yes' if len(rel[s]) == reloads else 'NO'} | {statistics.median(done):.1f} | "
      f"{max(done):.1f} | {int((tmp / s / 'reloads_ms').read_text()) / 1000:.1f} |")
P("")
for s in servers:
    if s.startswith("molt"):
        a = snaps[s]["after"]
        ms = [x["ms"] for x in rel[s]]
        hb = [x["handoff_bytes"] for x in rel[s] if x.get("handoff_bytes") is not None]
        line = (f"- {s}: all {len(rel[s])} reloads committed (each checked; moltd's counts at the end: "
                f"{json.dumps(a.get('counts'))}; generation {snaps[s]['rest'].get('generation')} → {a.get('generation')}); "
                f"molt's own reload time median {statistics.median(ms)} ms, max {max(ms)} ms; generation "
                f"directories in runtime_dir: {snaps[s]['rest'].get('generation_dirs')} at rest, "
                f"{a.get('generation_dirs')} after")
        if hb:
            b = statistics.median(hb)
            line += "; state handed off per reload: median " + (f"{b / 1e6:.1f} MB" if b >= 1e5 else f"{b:.0f} bytes")
        if s == "molt-kv":
            n = (tmp / s / "kv_keys").read_text().strip()
            line += f"; after the reloads all {n} kv keys read back byte for byte equal"
        P(line + ".")
P("")

P("## Trend during the reloads\n")
P(f"Sampled at reload 0 and every {every} reloads, 0.2 s after the reload finished (no warm-up): the "
  "supervisor's/master's RSS, Pss and fds, and the sum over the current workers. kB.\n")
for s in servers:
    P(f"{s}:\n")
    P("| after reload | master RSS | master Pss | master fds | workers Σ RSS | workers Σ Pss | workers Σ private |")
    P("|---:|---:|---:|---:|---:|---:|---:|")
    for x in ser[s]:
        m = x["master"]
        P(f"| {x['reload']} | {m['rss_kb']} | {m['pss_kb']} | {m['fds']} | {x['workers_rss_kb']} | "
          f"{x['workers_pss_kb']} | {x['workers_private_kb']} |")
    P("")

body = "\n".join(L)
meta = (tmp / "meta.md").read_text()
how = (tmp / "how.md").read_text()
kvtxt = (f"`molt-kv` is the same molt plus the kv plugin holding {kv_mb} MB ({(kv_mb * 10**6 + kv_value - 1) // kv_value} "
         f"values of {kv_value} bytes; kv is replicated, so each worker holds the whole table), which every "
         "reload hands over to the new workers. " if "molt-kv" in servers else "")
doc = f"""# molt memory benchmark results

Generated by `bench/memory.sh` (see bench/README.md). Do not edit by hand.

{meta}
What this measures: the memory of each server's processes at rest (after start, a short
warm-up and 1 s of rest) and after {reloads} reloads of the unchanged config (then the same
warm-up and rest), and the supervisor's/master's open fds, to see what a server costs and
whether reloads leak. The servers run one at a time, each answering `GET /` with `hello\\n`:
molt (moltd + 2 workers, the hello plugin), nginx (master + 2 workers) and HAProxy (master-worker
mode: master + 1 worker process with 2 threads). {kvtxt}A reload counts as done when the old
workers have exited and the new ones, as many as before, are there; the next one starts then.
Worker pids change with every reload, so "worker-1" at rest and after are different processes
of the same role. Pss depends on who else maps the same files (libc is shared with every
process on the machine), so compare Pss within a run; "private" does not depend on that.

{body}
## How it was run

{how}"""
lib.write_atomic(out, doc)

if data:
    Path(data).mkdir(parents=True, exist_ok=True)
    with open(Path(data) / "memory.tsv", "w") as f:
        f.write("server\tprocess\twhen\trss_kb\tpss_kb\n")
        for s in servers:
            for w in ("rest", "after"):
                for m in snaps[s][w]["procs"]:
                    f.write(f"{s}\t{m['process']}\t{w}\t{m['rss_kb']}\t{m['pss_kb']}\n")

print("\nserver   process      RSS rest -> after      Pss rest -> after   (kB)   fds", file=sys.stderr)
for s in servers:
    for mr, ma in zip(snaps[s]["rest"]["procs"], snaps[s]["after"]["procs"]):
        print(f"{s:8} {mr['process']:<10} {mr['rss_kb']:>8} -> {ma['rss_kb']:<8} {mr['pss_kb']:>8} -> {ma['pss_kb']:<8}"
              f"      {mr['fds']} -> {ma['fds']}", file=sys.stderr)
PY
log "wrote $OUT"
if [[ -n $DATA ]]; then log "wrote $DATA/memory.tsv"; fi
