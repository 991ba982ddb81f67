#!/usr/bin/env bash
# bench/scaling.sh: how molt's reload time grows with the number of plugins and of workers,
# and what one hook callback costs.
#
# Installs what is missing (Debian, scripts/deps.sh), builds molt in Release mode into
# build-bench/, compiles bench/filter.c (a plugin whose four transaction hooks do nothing),
# and runs three parts, each moltd on a free 127.0.0.1 port in a fresh temp dir:
#
#   a. reload time against plugin count: 1, 10 and 50 plugin instances, 2 workers. Every
#      instance is its own .so file: hello.so plus N-1 copies of the filter under distinct
#      names (filter-01.so ...), so each generation hashes, copies and dlopens N files.
#      molt accepts several files whose descriptors carry the same plugin name ("filter");
#      only a singleton plugin refuses a second instance.
#   b. reload time against worker count: 1, 2, 4 and 8 workers, hello only.
#      For a and b: one uncounted warm-up reload, then BENCH_SCALING_RELOADS reloads of the
#      unchanged config, one at a time, each `moltctl reload --json` (must commit, or the
#      script fails); after each, the script waits until the old workers have exited, then
#      0.1 s. The config sets "reload": {"health": {"stable_ms": 0}}, so the figure is molt's
#      own work (prepare, spawn, handoff, verify, commit), not the 500 ms observation window.
#      Reported: total and per-phase ms from molt's reply (median, min, max), moltctl's wall
#      time, moltd's accept pause, and how long the old workers took to exit.
#   c. hook overhead: moltd (2 workers, hello) with 0, 8 and 32 instances of the filter
#      (one filter.so, 4 callbacks per instance per request: txn_start, request_headers,
#      response_headers, txn_end), wrk -t2 -c64 keep-alive, BENCH_ROUNDS interleaved rounds of
#      BENCH_DURATION s (0, 8, 32, 0, 8, 32, ...), 1 s warm-up each first. Reported per count:
#      median req/s, ratio to 0 filters, and ns per callback from the workers' own CPU time
#      (/proc/PID/schedstat) per request: (cpu_per_req_N - cpu_per_req_0) / (4 N); also the
#      machine-time formula (NCPU / rps_N - NCPU / rps_0) / (4 N), which assumes every CPU is
#      busy in both runs and nothing else runs. wrk shares the CPUs with moltd. Rounds during
#      which other processes used more than 10 % of the CPUs are flagged (!): contention moves
#      req/s and, by batching more requests per wakeup, CPU per request by more than the
#      callbacks cost, so run this part on a quiet machine.
#
# Writes markdown to ${BENCH_OUT:-bench/RESULTS-scaling.md}; with BENCH_DATA set (a
# directory, created if missing), also these tab-separated files, one header line, numbers
# below (per-phase columns are medians; commit_ms as moltd reports it, see the results file):
#   $BENCH_DATA/scaling-plugins.tsv  plugins median_ms min_ms max_ms prepare_ms spawn_ms handoff_ms verify_ms commit_ms
#   $BENCH_DATA/scaling-workers.tsv  workers median_ms min_ms max_ms prepare_ms spawn_ms handoff_ms verify_ms commit_ms
#   $BENCH_DATA/hooks.tsv            filters callbacks rps_median ratio ns_per_callback
#
# Environment:
#   BENCH_SCALING_RELOADS  reloads per plugin/worker count (default 20)
#   BENCH_DURATION         seconds per wrk run in part c (default 10)
#   BENCH_ROUNDS           rounds per filter count in part c (default 3)
#   BENCH_OUT              markdown output (default bench/RESULTS-scaling.md)
#   BENCH_DATA             directory for the TSV files (default: none written)
#   BENCH_KEEP_TMP         1 = keep the temp dir (configs, logs, raw outputs)
#
# Quick smoke (about 40 s): BENCH_SCALING_RELOADS=3 BENCH_DURATION=2 BENCH_ROUNDS=1 bench/scaling.sh
# Full run (about 3 minutes): bench/scaling.sh
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RELOADS=${BENCH_SCALING_RELOADS:-20}
DUR=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
PLUGIN_COUNTS=(1 10 50)
WORKER_COUNTS=(1 2 4 8)
FILTER_COUNTS=(0 8 32)
THREADS=2
CONNS=64
WARMUP=1

need_int BENCH_SCALING_RELOADS "$RELOADS" 1
need_int BENCH_DURATION "$DUR" 1
need_int BENCH_ROUNDS "$ROUNDS" 1

bench_init scaling
out_data scaling

# --- dependencies, build ---------------------------------------------------------
# shellcheck source=../scripts/deps.sh
source scripts/deps.sh
MOLT_DEPS+=(python3 procps iproute2)
molt_install_deps

build_molt moltd moltctl plugins/hello.so

# --- temp dir, cleanup -------------------------------------------------------------
bench_tmp molt-scaling

# --- plugins -------------------------------------------------------------------------
# plugins/: hello.so, filter.so, and filter-01.so ... filter-49.so (byte-identical copies
# under distinct names: distinct files, hashes, generation copies and dlopen handles).
PLUGDIR=$TMP/plugins
mkdir -p "$PLUGDIR"
FILTER_CC=(cc -O2 -shared -fPIC -Wall -Wextra -Werror -Iinclude -o "$PLUGDIR/filter.so" bench/filter.c)
"${FILTER_CC[@]}"
cp build-bench/plugins/hello.so "$PLUGDIR/"
maxp=0
for n in "${PLUGIN_COUNTS[@]}"; do ((n > maxp)) && maxp=$n; done
for ((i = 1; i < maxp; i++)); do cp "$PLUGDIR/filter.so" "$PLUGDIR/$(printf 'filter-%02d.so' "$i")"; done
chmod 0755 "$PLUGDIR"/*.so

# molt_conf NAME PORT WORKERS DISTINCT_FILTERS SHARED_FILTERS -> $TMP/NAME/molt.json
# DISTINCT_FILTERS instances f01.. of filter-01.so..; SHARED_FILTERS instances s00.. of filter.so.
molt_conf() {
    local name=$1 port=$2 workers=$3 nd=$4 ns=$5 i plugins dir=$TMP/$1
    mkdir -p "$dir/run"
    chmod 700 "$dir/run"
    plugins='    {"name": "hello", "file": "hello.so", "config": {"body": "hello\n"}}'
    for ((i = 1; i <= nd; i++)); do
        plugins+=$(printf ',\n    {"name": "f%02d", "file": "filter-%02d.so"}' "$i" "$i")
    done
    for ((i = 0; i < ns; i++)); do
        plugins+=$(printf ',\n    {"name": "s%02d", "file": "filter.so"}' "$i")
    done
    molt_config "$dir" "$port" "$workers" "$PLUGDIR" $'\n'"$plugins"$'\n  ' \
        '{"prefix": "/", "plugin": "hello"}' '"health": {"stable_ms": 0}' >"$dir/molt.json"
    "$MOLTD" -c "$dir/molt.json" -t >"$dir/check.log" 2>&1 ||
        { cat "$dir/check.log" >&2; die "moltd -t rejected $dir/molt.json"; }
}

# start_molt NAME PORT: starts moltd on $TMP/NAME/molt.json, waits until it answers hello
# and its workers are up; sets MOLT_PID.
start_molt() {
    local name=$1 port=$2 dir=$TMP/$1
    start "$name" "$MOLTD" -c "$dir/molt.json"
    MOLT_PID=$(pid_of "$name")
    wait_ready "$name" "moltd ($name)" "ready on 127.0.0.1:$port" molt_up "$port" "$dir/run/control.sock"
}
molt_up() { # port sock: answers hello, in a generation whose workers are all ready
    answers "http://127.0.0.1:$1/" hello &&
        "$MOLTCTL" -s "$2" status --json 2>/dev/null |
        python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s.get("state")=="running" and s["generation"] and all(w["state"]=="ready" for w in s["workers"]) else 1)'
}

# --- a, b: reload series ---------------------------------------------------------------
# reloads.py MOLTCTL SOCK MOLTD_PID WORKERS WARMUPS COUNT OUT.jsonl LABEL
cat >"$TMP/reloads.py" <<'PY'
import json, subprocess, sys, time
from lib import children, committed, reloaded

moltctl, sock, mpid, nworkers, warm, count, out, label = sys.argv[1:9]
mpid, nworkers, warm, count = int(mpid), int(nworkers), int(warm), int(count)

def busy():  # machine-wide busy and total clock ticks
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6], sum(v[:8])

b0 = busy()
with open(out, "w") as f:
    for i in range(-warm + 1, count + 1):
        old = children(mpid)
        if len(old) != nworkers:
            sys.exit(f"{label}: moltd has {len(old)} children before reload {i}, expected {nworkers}")
        t0 = time.perf_counter()
        p = subprocess.run([moltctl, "-s", sock, "reload", "--json"], capture_output=True, text=True)
        t1 = time.perf_counter()
        o = committed(p, f"{label}: reload {i}")
        # Old workers gone, the new ones (nworkers of them) in place.
        reloaded(mpid, old, nworkers, t1, f"{label}: reload {i}")
        t2 = time.perf_counter()
        ph = o.get("phases", {})
        named = ("prepare", "spawn", "handoff", "verify")
        rec = {"i": i, "ms": o["ms"], "generation": o.get("generation"),
               "phases": {k: ph.get(k) for k in named},
               "commit_reported": ph.get("commit"),
               # moltd before the fix that times commit into its reply lacked "commit": derived
               # as total - the other phases, which telescope to exactly that.
               "commit": ph["commit"] if "commit" in ph else o["ms"] - sum(ph.get(k) or 0 for k in named),
               "extra_phases": {k: v for k, v in ph.items() if k not in named + ("commit",)},
               "wall_ms": (t1 - t0) * 1e3, "gone_ms": (t2 - t1) * 1e3,
               "pause_ms": (o.get("handoff") or {}).get("accept_pause_ms")}
        f.write(json.dumps(rec) + "\n")
        tag = "warm-up" if i <= 0 else f"{i}/{count}"
        print(f"    {label} reload {tag}: {o['ms']} ms (" +
              " ".join(f"{k} {rec['phases'][k]}" for k in named) + f" commit {rec['commit']}); "
              f"moltctl {rec['wall_ms']:.1f} ms; old workers gone {rec['gone_ms']:.1f} ms later", file=sys.stderr)
        time.sleep(0.1)
b1 = busy()
with open(out + ".busy", "w") as f:
    f.write("%.0f\n" % (100.0 * (b1[0] - b0[0]) / max(1, b1[1] - b0[1])))
PY

reload_series() { # part value workers distinct_filters
    local part=$1 val=$2 workers=$3 nd=$4 name port
    name=$part-$val
    port=$(free_port)
    molt_conf "$name" "$port" "$workers" "$nd" 0
    start_molt "$name" "$port"
    log "$name: $workers worker(s), $((nd + 1)) plugin file(s); 1 warm-up + $RELOADS reloads"
    run_helper python3 "$TMP/reloads.py" "$MOLTCTL" "$TMP/$name/run/control.sock" "$MOLT_PID" "$workers" 1 "$RELOADS" \
        "$TMP/$name/reloads.jsonl" "$name" || die "$name: reload series failed (log: $TMP/$name/stderr.log)"
    "$MOLTCTL" -s "$TMP/$name/run/control.sock" status >"$TMP/$name/status.txt" 2>&1 || true
    # How many plugin files one worker has mapped from its generation directory: each
    # instance's own file, loaded separately (expected: the plugin count).
    local w
    w=$(pgrep -P "$MOLT_PID" | head -n 1 || true)
    { grep -o '/gen-[^ ]*\.so$' "/proc/$w/maps" 2>/dev/null || true; } | sort -u | wc -l >"$TMP/$name/mapped"
    kill -0 "$MOLT_PID" 2>/dev/null || die "moltd ($name) died"
    stop_server "$MOLT_PID"
}

for n in "${PLUGIN_COUNTS[@]}"; do reload_series plugins "$n" 2 $((n - 1)); done
for w in "${WORKER_COUNTS[@]}"; do reload_series workers "$w" "$w" 0; done

# --- c: hook overhead ---------------------------------------------------------------------
mkdir -p "$TMP/hooks"
HOOK_PIDS=()
for n in "${FILTER_COUNTS[@]}"; do
    port=$(free_port)
    printf -v "HPORT_$n" '%s' "$port"
    molt_conf "hooks-$n" "$port" 2 0 "$n"
    start_molt "hooks-$n" "$port"
    printf -v "HPID_$n" '%s' "$MOLT_PID"
    HOOK_PIDS+=("$MOLT_PID")
done

# CPU accounting (lib.sh): the machine's user+nice+system+irq+softirq, and ours: the moltd
# trees plus this shell's reaped children (wrk, curl, ...).
# CPU time in ns (schedstat's first field) of the given pids, summed
cpu_ns() {
    local p
    for p in "$@"; do awk '{ print $1 }' /proc/"$p"/schedstat 2>/dev/null || echo 0; done |
        awk '{ t += $1 } END { printf "%.0f\n", t }'
}
log "hooks: warm-up ${WARMUP}s per filter count"
for n in "${FILTER_COUNTS[@]}"; do
    v="HPORT_$n"
    warm_up "${!v}"
done
for ((r = 1; r <= ROUNDS; r++)); do
    for n in "${FILTER_COUNTS[@]}"; do
        v="HPORT_$n" port=${!v}
        v="HPID_$n" mpid=${!v}
        kill -0 "$mpid" 2>/dev/null || die "moltd (hooks-$n) died"
        mapfile -t wpids < <(pgrep -P "$mpid" || true)
        ((${#wpids[@]} == 2)) || die "moltd (hooks-$n) has ${#wpids[@]} workers, expected 2"
        f=$TMP/hooks/$n.$r
        log "hooks round $r/$ROUNDS: $n filter(s), $((4 * n)) callbacks per request (${DUR}s)"
        busy0=$(cpu_busy) ours0=$(cpu_ours "${HOOK_PIDS[@]}") t0=$(now_ns)
        w0=$(cpu_ns "${wpids[@]}") s0=$(cpu_ns "$mpid")
        wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" --latency "http://127.0.0.1:$port/" >"$f.wrk" &
        WRK_PID=$!
        sleep "$(awk -v d="$DUR" 'BEGIN { print d / 2 }')"
        conns_per_process "$port" >"$f.conns"
        wait "$WRK_PID" || die "wrk failed against hooks-$n"
        WRK_PID=
        w1=$(cpu_ns "${wpids[@]}") s1=$(cpu_ns "$mpid")
        busy1=$(cpu_busy) ours1=$(cpu_ours "${HOOK_PIDS[@]}") t1=$(now_ns)
        echo "$((w1 - w0)) $((s1 - s0))" >"$f.cpu_ns"
        other_cpu "$busy0" "$busy1" "$ours0" "$ours1" "$t0" "$t1" >"$f.other"
        grep -E 'Requests/sec|Socket errors|Non-2xx' "$f.wrk" | sed 's/^/    /' >&2 || true
        printf '    connections per worker at mid-run: %s; other processes used %s%% of the CPUs\n' \
            "$(cat "$f.conns")" "$(cat "$f.other")" >&2
    done
done
for n in "${FILTER_COUNTS[@]}"; do
    v="HPID_$n"
    kill -0 "${!v}" 2>/dev/null || die "moltd (hooks-$n) died during the benchmark"
done

# --- report ---------------------------------------------------------------------------------
{
    meta_date
    meta_machine "; $(ram_gb) RAM"
    echo "- Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    meta_molt
    echo "- Compiler: \`$(cc --version | head -n 1)\`; wrk: \`$(wrk_version)\`"
} >"$TMP/meta.md"
# Markdown wants literal backticks inside single-quoted formats.
# shellcheck disable=SC2016
{
    md_build "$(cmdline "${FILTER_CC[@]}" | rel)"
    printf 'Plugin directory `$TMP/plugins`: `hello.so` (build-bench/plugins), `filter.so`, and `filter-01.so` … '
    printf '`filter-%02d.so`, byte-identical copies of `filter.so`.\n\n' $((maxp - 1))
    printf 'moltd, per configuration: `%s`\n\n' "$(cmdline "$MOLTD" -c "$TMP/NAME/molt.json" | rel)"
    printf 'Reloads (a, b), one at a time: `%s`\n\n' "$(cmdline "$MOLTCTL" -s "$TMP/NAME/run/control.sock" reload --json | rel)"
    printf 'Load (c), per filter count and round: `wrk -t%s -c%s -d%ss --latency http://127.0.0.1:PORT/`\n\n' \
        "$THREADS" "$CONNS" "$DUR"
    printf 'Config of part a with 10 plugins (the others differ in the plugin list, the port and the paths):\n\n```json\n'
    rel <"$TMP/plugins-10/molt.json"
    printf '```\n\nConfig of part b with 4 workers:\n\n```json\n'
    rel <"$TMP/workers-4/molt.json"
    printf '```\n\nConfig of part c with 8 filters (0 and 32: the same with 0 or 32 `sNN` instances):\n\n```json\n'
    rel <"$TMP/hooks-8/molt.json"
    printf '```\n'
} >"$TMP/how.md"

python3 - "$TMP" "$OUT" "$DATA" "$RELOADS" "$DUR" "$ROUNDS" "$(nproc)" "${PLUGIN_COUNTS[*]}" "${WORKER_COUNTS[*]}" \
    "${FILTER_COUNTS[*]}" <<'PY'
import json, statistics, sys
from pathlib import Path
import lib

tmp, out, data = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
reloads, dur, rounds, ncpu = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
pcounts, wcounts, fcounts = ([int(x) for x in a.split()] for a in sys.argv[8:11])
PH = ("prepare", "spawn", "handoff", "verify", "commit")
med = statistics.median

def fmt(x, d=1):
    if isinstance(x, float) and x != x:
        return "-"
    return f"{x:.{d}f}" if isinstance(x, float) else str(x)

def series(name):
    recs = [json.loads(l) for l in (tmp / name / "reloads.jsonl").read_text().splitlines()]
    warm = [r for r in recs if r["i"] <= 0]
    recs = [r for r in recs if r["i"] > 0]
    for r in recs:
        for k in PH[:-1]:
            if r["phases"][k] is None:
                sys.exit(f"{name}: reload {r['i']}: molt's reply has no {k} phase")
    ms = [r["ms"] for r in recs]
    s = {"recs": recs, "warm": warm, "median": med(ms), "min": min(ms), "max": max(ms),
         "wall": med(r["wall_ms"] for r in recs), "gone": med(r["gone_ms"] for r in recs),
         "pause": med(r["pause_ms"] for r in recs if r["pause_ms"] is not None) if any(r["pause_ms"] is not None for r in recs) else float("nan"),
         "busy": (tmp / name / "reloads.jsonl.busy").read_text().strip(),
         "mapped": (tmp / name / "mapped").read_text().strip(),
         "commit_reported": any(r["commit_reported"] is not None for r in recs),
         "extra": sorted({k for r in recs for k in r["extra_phases"]})}
    for k in PH:
        v = [(r["commit"] if k == "commit" else r["phases"][k]) for r in recs]
        s[k] = (med(v), min(v), max(v))
    return s

def num(x):  # a TSV cell: numbers only
    if isinstance(x, float):
        return f"{x:.3f}".rstrip("0").rstrip(".") if x == x else "nan"
    return str(x)

lines = []
P = lines.append
tsv = {}
commit_reported = False
extra = set()
for part, key, counts, title in (("plugins", "plugins", pcounts, "a. Reload time against plugin count (2 workers)"),
                                 ("workers", "workers", wcounts, "b. Reload time against worker count (1 plugin: hello)")):
    P(f"## {title}\n")
    P(f"{reloads} reloads per row, after one warm-up reload (not counted). ms from molt's reply "
      "(`ms` and `phases`, whole milliseconds): median, and min–max for the total; per phase median "
      "(min–max). moltctl wall: the `moltctl reload --json` command as the script timed it (exec, "
      "connect, the reload, the reply). Accept pause: moltd's `handoff.accept_pause_ms`. Old workers "
      "gone: from moltctl's return until every old worker had exited. Machine busy: all CPUs' busy "
      "share during the series, molt's own work included. Files mapped: distinct plugin files from the "
      "generation directory in one worker's /proc/PID/maps after the series.\n")
    P(f"| {key} | total median | total min–max | " + " | ".join(PH) +
      " | moltctl wall median | accept pause median | old workers gone median | machine busy % | files mapped |")
    P("|---:|---:|---:|" + "---:|" * len(PH) + "---:|---:|---:|---:|---:|")
    rows = []
    for c in counts:
        s = series(f"{part}-{c}")
        commit_reported |= s["commit_reported"]
        extra |= set(s["extra"])
        P(f"| {c} | **{fmt(s['median'])}** | {s['min']}–{s['max']} | " +
          " | ".join(f"{fmt(s[k][0])} ({s[k][1]}–{s[k][2]})" for k in PH) +
          f" | {s['wall']:.1f} | {fmt(s['pause'])} | {s['gone']:.1f} | {s['busy']} | {s['mapped']} |")
        rows.append((c, s))
    P("")
    tsv[part] = rows
    P("Every reload (ms), in order; the warm-up reload first, in brackets:\n")
    P("```")
    for c, s in rows:
        P(f"{part}={c}")
        w = s["warm"][0] if s["warm"] else None
        def row(label, f, d=0):
            vals = [f(r) for r in s["recs"]]
            txt = " ".join(fmt(v, d) if isinstance(v, float) else str(v) for v in vals)
            wt = f"[{fmt(f(w), d) if isinstance(f(w), float) else f(w)}] " if w else ""
            P(f"  {label:<14} {wt}{txt}")
        row("total", lambda r: r["ms"])
        for k in PH:
            row(k, (lambda r: r["commit"]) if k == "commit" else (lambda r, k=k: r["phases"][k]))
        row("moltctl wall", lambda r: r["wall_ms"], 1)
        row("accept pause", lambda r: r["pause_ms"] if r["pause_ms"] is not None else "-")
        row("workers gone", lambda r: r["gone_ms"], 1)
    P("```\n")

# hooks
runs = {}
for n in fcounts:
    runs[n] = []
    for r in range(1, rounds + 1):
        f = tmp / "hooks" / f"{n}.{r}"
        w = lib.wrk(f.with_name(f.name + ".wrk"))
        w["errs"] = sum(w["errs"])
        wns, sns = (int(x) for x in f.with_name(f.name + ".cpu_ns").read_text().split())
        w.update({"worker_cpu_ns": wns, "sup_cpu_ns": sns, "cpu_per_req": wns / max(1, w["requests"]),
                  "conns": f.with_name(f.name + ".conns").read_text().strip(),
                  "other": f.with_name(f.name + ".other").read_text().strip()})
        runs[n].append(w)
base = fcounts[0]
assert base == 0
rps0 = med(x["rps"] for x in runs[0])
cpr0 = med(x["cpu_per_req"] for x in runs[0])
hooks = []
for n in fcounts:
    rps = med(x["rps"] for x in runs[n])
    cpr = med(x["cpu_per_req"] for x in runs[n])
    cb = 4 * n
    ns_cpu = (cpr - cpr0) / cb if cb else 0.0
    ns_wall = (ncpu / rps - ncpu / rps0) / cb * 1e9 if cb else 0.0
    hooks.append({"n": n, "cb": cb, "rps": rps, "ratio": rps / rps0, "cpr": cpr, "ns_cpu": ns_cpu, "ns_wall": ns_wall,
                  "p99": med(x["p99"] for x in runs[n]), "errs": sum(x["errs"] + x["non2xx"] for x in runs[n])})

P("## c. Hook overhead per callback (2 workers, hello)\n")
P(f"0, 8 and 32 instances of `bench/filter.c` (one `filter.so`), each a callback on txn_start, "
  f"request_headers, response_headers and txn_end that returns MOLT_CONTINUE: 4 callbacks per filter "
  f"per request. `wrk -t2 -c{64} -d{dur}s --latency`, keep-alive, {rounds} round(s) interleaved "
  f"({', '.join(map(str, fcounts))}, {', '.join(map(str, fcounts))}, …), a 1 s warm-up run per server "
  f"first. The three moltd run side by side for the whole part (idle when not measured). wrk shares "
  f"the machine's {ncpu} CPUs with moltd.\n")
P("| filters | callbacks / request | median req/s | ratio to 0 filters | worker CPU µs / request (median) "
  "| **ns / callback (worker CPU)** | ns / callback (machine-time formula) | p99 ms (median) | errors + non-2xx (all rounds) |")
P("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for h in hooks:
    ns_cpu = f"**{h['ns_cpu']:.1f}**" if h["cb"] else "-"
    ns_wall = f"{h['ns_wall']:.1f}" if h["cb"] else "-"
    P(f"| {h['n']} | {h['cb']} | {h['rps']:.0f} | {h['ratio']:.3f} | {h['cpr'] / 1e3:.2f} | "
      f"{ns_cpu} | {ns_wall} | {h['p99']:.2f} | {h['errs']} |")
P("")
P("- **ns / callback (worker CPU)** = (cpu_N − cpu_0) / callbacks_N, where cpu_N is the CPU time both "
  "workers used during the run (`/proc/PID/schedstat`, ns, user + system) divided by the requests wrk "
  "completed, median over the rounds. It counts the server's own work per request, so CPU time that wrk "
  "or another process takes does not enter it, and it is what `hooks.tsv` carries. It is not immune "
  "to a busy machine either: a worker that waits for a CPU finds more requests ready per wakeup and "
  "spends less CPU per request (on a shared machine, rounds flagged (!) below ran at about 6.5 µs per "
  "request where quiet ones ran at about 7.8, for the same config), which is larger than what the "
  "callbacks cost; only rounds on a quiet machine give a usable figure.")
P(f"- machine-time formula = ({ncpu} CPUs / rps_N − {ncpu} CPUs / rps_0) / callbacks_N × 1e9, with median "
  "req/s. It holds only if every CPU was busy in both runs, wrk's and the kernel's cost per request "
  "did not change, and nothing else ran; on this machine wrk shares the CPUs, so the two should agree "
  "roughly when the machine was otherwise idle (see \"other CPU %\").")
P("- The difference of two medians can be a few ns off either way from noise; a single-digit figure "
  "means \"too small to tell apart\" more than an exact cost.\n")
busy = [(r + 1, n) for r in range(rounds) for n in fcounts
        if runs[n][r]["other"].isdigit() and int(runs[n][r]["other"]) > 10]
if busy:
    P("**(!)** In " + ", ".join(f"round {r} with {n} filters" for r, n in busy) + " other processes used more "
      "than 10 % of the CPUs: the machine was shared, so req/s (and, less, CPU per request) say more about "
      "the machine than about molt there. Rerun on a quiet machine.\n")
else:
    P("No round was flagged: other processes never used more than 10 % of the CPUs.\n")
P("Every round:\n")
P("| round | filters | req/s | requests | worker CPU ms | µs / request | supervisor CPU ms | p50 ms | p99 ms "
  "| socket errors | non-2xx | conns per worker at mid-run | other CPU % |")
P("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
for r in range(rounds):
    for n in fcounts:
        x = runs[n][r]
        P(f"| {r + 1} | {n} | {x['rps']:.0f} | {x['requests']} | {x['worker_cpu_ns'] / 1e6:.0f} | "
          f"{x['cpu_per_req'] / 1e3:.2f} | {x['sup_cpu_ns'] / 1e6:.1f} | {x['p50']:.3f} | {x['p99']:.3f} | "
          f"{x['errs']} | {x['non2xx']} | {x['conns']} | {x['other']}{' (!)' if (r + 1, n) in busy else ''} |")
P("")
P("\"other CPU %\": the share of all CPUs' time (user, system, irq, softirq) used during the run by "
  "processes other than the three moltd, wrk and the script; well above a few %, something else "
  "used the machine during that round. \"conns per worker\": an `ss` snapshot at mid-run of how wrk's "
  "64 connections were spread over the two workers (it decides how evenly they are loaded for the "
  "whole run, and so the req/s; CPU per request depends on it too, less: a worker holding all 64 "
  "connections serves more requests per wakeup).\n")

notes = []
if not commit_reported:
    notes.append("molt's reload reply has no `commit` entry in `phases` (docs/control-protocol.md shows one): "
                 "the commit phase is timed when it is left, after the reply has been built. The commit "
                 "column is therefore derived as `ms` − (prepare + spawn + handoff + verify); the phases "
                 "are consecutive whole-ms intervals of one clock, so this is the time from entering commit "
                 "to the reply.")
if extra:
    notes.append("phases other than the five also appeared: " + ", ".join(sorted(extra)))

body = "\n".join(lines)
meta = (tmp / "meta.md").read_text()
how = (tmp / "how.md").read_text()
doc = f"""# molt scaling benchmark results

Generated by `bench/scaling.sh` (see bench/README.md). Do not edit by hand.

{meta}
What this measures: (a) how long a reload takes as the number of plugin instances grows (each
its own `.so`, so each generation hashes, copies and dlopens every one: `hello.so` plus N−1
byte-identical copies of `bench/filter.c` under distinct names; molt accepts several files
whose descriptors carry the same plugin name, only a singleton plugin refuses a second
instance), (b) the same as the number of workers grows, and (c) what one transaction hook
callback costs a request. For a and b every configuration sets `"reload": {{"health":
{{"stable_ms": 0}}}}`, so the reload time is molt's own work, not the 500 ms default observation
window; each reload deploys the unchanged config as a new generation, and the next one starts
only once the old workers have exited (plus 0.1 s). Figures on a shared or small machine are
noisy: compare rows of one run.

{"".join("- Note: " + n + chr(10) for n in notes)}
{body}
## How it was run

{how}"""
lib.write_atomic(out, doc)

if data:
    d = Path(data)
    d.mkdir(parents=True, exist_ok=True)
    for part in ("plugins", "workers"):
        with open(d / f"scaling-{part}.tsv", "w") as f:
            f.write("\t".join([part, "median_ms", "min_ms", "max_ms"] + [f"{k}_ms" for k in PH]) + "\n")
            for c, s in tsv[part]:
                f.write("\t".join(num(x) for x in [c, s["median"], s["min"], s["max"]] + [s[k][0] for k in PH]) + "\n")
    with open(d / "hooks.tsv", "w") as f:
        f.write("filters\tcallbacks\trps_median\tratio\tns_per_callback\n")
        for h in hooks:
            f.write("\t".join(num(x) for x in [h["n"], h["cb"], round(h["rps"], 1), round(h["ratio"], 4),
                                               round(h["ns_cpu"], 2)]) + "\n")

# terminal summary
for part, rows in tsv.items():
    print(f"\nreload time against {part}: median ms (min-max) / phases p s h v c", file=sys.stderr)
    for c, s in rows:
        print(f"  {c:>3}  {fmt(s['median']):>6} ({s['min']}-{s['max']})  " +
              " ".join(fmt(s[k][0]) for k in PH), file=sys.stderr)
print("\nhooks: filters callbacks req/s ratio ns/callback(cpu) ns/callback(machine)", file=sys.stderr)
for h in hooks:
    print(f"  {h['n']:>3} {h['cb']:>4} {h['rps']:>9.0f} {h['ratio']:.3f} {h['ns_cpu']:>7.1f} {h['ns_wall']:>7.1f}",
          file=sys.stderr)
PY
log "wrote $OUT"
if [[ -n $DATA ]]; then log "wrote $DATA/scaling-plugins.tsv, scaling-workers.tsv, hooks.tsv"; fi
