#!/usr/bin/env bash
# bench/reload.sh: reloads under load, molt vs nginx vs HAProxy, HTTP/1.1 on loopback.
#
# Installs what is missing (Debian), builds molt in Release mode into build-bench/,
# starts the three servers (2 workers each) on free 127.0.0.1 ports in a temp dir, then:
#   1. reload latency, no load: BENCH_LAT_RELOADS reloads per server, each deploying a
#      different body; the time from the reload command to the first response with the
#      new body, polled over fresh connections;
#   2. reloads under load: wrk -t2 -c64 against each server in turn while the script
#      triggers BENCH_RELOADS reloads at a fixed interval, keep-alive and then
#      "Connection: close"; socket errors, non-2xx, p99/max latency;
#   3. optionally the same load without reloads (BENCH_BASELINE_DURATION), as a reference.
# Prints a summary and writes bench/RESULTS-reload.md (BENCH_OUT: elsewhere; BENCH_DATA: also
# TSV summaries there, for bench/run.sh).
#
# Environment:
#   BENCH_DURATION           seconds per wrk run with reloads (default 20)
#   BENCH_RELOADS            reloads per wrk run (default 40)
#   BENCH_LAT_RELOADS        reloads per server for the reload-latency part (default 10)
#   BENCH_BASELINE_DURATION  seconds per wrk run without reloads, 0 = skip (default 5)
#   BENCH_CLOSE              1 = also run the "Connection: close" variant (default 1)
#   BENCH_KEEP_TMP           1 = keep the temp dir (configs, logs, raw outputs)
#
# Quick smoke: BENCH_DURATION=3 BENCH_RELOADS=3 BENCH_LAT_RELOADS=2 BENCH_BASELINE_DURATION=1 bench/reload.sh
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DUR=${BENCH_DURATION:-20}
NRELOADS=${BENCH_RELOADS:-40}
LAT_RELOADS=${BENCH_LAT_RELOADS:-10}
BASE_DUR=${BENCH_BASELINE_DURATION:-5}
CLOSE=${BENCH_CLOSE:-1}
THREADS=2
CONNS=64
WARMUP=1
LAT_SETTLE=0.5 # seconds between two latency reloads, for the old workers to go
LOGLINES=15
SERVERS=(molt nginx haproxy)
BODY1="hello 1"
BODY2="hello 2"

need_int BENCH_DURATION "$DUR" 1
need_int BENCH_RELOADS "$NRELOADS" 0
need_int BENCH_LAT_RELOADS "$LAT_RELOADS" 0
need_int BENCH_BASELINE_DURATION "$BASE_DUR" 0

bench_init reload
OUT=${BENCH_OUT:-$ROOT/bench/RESULTS-reload.md}

# --- dependencies --------------------------------------------------------------
install_bench_pkgs

# --- build ---------------------------------------------------------------------
build_molt moltd moltctl plugins/hello.so
HAPROXY=$(command -v haproxy) # absolute: the master re-executes itself on reload
NGINX=$(command -v nginx)

# --- temp dir, cleanup -----------------------------------------------------------
bench_tmp molt-reload

read -r PORT_molt PORT_nginx PORT_haproxy < <(free_ports 3)

# --- configs: two variants per server, differing only in the body ----------------
# conf.1 serves "$BODY1\n", conf.2 "$BODY2\n" (same length); the live file is replaced
# by one of them (copy, then rename) before every reload.
MOLT_SOCK=$TMP/molt/run/control.sock
mkdir -p "$TMP/molt/run"
chmod 700 "$TMP/molt/run"
MOLT_CONF=$TMP/molt/molt.json
molt_conf() { # body
    molt_config "$TMP/molt" "$PORT_molt" 2 "$BUILD/plugins" \
        "{\"name\": \"hello\", \"file\": \"hello.so\", \"config\": {\"body\": \"$1\\n\"}}" \
        '{"prefix": "/", "plugin": "hello"}' '"health": {"stable_ms": 0}'
}

mkdir -p "$TMP/nginx/tmp"
NGINX_CONF=$TMP/nginx/nginx.conf
nginx_conf() { nginx_config "$PORT_nginx" "$1" notice; } # body

mkdir -p "$TMP/haproxy"
HAPROXY_CONF=$TMP/haproxy/haproxy.cfg
haproxy_conf() { haproxy_config "$PORT_haproxy" "$1"; } # body

conf_of() { case $1 in molt) echo "$MOLT_CONF" ;; nginx) echo "$NGINX_CONF" ;; haproxy) echo "$HAPROXY_CONF" ;; esac; }
for s in "${SERVERS[@]}"; do
    "${s}_conf" "$BODY1" >"$(conf_of "$s").1"
    "${s}_conf" "$BODY2" >"$(conf_of "$s").2"
    cp "$(conf_of "$s").1" "$(conf_of "$s")"
    printf -v "CUR_$s" 1
done

# Make variant k the live config of server s (atomically).
set_body() { # server k
    local c
    c=$(conf_of "$1")
    cp "$c.$2" "$c.new"
    mv -f "$c.new" "$c"
    printf -v "CUR_$1" '%s' "$2"
}
flip_body() { # server: switch to the other variant
    local v="CUR_$1"
    set_body "$1" $((3 - ${!v}))
}

MOLT_CMD=("$MOLTD" -c "$MOLT_CONF")
NGINX_CMD=("$NGINX" -e "$TMP/nginx/error.log" -p "$TMP/nginx/" -c "$NGINX_CONF")
HAPROXY_CMD=("$HAPROXY" -W -f "$HAPROXY_CONF" -p "$TMP/haproxy/haproxy.pid")

log "checking configs"
for k in 1 2; do
    "$MOLTD" -c "$MOLT_CONF.$k" -t >"$TMP/molt/check.log" 2>&1 ||
        { cat "$TMP/molt/check.log" >&2; die "moltd -t rejected $MOLT_CONF.$k"; }
    "$NGINX" -e "$TMP/nginx/error.log" -p "$TMP/nginx/" -c "$NGINX_CONF.$k" -t -q 2>"$TMP/nginx/check.log" ||
        { cat "$TMP/nginx/check.log" >&2; die "nginx -t rejected $NGINX_CONF.$k"; }
    "$HAPROXY" -c -q -f "$HAPROXY_CONF.$k" >"$TMP/haproxy/check.log" 2>&1 ||
        { cat "$TMP/haproxy/check.log" >&2; die "haproxy -c rejected $HAPROXY_CONF.$k"; }
done

start molt "${MOLT_CMD[@]}"
start nginx "${NGINX_CMD[@]}"
start haproxy "${HAPROXY_CMD[@]}"

# The reload commands. Each server is reloaded the way its documentation says.
reload_argv() { # server -> the reload command, one word per line
    case $1 in
        molt) printf '%s\n' "$MOLTCTL" -s "$MOLT_SOCK" reload ;;
        nginx) printf '%s\n' "${NGINX_CMD[@]}" -s reload ;;
        haproxy) printf '%s\n' kill -USR2 "$(pid_of haproxy)" ;;
    esac
}

for s in "${SERVERS[@]}"; do
    url="http://127.0.0.1:$(port_of "$s")/"
    wait_ready "$s" "$s" "answering \"$BODY1\" on $url" answers "$url" "$BODY1"
    log "$s ready on 127.0.0.1:$(port_of "$s")"
done
[[ $(cat "$TMP/haproxy/haproxy.pid" 2>/dev/null) == "$(pid_of haproxy)" ]] ||
    die "haproxy.pid does not hold the master's pid $(pid_of haproxy)"

# CPU accounting (lib.sh): the machine's user+nice+system+irq+softirq; ours: what our servers
# used, plus what the reaped ones had used (old workers; HAProxy's re-executed master keeps its
# pid), plus this shell's reaped children (wrk, moltctl, nginx -s, the canary, ...).

# Stall canary (lib.sh canary_start): it wakes every 5 ms and reports how often, and by how much
# at most, it woke more than 20 ms late; a long oversleep means the whole machine (or VM)
# stalled, which then shows up in every server's max latency, whatever the server did.

# --- 1. reload latency, no load --------------------------------------------------
# For each reload: make the other body live, start the reload command, and poll
# GET / over a fresh connection (Connection: close) about every millisecond until
# the new body comes back; keep polling until the command has returned and 20 new
# bodies in a row came back, to catch an old body served after the first new one.
mkdir -p "$TMP/lat"
cat >"$TMP/lat/poll.py" <<'PY'
import json, os, shutil, socket, subprocess, sys, time

name, port, live, cur, count, settle, out = sys.argv[1:8]
bodies = {1: sys.argv[8].encode() + b"\n", 2: sys.argv[9].encode() + b"\n"}
cmd = sys.argv[sys.argv.index("--") + 1:]
port, cur, count, settle = int(port), int(cur), int(count), float(settle)
REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"

def get():
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(REQ)
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b" ", 2)[1] if head.startswith(b"HTTP/") else b"?", body

with open(out, "w") as f:
    for i in range(count):
        new = 3 - cur
        shutil.copyfile(f"{live}.{new}", f"{live}.new")
        os.replace(f"{live}.new", live)
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        first_new = last_old = cmd_done = None
        polls = errors = other = streak = 0
        while time.perf_counter() - t0 < 30:
            if cmd_done is None and p.poll() is not None:
                cmd_done = time.perf_counter() - t0
            try:
                status, body = get()
            except OSError:
                errors += 1
                time.sleep(0.001)
                continue
            polls += 1
            t = time.perf_counter() - t0
            if status == b"200" and body == bodies[new]:
                if first_new is None:
                    first_new = t
                streak += 1
            elif status == b"200" and body == bodies[cur]:
                if first_new is not None:
                    last_old = t
                streak = 0
            else:
                other += 1
            if first_new is not None and cmd_done is not None and streak >= 20:
                break
            time.sleep(0.001)
        output = p.communicate()[0].decode(errors="replace").strip()
        rec = {"i": i + 1, "first_new_ms": None if first_new is None else first_new * 1e3,
               "cmd_ms": None if cmd_done is None else cmd_done * 1e3,
               "last_old_ms": None if last_old is None else last_old * 1e3,
               "rc": p.returncode, "polls": polls, "poll_errors": errors, "other": other,
               "output": output}
        f.write(json.dumps(rec) + "\n")
        f.flush()
        fn = "never" if first_new is None else f"{first_new * 1e3:.1f} ms"
        print(f"    {name} reload {i + 1}/{count}: first new body after {fn}"
              + (f"; {output}" if output else ""), file=sys.stderr)
        if first_new is None:
            sys.exit(f"{name}: the new body never came back")
        cur = new
        time.sleep(settle)
print(cur)
PY

if ((LAT_RELOADS > 0)); then
    log "reload latency: $LAT_RELOADS reloads per server, no load"
    for s in "${SERVERS[@]}"; do
        alive_or_die
        mapfile -t rcmd < <(reload_argv "$s")
        v="CUR_$s"
        ll0=$(log_lines "$s")
        canary_start "$TMP/lat/$s.canary" 0
        run_helper python3 "$TMP/lat/poll.py" "$s" "$(port_of "$s")" "$(conf_of "$s")" "${!v}" "$LAT_RELOADS" \
            "$LAT_SETTLE" "$TMP/lat/$s.jsonl" "$BODY1" "$BODY2" -- "${rcmd[@]}" >"$TMP/lat/$s.cur" ||
            die "reload-latency measurement failed for $s"
        canary_stop
        printf -v "CUR_$s" '%s' "$(cat "$TMP/lat/$s.cur")"
        sleep 1
        log_since "$s" "$ll0" >"$TMP/lat/$s.log"
        nprocs "$s" >"$TMP/lat/$s.procs"
    done
fi

# --- 2. reloads under load -------------------------------------------------------
load_variants
mkdir -p "$TMP/load"

log "warm-up: ${WARMUP}s per server"
warm_up "$PORT_molt" "$PORT_nginx" "$PORT_haproxy"

# One wrk run; with reloads > 0, reload i is triggered at i * DUR / (reloads + 1) seconds
# after wrk started (the next one starts at once if a reload command overran its slot).
run_load() { # variant server duration reloads tag
    local v=$1 s=$2 dur=$3 n=$4 tag=$5 f i t0 t1 target now ts te rc late=0 ll0 mid=-
    local busy0 busy1 ours0 ours1
    local -a extra rcmd
    f=$TMP/load/$tag.$v.$s
    mapfile -t extra < <(wrk_args "$v")
    mapfile -t rcmd < <(reload_argv "$s")
    alive_or_die
    : >"$f.reloads"
    : >"$f.out"
    ll0=$(log_lines "$s")
    busy0=$(cpu_busy) ours0=$(cpu_ours "${PIDS[@]}")
    canary_start "$f.canary" "$dur"
    t0=$(now_ns)
    wrk -t"$THREADS" -c"$CONNS" -d"${dur}s" --latency "${extra[@]}" \
        "http://127.0.0.1:$(port_of "$s")/" >"$f.wrk" &
    WRK_PID=$!
    for ((i = 1; i <= n; i++)); do
        target=$((t0 + i * dur * 1000000000 / (n + 1)))
        now=$(now_ns)
        if ((now < target)); then
            sleep "$(awk -v d=$((target - now)) 'BEGIN { printf "%.3f", d / 1e9 }')"
        else
            late=$((late + 1))
        fi
        flip_body "$s"
        ts=$(now_ns)
        rc=0
        "${rcmd[@]}" >>"$f.out" 2>&1 || rc=$?
        te=$(now_ns)
        # i, start (ms after wrk started), duration of the command (ms), exit code
        echo "$i $(((ts - t0) / 1000000)) $(awk -v d=$((te - ts)) 'BEGIN { printf "%.1f", d / 1e6 }') $rc" \
            >>"$f.reloads"
        if ((i == (n + 1) / 2)); then
            # Halfway, a quarter of an interval after a reload: processes and connections.
            sleep "$(awk -v d="$dur" -v n="$n" 'BEGIN { printf "%.3f", d / (n + 1) / 4 }')"
            mid=$(nprocs "$s")
            conns_per_process "$(port_of "$s")" >"$f.conns"
        fi
    done
    if ((n == 0)); then
        sleep "$(awk -v d="$dur" 'BEGIN { print d / 2 }')"
        mid=$(nprocs "$s")
        conns_per_process "$(port_of "$s")" >"$f.conns"
    fi
    wait "$WRK_PID" || die "wrk failed against $s"
    WRK_PID=
    canary_wait
    busy1=$(cpu_busy) ours1=$(cpu_ours "${PIDS[@]}") t1=$(now_ns)
    other_cpu "$busy0" "$busy1" "$ours0" "$ours1" "$t0" "$t1" >"$f.cpu"
    echo "$late" >"$f.late"
    echo "$mid" >"$f.procs_mid"
    nprocs "$s" >"$f.procs_end"
    sleep 1
    nprocs "$s" >"$f.procs_end1"
    log_since "$s" "$ll0" >"$f.log"
    grep -E 'requests in|Socket errors|Non-2xx' "$f.wrk" | sed 's/^/    /' >&2 || true
    printf '    other processes used %s%% of the CPUs; stall canary: %s\n' "$(cat "$f.cpu")" \
        "$(cat "$f.canary")" >&2
    if [[ $v == close ]]; then sleep 1; fi # let TIME_WAIT sockets not crowd the next run
}

for v in "${VARIANTS[@]}"; do
    for s in "${SERVERS[@]}"; do
        log "$v: $s, ${DUR}s with $NRELOADS reloads"
        run_load "$v" "$s" "$DUR" "$NRELOADS" reload
    done
done
if ((BASE_DUR > 0)); then
    for v in "${VARIANTS[@]}"; do
        for s in "${SERVERS[@]}"; do
            log "$v: $s, ${BASE_DUR}s without reloads (reference)"
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

# --- report ----------------------------------------------------------------------
TABLES=$TMP/tables.md
python3 - "$TMP" "$DUR" "$NRELOADS" "$BASE_DUR" "$LAT_RELOADS" "${VARIANTS[@]}" >"$TABLES" <<'PY'
import contextlib, io, json, os, re, statistics, sys
from pathlib import Path
import lib

tables = io.StringIO()
_redirect = contextlib.redirect_stdout(tables)
_redirect.__enter__()

tmp, dur, nrel, base_dur, lat_n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), \
    int(sys.argv[4]), int(sys.argv[5])
variants = sys.argv[6:]
servers = ["molt", "nginx", "haproxy"]
title = {"keepalive": "keep-alive", "close": "Connection: close"}

# A run during which something else used the machine, or the machine stalled, is marked (lib.mark).
from lib import read, med, mx, f1, mark

def reconfigured(text):
    return len(re.findall(r"received from \d+, reconfiguring", text))

def reloaded(text):
    return text.count("Loading success.")

def committed_ms(text):
    return [float(x) for x in re.findall(r"^committed generation \d+ in (\d+) ms", text, re.M)]

summary = []

# Reload latency.
if lat_n:
    lat = {}
    for s in servers:
        recs = [json.loads(l) for l in (tmp / "lat" / f"{s}.jsonl").read_text().splitlines()]
        lat[s] = {
            "first": med(r["first_new_ms"] for r in recs), "first_max": mx(r["first_new_ms"] for r in recs),
            "cmd": med(r["cmd_ms"] for r in recs),
            "printed": med(x for r in recs for x in committed_ms(r["output"])),
            "old_after": sum(1 for r in recs if r["last_old_ms"] is not None),
            "last_old": mx(r["last_old_ms"] for r in recs),
            "poll_err": sum(r["poll_errors"] for r in recs), "other": sum(r["other"] for r in recs),
            "failed": sum(1 for r in recs if r["rc"] != 0),
            "recs": recs, "procs": read(tmp / "lat" / f"{s}.procs"),
            "canary": read(tmp / "lat" / f"{s}.canary"),
        }
    print("### Reload latency (no load)\n")
    print(f"{lat_n} reloads per server, one at a time, 0.5 s apart. Times in ms from starting the reload "
          "command to the end of the first response carrying the new body (GET / over a fresh "
          "connection, polled about every millisecond), and to the command's return.\n")
    print("| server | first new response, median | max | command returned, median | molt's own figure, median "
          "| reloads where an old body came after a new one | latest such old body (ms) | failed polls (connect/read) | other responses "
          "| reload commands that failed | stall canary |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for s in servers:
        x = lat[s]
        print(f"| {mark(s, '-', x['canary'], 'reload latency')} | {f1(x['first'])} | {f1(x['first_max'])} | {f1(x['cmd'])} | "
              f"{f1(x['printed']) if s == 'molt' else 'n/a'} | {x['old_after']} | {f1(x['last_old'])} | {x['poll_err']} | {x['other']} | {x['failed']} | {x['canary']} |")
    rn = lat["molt"]["first"] / lat["nginx"]["first"]
    rh = lat["molt"]["first"] / lat["haproxy"]["first"]
    print(f"\nRatios of the median time to the first new response: **molt/nginx = {rn:.2f}**, "
          f"**molt/haproxy = {rh:.2f}**.\n")
    print("Every reload (ms; first new response / command returned):\n")
    print("| # | " + " | ".join(servers) + " |")
    print("|---:|" + "---|" * len(servers))
    for i in range(lat_n):
        cells = []
        for s in servers:
            r = lat[s]["recs"][i]
            cells.append(f"{f1(r['first_new_ms'] or float('nan'))} / {f1(r['cmd_ms'] or float('nan'))}")
        print(f"| {i + 1} | " + " | ".join(cells) + " |")
    print()
    if os.environ.get("BENCH_DATA"):  # for bench/run.sh
        with open(os.path.join(os.environ["BENCH_DATA"], "reload-latency.tsv"), "w") as f:
            for s in servers:
                x = lat[s]
                f.write(f"{s}\t{x['first']:.1f}\t{x['first_max']:.1f}\t{x['cmd']:.1f}\t{x['printed']:.1f}\t"
                        f"{x['old_after']}\t{lat_n}\n")
    summary.append(("Reload latency, median ms to the first new response (max; command returned)",
                    [f"{s:8} {f1(lat[s]['first']):>8} ({f1(lat[s]['first_max'])}; {f1(lat[s]['cmd'])})"
                     for s in servers] + [f"molt/nginx = {rn:.2f}   molt/haproxy = {rh:.2f}"]))

# Under load.
def load_row(tag, v, s):
    f = tmp / "load" / f"{tag}.{v}.{s}"
    w = lib.wrk(f.with_name(f.name + ".wrk"))
    rel = [l.split() for l in read(f.with_name(f.name + ".reloads"), "").splitlines() if l.strip()]
    out = read(f.with_name(f.name + ".out"), "")
    w.update({
        "sent": len(rel), "rc_fail": sum(1 for r in rel if r[3] != "0"),
        "cmd_med": med(float(r[2]) for r in rel), "cmd_max": mx(float(r[2]) for r in rel),
        "late": read(f.with_name(f.name + ".late")),
        "committed": len(re.findall(r"^committed generation", out, re.M)),
        "rolled": len(re.findall(r"rolled back|rejected", out)),
        "printed": committed_ms(out),
        "log": read(f.with_name(f.name + ".log"), ""),
        "cpu": read(f.with_name(f.name + ".cpu")),
        "conns": read(f.with_name(f.name + ".conns")),
        "canary": read(f.with_name(f.name + ".canary")),
        "procs": "/".join(read(f.with_name(f.name + x)) for x in (".procs_mid", ".procs_end", ".procs_end1")),
    })
    return w

for v in variants:
    rows = {s: load_row("reload", v, s) for s in servers}
    base = {s: load_row("base", v, s) for s in servers} if base_dur else None
    print(f"### Under load with reloads: {title[v]}\n")
    hdr = " -H 'Connection: close'" if v == "close" else ""
    print(f"`wrk -t2 -c64 -d{dur}s --latency{hdr}`, "
          f"{nrel} reloads at a fixed interval of {dur / (nrel + 1):.2f} s.\n")
    print("| server | requests | req/s | socket errors connect/read/write/timeout | non-2xx/3xx "
          "| p99 (ms) | max (ms) | reloads sent | reload command, median / max (ms) | slots overrun "
          "| server processes mid-run / at end / 1 s later | conns per process mid-run | other CPU % | stall canary |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|---:|---|")
    for s in servers:
        x = rows[s]
        print(f"| {mark(s, x['cpu'], x['canary'], title[v] + ' with reloads')} | {x['requests']} | {x['rps']:.0f} | {'/'.join(map(str, x['errs']))} | {x['non2xx']} | "
              f"{x['p99']:.2f} | {x['max']:.2f} | {x['sent']} | {f1(x['cmd_med'])} / {f1(x['cmd_max'])} | "
              f"{x['late']} | {x['procs']} | {x['conns']} | {x['cpu']} | {x['canary']} |")
    m = rows["molt"]
    print(f"\nmolt: **{m['committed']} of {m['sent']} reloads committed** ({m['rolled']} rolled back or rejected, "
          f"{m['rc_fail']} moltctl exits != 0); reload time printed by moltctl: median "
          f"{f1(med(m['printed']))} ms, max {f1(mx(m['printed']))} ms. "
          f"nginx: {reconfigured(rows['nginx']['log'])} \"reconfiguring\" notices in its error log; "
          f"HAProxy: {reloaded(rows['haproxy']['log'])} \"Loading success\" notices from the master "
          f"(one per completed reload). Warnings or errors in molt's log during the run: "
          f"{len(rows['molt']['log'].splitlines())}.\n")
    print(f"Ratios of req/s: molt/nginx = {m['rps'] / rows['nginx']['rps']:.2f}, "
          f"molt/haproxy = {m['rps'] / rows['haproxy']['rps']:.2f}. Errors are counts, no ratio.\n")
    if base:
        print(f"Reference, same load for {base_dur} s without reloads:\n")
        print("| server | req/s | socket errors c/r/w/t | non-2xx/3xx | p99 (ms) | max (ms) "
              "| req/s with reloads / without | conns per process mid-run | other CPU % | stall canary |")
        print("|---|---:|---|---:|---:|---:|---:|---|---:|---|")
        for s in servers:
            b = base[s]
            print(f"| {mark(s, b['cpu'], b['canary'], title[v] + ' without reloads')} | {b['rps']:.0f} | {'/'.join(map(str, b['errs']))} | {b['non2xx']} | "
                  f"{b['p99']:.2f} | {b['max']:.2f} | {rows[s]['rps'] / b['rps']:.2f} | {b['conns']} | {b['cpu']} | {b['canary']} |")
        print()
    lines = [f"{s:8} {rows[s]['rps']:>9.0f} req/s  errors c/r/w/t {'/'.join(map(str, rows[s]['errs'])):>12}  "
             f"non-2xx {rows[s]['non2xx']:>5}  p99 {rows[s]['p99']:>7.2f} ms  max {rows[s]['max']:>8.2f} ms"
             f"  [other CPU {rows[s]['cpu']}%, canary {rows[s]['canary']}]"
             for s in servers]
    lines.append(f"molt: {m['committed']}/{m['sent']} committed, moltctl's reload time median "
                 f"{f1(med(m['printed']))} ms, max {f1(mx(m['printed']))} ms")
    summary.append((f"Under load with {nrel} reloads, {title[v]}", lines))
    if os.environ.get("BENCH_DATA"):  # for bench/run.sh
        with open(os.path.join(os.environ["BENCH_DATA"], "reload-load.tsv"), "a") as f:
            for s in servers:
                x = rows[s]
                f.write(f"{v}\t{s}\t{x['rps']:.0f}\t{'/'.join(map(str, x['errs']))}\t{x['non2xx']}\t"
                        f"{x['p99']:.2f}\t{x['max']:.2f}\t{x['committed'] if s == 'molt' else ''}\t{x['sent']}\n")

_redirect.__exit__(None, None, None)
lib.flag_note(summary)
print(tables.getvalue(), end="")

for t, lines in summary:
    print(f"\n{t}:", file=sys.stderr)
    for l in lines:
        print(f"  {l}", file=sys.stderr)
PY

INTERVAL=$(awk -v d="$DUR" -v n="$NRELOADS" 'BEGIN { printf "%.2f", d / (n + 1) }')
# Markdown wants literal backticks inside single-quoted formats.
# shellcheck disable=SC2016
{
    printf '# molt reload benchmark results\n\n'
    printf 'Generated by `bench/reload.sh` (see bench/README.md). Do not edit by hand.\n\n'
    meta_date
    meta_machine
    meta_molt
    meta_peers
    printf -- '- Reloads under load: %s per wrk run of %s s (one every %s s); reload latency: %s reloads per server\n\n' \
        "$NRELOADS" "$DUR" "$INTERVAL" "$LAT_RELOADS"
    printf 'All three servers run on 127.0.0.1 with 2 workers (molt, nginx: 2 worker processes; '
    printf 'HAProxy: 2 threads in one worker process) and answer `GET /` with `hello 1\\n` or '
    printf '`hello 2\\n` (8 bytes). Every reload first makes the other body the live config, so each '
    printf 'reload really deploys something, and the body tells which generation answered. wrk, '
    printf 'the poller and the three servers share the same %s CPU(s): absolute figures are low and ' "$(nproc)"
    printf 'noisy, and latency percentiles suffer from coordinated omission.\n\n'
    printf '## What a reload is, per server\n\n'
    printf -- '- **molt**: `moltctl -s SOCK reload`, which returns once the reload is over: parse and '
    printf 'validate the config, copy the plugin, fork 2 new workers that load it (not accepting yet), '
    printf 'hand over: the old workers stop accepting and close their connections politely (busy '
    printf 'keep-alive connections get `Connection: close` on their next response, idle ones close after '
    printf '`idle_grace_ms` = 100), the (empty) plugin state moves over, the new workers start accepting; '
    printf 'send each new worker the health request through its own pipeline and run the plugin health '
    printf 'checks, commit, and the old workers exit once their connections are done. The config sets `"reload": {"health": {"stable_ms": 0}}`, so no '
    printf 'time is spent watching the new generation serve alone (default 500 ms): the reload time '
    printf 'measured is the mechanism only. "committed generation N in X ms" is moltctl'"'"'s own figure.\n'
    printf -- '- **nginx**: `nginx -s reload` (a new nginx process parses the config to find the pid '
    printf 'file and sends SIGHUP to the master, then exits). The master re-reads the config, forks '
    printf '2 new workers and tells the old ones to quit gracefully (they stop accepting, finish '
    printf 'requests in flight and close keep-alive connections). The command returns as soon as '
    printf 'the signal is sent, so its duration says nothing about when the reload is done.\n'
    printf -- '- **HAProxy**: master-worker mode (`-W`), `kill -USR2 <master pid>`. The master '
    printf 're-executes itself, parses the config, forks a new worker that takes the listening '
    printf 'sockets over from the old one through the master'"'"'s socketpair (seamless reload, '
    printf 'the default in master-worker mode in 2.6), and the old worker is told to finish (SIGUSR1: '
    printf 'unbind, finish what is in flight, close keep-alive connections). `kill` returns at once.\n\n'
    printf 'So only molt'"'"'s command time is a reload time; the comparable figure across the three '
    printf 'is the time to the first response from the new configuration.\n\n'
    printf '## How to read the numbers\n\n'
    printf -- '- wrk counts: **connect** errors (connection refused or failed), **read** errors '
    printf '(the connection was reset, or closed with a request sent and no response: the race '
    printf 'between a server closing an idle keep-alive connection and a client reusing it; real '
    printf 'HTTP clients retry an idempotent request then, wrk does not), **write** errors, '
    printf '**timeout** (no response within 2 s). Each is a request wrk lost or a connection '
    printf 'it had to reopen. **non-2xx/3xx** are responses with another status. All are counts over '
    printf 'the whole run, from the same number of reloads for every server.\n'
    printf -- '- p99 and max latency are wrk'"'"'s, over the whole run, reloads included; the max is '
    printf 'often one reload'"'"'s stall.\n'
    printf -- '- "reload command" is the wall time of the command the script ran (moltctl blocks until '
    printf 'commit; `nginx -s reload` and `kill` return at once). "slots overrun" counts reloads '
    printf 'that started late because the previous command was still running.\n'
    printf -- '- "server processes" counts the started process and all its descendants (molt: moltd '
    printf '+ workers; nginx: master + workers; HAProxy: master + worker(s)) at mid-run, just after '
    printf 'wrk ended and 1 s later: old workers still draining show up here. Idle: 3 for molt and '
    printf 'nginx, 2 for HAProxy (master + one worker with 2 threads).\n'
    printf -- '- "conns per process" is an `ss` snapshot halfway through the run (a quarter of an '
    printf 'interval after a reload) of how the established connections were spread over the '
    printf 'server'"'"'s processes, largest first (HAProxy: one worker process, threads not told apart; '
    printf 'with Connection: close it is a momentary count). With keep-alive and no reloads, where '
    printf 'wrk'"'"'s 64 connections landed at the start decides how evenly the two workers are loaded '
    printf 'for the whole run, and so the req/s; reloads re-spread them every interval.\n'
    printf -- '- "other CPU %%" is the share of all CPUs'"'"' time (user, system, irq, softirq) used '
    printf 'during the run by processes other than the servers, wrk and the script (kernel threads '
    printf 'such as ksoftirqd count as other, so a few %% can be this benchmark'"'"'s own network '
    printf 'work). "stall canary" '
    printf 'is a process that sleeps 5 ms at a time during the run: how many times it woke more than '
    printf '20 ms late, and the worst. On this saturated but otherwise idle machine it wakes within a '
    printf 'few ms; a late canary means the whole machine (or VM) stalled, and a max latency of the '
    printf 'same size in that run is the machine'"'"'s, not the server'"'"'s. A run with either well above '
    printf 'zero is less trustworthy.\n'
    printf -- '- Reload latency: the poller (Python, one fresh TCP connection per GET, '
    printf '`Connection: close`, about 1 ms apart) times from just before it starts the reload command '
    printf 'to the end of the first response carrying the new body, so the figure includes starting '
    printf 'the command (a fork/exec, and for nginx the config parse of `nginx -s`) and up to about '
    printf '1 ms of polling granularity. "old body after a new one" counts reloads during which '
    printf 'a response from the old configuration came after the first one from the new.\n\n'
    printf '## Results\n\n'
    cat "$TABLES"
    printf '## How it was run\n\n'
    md_build
    printf 'Servers (`$TMP` is a fresh `mktemp -d`, `$REPO` the checkout):\n\n```\n'
    cmdline "${MOLT_CMD[@]}" | rel
    cmdline "${NGINX_CMD[@]}" | rel
    cmdline "${HAPROXY_CMD[@]}" | rel
    printf '```\n\nReload commands (before each one, the live config is replaced by the other variant):\n\n```\n'
    for s in molt nginx; do
        mapfile -t rcmd < <(reload_argv "$s")
        cmdline "${rcmd[@]}" | rel
    done
    echo 'kill -USR2 <pid of the haproxy -W master>'
    printf '```\n\nLoad, per server, with the reloads running alongside:\n\n```\n'
    wrk_cmdlines
    printf '```\n\n'
    if ((BASE_DUR > 0)); then
        printf 'Reference runs: the same with `-d%ss` and no reloads, after all reload runs.\n\n' "$BASE_DUR"
    fi
    printf 'Order: reload latency (molt, nginx, HAProxy), %s warm-up of %s s per server, then per variant '  "wrk" "$WARMUP"
    printf 'molt, nginx, HAProxy under reloads, then the reference runs.\n\n'
    fence 'molt config (variant 1; variant 2 differs in the body only)' "$MOLT_CONF.1" json | rel
    fence 'nginx config (variant 1)' "$NGINX_CONF.1" nginx | rel
    fence 'HAProxy config (variant 1)' "$HAPROXY_CONF.1" | rel
    printf '## At the end\n\n'
    for s in "${SERVERS[@]}"; do
        fence "$s response ($(cat "$TMP/$s/procs_final") server processes)" "$TMP/$s/response.txt" http
    done
    fence '`moltctl status`' "$TMP/molt/status.txt" | rel
    printf '## Server logs\n\n'
    printf 'Last %s lines of each (molt at level warn, nginx at notice).\n\n' "$LOGLINES"
    log_tails "$LOGLINES" molt/stderr.log nginx/error.log haproxy/stderr.log
} >"$TMP/RESULTS.md"
mv "$TMP/RESULTS.md" "$OUT"
log "wrote ${OUT#"$ROOT"/}"
