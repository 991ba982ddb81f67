#!/usr/bin/env bash
# bench/upgrade.sh: binary upgrades of the supervisor under load, molt vs nginx vs HAProxy,
# HTTP/1.1 on loopback.
#
# Installs what is missing (Debian), builds molt in Release mode into build-bench/, copies each
# server's binary into a temp dir and starts it from there (2 workers each, free 127.0.0.1
# ports), then:
#   1. upgrade time, no load: BENCH_LAT_UPGRADES upgrades per server, one at a time;
#   2. upgrades under load: wrk -t2 -c64 against each server in turn, rounds interleaved, while
#      the script runs BENCH_UPGRADES upgrades at a fixed interval, keep-alive and then
#      "Connection: close"; req/s, p99/max latency, socket errors, non-2xx, upgrades done, the
#      supervisor's pid before and after;
#   3. the same load without upgrades (BENCH_BASELINE_DURATION), once per server, as a reference.
# Every upgrade first deploys the binary: a fresh copy of the build's (molt: build-bench/moltd;
# nginx and HAProxy: the installed one) written beside the running file and renamed over it.
# Then each server is upgraded the way its documentation says:
#   molt     moltctl -s SOCK upgrade --json (moltd re-executes its binary; same pid, same workers)
#   nginx    kill -USR2 <master>; the new master's pid file and workers are up and a request
#            is answered; kill -WINCH <old master>; its workers are gone; kill -QUIT <old
#            master>; it is gone (nginx runs daemonized: `daemon on`, see below)
#   HAProxy  kill -USR2 <master> (-W: the master re-executes itself, same pid, new worker)
# Prints a summary and writes bench/RESULTS-upgrade.md (BENCH_OUT: elsewhere; BENCH_DATA: also
# TSV summaries there, for bench/run.sh).
#
# The script makes itself a child subreaper (lib.sh bench_subreaper): nginx's binary upgrade
# needs a daemonized master (an undaemonized one ignores WINCH, and USR2 while its parent lives),
# whose old masters then become this shell's children: reaped here, counted in "our" CPU time,
# stopped on exit.
#
# Environment:
#   BENCH_DURATION           seconds per wrk run with upgrades (default 20)
#   BENCH_ROUNDS             rounds per server and variant (default 3)
#   BENCH_UPGRADES           upgrades per wrk run (default 20)
#   BENCH_LAT_UPGRADES       upgrades per server for the upgrade-time part, 0 = skip (default 20)
#   BENCH_BASELINE_DURATION  seconds per wrk run without upgrades, 0 = skip (default 5)
#   BENCH_CLOSE              1 = also run the "Connection: close" variant (default 1)
#   BENCH_KEEP_TMP           1 = keep the temp dir (configs, logs, raw outputs)
#
# Quick smoke: BENCH_DURATION=3 BENCH_ROUNDS=1 BENCH_UPGRADES=3 BENCH_LAT_UPGRADES=3 BENCH_BASELINE_DURATION=1 bench/upgrade.sh
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_subreaper "${BASH_SOURCE[0]}" "$@"

DUR=${BENCH_DURATION:-20}
ROUNDS=${BENCH_ROUNDS:-3}
NUP=${BENCH_UPGRADES:-20}
LAT_UP=${BENCH_LAT_UPGRADES:-20}
BASE_DUR=${BENCH_BASELINE_DURATION:-5}
CLOSE=${BENCH_CLOSE:-1}
THREADS=2
CONNS=64
WARMUP=1
LAT_SETTLE=0.5 # seconds between two upgrades without load
STEP_TIMEOUT=10 # seconds for each step of an upgrade before it counts as failed
LOGLINES=15
SERVERS=(molt nginx haproxy)

need_int BENCH_DURATION "$DUR" 1
need_int BENCH_ROUNDS "$ROUNDS" 1
need_int BENCH_UPGRADES "$NUP" 0
need_int BENCH_LAT_UPGRADES "$LAT_UP" 0
need_int BENCH_BASELINE_DURATION "$BASE_DUR" 0

bench_init upgrade
OUT=${BENCH_OUT:-$ROOT/bench/RESULTS-upgrade.md}

# --- dependencies, build -------------------------------------------------------------------
install_bench_pkgs
build_molt moltd moltctl plugins/hello.so
NGINX_SRC=$(command -v nginx)
HAPROXY_SRC=$(command -v haproxy)
NGINX=$NGINX_SRC # for nginx_version
HAPROXY=$HAPROXY_SRC

# --- temp dir, cleanup ---------------------------------------------------------------------
bench_tmp molt-upgrade
# lib.sh's cleanup, plus the nginx masters the upgrades started (their pids are in nginx's pid
# files; only a process whose command line names this temp dir is taken).
upgrade_cleanup() {
    local rc=$? f p
    set +e
    for f in "$TMP/nginx/nginx.pid" "$TMP/nginx/nginx.pid.oldbin"; do
        p=$(cat "$f" 2>/dev/null) || continue
        [[ $p =~ ^[0-9]+$ ]] || continue
        tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "$TMP/nginx/" && PIDS+=("$p")
    done
    (exit "$rc")
    bench_cleanup
}
trap upgrade_cleanup EXIT

read -r PORT_molt PORT_nginx PORT_haproxy < <(free_ports 3)

# deploy SRC DEST: a fresh copy of SRC beside DEST, renamed over it (what install(1) and package
# managers do; the running process keeps its old file).
deploy() {
    cp "$1" "$(dirname "$2")/.$(basename "$2").new"
    chmod 0755 "$(dirname "$2")/.$(basename "$2").new"
    mv -f "$(dirname "$2")/.$(basename "$2").new" "$2"
}

# --- servers -------------------------------------------------------------------------------
# molt: moltd runs from its own copy, $TMP/molt/sbin/moltd.
mkdir -p "$TMP/molt/run" "$TMP/molt/sbin"
chmod 700 "$TMP/molt/run"
MOLT_BIN=$TMP/molt/sbin/moltd
deploy "$MOLTD" "$MOLT_BIN"
MOLT_SOCK=$TMP/molt/run/control.sock
MOLT_CONF=$TMP/molt/molt.json
molt_config "$TMP/molt" "$PORT_molt" 2 "$BUILD/plugins" \
    '{"name": "hello", "file": "hello.so", "config": {"body": "hello\n"}}' \
    '{"prefix": "/", "plugin": "hello"}' >"$MOLT_CONF"
MOLT_CMD=("$MOLT_BIN" -c "$MOLT_CONF")

# nginx: daemonized (its binary upgrade needs it: an undaemonized master ignores WINCH, and
# USR2 while the process that started it lives), so lib.sh's config with "daemon on".
mkdir -p "$TMP/nginx/tmp" "$TMP/nginx/sbin"
NGINX_BIN=$TMP/nginx/sbin/nginx
deploy "$NGINX_SRC" "$NGINX_BIN"
NGINX_CONF=$TMP/nginx/nginx.conf
nginx_config "$PORT_nginx" hello notice | sed 's/^daemon off;$/daemon on;/' >"$NGINX_CONF"
grep -qx 'daemon on;' "$NGINX_CONF" || die "nginx_config wrote no \"daemon off;\" line to turn on"
NGINX_PIDFILE=$TMP/nginx/nginx.pid
NGINX_CMD=("$NGINX_BIN" -e "$TMP/nginx/error.log" -p "$TMP/nginx/" -c "$NGINX_CONF")

# HAProxy: master-worker mode, as reload.sh runs it; the master re-executes its argv[0].
mkdir -p "$TMP/haproxy/sbin"
HAPROXY_BIN=$TMP/haproxy/sbin/haproxy
deploy "$HAPROXY_SRC" "$HAPROXY_BIN"
HAPROXY_CONF=$TMP/haproxy/haproxy.cfg
haproxy_config "$PORT_haproxy" hello >"$HAPROXY_CONF"
HAPROXY_CMD=("$HAPROXY_BIN" -W -f "$HAPROXY_CONF" -p "$TMP/haproxy/haproxy.pid")

log "checking configs"
"$MOLT_BIN" -c "$MOLT_CONF" -t >"$TMP/molt/check.log" 2>&1 ||
    { cat "$TMP/molt/check.log" >&2; die "moltd -t rejected $MOLT_CONF"; }
"${NGINX_CMD[@]}" -t -q 2>"$TMP/nginx/check.log" || { cat "$TMP/nginx/check.log" >&2; die "nginx -t failed"; }
"$HAPROXY_BIN" -c -q -f "$HAPROXY_CONF" >"$TMP/haproxy/check.log" 2>&1 ||
    { cat "$TMP/haproxy/check.log" >&2; die "haproxy -c failed"; }

start molt "${MOLT_CMD[@]}"
start haproxy "${HAPROXY_CMD[@]}"
# nginx returns once its master runs in the background; the master's pid is in its pid file.
"${NGINX_CMD[@]}" >"$TMP/nginx/stdout.log" 2>"$TMP/nginx/stderr.log" </dev/null ||
    { cat "$TMP/nginx/stderr.log" >&2; die "nginx did not start"; }
for ((i = 0; i < 100; i++)); do
    [[ -s $NGINX_PIDFILE ]] && break
    sleep 0.1
done
PID_nginx=$(cat "$NGINX_PIDFILE" 2>/dev/null) || die "nginx wrote no pid file"
PIDS+=("$PID_nginx")
[[ $(awk '{ print $4 }' "/proc/$PID_nginx/stat") == "$$" ]] ||
    die "the nginx master $PID_nginx is not this shell's child: no subreaper?"

for s in "${SERVERS[@]}"; do
    url="http://127.0.0.1:$(port_of "$s")/"
    wait_ready "$s" "$s" "answering on $url" answers "$url" hello
    log "$s ready on 127.0.0.1:$(port_of "$s") (pid $(pid_of "$s"))"
done

# After the driver ran: nginx's master is the one it left (the pid file's); PIDS follows.
follow_nginx() {
    local new
    new=$(cat "$TMP/nginx/master" 2>/dev/null) || die "the upgrade driver left no nginx master pid"
    [[ $new == "$PID_nginx" ]] && return 0
    local p keep=()
    for p in "${PIDS[@]}"; do [[ $p == "$PID_nginx" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}" "$new")
    PID_nginx=$new
}

# --- the upgrade driver --------------------------------------------------------------------
# One server's upgrades, one JSON object per upgrade. Modes: "lat" (one after another, LAT_SETTLE
# s apart) and "load" (upgrade i starts at T0 + i * DUR / (N + 1) s, T0 being when wrk started,
# or at once if the previous one overran its slot; halfway, a quarter of an interval after an
# upgrade, it notes the server's processes and how the connections are spread over them).
cat >"$TMP/up.py" <<'PY'
import collections, json, os, re, shutil, signal, socket, subprocess, sys, time
import lib

cfg = json.loads(sys.argv[1])
mode, n, dur, t0_ns, out, mid_out = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), \
    sys.argv[6], sys.argv[7]
server, binary, TIMEOUT = cfg["server"], cfg["bin"], cfg["timeout"]
REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


class Fail(Exception):
    pass


def ms(t, t0):
    return round((t - t0) * 1e3, 2)


def until(cond, what, t0, deadline=None):
    """Poll cond() about every millisecond until it is true: (time, value). Fail after TIMEOUT s
    from t0, or return (None, None) at deadline (a perf_counter time) if one is given."""
    while True:
        v = cond()
        if v:
            return time.perf_counter(), v
        now = time.perf_counter()
        if deadline is not None and now >= deadline:
            return None, None
        if now - t0 > TIMEOUT:
            raise Fail(f"{what}: not after {TIMEOUT} s")
        time.sleep(0.001)


def get_ok():
    try:
        with socket.create_connection(("127.0.0.1", cfg["port"]), timeout=2) as s:
            s.sendall(REQ)
            data = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
    except OSError:
        return False
    return data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\nhello\n")


def deploy():
    tmp = os.path.join(os.path.dirname(binary), "." + os.path.basename(binary) + ".new")
    shutil.copyfile(cfg["src"], tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, binary)


def tree(pid):
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(lib.kids(p))
    return seen


def master():
    if server == "nginx":
        with open(cfg["pidfile"]) as f:
            return int(f.read())
    return cfg["pid"]


def conns():
    try:
        o = subprocess.run(["ss", "-tnpH", "state", "established", f"sport = :{cfg['port']}"],
                           capture_output=True, text=True).stdout
    except OSError:
        return "-"
    c = collections.Counter(re.findall(r"pid=(\d+)", o))
    return "/".join(str(x) for x in sorted(c.values(), reverse=True)) or "0"


def up_molt(rec, t0, deadline):
    pid = cfg["pid"]
    before = lib.kids(pid)
    p = subprocess.run([cfg["moltctl"], "-s", cfg["sock"], "upgrade", "--json"], capture_output=True, text=True)
    rec["total_ms"] = ms(time.perf_counter(), t0)
    rec["output"] = (p.stdout.strip() + " " + p.stderr.strip()).strip()
    rec["rc"] = p.returncode
    try:
        o = json.loads(p.stdout)
    except ValueError:
        raise Fail(f"moltctl exited {p.returncode} without JSON: {rec['output']!r}")
    rec["output"] = json.dumps(o, separators=(",", ":"))
    u = o.get("upgrade") or {}
    rec.update(reply_ms=u.get("ms"), new_ms=u.get("ms"), pid_after=u.get("pid"), frm=u.get("from"), to=u.get("to"),
               workers=u.get("workers"), workers_kept=lib.kids(pid) == before)
    if p.returncode != 0 or o.get("ok") is not True:
        raise Fail(f"moltctl exited {p.returncode}: {o.get('error')}")
    if u.get("pid") != pid or not lib.alive(pid):
        raise Fail(f"moltd's pid is {u.get('pid')}, was {pid}")


def up_nginx(rec, t0, deadline):
    old = master()
    rec["pid_before"] = old
    old_workers = lib.kids(old)
    os.kill(old, signal.SIGUSR2)

    def new_pid():
        try:
            with open(cfg["pidfile"]) as f:
                p = int(f.read())
        except (OSError, ValueError):
            return None
        return p if p != old else None

    t, new = until(new_pid, "the new master's pid file", t0)
    rec["pid_after"] = new
    rec["pidfile_ms"] = ms(t, t0)
    t, _ = until(lambda: len(lib.kids(new)) >= cfg["workers"], "the new master's workers", t0)
    rec["workers_ms"] = ms(t, t0)
    t, _ = until(get_ok, "a response", t0)
    rec["new_ms"] = ms(t, t0)
    os.kill(old, signal.SIGWINCH)
    t, _ = until(lambda: not (lib.kids(old) & old_workers), "the old workers' exit after WINCH", t0)
    rec["old_workers_ms"] = ms(t, t0)
    os.kill(old, signal.SIGQUIT)
    t, _ = until(lambda: not lib.alive(old), "the old master's exit after QUIT", t0)
    rec["total_ms"] = ms(t, t0)
    if os.path.exists(cfg["pidfile"] + ".oldbin"):
        raise Fail("nginx.pid.oldbin is still there")
    if len(lib.kids(new)) != cfg["workers"]:
        raise Fail(f"the new master has {len(lib.kids(new))} children")


def up_haproxy(rec, t0, deadline):
    m = cfg["pid"]
    old_workers = lib.kids(m)
    off = os.path.getsize(cfg["log"])

    def loaded():
        with open(cfg["log"], "rb") as f:
            f.seek(off)
            return b"Loading success." in f.read()

    os.kill(m, signal.SIGUSR2)
    t, _ = until(loaded, "\"Loading success.\" from the master", t0)
    rec["new_ms"] = ms(t, t0)
    t, _ = until(lambda: lib.kids(m) - old_workers, "a new worker", t0)
    rec["new_worker_ms"] = ms(t, t0)
    rec["pid_after"] = m if lib.alive(m) else None
    if not lib.alive(m):
        raise Fail("the master is gone")
    # The old worker finishes what it serves: timed until it is gone, under load at most
    # until the next upgrade's slot.
    t, _ = until(lambda: not (lib.kids(m) & old_workers), "the old worker's exit", t0, deadline)
    rec["total_ms"] = None if t is None else ms(t, t0)


upgrade = {"molt": up_molt, "nginx": up_nginx, "haproxy": up_haproxy}[server]
t0_perf = time.perf_counter() - (time.time_ns() - t0_ns) / 1e9 if mode == "load" else time.perf_counter()
mid = None
with open(out, "w") as f:
    for i in range(1, n + 1):
        late = False
        if mode == "load":
            target = t0_perf + i * dur / (n + 1)
            now = time.perf_counter()
            if now < target:
                time.sleep(target - now)
            else:
                late = True
            deadline = t0_perf + (i + 1) * dur / (n + 1)
        else:
            deadline = None
        rec = {"i": i, "late": late, "ok": False, "reason": None, "pid_before": master(), "pid_after": None,
               "new_ms": None, "total_ms": None}
        td = time.perf_counter()
        deploy()
        t0 = time.perf_counter()
        rec["deploy_ms"] = ms(t0, td)
        rec["start_s"] = round(t0 - t0_perf, 3)
        rec["after_wrk"] = mode == "load" and t0 - t0_perf > dur
        try:
            upgrade(rec, t0, deadline)
            pid = rec["pid_after"]
            rec["runs_new"] = lib.runs_file(pid, binary)
            if not rec["runs_new"]:
                raise Fail(f"pid {pid} does not run the file deployed last ({os.readlink(f'/proc/{pid}/exe')})")
            rec["ok"] = True
        except Fail as e:
            rec["reason"] = str(e)
        except OSError as e:
            rec["reason"] = f"{type(e).__name__}: {e}"
        f.write(json.dumps(rec) + "\n")
        f.flush()
        if mode == "lat" or not rec["ok"]:
            extra = f" (reply: {rec['output']})" if server == "molt" and rec.get("output") else ""
            print(f"    {server} upgrade {i}/{n}: " + ("done" if rec["ok"] else "FAILED: " + rec["reason"])
                  + f", new binary at {rec['new_ms']} ms, complete at {rec['total_ms']} ms{extra}", file=sys.stderr)
        if not lib.alive(master()):
            sys.exit(f"{server}: no live master after upgrade {i}")
        if mode == "load" and i == (n + 1) // 2:
            time.sleep(dur / (n + 1) / 4)
            mid = (len(tree(master())), conns())
        if mode == "lat":
            time.sleep(float(cfg["settle"]))
    if mode == "load" and n == 0:
        time.sleep(max(0.0, t0_perf + dur / 2 - time.perf_counter()))
        mid = (len(tree(master())), conns())
with open(mid_out, "w") as f:
    f.write("- -\n" if mid is None else f"{mid[0]} {mid[1]}\n")
with open(cfg["master_out"], "w") as f:
    f.write(f"{master()}\n")
PY

driver_cfg() { # server -> the driver's JSON config
    local s=$1
    python3 - "$s" "$(port_of "$s")" "$(pid_of "$s")" "$STEP_TIMEOUT" "$LAT_SETTLE" "$TMP" \
        "$MOLT_BIN" "$MOLTD" "$MOLTCTL" "$MOLT_SOCK" "$NGINX_BIN" "$NGINX_SRC" "$NGINX_PIDFILE" \
        "$HAPROXY_BIN" "$HAPROXY_SRC" "$TMP/haproxy/stderr.log" <<'PY'
import json, sys
(s, port, pid, timeout, settle, tmp, molt_bin, moltd, moltctl, sock, nginx_bin, nginx_src, pidfile,
 haproxy_bin, haproxy_src, haproxy_log) = sys.argv[1:]
c = {"server": s, "port": int(port), "pid": int(pid), "timeout": float(timeout), "settle": settle,
     "master_out": f"{tmp}/{s}/master"}
if s == "molt":
    c.update(bin=molt_bin, src=moltd, moltctl=moltctl, sock=sock)
elif s == "nginx":
    c.update(bin=nginx_bin, src=nginx_src, pidfile=pidfile, workers=2)
else:
    c.update(bin=haproxy_bin, src=haproxy_src, log=haproxy_log)
print(json.dumps(c))
PY
}

# --- 1. upgrade time, no load ----------------------------------------------------------------
mkdir -p "$TMP/lat"
if ((LAT_UP > 0)); then
    log "upgrade time: $LAT_UP upgrades per server, no load"
    for s in "${SERVERS[@]}"; do
        alive_or_die
        ll0=$(log_lines "$s")
        pid_of "$s" >"$TMP/lat/$s.pid0"
        canary_start "$TMP/lat/$s.canary" 0
        run_helper python3 "$TMP/up.py" "$(driver_cfg "$s")" lat "$LAT_UP" 0 0 "$TMP/lat/$s.jsonl" \
            "$TMP/lat/$s.mid" || die "the upgrade-time measurement failed for $s"
        canary_stop
        if [[ $s == nginx ]]; then follow_nginx; fi
        pid_of "$s" >"$TMP/lat/$s.pid1"
        sleep 1
        log_since "$s" "$ll0" >"$TMP/lat/$s.log"
        nprocs "$s" >"$TMP/lat/$s.procs"
        wait_ready "$s" "$s" "answering after the upgrades" answers "http://127.0.0.1:$(port_of "$s")/" hello
    done
fi

# --- 2. upgrades under load ----------------------------------------------------------------
load_variants
mkdir -p "$TMP/load"

log "warm-up: ${WARMUP}s per server"
warm_up "$PORT_molt" "$PORT_nginx" "$PORT_haproxy"

run_load() { # variant server duration upgrades tag
    local v=$1 s=$2 dur=$3 n=$4 tag=$5 f t0 t1 ll0 busy0 busy1 ours0 ours1
    local -a extra
    f=$TMP/load/$tag.$v.$s
    mapfile -t extra < <(wrk_args "$v")
    alive_or_die
    ll0=$(log_lines "$s")
    pid_of "$s" >"$f.pid0"
    busy0=$(cpu_busy) ours0=$(cpu_ours "${PIDS[@]}")
    canary_start "$f.canary" "$dur"
    t0=$(now_ns)
    wrk -t"$THREADS" -c"$CONNS" -d"${dur}s" --latency "${extra[@]}" \
        "http://127.0.0.1:$(port_of "$s")/" >"$f.wrk" &
    WRK_PID=$!
    run_helper python3 "$TMP/up.py" "$(driver_cfg "$s")" load "$n" "$dur" "$t0" "$f.jsonl" "$f.mid" ||
        die "the upgrade driver failed against $s"
    wait "$WRK_PID" || die "wrk failed against $s"
    WRK_PID=
    canary_wait
    if [[ $s == nginx ]]; then follow_nginx; fi
    busy1=$(cpu_busy) ours1=$(cpu_ours "${PIDS[@]}") t1=$(now_ns)
    other_cpu "$busy0" "$busy1" "$ours0" "$ours1" "$t0" "$t1" >"$f.cpu"
    pid_of "$s" >"$f.pid1"
    nprocs "$s" >"$f.procs_end"
    sleep 1
    nprocs "$s" >"$f.procs_end1"
    log_since "$s" "$ll0" >"$f.log"
    grep -E 'requests in|Socket errors|Non-2xx' "$f.wrk" | sed 's/^/    /' >&2 || true
    printf '    upgrades done: %s of %s; supervisor pid %s -> %s; other processes used %s%% of the CPUs; stall canary: %s\n' \
        "$(grep -c '"ok": true' "$f.jsonl" || true)" "$n" "$(cat "$f.pid0")" "$(cat "$f.pid1")" \
        "$(cat "$f.cpu")" "$(cat "$f.canary")" >&2
    if [[ $v == close ]]; then sleep 1; fi # let TIME_WAIT sockets not crowd the next run
}

for v in "${VARIANTS[@]}"; do
    for ((r = 1; r <= ROUNDS; r++)); do
        for s in "${SERVERS[@]}"; do
            log "$v round $r/$ROUNDS: $s, ${DUR}s with $NUP upgrades"
            run_load "$v" "$s" "$DUR" "$NUP" "up$r"
        done
    done
done
if ((BASE_DUR > 0)); then
    for v in "${VARIANTS[@]}"; do
        for s in "${SERVERS[@]}"; do
            log "$v: $s, ${BASE_DUR}s without upgrades (reference)"
            run_load "$v" "$s" "$BASE_DUR" 0 base
        done
    done
fi
alive_or_die
for s in "${SERVERS[@]}"; do
    curl -sS -i --max-time 2 "http://127.0.0.1:$(port_of "$s")/" | tr -d '\r' >"$TMP/$s/response.txt"
    nprocs "$s" >"$TMP/$s/procs_final"
done
"$MOLTCTL" -s "$MOLT_SOCK" status >"$TMP/molt/status.txt" 2>&1 || true
ps -o pid,ppid,args -p "$(pid_of molt),$(pid_of nginx),$(pid_of haproxy)" \
    --ppid "$(pid_of molt),$(pid_of nginx),$(pid_of haproxy)" 2>/dev/null | rel >"$TMP/ps.txt" || true

# --- report --------------------------------------------------------------------------------
TABLES=$TMP/tables.md
python3 - "$TMP" "$DUR" "$ROUNDS" "$NUP" "$BASE_DUR" "$LAT_UP" "${VARIANTS[@]}" >"$TABLES" <<'PY'
import contextlib, io, json, os, re, statistics, sys
from pathlib import Path
import lib

tables = io.StringIO()
_redirect = contextlib.redirect_stdout(tables)
_redirect.__enter__()

tmp = Path(sys.argv[1])
dur, rounds, nup, base_dur, lat_n = (int(x) for x in sys.argv[2:7])
variants = sys.argv[7:]
servers = ["molt", "nginx", "haproxy"]
title = {"keepalive": "keep-alive", "close": "Connection: close"}
new_what = {"molt": "moltd's `ms`", "nginx": "new master's workers up and a response",
            "haproxy": "\"Loading success.\" logged"}
total_what = {"molt": "moltctl returned", "nginx": "old master exited", "haproxy": "old worker exited"}

from lib import read, med, mx, f1, mark

def jsonl(p):
    return [json.loads(l) for l in read(p, "").splitlines() if l.strip()]

summary = []

# ---- 1. upgrade time without load
if lat_n:
    lat = {}
    for s in servers:
        recs = jsonl(tmp / "lat" / f"{s}.jsonl")
        lat[s] = {"recs": recs, "done": sum(r["ok"] for r in recs),
                  "new": med(r["new_ms"] for r in recs), "new_max": mx(r["new_ms"] for r in recs),
                  "total": med(r["total_ms"] for r in recs), "total_max": mx(r["total_ms"] for r in recs),
                  "pids": f"{read(tmp / 'lat' / f'{s}.pid0')} → {read(tmp / 'lat' / f'{s}.pid1')}",
                  "canary": read(tmp / "lat" / f"{s}.canary"), "procs": read(tmp / "lat" / f"{s}.procs")}
    print("### Upgrade time (no load)\n")
    print(f"{lat_n} upgrades per server, one at a time, {0.5} s apart; times in ms from the upgrade "
          "command or signal (after the binary was deployed) to:\n")
    print("- **new binary in charge**: molt: moltd's own `ms` in the reply (from the request to the new "
          "binary having restored everything; workers serve throughout); nginx: the new master's pid file "
          "written, its 2 workers forked and a `GET /` answered (old and new workers both accept until "
          "WINCH); HAProxy: the master's \"Loading success.\" line (the re-executed master forked its new "
          "worker);")
    print("- **procedure complete**: molt: `moltctl upgrade` returned; nginx: the old master has exited "
          "after WINCH (its workers gone) and QUIT, the whole documented procedure; HAProxy: the old worker "
          "has exited.\n")
    print("| server | upgrades done | new binary in charge, median | max | procedure complete, median | max "
          "| supervisor pid before → after | processes after | stall canary |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---|")
    for s in servers:
        x = lat[s]
        print(f"| {mark(s, '-', x['canary'], 'upgrade time')} | {x['done']} of {len(x['recs'])} | {f1(x['new'])} | "
              f"{f1(x['new_max'])} | {f1(x['total'])} | {f1(x['total_max'])} | {x['pids']} | {x['procs']} | {x['canary']} |")
    m = lat["molt"]["recs"]
    print(f"\nmolt: every reply's `ms` median {f1(lat['molt']['new'])}, max {f1(lat['molt']['new_max'])}; "
          f"the workers kept their pids in {sum(1 for r in m if r.get('workers_kept'))} of {len(m)} upgrades; "
          f"copying the binary into place took {f1(med(r['deploy_ms'] for s in servers for r in lat[s]['recs']))} ms "
          "(median, not counted above).\n")
    fails = [(s, r) for s in servers for r in lat[s]["recs"] if not r["ok"]]
    if fails:
        print("Failed upgrades:\n")
        for s, r in fails:
            print(f"- {s} #{r['i']}: {r['reason']}" + (f" (`{r['output']}`)" if r.get("output") else ""))
        print()
    print("Every upgrade (ms; new binary in charge / complete):\n")
    print("| # | " + " | ".join(servers) + " |")
    print("|---:|" + "---|" * len(servers))
    for i in range(lat_n):
        cells = []
        for s in servers:
            r = lat[s]["recs"][i] if i < len(lat[s]["recs"]) else None
            cells.append("-" if r is None else f"{f1(r['new_ms'])} / {f1(r['total_ms'])}" + ("" if r["ok"] else " FAILED"))
        print(f"| {i + 1} | " + " | ".join(cells) + " |")
    print()
    nx = [r for r in lat["nginx"]["recs"] if r["ok"]]
    if nx:
        print("nginx's steps, medians (ms after USR2): new pid file "
              f"{f1(med(r.get('pidfile_ms') for r in nx))}, new workers forked {f1(med(r.get('workers_ms') for r in nx))}, "
              f"response {f1(med(r['new_ms'] for r in nx))}, old workers gone after WINCH "
              f"{f1(med(r.get('old_workers_ms') for r in nx))}, old master gone after QUIT {f1(med(r['total_ms'] for r in nx))}.\n")
    if os.environ.get("BENCH_DATA"):  # for bench/run.sh
        with open(os.path.join(os.environ["BENCH_DATA"], "upgrade-latency.tsv"), "w") as f:
            for s in servers:
                x = lat[s]
                f.write(f"{s}\t{f1(x['new'])}\t{f1(x['new_max'])}\t{f1(x['total'])}\t{f1(x['total_max'])}\t"
                        f"{x['done']}\t{len(x['recs'])}\n")
    summary.append(("Upgrade time without load, ms: new binary in charge median (max); complete median (max)",
                    [f"{s:8} {f1(lat[s]['new']):>8} ({f1(lat[s]['new_max'])}); {f1(lat[s]['total'])} "
                     f"({f1(lat[s]['total_max'])})  done {lat[s]['done']}/{len(lat[s]['recs'])}" for s in servers]))

# ---- 2. under load
def load_run(tag, v, s):
    f = tmp / "load" / f"{tag}.{v}.{s}"
    w = lib.wrk(f.with_name(f.name + ".wrk"))
    recs = jsonl(f.with_name(f.name + ".jsonl"))
    mid = read(f.with_name(f.name + ".mid"), "- -").split()
    w.update({
        "recs": recs, "sent": len(recs), "done": sum(r["ok"] for r in recs),
        "late": sum(r["late"] for r in recs), "after_wrk": sum(r.get("after_wrk", False) for r in recs),
        "new_med": med(r["new_ms"] for r in recs), "new_max": mx(r["new_ms"] for r in recs),
        "total_med": med(r["total_ms"] for r in recs), "total_max": mx(r["total_ms"] for r in recs),
        "pid0": read(f.with_name(f.name + ".pid0")), "pid1": read(f.with_name(f.name + ".pid1")),
        "masters": len({r["pid_after"] for r in recs if r["pid_after"]}),
        "kept": sum(1 for r in recs if r.get("workers_kept")),
        "cpu": read(f.with_name(f.name + ".cpu")), "canary": read(f.with_name(f.name + ".canary")),
        "log": read(f.with_name(f.name + ".log"), ""),
        "procs": "/".join([mid[0], read(f.with_name(f.name + ".procs_end")), read(f.with_name(f.name + ".procs_end1"))]),
        "conns": mid[1] if len(mid) > 1 else "-",
    })
    return w

def errs(x):
    return "/".join(map(str, x))

def med_errs(runs):
    return tuple(int(med(r["errs"][k] for r in runs)) for k in range(4))

def sum_errs(runs):
    return tuple(sum(r["errs"][k] for r in runs) for k in range(4))

def pids(runs):
    a, b = runs[0]["pid0"], runs[-1]["pid1"]
    return f"{a} → {b} (same)" if a == b else f"{a} → {b}"

for v in variants:
    runs = {s: [load_run(f"up{r}", v, s) for r in range(1, rounds + 1)] for s in servers}
    base = {s: load_run("base", v, s) for s in servers} if base_dur else None
    M = {s: {k: med(x[k] for x in runs[s]) for k in ("rps", "p99", "max", "non2xx")} for s in servers}
    print(f"### Under load with upgrades: {title[v]}\n")
    hdr = " -H 'Connection: close'" if v == "close" else ""
    print(f"`wrk -t2 -c64 -d{dur}s --latency{hdr}`, {nup} upgrades per run at a fixed interval of "
          f"{dur / (nup + 1):.2f} s, {rounds} round{'s' if rounds != 1 else ''} (molt, nginx, HAProxy, molt, …); "
          "medians over the rounds, errors also summed over all rounds.\n")
    print("| server | req/s | p99 (ms) | max (ms) | socket errors c/r/w/t, median | all rounds | non-2xx/3xx, median "
          "| all rounds | upgrades done | supervisor pid, first → last | molt/this req/s |")
    print("|---|---:|---:|---:|---|---|---:|---:|---:|---|---:|")
    for s in servers:
        rr = runs[s]
        print(f"| {s} | {M[s]['rps']:.0f} | {M[s]['p99']:.2f} | {M[s]['max']:.2f} | {errs(med_errs(rr))} | "
              f"{errs(sum_errs(rr))} | {M[s]['non2xx']:.0f} | {sum(x['non2xx'] for x in rr)} | "
              f"{sum(x['done'] for x in rr)} of {sum(x['sent'] for x in rr)} | {pids(rr)} | "
              + ("" if s == "molt" else f"**{M['molt']['rps'] / M[s]['rps']:.2f}**") + " |")
    rn, rh = M["molt"]["rps"] / M["nginx"]["rps"], M["molt"]["rps"] / M["haproxy"]["rps"]
    mr = [r for x in runs["molt"] for r in x["recs"]]
    print(f"\nRatios of median req/s: **molt/nginx = {rn:.2f}**, **molt/haproxy = {rh:.2f}**. Errors are counts "
          "from the same number of upgrades, no ratio.\n")
    print(f"molt: moltd's `ms` per upgrade under load median {f1(med(r['new_ms'] for r in mr))}, max "
          f"{f1(mx(r['new_ms'] for r in mr))}; moltctl's wall time median {f1(med(r['total_ms'] for r in mr))}, max "
          f"{f1(mx(r['total_ms'] for r in mr))}; the workers kept their pids in "
          f"{sum(1 for r in mr if r.get('workers_kept'))} of {len(mr)} upgrades. "
          f"nginx: {sum(x['masters'] for x in runs['nginx'])} new masters over the rounds. "
          f"Warnings or errors in molt's log during these runs: {sum(len(x['log'].splitlines()) for x in runs['molt'])}.\n")
    print("Every run:\n")
    print("| round | server | requests | req/s | p99 (ms) | max (ms) | socket errors c/r/w/t | non-2xx/3xx "
          "| upgrades done | slots overrun | started after wrk ended | new binary in charge, median / max (ms) "
          "| complete, median / max (ms) | supervisor pid before → after | server processes mid-run / at end / 1 s later "
          "| conns per process mid-run | other CPU % | stall canary |")
    print("|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---|---|---|---|---:|---|")
    for r in range(rounds):
        for s in servers:
            x = runs[s][r]
            print(f"| {r + 1} | {mark(s, x['cpu'], x['canary'], f'{title[v]} round {r + 1}')} | {x['requests']} | "
                  f"{x['rps']:.0f} | {x['p99']:.2f} | {x['max']:.2f} | {errs(x['errs'])} | {x['non2xx']} | "
                  f"{x['done']} of {x['sent']} | {x['late']} | {x['after_wrk']} | {f1(x['new_med'])} / {f1(x['new_max'])} | "
                  f"{f1(x['total_med'])} / {f1(x['total_max'])} | {x['pid0']} → {x['pid1']} | {x['procs']} | "
                  f"{x['conns']} | {x['cpu']} | {x['canary']} |")
    fails = [(s, i + 1, r) for s in servers for i, x in enumerate(runs[s]) for r in x["recs"] if not r["ok"]]
    if fails:
        print("\nFailed upgrades:\n")
        for s, rnd, r in fails:
            print(f"- {s}, round {rnd}, #{r['i']}: {r['reason']}" + (f" (`{r['output']}`)" if r.get("output") else ""))
    print()
    if base:
        print(f"Reference, the same load for {base_dur} s without upgrades (one run per server, after all rounds):\n")
        print("| server | req/s | socket errors c/r/w/t | non-2xx/3xx | p99 (ms) | max (ms) "
              "| req/s with upgrades (median) / without | conns per process mid-run | other CPU % | stall canary |")
        print("|---|---:|---|---:|---:|---:|---:|---|---:|---|")
        for s in servers:
            b = base[s]
            print(f"| {mark(s, b['cpu'], b['canary'], title[v] + ' without upgrades')} | {b['rps']:.0f} | "
                  f"{errs(b['errs'])} | {b['non2xx']} | {b['p99']:.2f} | {b['max']:.2f} | {M[s]['rps'] / b['rps']:.2f} | "
                  f"{b['conns']} | {b['cpu']} | {b['canary']} |")
        print()
    lines = [f"{s:8} {M[s]['rps']:>9.0f} req/s  errors c/r/w/t median {errs(med_errs(runs[s])):>12} "
             f"(all rounds {errs(sum_errs(runs[s]))})  non-2xx {M[s]['non2xx']:.0f}  p99 {M[s]['p99']:>7.2f} ms  "
             f"max {M[s]['max']:>8.2f} ms  done {sum(x['done'] for x in runs[s])}/{sum(x['sent'] for x in runs[s])}  "
             f"pid {pids(runs[s])}" for s in servers]
    lines.append(f"molt/nginx = {rn:.2f}   molt/haproxy = {rh:.2f}")
    summary.append((f"Under load with {nup} upgrades per run, {title[v]} (medians of {rounds} round"
                    f"{'s' if rounds != 1 else ''})", lines))
    if os.environ.get("BENCH_DATA"):  # for bench/run.sh
        with open(os.path.join(os.environ["BENCH_DATA"], "upgrade-load.tsv"), "a") as f:
            for s in servers:
                rr = runs[s]
                f.write(f"{v}\t{s}\t{M[s]['rps']:.0f}\t{M[s]['p99']:.2f}\t{M[s]['max']:.2f}\t{errs(med_errs(rr))}\t"
                        f"{errs(sum_errs(rr))}\t{sum(x['non2xx'] for x in rr)}\t{sum(x['done'] for x in rr)}\t"
                        f"{sum(x['sent'] for x in rr)}\t{pids(rr)}\t{rounds}\n")

_redirect.__exit__(None, None, None)
lib.flag_note(summary)
print(tables.getvalue(), end="")

for t, lines in summary:
    print(f"\n{t}:", file=sys.stderr)
    for l in lines:
        print(f"  {l}", file=sys.stderr)
PY

INTERVAL=$(awk -v d="$DUR" -v n="$NUP" 'BEGIN { printf "%.2f", d / (n + 1) }')
# Markdown wants literal backticks inside single-quoted formats.
# shellcheck disable=SC2016
{
    printf '# molt supervisor upgrade benchmark results\n\n'
    printf 'Generated by `bench/upgrade.sh` (see bench/README.md). Do not edit by hand.\n\n'
    meta_date
    meta_machine
    meta_molt
    meta_peers
    printf -- '- Upgrades under load: %s per wrk run of %s s (one every %s s), rounds: %s; upgrade time: %s upgrades per server\n\n' \
        "$NUP" "$DUR" "$INTERVAL" "$ROUNDS" "$LAT_UP"
    printf 'All three servers run on 127.0.0.1 with 2 workers (molt, nginx: 2 worker processes; '
    printf 'HAProxy: 2 threads in one worker process) and answer `GET /` with `hello\\n`. Each runs from '
    printf 'its own copy of its binary in the temp dir, and before every upgrade the script deploys the '
    printf 'binary again: a fresh copy of the same build (molt: `build-bench/moltd`; nginx and HAProxy: '
    printf 'the installed Debian binaries) written beside the running file and renamed over it, as '
    printf '`install` and package managers do. So every upgrade executes a new file (the report checks '
    printf 'that the supervisor or master runs it afterwards, by inode), of the same version: the '
    printf 'figures are the mechanism'"'"'s, not a version change'"'"'s. wrk, the script and the three '
    printf 'servers share the same %s CPU(s): absolute figures are low and noisy, and latency percentiles ' "$(nproc)"
    printf 'suffer from coordinated omission.\n\n'
    printf '## What an upgrade is, per server\n\n'
    printf -- '- **molt**: `moltctl -s SOCK upgrade --json`. moltd writes its state (listeners, worker '
    printf 'table, generations, metrics, …) into a memory file, runs the new binary once as a check '
    printf 'against that state, then `execve()`s it in the same process: the pid, the listening sockets '
    printf 'and the workers (same pids, serving their connections throughout) stay; the new binary '
    printf 'answers the command with `{"ok": true, "upgrade": {"from", "to", "binary", "pid", "ms", …}}`. '
    printf 'An upgrade counts as done when the reply is ok, moltd'"'"'s pid is unchanged and its '
    printf 'executable is the file deployed last.\n'
    printf -- '- **nginx**: the documented "Upgrading Executable on the Fly" '
    printf '(nginx.org/en/docs/control.html): `kill -USR2 <master>` (the master renames its pid file to '
    printf '`nginx.pid.oldbin` and starts the new binary, which inherits the listening sockets, writes '
    printf '`nginx.pid` and forks its own workers); once the new pid file is there, the new master has its '
    printf '2 workers and a request is answered, `kill -WINCH <old master>` (its workers finish gracefully: '
    printf 'they stop accepting and close their keep-alive connections); once they are gone, `kill -QUIT '
    printf '<old master>`; done when the old master has exited, `nginx.pid.oldbin` is gone and the new '
    printf 'master (a new pid) runs the file deployed last with its 2 workers. This procedure needs a '
    printf 'daemonized master: an undaemonized one ignores WINCH, and ignores USR2 while the process that '
    printf 'started it is alive (nginx'"'"'s `ngx_signal_handler`). So nginx runs with `daemon on`, unlike '
    printf 'in the other benchmarks, and the script is a child subreaper so that the masters stay its '
    printf 'children (reaped, their CPU time counted as the servers'"'"', stopped on exit).\n'
    printf -- '- **HAProxy**: master-worker mode (`-W`, as in reload.sh), `kill -USR2 <master>`: the master '
    printf 're-executes its `argv[0]` (the deployed file) in the same process, parses the config, forks a '
    printf 'new worker that takes the listening sockets over, logs "Loading success." and tells the old '
    printf 'worker to finish (that is also how HAProxy reloads). Done when "Loading success." is logged, '
    printf 'the master (same pid) runs the file deployed last and has a new worker; the old worker'"'"'s '
    printf 'exit is timed too (under load, until the next upgrade'"'"'s slot at most).\n\n'
    printf '## How to read the numbers\n\n'
    printf -- '- wrk counts: **connect** errors, **read** errors (the connection was reset, or closed with '
    printf 'a request sent and no response: the race between a server closing a keep-alive connection '
    printf 'and a client reusing it; real HTTP clients retry an idempotent request then, wrk does not), '
    printf '**write** errors, **timeout** (no response within 2 s). **non-2xx/3xx** are responses with '
    printf 'another status. All are counts over a run, from the same number of upgrades for every server.\n'
    printf -- '- p99 and max latency are wrk'"'"'s over the whole run, upgrades included.\n'
    printf -- '- "slots overrun" counts upgrades that started late because the previous one was still '
    printf 'going; "started after wrk ended" counts those that came after the load had stopped.\n'
    printf -- '- "server processes" counts the supervisor or master and all its descendants at mid-run '
    printf '(a quarter of an interval after an upgrade), when wrk ended and 1 s later. Idle: 3 for molt '
    printf 'and nginx, 2 for HAProxy. "conns per process" is an `ss` snapshot at mid-run of how the '
    printf 'established connections were spread over the server'"'"'s processes, largest first.\n'
    printf -- '- "other CPU %%" and "stall canary" are those of reload.sh: the share of all CPUs'"'"' time '
    printf 'used by processes other than the servers (old nginx masters included, as this shell reaps '
    printf 'them), wrk and the script; and a process that sleeps 5 ms at a time, reporting how often it '
    printf 'woke more than 20 ms late and the worst. Runs with other CPU above 10 %% or the canary above '
    printf '50 ms are marked (!).\n\n'
    printf '## Results\n\n'
    cat "$TABLES"
    printf '## How it was run\n\n'
    md_build
    printf 'Servers (`$TMP` is a fresh `mktemp -d`, `$REPO` the checkout; nginx daemonizes):\n\n```\n'
    cmdline "${MOLT_CMD[@]}" | rel
    cmdline "${NGINX_CMD[@]}" | rel
    cmdline "${HAPROXY_CMD[@]}" | rel
    printf '```\n\nBefore every upgrade (for each server its own binary):\n\n```\n'
    printf 'cp %s %s && mv -f %s %s\n' "$MOLTD" "$(dirname "$MOLT_BIN")/.moltd.new" \
        "$(dirname "$MOLT_BIN")/.moltd.new" "$MOLT_BIN" | rel
    printf 'cp %s %s && mv -f %s %s\n' "$NGINX_SRC" "$(dirname "$NGINX_BIN")/.nginx.new" \
        "$(dirname "$NGINX_BIN")/.nginx.new" "$NGINX_BIN" | rel
    printf 'cp %s %s && mv -f %s %s\n' "$HAPROXY_SRC" "$(dirname "$HAPROXY_BIN")/.haproxy.new" \
        "$(dirname "$HAPROXY_BIN")/.haproxy.new" "$HAPROXY_BIN" | rel
    printf '```\n\nUpgrades:\n\n```\n'
    cmdline "$MOLTCTL" -s "$MOLT_SOCK" upgrade --json | rel
    echo 'kill -USR2 <nginx master>; (new nginx.pid, 2 workers, a response) kill -WINCH <old master>; (its workers gone) kill -QUIT <old master>'
    echo 'kill -USR2 <haproxy -W master>'
    printf '```\n\nLoad, per server, with the upgrades running alongside:\n\n```\n'
    wrk_cmdlines
    printf '```\n\n'
    if ((BASE_DUR > 0)); then
        printf 'Reference runs: the same with `-d%ss` and no upgrades, after all rounds.\n\n' "$BASE_DUR"
    fi
    printf 'Order: upgrade time without load (molt, nginx, HAProxy), a wrk warm-up of %s s per server, then '  "$WARMUP"
    printf 'per variant round after round (%s) of molt, nginx, HAProxy under upgrades, then the reference runs.\n\n' "$ROUNDS"
    fence 'molt config' "$MOLT_CONF" json | rel
    fence 'nginx config' "$NGINX_CONF" nginx | rel
    fence 'HAProxy config' "$HAPROXY_CONF" | rel
    printf '## At the end\n\n'
    for s in "${SERVERS[@]}"; do
        fence "$s response ($(cat "$TMP/$s/procs_final") server processes)" "$TMP/$s/response.txt" http
    done
    fence '`moltctl status`' "$TMP/molt/status.txt" | rel
    fence 'The servers'"'"' processes (`ps`)' "$TMP/ps.txt"
    printf '## Server logs\n\n'
    printf 'Last %s lines of each (molt at level warn, nginx at notice).\n\n' "$LOGLINES"
    log_tails "$LOGLINES" molt/stderr.log nginx/error.log haproxy/stderr.log
} >"$TMP/RESULTS.md"
mv "$TMP/RESULTS.md" "$OUT"
log "wrote ${OUT#"$ROOT"/}"
