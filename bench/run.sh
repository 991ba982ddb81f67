#!/usr/bin/env bash
# bench/run.sh: every benchmark in one run, molt beside nginx and HAProxy on this machine,
# written up in bench/RESULTS.md with PNG plots in bench/plots/.
#
#   bench/run.sh                 # the full run (about 20 minutes on 2 cores)
#   BENCH_QUICK=1 bench/run.sh   # every part with short settings (a few minutes), to check the scripts
#
# Installs what it needs from Debian (nginx-light, haproxy, wrk, curl, gnuplot-nox, python3 and
# molt's build dependencies), builds molt in Release mode into build-bench/, then runs, each
# with its own defaults unless BENCH_QUICK is set:
#   bench/http.sh     steady throughput and latency, keep-alive and Connection: close
#   bench/reload.sh   reloads under load (40, keep-alive and close) and reload latency
#   bench/upgrade.sh  supervisor binary upgrades under load (20 per run, 3 rounds) and their time
#   bench/state.sh    state handoff of kv tables of 1 MB to 1 GB
#   bench/scaling.sh  reload time against plugin count and worker count; hook overhead
#   bench/memory.sh   RSS of every process at rest and after 100 reloads
# Each part writes its full report (every figure, the exact commands and configs) and a
# tab-separated summary; this script plots the curves with gnuplot and writes RESULTS.md:
# the headline figures and ratios first, then every part's report. The parts' own
# RESULTS-*.md files are left alone (each script run alone still writes its own).
#
# Environment: BENCH_QUICK=1 (short settings), BENCH_PARTS="http reload upgrade state scaling memory"
# (a subset; RESULTS.md then holds only those), BENCH_STATE_SIZES (default "1 10 100 1000").
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init run

# shellcheck source=../scripts/deps.sh
source scripts/deps.sh
MOLT_DEPS+=(nginx-light haproxy gnuplot-nox python3 procps)
molt_install_deps

PARTS=${BENCH_PARTS:-"http reload upgrade state scaling memory"}
log "building molt (Release) into build-bench/"
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" >/dev/null

WORK=$(mktemp -d "${TMPDIR:-/tmp}/molt-bench-run.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
DATA=$WORK/data
mkdir -p "$DATA" "$WORK/parts"
export BENCH_DATA=$DATA

declare -A QUICK=(
    [http]="BENCH_DURATION=2 BENCH_ROUNDS=1"
    [reload]="BENCH_DURATION=6 BENCH_RELOADS=6 BENCH_LAT_RELOADS=3 BENCH_BASELINE_DURATION=0"
    [upgrade]="BENCH_DURATION=4 BENCH_ROUNDS=1 BENCH_UPGRADES=4 BENCH_LAT_UPGRADES=3 BENCH_BASELINE_DURATION=0"
    [state]="BENCH_STATE_SIZES=1\ 10 BENCH_STATE_RELOADS=2"
    [scaling]="BENCH_SCALING_RELOADS=3 BENCH_DURATION=2 BENCH_ROUNDS=1"
    [memory]="BENCH_MEMORY_RELOADS=10"
)
declare -A SECS=()
T0=$(date +%s)
for part in $PARTS; do
    [[ -x bench/$part.sh ]] || { log "no bench/$part.sh"; exit 2; }
    log "== $part"
    t=$(date +%s)
    env_args=()
    [[ $part == state ]] && env_args+=("BENCH_STATE_SIZES=${BENCH_STATE_SIZES:-1 10 100 1000}")
    if [[ ${BENCH_QUICK:-0} == 1 ]]; then eval "env_args+=(${QUICK[$part]})"; fi
    env "${env_args[@]}" BENCH_OUT="$WORK/parts/$part.md" "bench/$part.sh" >&2
    SECS[$part]=$(($(date +%s) - t))
done
TOTAL=$(($(date +%s) - T0))

# ---- plots --------------------------------------------------------------------------------
mkdir -p bench/plots
plot() { # name gnuplot-script
    gnuplot -e "set terminal pngcairo size 900,540 font 'DejaVu Sans,11' noenhanced; set output 'bench/plots/$1.png'" \
        -e "$2" || { log "gnuplot failed for $1"; return 1; }
    log "plotted bench/plots/$1.png"
}
if [[ -s $DATA/state.tsv ]]; then
    plot handoff "set title 'State handoff: kv (strict, replicated), 2 workers, medians';
        set logscale x; set xlabel 'kv table per worker (MB)'; set ylabel 'rate (MB/s)'; set y2label 'accept pause (ms)';
        set ytics nomirror; set y2tics; set yrange [0:*]; set y2range [0:*]; set key left top; set grid;
        plot '$DATA/state.tsv' using 1:4 skip 1 with linespoints lw 2 title 'handoff rate (MB/s)',
             '' using 1:5 skip 1 axes x1y2 with linespoints lw 2 title 'accept pause (ms)'"
fi
for dim in plugin worker; do
    f=$DATA/scaling-${dim}s.tsv
    [[ -s $f ]] || continue
    plot "scaling-${dim}s" "set title 'Reload time against $dim count (stable_ms 0), medians per phase';
        set xlabel '${dim}s'; set ylabel 'ms'; set key left top; set grid; set style data histograms;
        set style histogram rowstacked; set style fill solid 0.8 border -1; set boxwidth 0.6;
        plot '$f' every ::1 using 5:xtic(1) title 'prepare', '' every ::1 using 6 title 'spawn',
             '' every ::1 using 7 title 'handoff', '' every ::1 using 8 title 'verify',
             '' every ::1 using 9 title 'commit'"
done
if [[ -s $DATA/hooks.tsv ]]; then
    plot hooks "set title 'Hook overhead: do-nothing filters, keep-alive req/s (median)';
        set xlabel 'callbacks per request'; set ylabel 'req/s'; set yrange [0:*]; set grid; set key off;
        plot '$DATA/hooks.tsv' using 2:3 skip 1 with linespoints lw 2"
fi

# ---- RESULTS.md ---------------------------------------------------------------------------
python3 - "$DATA" "$WORK/parts" "$ROOT/bench/RESULTS.md" "$PARTS" "$TOTAL" "${BENCH_QUICK:-0}" \
    "$(build-bench/moltd --version)" "$(git_rev)" "$(git_dirty all)" \
    "$(nginx_version)" "$(haproxy_version)" "$(wrk_version)" \
    "$(gnuplot --version)" "$(for p in $PARTS; do printf '%s=%s ' "$p" "${SECS[$p]}"; done)" <<'PY'
import csv, os, re, sys, time
from pathlib import Path

data, parts_dir, out = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
parts, total, quick = sys.argv[4].split(), int(sys.argv[5]), sys.argv[6] == "1"
molt_v, git, dirty, nginx_v, haproxy_v, wrk_v, gnuplot_v = sys.argv[7:14]
secs = dict(kv.split("=") for kv in sys.argv[14].split())

def rows(name, header=True):
    f = data / name
    if not f.exists():
        return []
    r = list(csv.reader(f.read_text().splitlines(), delimiter="\t"))
    return r[1:] if header else r

def ratio(a, b):
    try:
        return "%.2f" % (float(a) / float(b))
    except (ValueError, ZeroDivisionError):
        return "n/a"

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((int(l.split()[1]) // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
L = ["# molt benchmark results", "",
     "Generated by `bench/run.sh` (bench/README.md). Do not edit by hand.%s" %
     (" **Quick settings (BENCH_QUICK=1): not a result to quote.**" if quick else ""), "",
     "- Date: %s" % time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
     "- Machine: %d CPU(s), %s, %d MiB; kernel %s" % (os.cpu_count(), cpu, mem, os.uname().release),
     "- molt: `%s` (git %s%s), Release build" % (molt_v, git, dirty),
     "- Peers: `%s`, `%s`; load: `%s`; plots: `%s`" % (nginx_v, haproxy_v, wrk_v, gnuplot_v),
     "- Command: `bench/run.sh`%s; %d s in all (%s)" % (" with BENCH_QUICK=1" if quick else "", total,
                                                      ", ".join("%s %s s" % kv for kv in secs.items())),
     "- Every server runs 2 workers (HAProxy: 2 threads) on 127.0.0.1; wrk shares the same CPUs, so "
     "absolute figures are low and noisy: the ratios against the peers, taken in the same run with "
     "rounds interleaved, are what to compare. Medians throughout.", ""]

http = rows("http.tsv", header=False)
if http:
    L += ["## Steady throughput (bench/http.sh)", "",
          "| variant | server | req/s | p50 ms | p99 ms | socket errors | non-2xx | molt/this req/s |",
          "|---|---|---:|---:|---:|---:|---:|---:|"]
    for v in ("keepalive", "close"):
        vr = {r[1]: r for r in http if r[0] == v}
        for s in ("molt", "nginx", "haproxy"):
            if s in vr:
                r = vr[s]
                L.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    "keep-alive" if v == "keepalive" else "Connection: close", s, r[2], r[3], r[4], r[5], r[6],
                    "" if s == "molt" else "**%s**" % ratio(vr["molt"][2], r[2])))
    L.append("")

load = rows("reload-load.tsv", header=False)
lat = rows("reload-latency.tsv", header=False)
if load or lat:
    L += ["## Reloads (bench/reload.sh)", ""]
if load:
    L += ["Under wrk load (-t2 -c64) through 40 reloads:", "",
          "| variant | server | req/s | socket errors c/r/w/t | non-2xx | p99 ms | max ms | molt reloads committed |",
          "|---|---|---:|---|---:|---:|---:|---|"]
    for r in load:
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            "keep-alive" if r[0] == "keepalive" else "Connection: close", r[1], r[2], r[3], r[4], r[5], r[6],
            "%s of %s" % (r[7], r[8]) if r[1] == "molt" else ""))
    L.append("")
if lat:
    by = {r[0]: r for r in lat}
    L += ["Reload latency, from the reload command to the first response from the new configuration "
          "(%s reloads each, no load):" % lat[0][6], "",
          "| server | first new response, median ms | max ms | command returned, median ms | "
          "old-config response after a new one | molt/this |", "|---|---:|---:|---:|---:|---:|"]
    for s in ("molt", "nginx", "haproxy"):
        if s in by:
            r = by[s]
            L.append("| %s | %s | %s | %s | %s of %s | %s |" % (s, r[1], r[2], r[3], r[5], r[6],
                     "" if s == "molt" else "**%s**" % ratio(by["molt"][1], r[1])))
    if "molt" in by:
        L += ["", "molt's own figure to the committed outcome (moltctl), median: %s ms." % by["molt"][4]]
    L.append("")

upl = rows("upgrade-load.tsv", header=False)
upt = rows("upgrade-latency.tsv", header=False)
if upl or upt:
    L += ["## Supervisor binary upgrades (bench/upgrade.sh)", "",
          "molt: `moltctl upgrade` (moltd re-executes its binary: same pid, same workers); nginx: the documented "
          "USR2, WINCH, QUIT procedure (a new master); HAProxy -W: USR2 to the master (re-executes itself, "
          "new worker). Each upgrade deploys a fresh copy of the binary first.", ""]
if upl:
    L += ["Under wrk load (-t2 -c64) with %s upgrades per run, medians of %s round%s:" % (
              int(upl[0][9]) // max(1, int(upl[0][11])), upl[0][11], "" if upl[0][11] == "1" else "s"), "",
          "| variant | server | req/s | p99 ms | max ms | socket errors c/r/w/t, median (all rounds) "
          "| non-2xx, all rounds | upgrades done | supervisor pid, first → last | molt/this req/s |",
          "|---|---|---:|---:|---:|---|---:|---:|---|---:|"]
    for v in ("keepalive", "close"):
        vr = {r[1]: r for r in upl if r[0] == v}
        for s in ("molt", "nginx", "haproxy"):
            if s in vr:
                r = vr[s]
                L.append("| %s | %s | %s | %s | %s | %s (%s) | %s | %s of %s | %s | %s |" % (
                    "keep-alive" if v == "keepalive" else "Connection: close", s, r[2], r[3], r[4], r[5], r[6],
                    r[7], r[8], r[9], r[10], "" if s == "molt" else "**%s**" % ratio(vr["molt"][2], r[2])))
    L.append("")
if upt:
    by = {r[0]: r for r in upt}
    L += ["Upgrade time without load (%s upgrades each), ms from the command or signal: \"in charge\" is moltd's "
          "own `ms` for molt, the new master's workers up and answering for nginx, \"Loading success.\" for "
          "HAProxy; \"complete\" is `moltctl upgrade` returned, the old nginx master exited (after WINCH and "
          "QUIT), the old HAProxy worker exited:" % upt[0][6], "",
          "| server | new binary in charge, median | max | complete, median | max | done |",
          "|---|---:|---:|---:|---:|---:|"]
    for s in ("molt", "nginx", "haproxy"):
        if s in by:
            r = by[s]
            L.append("| %s | %s | %s | %s | %s | %s of %s |" % (s, r[1], r[2], r[3], r[4], r[5], r[6]))
    L.append("")

st = rows("state.tsv")
if st:
    L += ["## State handoff (bench/state.sh)", "",
          "kv (strict, replicated) in 2 workers; nginx and HAProxy keep no plugin state across a reload, "
          "so these figures have no peer.", "",
          "| kv per worker | state moved | handoff phase | rate | accept pause | longest client gap | reload total |",
          "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in st:
        L.append("| %s MB | %s MB | %s ms | **%s MB/s** | %s ms | %s ms | %s ms |" % tuple(r))
    L += ["", "![handoff](plots/handoff.png)", ""]

for dim in ("plugins", "workers"):
    sc = rows("scaling-%s.tsv" % dim)
    if sc:
        if dim == "plugins":
            L += ["## Scaling (bench/scaling.sh)", ""]
        L += ["Reload time against %s count (moltctl reload, stable_ms 0):" % dim[:-1], "",
              "| %s | median ms | min | max | prepare | spawn | handoff | verify | commit |" % dim,
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        L += ["| " + " | ".join(r) + " |" for r in sc]
        L += ["", "![%s](plots/scaling-%s.png)" % (dim, dim), ""]
hk = rows("hooks.tsv")
if hk:
    L += ["Hook overhead (do-nothing filters; keep-alive wrk; see the scaling report for how ns per callback is derived):", "",
          "| filters | callbacks per request | req/s | ratio to none | ns per callback |", "|---:|---:|---:|---:|---:|"]
    L += ["| " + " | ".join(r) + " |" for r in hk]
    L += ["", "![hooks](plots/hooks.png)", ""]

mem = rows("memory.tsv")
if mem:
    L += ["## Memory (bench/memory.sh)", "",
          "RSS and PSS (shared pages split between the processes sharing them) in KiB, at rest and after the reloads:", "",
          "| server | process | when | RSS KiB | PSS KiB |", "|---|---|---|---:|---:|"]
    L += ["| " + " | ".join(r) + " |" for r in mem]
    tot = {}
    for r in mem:
        tot.setdefault((r[0], r[2]), 0)
        tot[(r[0], r[2])] += int(float(r[4] or 0))
    L += ["", "PSS of all processes together: " + "; ".join(
        "%s %s %d KiB" % (s, w, v) for (s, w), v in sorted(tot.items())), ""]

L += ["## Every part's report", "",
      "Each part's own report follows, with every round, the exact commands and configs.", ""]
for p in parts:
    f = Path(parts_dir) / ("%s.md" % p)
    if f.exists():
        text = f.read_text()
        # one heading level down, so that this file keeps a single title
        L.append(re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", text, flags=re.M))
Path(out).write_text("\n".join(L) + "\n")
PY
log "wrote bench/RESULTS.md and bench/plots/ in ${TOTAL} s"
