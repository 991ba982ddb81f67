#!/usr/bin/env bash
# bench/http.sh: molt vs nginx vs HAProxy, one "hello\n" response, HTTP/1.1 on loopback.
#
# Installs what is missing (Debian), builds molt in Release mode into build-bench/,
# starts the three servers on free 127.0.0.1 ports in a temp dir, runs wrk against
# each in interleaved rounds, prints the medians and writes bench/RESULTS-http.md
# (BENCH_OUT: elsewhere; BENCH_DATA: also a TSV summary there, for bench/run.sh).
#
# Environment:
#   BENCH_DURATION  seconds per wrk run (default 10)
#   BENCH_ROUNDS    rounds per server and variant (default 3)
#   BENCH_CLOSE     1 = also run the "Connection: close" variant (default 1)
#   BENCH_KEEP_TMP  1 = keep the temp dir (configs, logs, raw wrk output)
#
# Quick smoke: BENCH_DURATION=2 BENCH_ROUNDS=1 bench/http.sh
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DUR=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
CLOSE=${BENCH_CLOSE:-1}
THREADS=2
CONNS=64
WARMUP=1
LOGLINES=20
SERVERS=(molt nginx haproxy)

need_int BENCH_DURATION "$DUR" 1
need_int BENCH_ROUNDS "$ROUNDS" 1

bench_init bench
OUT=${BENCH_OUT:-$ROOT/bench/RESULTS-http.md}

# --- 1. dependencies -----------------------------------------------------------
install_bench_pkgs

# --- 2. build ------------------------------------------------------------------
build_molt moltd plugins/hello.so

# --- 3. servers ----------------------------------------------------------------
bench_tmp molt-bench
CPU_ALL=0 # this report's "other CPU %": user+nice+system, servers' own time only

read -r PORT_molt PORT_nginx PORT_haproxy < <(free_ports 3)

# molt
mkdir -p "$TMP/molt/run"
chmod 700 "$TMP/molt/run"
MOLT_CONF=$TMP/molt/molt.json
molt_config "$TMP/molt" "$PORT_molt" 2 "$BUILD/plugins" \
    '{"name": "hello", "file": "hello.so", "config": {"body": "hello\n"}}' \
    '{"prefix": "/", "plugin": "hello"}' >"$MOLT_CONF"
MOLT_CMD=("$MOLTD" -c "$MOLT_CONF")

# nginx
mkdir -p "$TMP/nginx/tmp"
NGINX_CONF=$TMP/nginx/nginx.conf
nginx_config "$PORT_nginx" hello warn >"$NGINX_CONF"
NGINX_CMD=(nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx/" -c "$NGINX_CONF")

# HAProxy
mkdir -p "$TMP/haproxy"
HAPROXY_CONF=$TMP/haproxy/haproxy.cfg
haproxy_config "$PORT_haproxy" hello "$TMP/haproxy/haproxy.pid" >"$HAPROXY_CONF"
HAPROXY_CMD=(haproxy -db -f "$HAPROXY_CONF")

log "checking configs"
"$MOLTD" -c "$MOLT_CONF" -t >"$TMP/molt/check.log" 2>&1 || { cat "$TMP/molt/check.log" >&2; die "moltd -t rejected the config"; }
"${NGINX_CMD[@]}" -t -q 2>"$TMP/nginx/check.log" || { cat "$TMP/nginx/check.log" >&2; die "nginx -t failed"; }
haproxy -c -q -f "$HAPROXY_CONF" >"$TMP/haproxy/check.log" 2>&1 || { cat "$TMP/haproxy/check.log" >&2; die "haproxy -c failed"; }

start molt "${MOLT_CMD[@]}"
start nginx "${NGINX_CMD[@]}"
start haproxy "${HAPROXY_CMD[@]}"

answers_hello() { # name url: "hello\n" exactly, or nothing yet
    answers "$2" hello || return 1
    # $(...) strips the newline: check the exact bytes too.
    [[ $(curl -fsS --max-time 1 "$2" | od -An -c | tr -s ' ') == " h e l l o \n" ]] ||
        die "$1: body is not exactly \"hello\\n\""
}
for s in "${SERVERS[@]}"; do
    url="http://127.0.0.1:$(port_of "$s")/"
    wait_ready "$s" "$s" "answering on $url" answers_hello "$s" "$url"
    # Record one response (headers included) and whether the connection is reused.
    curl -sS -i --max-time 2 "http://127.0.0.1:$(port_of "$s")/" >"$TMP/$s/response.txt"
    curl -sS -i --max-time 2 -H 'Connection: close' "http://127.0.0.1:$(port_of "$s")/" \
        >"$TMP/$s/response-close.txt"
    if curl -sS -v --max-time 2 -o /dev/null -o /dev/null "http://127.0.0.1:$(port_of "$s")/" \
        "http://127.0.0.1:$(port_of "$s")/" 2>&1 | grep -q 'Re-using existing connection'; then
        echo yes >"$TMP/$s/keepalive.txt"
    else
        echo no >"$TMP/$s/keepalive.txt"
        log "warning: $s did not keep the connection open between two curl requests"
    fi
    log "$s ready on 127.0.0.1:$(port_of "$s") (keep-alive reused: $(cat "$TMP/$s/keepalive.txt"))"
done

# --- 4. load -------------------------------------------------------------------
load_variants
mkdir -p "$TMP/wrk"

log "warm-up: ${WARMUP}s per server"
warm_up "$PORT_molt" "$PORT_nginx" "$PORT_haproxy"

for v in "${VARIANTS[@]}"; do
    mapfile -t extra < <(wrk_args "$v")
    for ((r = 1; r <= ROUNDS; r++)); do
        for s in "${SERVERS[@]}"; do
            kill -0 "$(pid_of "$s")" 2>/dev/null || die "$s died (see its log above)"
            log "$v round $r/$ROUNDS: $s (${DUR}s)"
            busy0=$(cpu_busy) ours0=$(cpu_ours "${PIDS[@]}") t0=$(now_ns)
            wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" --latency "${extra[@]}" \
                "http://127.0.0.1:$(port_of "$s")/" >"$TMP/wrk/$v.$s.$r.txt" &
            WRK_PID=$!
            # Halfway through, which server process holds how many connections.
            sleep "$(awk -v d="$DUR" 'BEGIN { print d / 2 }')"
            conns_per_process "$(port_of "$s")" >"$TMP/wrk/$v.$s.$r.conns"
            wait "$WRK_PID" || die "wrk failed against $s"
            WRK_PID=
            busy1=$(cpu_busy) ours1=$(cpu_ours "${PIDS[@]}") t1=$(now_ns)
            other_cpu "$busy0" "$busy1" "$ours0" "$ours1" "$t0" "$t1" >"$TMP/wrk/$v.$s.$r.cpu"
            grep -E 'Requests/sec|Socket errors|Non-2xx' "$TMP/wrk/$v.$s.$r.txt" | sed 's/^/    /' >&2 || true
            printf '    connections per process at mid-run: %s; other processes used %s%% of the CPUs\n' \
                "$(cat "$TMP/wrk/$v.$s.$r.conns")" "$(cat "$TMP/wrk/$v.$s.$r.cpu")" >&2
            # Let the TIME_WAIT sockets of a close run not crowd the next server.
            if [[ $v == close ]]; then sleep 1; fi
        done
    done
done
for s in "${SERVERS[@]}"; do
    kill -0 "$(pid_of "$s")" 2>/dev/null || die "$s died during the benchmark"
done

# --- 5. report -----------------------------------------------------------------
TABLES=$TMP/tables.md
python3 - "$TMP/wrk" "$ROUNDS" "${VARIANTS[@]}" >"$TABLES" <<'PY'
import os, statistics, sys
from pathlib import Path
import lib

wrkdir, rounds, variants = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
servers = ["molt", "nginx", "haproxy"]

def parse(path):
    return {**lib.wrk(path), "conns": side(path, ".conns"), "other": side(path, ".cpu")}

def side(path, suffix):
    f = path.with_suffix(suffix)
    return (f.read_text().strip() or "-") if f.exists() else "-"

title = {"keepalive": "Keep-alive", "close": "Connection: close"}
summary = []
for v in variants:
    runs = {s: [parse(wrkdir / f"{v}.{s}.{r}.txt") for r in range(1, rounds + 1)] for s in servers}
    med = {s: {k: statistics.median(x[k] for x in runs[s]) for k in ("rps", "p50", "p99")}
           for s in servers}
    print(f"### {title[v]}\n")
    print("Medians over %d round(s):\n" % rounds)
    print("| server | req/s | p50 (ms) | p99 (ms) | socket errors (all rounds) | non-2xx/3xx (all rounds) |")
    print("|---|---:|---:|---:|---:|---:|")
    for s in servers:
        errs = sum(sum(x["errs"]) for x in runs[s])
        bad = sum(x["non2xx"] for x in runs[s])
        print(f"| {s} | {med[s]['rps']:.0f} | {med[s]['p50']:.3f} | {med[s]['p99']:.3f} | {errs} | {bad} |")
    rn = med["molt"]["rps"] / med["nginx"]["rps"]
    rh = med["molt"]["rps"] / med["haproxy"]["rps"]
    print(f"\nRatios of median req/s: **molt/nginx = {rn:.2f}**, **molt/haproxy = {rh:.2f}**\n")
    print("Every round (in the order run: molt, nginx, haproxy per round):\n")
    print("| round | server | req/s | p50 (ms) | p99 (ms) | requests | socket errors c/r/w/t | non-2xx/3xx "
          "| conns per process at mid-run | other CPU % |")
    print("|---:|---|---:|---:|---:|---:|---|---:|---|---:|")
    for r in range(rounds):
        for s in servers:
            x = runs[s][r]
            print(f"| {r + 1} | {s} | {x['rps']:.0f} | {x['p50']:.3f} | {x['p99']:.3f} | "
                  f"{x['requests']} | {'/'.join(map(str, x['errs']))} | {x['non2xx']} | {x['conns']} | {x['other']} |")
    print()
    summary.append((title[v], med, rn, rh))
    if os.environ.get("BENCH_DATA"):  # for bench/run.sh: variant, server, medians, error counts
        with open(os.path.join(os.environ["BENCH_DATA"], "http.tsv"), "a") as f:
            for s in servers:
                f.write(f"{v}\t{s}\t{med[s]['rps']:.0f}\t{med[s]['p50']:.3f}\t{med[s]['p99']:.3f}\t"
                        f"{sum(sum(x['errs']) for x in runs[s])}\t{sum(x['non2xx'] for x in runs[s])}\n")

# Terminal summary on stderr, the markdown on stdout.
for t, med, rn, rh in summary:
    print(f"\n{t}: median req/s / p50 ms / p99 ms", file=sys.stderr)
    for s in servers:
        print(f"  {s:8} {med[s]['rps']:>10.0f} {med[s]['p50']:>8.3f} {med[s]['p99']:>8.3f}", file=sys.stderr)
    print(f"  molt/nginx = {rn:.2f}   molt/haproxy = {rh:.2f}", file=sys.stderr)
PY

# Markdown wants literal backticks inside single-quoted formats.
# shellcheck disable=SC2016
{
    printf '# molt HTTP benchmark results\n\n'
    printf 'Generated by `bench/http.sh` (see bench/README.md). Do not edit by hand.\n\n'
    meta_date
    meta_machine
    meta_molt all
    meta_peers
    printf -- '- Load: `wrk -t%s -c%s -d%ss --latency`, %s round(s) per server, interleaved ' \
        "$THREADS" "$CONNS" "$DUR" "$ROUNDS"
    printf '(molt, nginx, haproxy, molt, …) so drift hits all three alike; '
    printf 'a %ss warm-up run per server first (not counted).\n\n' "$WARMUP"
    printf '**Caveat:** wrk runs on the same %s CPU(s) as the servers and competes with them, ' "$(nproc)"
    printf 'so absolute numbers are low and noisy; the ratios are what matters. '
    printf 'Each server has 2 workers/threads. All three answer `GET /` with the 6-byte body `hello\\n`; '
    printf 'response headers differ (shown below). nginx (`keepalive_requests 1000000`) and HAProxy '
    printf '(`option http-keep-alive`, `timeout http-keep-alive 60s`) are both set to keep '
    printf 'connections open, as molt does (keepalive_timeout_ms default 60000), so the keep-alive '
    printf 'variant measures request handling, not reconnects. Latency figures are wrk'"'"'s '
    printf '(coordinated omission applies). "conns per process" is an `ss` snapshot halfway '
    printf 'through each run of how the 64 established connections were spread over the server'"'"'s '
    printf 'processes (molt and nginx: 2 worker processes; HAProxy: 1 process with 2 threads, '
    printf 'not told apart); with Connection: close it is a momentary count. "other CPU %%" is the '
    printf 'share of all CPUs'"'"' user+system time used during the run by processes other than the '
    printf 'three servers, wrk and the script (kernel threads such as ksoftirqd count as other, so a '
    printf 'few %% can be this benchmark'"'"'s own network work); well above that, the machine was '
    printf 'shared during that round and it is less trustworthy.\n\n'
    printf '## Results\n\n'
    cat "$TABLES"
    printf '## How it was run\n\n'
    md_build
    printf 'Servers (`$TMP` is a fresh `mktemp -d`, `$REPO` the checkout):\n\n```\n'
    cmdline "${MOLT_CMD[@]}" | rel
    cmdline "${NGINX_CMD[@]}" | rel
    cmdline "${HAPROXY_CMD[@]}" | rel
    printf '```\n\nLoad, per server and round:\n\n```\n'
    wrk_cmdlines
    printf '```\n\n'
    fence 'molt config' "$MOLT_CONF" json | rel
    fence 'nginx config' "$NGINX_CONF" nginx | rel
    fence 'HAProxy config' "$HAPROXY_CONF" | rel
    printf '## Responses\n\n'
    for s in "${SERVERS[@]}"; do
        fence "$s (connection reused by curl for a second request: $(cat "$TMP/$s/keepalive.txt"))" \
            <(tr -d '\r' <"$TMP/$s/response.txt") http
        fence "$s, request with \`Connection: close\`" \
            <(tr -d '\r' <"$TMP/$s/response-close.txt") http
    done
    printf '## Server logs during the run\n\n'
    printf 'Last %s lines of each server'"'"'s stderr / error log (molt at level warn).\n\n' "$LOGLINES"
    log_tails "$LOGLINES" molt/stderr.log nginx/error.log nginx/stderr.log haproxy/stderr.log
} >"$TMP/RESULTS.md"
mv "$TMP/RESULTS.md" "$OUT"
log "wrote ${OUT#"$ROOT"/}"
