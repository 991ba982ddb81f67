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

DUR=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
CLOSE=${BENCH_CLOSE:-1}
THREADS=2
CONNS=64
WARMUP=1
LOGLINES=20
SERVERS=(molt nginx haproxy)

[[ $DUR =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_DURATION must be a positive integer" >&2; exit 2; }
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_ROUNDS must be a positive integer" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD=$ROOT/build-bench
OUT=${BENCH_OUT:-$ROOT/bench/RESULTS-http.md}

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# --- 1. dependencies -----------------------------------------------------------
PKGS=(nginx-light haproxy wrk curl procps python3 cmake gcc pkg-config libev-dev uuid-dev
      libmsgpack-dev libjansson-dev check libhttp-parser-dev)
missing=()
for p in "${PKGS[@]}"; do
    # python3 may come from elsewhere (pyenv, /usr/local); only its command matters.
    if [[ $p == python3 ]] && command -v python3 >/dev/null; then continue; fi
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ $st == installed ]] || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then SUDO=(sudo); fi
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
else
    log "all packages present, skipping apt"
fi

# --- 2. build ------------------------------------------------------------------
BUILD_CMDS=(
    "cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF"
    "cmake --build build-bench -j2"
)
log "building molt (Release) into build-bench/"
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build build-bench -j2 >/dev/null || {
    cmake --build build-bench -j1 2>&1 | tail -n 30 >&2
    die "build failed"
}
MOLTD=$BUILD/moltd
[[ -x $MOLTD && -f $BUILD/plugins/hello.so ]] || die "build produced no moltd or plugins/hello.so"

# --- 3. servers ----------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/molt-bench.XXXXXX")
PIDS=()
WRK_PID=

# All descendants of a pid, by parent pid (never by name).
descendants() {
    local kids k
    kids=$(pgrep -P "$1" || true)
    for k in $kids; do
        echo "$k"
        descendants "$k"
    done
}

cleanup() {
    local rc=$? p all=() i
    trap - EXIT INT TERM
    if [[ -n ${WRK_PID:-} ]]; then kill -TERM "$WRK_PID" 2>/dev/null || true; fi
    for p in "${PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null || continue
        all+=("$p")
        mapfile -t -O "${#all[@]}" all < <(descendants "$p")
        kill -TERM "$p" 2>/dev/null || true
    done
    for ((i = 0; i < 50; i++)); do
        local alive=0
        for p in "${all[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for p in "${all[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ ${BENCH_KEEP_TMP:-0} == 1 ]]; then
        log "temp dir kept: $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Three distinct free ports, held open together so they differ.
read -r PORT_molt PORT_nginx PORT_haproxy < <(python3 - <<'PY'
import socket
socks = []
for _ in range(3):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*(s.getsockname()[1] for s in socks))
PY
)

port_of() { local v="PORT_$1"; echo "${!v}"; }

# molt
mkdir -p "$TMP/molt/run"
chmod 700 "$TMP/molt/run"
MOLT_CONF=$TMP/molt/molt.json
cat >"$MOLT_CONF" <<EOF
{
  "workers": 2,
  "listen": [{"name": "http", "address": "127.0.0.1:$PORT_molt", "backlog": 4096}],
  "control": {"socket": "$TMP/molt/run/control.sock", "mode": "0600"},
  "runtime_dir": "$TMP/molt/run",
  "plugin_path": ["$BUILD/plugins"],
  "plugins": [{"name": "hello", "file": "hello.so", "config": {"body": "hello\n"}}],
  "routes": [{"prefix": "/", "plugin": "hello"}],
  "log": {"level": "warn", "format": "text"}
}
EOF
MOLT_CMD=("$MOLTD" -c "$MOLT_CONF")

# nginx
mkdir -p "$TMP/nginx/tmp"
NGINX_CONF=$TMP/nginx/nginx.conf
NGINX_USER=""
# A master started as root switches its workers to "nobody"; keep them as us.
if [[ $(id -u) -eq 0 ]]; then NGINX_USER="user $(id -un) $(id -gn);"; fi
cat >"$NGINX_CONF" <<EOF
$NGINX_USER
worker_processes 2;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/plain;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path $TMP/nginx/tmp/body;
    proxy_temp_path $TMP/nginx/tmp/proxy;
    fastcgi_temp_path $TMP/nginx/tmp/fastcgi;
    uwsgi_temp_path $TMP/nginx/tmp/uwsgi;
    scgi_temp_path $TMP/nginx/tmp/scgi;
    server {
        listen 127.0.0.1:$PORT_nginx backlog=4096;
        location / { return 200 "hello\n"; }
    }
}
EOF
NGINX_CMD=(nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx/" -c "$NGINX_CONF")

# HAProxy
mkdir -p "$TMP/haproxy"
HAPROXY_CONF=$TMP/haproxy/haproxy.cfg
cat >"$HAPROXY_CONF" <<EOF
global
    nbthread 2
    maxconn 4096
    pidfile $TMP/haproxy/haproxy.pid

defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s

frontend hello
    bind 127.0.0.1:$PORT_haproxy
    http-request return status 200 content-type text/plain string "hello\n"
EOF
HAPROXY_CMD=(haproxy -db -f "$HAPROXY_CONF")

log "checking configs"
"$MOLTD" -c "$MOLT_CONF" -t >"$TMP/molt/check.log" 2>&1 || { cat "$TMP/molt/check.log" >&2; die "moltd -t rejected the config"; }
"${NGINX_CMD[@]}" -t -q 2>"$TMP/nginx/check.log" || { cat "$TMP/nginx/check.log" >&2; die "nginx -t failed"; }
haproxy -c -q -f "$HAPROXY_CONF" >"$TMP/haproxy/check.log" 2>&1 || { cat "$TMP/haproxy/check.log" >&2; die "haproxy -c failed"; }

start() { # name cmd...
    local name=$1
    shift
    "$@" >"$TMP/$name/stdout.log" 2>"$TMP/$name/stderr.log" </dev/null &
    PIDS+=("$!")
    printf -v "PID_$name" '%s' "$!"
}
start molt "${MOLT_CMD[@]}"
start nginx "${NGINX_CMD[@]}"
start haproxy "${HAPROXY_CMD[@]}"

wait_ready() { # name
    local name=$1 url pid body i
    url="http://127.0.0.1:$(port_of "$name")/"
    pid_var="PID_$name"
    pid=${!pid_var}
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$TMP/$name/stderr.log" >&2 || true
            die "$name exited during startup"
        fi
        if body=$(curl -fsS --max-time 1 "$url" 2>/dev/null) && [[ $body == hello ]]; then
            # $(...) strips the newline: check the exact bytes too.
            [[ $(curl -fsS --max-time 1 "$url" | od -An -c | tr -s ' ') == " h e l l o \n" ]] ||
                die "$name: body is not exactly \"hello\\n\""
            return 0
        fi
        sleep 0.1
    done
    tail -n 20 "$TMP/$name/stderr.log" >&2 || true
    die "$name not answering on $url after 10 s"
}
for s in "${SERVERS[@]}"; do
    wait_ready "$s"
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
VARIANTS=(keepalive)
if [[ $CLOSE == 1 ]]; then VARIANTS+=(close); fi
mkdir -p "$TMP/wrk"

wrk_args() { # variant -> extra args
    if [[ $1 == close ]]; then printf '%s\n' -H 'Connection: close'; fi
}

# "n1/n2/..." established connections per server process on a port, largest first
# (HAProxy is one process: its threads are not told apart).
conns_per_process() {
    if ! command -v ss >/dev/null; then echo "-"; return; fi
    { ss -tnpH state established "sport = :$1" 2>/dev/null || true; } |
        { grep -o 'pid=[0-9]*' || true; } | sort | uniq -c | sort -rn |
        awk '{ printf "%s%s", sep, $1; sep = "/" } END { print (NR ? "" : "0") }'
}

# CPU accounting, to show when something else used the machine during a run (a shared
# box makes a round untrustworthy). All in clock ticks: user+nice+system of the machine,
# and user+system of our servers (with their children) plus what this shell's reaped
# children used (wrk, curl, awk, ...).
cpu_busy() { awk '/^cpu / { print $2 + $3 + $4; exit }' /proc/stat; }
cpu_ours() {
    local p all=()
    for p in "${PIDS[@]}"; do
        all+=("$p")
        mapfile -t -O "${#all[@]}" all < <(descendants "$p")
    done
    {
        for p in "${all[@]}"; do
            sed 's/^.*) //' /proc/"$p"/stat 2>/dev/null | awk '{ print $12 + $13 }' || true
        done
        sed 's/^.*) //' /proc/$$/stat | awk '{ print $14 + $15 }'
    } | awk '{ t += $1 } END { print t + 0 }'
}
now_ns() { date +%s%N; }
NCPU=$(nproc)
HZ=$(getconf CLK_TCK)

log "warm-up: ${WARMUP}s per server"
for s in "${SERVERS[@]}"; do
    wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" "http://127.0.0.1:$(port_of "$s")/" >/dev/null
done

for v in "${VARIANTS[@]}"; do
    mapfile -t extra < <(wrk_args "$v")
    for ((r = 1; r <= ROUNDS; r++)); do
        for s in "${SERVERS[@]}"; do
            pid_var="PID_$s"
            kill -0 "${!pid_var}" 2>/dev/null || die "$s died (see its log above)"
            log "$v round $r/$ROUNDS: $s (${DUR}s)"
            busy0=$(cpu_busy) ours0=$(cpu_ours) t0=$(now_ns)
            wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" --latency "${extra[@]}" \
                "http://127.0.0.1:$(port_of "$s")/" >"$TMP/wrk/$v.$s.$r.txt" &
            WRK_PID=$!
            # Halfway through, which server process holds how many connections.
            sleep "$(awk -v d="$DUR" 'BEGIN { print d / 2 }')"
            conns_per_process "$(port_of "$s")" >"$TMP/wrk/$v.$s.$r.conns"
            wait "$WRK_PID" || die "wrk failed against $s"
            WRK_PID=
            busy1=$(cpu_busy) ours1=$(cpu_ours) t1=$(now_ns)
            awk -v b="$((busy1 - busy0))" -v o="$((ours1 - ours0))" -v t="$((t1 - t0))" \
                -v n="$NCPU" -v hz="$HZ" 'BEGIN {
                    cap = t / 1e9 * hz * n; f = (b - o) / cap * 100
                    printf "%.0f\n", (f < 0 ? 0 : f) }' >"$TMP/wrk/$v.$s.$r.cpu"
            grep -E 'Requests/sec|Socket errors|Non-2xx' "$TMP/wrk/$v.$s.$r.txt" | sed 's/^/    /' >&2 || true
            printf '    connections per process at mid-run: %s; other processes used %s%% of the CPUs\n' \
                "$(cat "$TMP/wrk/$v.$s.$r.conns")" "$(cat "$TMP/wrk/$v.$s.$r.cpu")" >&2
            # Let the TIME_WAIT sockets of a close run not crowd the next server.
            if [[ $v == close ]]; then sleep 1; fi
        done
    done
done
for s in "${SERVERS[@]}"; do
    pid_var="PID_$s"
    kill -0 "${!pid_var}" 2>/dev/null || die "$s died during the benchmark"
done

# --- 5. report -----------------------------------------------------------------
TABLES=$TMP/tables.md
python3 - "$TMP/wrk" "$ROUNDS" "${VARIANTS[@]}" >"$TABLES" <<'PY'
import os, re, statistics, sys
from pathlib import Path

wrkdir, rounds, variants = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
servers = ["molt", "nginx", "haproxy"]
unit = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}

def lat(text, pct):
    m = re.search(r"^\s*%s%%\s+([\d.]+)(us|ms|s|m|h)\s*$" % pct, text, re.M)
    return float(m.group(1)) * unit[m.group(2)] if m else float("nan")

def parse(path):
    t = path.read_text()
    m = re.search(r"^Requests/sec:\s+([\d.]+)", t, re.M)
    if not m:
        sys.exit(f"cannot parse {path}:\n{t}")
    se = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
    n2 = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    req = re.search(r"(\d+) requests in ([\d.]+\w+)", t)
    return {
        "rps": float(m.group(1)),
        "p50": lat(t, 50), "p99": lat(t, 99),
        "errs": tuple(int(x) for x in se.groups()) if se else (0, 0, 0, 0),
        "non2xx": int(n2.group(1)) if n2 else 0,
        "requests": int(req.group(1)) if req else 0,
        "elapsed": req.group(2) if req else "?",
        "conns": side(path, ".conns"),
        "other": side(path, ".cpu"),
    }

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

fence() { # title file [lang]
    printf '%s:\n\n```%s\n' "$1" "${3:-}"
    cat "$2"
    printf '```\n\n'
}
cmdline() { local c; c=$(printf '%q ' "$@"); echo "${c% }"; }
rel() { sed -e "s|$TMP|\$TMP|g" -e "s|$ROOT|\$REPO|g"; }

WRK_VERSION=$(wrk -v 2>&1 | head -n 1 || true)
# Markdown wants literal backticks inside single-quoted formats.
# shellcheck disable=SC2016
{
    printf '# molt HTTP benchmark results\n\n'
    printf 'Generated by `bench/http.sh` (see bench/README.md). Do not edit by hand.\n\n'
    printf -- '- Date: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    printf -- '- Machine: %s CPU(s), %s; kernel %s\n' "$(nproc)" \
        "$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" "$(uname -sr)"
    printf -- '- molt: `%s` (git %s%s), Release build\n' "$("$MOLTD" --version)" \
        "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
        "$(git diff --quiet HEAD -- 2>/dev/null || echo ', with uncommitted changes')"
    printf -- '- nginx: `%s`\n' "$(nginx -v 2>&1)"
    printf -- '- HAProxy: `%s`\n' "$(haproxy -v | head -n 1)"
    printf -- '- wrk: `%s`\n' "$WRK_VERSION"
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
    printf 'Build:\n\n```\n%s\n%s\n```\n\n' "${BUILD_CMDS[0]}" "${BUILD_CMDS[1]}"
    printf 'Servers (`$TMP` is a fresh `mktemp -d`, `$REPO` the checkout):\n\n```\n'
    cmdline "${MOLT_CMD[@]}" | rel
    cmdline "${NGINX_CMD[@]}" | rel
    cmdline "${HAPROXY_CMD[@]}" | rel
    printf '```\n\nLoad, per server and round:\n\n```\n'
    echo "wrk -t$THREADS -c$CONNS -d${DUR}s --latency http://127.0.0.1:PORT/"
    if [[ $CLOSE == 1 ]]; then
        echo "wrk -t$THREADS -c$CONNS -d${DUR}s --latency -H 'Connection: close' http://127.0.0.1:PORT/"
    fi
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
    for f in molt/stderr.log nginx/error.log nginx/stderr.log haproxy/stderr.log; do
        n=$(wc -l <"$TMP/$f")
        fence "\`$f\` ($n lines)" <(tail -n "$LOGLINES" "$TMP/$f" | rel)
    done
} >"$TMP/RESULTS.md"
mv "$TMP/RESULTS.md" "$OUT"
log "wrote ${OUT#"$ROOT"/}"
