# bench/lib.sh: what the benchmark scripts share. Sourced (bash) by http.sh, reload.sh,
# state.sh, scaling.sh, memory.sh, filters.sh and run.sh; it defines functions (and CPU_ALL's
# default) and runs nothing until a script calls them, starting with bench_init.
#
# Process rules, kept here once: every process a script starts is tracked by its pid and
# stopped by pid, never by name (other nginx, haproxy or moltd may run on the machine):
#   PIDS        servers, started with `start`; on exit each is sent TERM, then it and all its
#               descendants (found by parent pid) get 5 s to go before KILL.
#   WRK_PID, CANARY_PID, HELPER_PID
#               one helper each, running in the background (HELPER_PID: run_helper); sent TERM
#               on exit.
# bench_tmp makes the temp dir TMP and installs the traps: on exit, INT (130) or TERM (143)
# the processes above are stopped and TMP is removed unless BENCH_KEEP_TMP=1.
# shellcheck shell=bash

# --- setup -------------------------------------------------------------------------------
# bench_init TAG: log prefix "[TAG]"; ROOT (the checkout), CALLER_PWD (where the script was
# started, for abspath) and PYTHONPATH (bench/, for `import lib` in the scripts' Python;
# PYTHONDONTWRITEBYTECODE so that no bench/__pycache__ appears in the checkout); then cd to
# ROOT.
bench_init() {
    LOG_TAG=$1
    CALLER_PWD=$PWD
    ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    case ":${PYTHONPATH:-}:" in
        *":$ROOT/bench:"*) ;;
        *) export PYTHONPATH=$ROOT/bench${PYTHONPATH:+:$PYTHONPATH} ;;
    esac
    export PYTHONDONTWRITEBYTECODE=1
    cd "$ROOT" || exit
}

log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$LOG_TAG" "$*" >&2; exit 1; }

abspath() { case $1 in /*) echo "$1" ;; *) echo "$CALLER_PWD/$1" ;; esac; }

# out_data NAME: OUT=BENCH_OUT or bench/RESULTS-NAME.md, DATA=BENCH_DATA or empty; relative
# paths taken from where the script was started (scaling.sh, memory.sh).
# shellcheck disable=SC2034 # OUT and DATA are for the scripts
out_data() {
    OUT=$(abspath "${BENCH_OUT:-$ROOT/bench/RESULTS-$1.md}")
    DATA=
    if [[ -n ${BENCH_DATA:-} ]]; then DATA=$(abspath "$BENCH_DATA"); fi
}

# need_int NAME VALUE MIN: exit 2 unless VALUE is an integer >= MIN (0 or 1).
need_int() {
    if (($3 > 0)); then
        [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "$1 must be a positive integer" >&2; exit 2; }
    else
        [[ $2 =~ ^[0-9]+$ ]] || { echo "$1 must be a non-negative integer" >&2; exit 2; }
    fi
}

# install_pkgs PKG...: apt-get install the Debian packages that dpkg does not list as installed
# (python3 counts as present when the command is, from wherever it comes).
install_pkgs() {
    local p st missing=() sudo=()
    for p in "$@"; do
        if [[ $p == python3 ]] && command -v python3 >/dev/null; then continue; fi
        st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [[ $st == installed ]] || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing: ${missing[*]}"
        if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
        "${sudo[@]}" apt-get update
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    else
        log "all packages present, skipping apt"
    fi
}
# What http.sh and reload.sh need: the peers, the load, and molt's build dependencies.
install_bench_pkgs() {
    install_pkgs nginx-light haproxy wrk curl procps python3 cmake gcc pkg-config libev-dev uuid-dev \
        libmsgpack-dev libjansson-dev check libhttp-parser-dev
}

# build_molt WHAT...: Release build into build-bench/ (BUILD_CMDS: the commands, for the
# reports); sets BUILD, MOLTD, MOLTCTL and dies unless every WHAT (moltd, moltctl,
# plugins/NAME.so, relative to build-bench/) was built.
build_molt() {
    local w miss=0 list=""
    # shellcheck disable=SC2034 # BUILD_CMDS and MOLTCTL are for the scripts
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
    BUILD=$ROOT/build-bench
    MOLTD=$BUILD/moltd
    # shellcheck disable=SC2034
    MOLTCTL=$BUILD/moltctl
    for ((w = 1; w <= $#; w++)); do
        case ${!w} in
            plugins/*) [[ -f $BUILD/${!w} ]] || miss=1 ;;
            *) [[ -x $BUILD/${!w} ]] || miss=1 ;;
        esac
        if ((w == 1)); then list=${!w}; elif ((w < $#)); then list+=", ${!w}"; else list+=" or ${!w}"; fi
    done
    ((!miss)) || die "build produced no $list"
}

# --- processes -----------------------------------------------------------------------------
descendants() { # all descendants of a pid, by parent pid (never by name)
    local kids k
    kids=$(pgrep -P "$1" || true)
    for k in $kids; do
        echo "$k"
        descendants "$k"
    done
}

stop_tree() { # pid...: TERM each, wait up to 5 s for it and its descendants, then KILL them
    local p all=() i alive
    for p in "$@"; do
        kill -0 "$p" 2>/dev/null || continue
        all+=("$p")
        mapfile -t -O "${#all[@]}" all < <(descendants "$p")
        kill -TERM "$p" 2>/dev/null || true
    done
    for ((i = 0; i < 50; i++)); do
        alive=0
        for p in "${all[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for p in "${all[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

# bench_tmp NAME: TMP=a fresh ${TMPDIR:-/tmp}/NAME.XXXXXX; the traps that clean up.
bench_tmp() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    PIDS=()
    WRK_PID=
    CANARY_PID=
    HELPER_PID=
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

bench_cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in ${WRK_PID:-} ${CANARY_PID:-} ${HELPER_PID:-}; do kill -TERM "$p" 2>/dev/null || true; done
    if ((${#PIDS[@]})); then stop_tree "${PIDS[@]}"; fi
    if [[ ${BENCH_KEEP_TMP:-0} == 1 ]]; then
        log "temp dir kept: $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}

run_helper() { # cmd...: runs a foreground command as a tracked child (stopped on exit)
    "$@" &
    HELPER_PID=$!
    local rc=0
    wait "$HELPER_PID" || rc=$?
    HELPER_PID=
    return "$rc"
}

_var() { echo "${1//[^a-zA-Z0-9_]/_}"; } # a server name as part of a variable name

# start NAME CMD...: CMD in the background, output in $TMP/NAME/{stdout,stderr}.log; its pid
# joins PIDS and is pid_of NAME.
start() {
    local name=$1
    shift
    "$@" >"$TMP/$name/stdout.log" 2>"$TMP/$name/stderr.log" </dev/null &
    PIDS+=("$!")
    printf -v "PID_$(_var "$name")" '%s' "$!"
}
pid_of() { local v; v="PID_$(_var "$1")"; echo "${!v}"; }

stop_server() { # pid: stop_tree, and drop it from PIDS
    stop_tree "$1"
    local p keep=()
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# wait_ready NAME LABEL WHAT CHECK...: until CHECK succeeds, every 0.1 s for 10 s; dies
# ("LABEL exited during startup", "LABEL not WHAT after 10 s", with the tail of
# $TMP/NAME/stderr.log) if the server pid_of NAME exits or the time is up.
wait_ready() {
    local name=$1 label=$2 what=$3 pid i
    shift 3
    pid=$(pid_of "$name")
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$TMP/$name/stderr.log" >&2 || true
            die "$label exited during startup"
        fi
        if "$@"; then return 0; fi
        sleep 0.1
    done
    tail -n 20 "$TMP/$name/stderr.log" >&2 || true
    die "$label not $what after 10 s"
}

answers() { [[ $(curl -fsS --max-time 1 "$1" 2>/dev/null) == "$2" ]]; } # url body (newline stripped)

# free_ports N: N distinct free 127.0.0.1 ports, held open together so they differ.
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*(s.getsockname()[1] for s in socks))
PY
}
free_port() { free_ports 1; }
port_of() { local v; v="PORT_$(_var "$1")"; echo "${!v}"; }

# --- configs (to stdout; byte for byte what the reports show) ------------------------------
# molt_config DIR PORT WORKERS PLUGIN_PATH PLUGINS ROUTES [RELOAD]: control socket and
# runtime_dir under DIR/run; PLUGINS and ROUTES go inside [...], RELOAD inside {...} (no
# "reload" key when empty).
molt_config() {
    local reload=""
    if [[ -n ${7:-} ]]; then reload="  \"reload\": {$7},"$'\n'; fi
    cat <<EOF
{
  "workers": $3,
  "listen": [{"name": "http", "address": "127.0.0.1:$2", "backlog": 4096}],
  "control": {"socket": "$1/run/control.sock", "mode": "0600"},
  "runtime_dir": "$1/run",
  "plugin_path": ["$4"],
  "plugins": [$5],
  "routes": [$6],
${reload}  "log": {"level": "warn", "format": "text"}
}
EOF
}

# nginx_config PORT BODY ERROR_LOG_LEVEL: 2 workers answering every request with BODY\n; all
# paths under $TMP/nginx (its tmp/ made by the caller). Run as root, it keeps the workers
# as the current user instead of "nobody".
nginx_config() {
    local dir=$TMP/nginx user=""
    if [[ $(id -u) -eq 0 ]]; then user="user $(id -un) $(id -gn);"; fi
    cat <<EOF
$user
worker_processes 2;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log $3;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/plain;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$1 backlog=4096;
        location / { return 200 "$2\n"; }
    }
}
EOF
}

# haproxy_config PORT BODY [PIDFILE]: 2 threads answering every request with BODY\n.
haproxy_config() {
    local pidfile=""
    if [[ -n ${3:-} ]]; then pidfile="    pidfile $3"$'\n'; fi
    cat <<EOF
global
    nbthread 2
    maxconn 4096
${pidfile}
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s

frontend hello
    bind 127.0.0.1:$1
    http-request return status 200 content-type text/plain string "$2\n"
EOF
}

# --- load --------------------------------------------------------------------------------
# VARIANTS: keepalive, and close (every request with "Connection: close") if CLOSE is 1.
load_variants() {
    VARIANTS=(keepalive)
    if [[ $CLOSE == 1 ]]; then VARIANTS+=(close); fi
}
wrk_args() { # variant -> extra args
    if [[ $1 == close ]]; then printf '%s\n' -H 'Connection: close'; fi
}
warm_up() { # port...: one uncounted wrk run of WARMUP s against each (THREADS, CONNS)
    local p
    for p in "$@"; do wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" "http://127.0.0.1:$p/" >/dev/null; done
}
wrk_cmdlines() { # the wrk command of each variant (DUR s), for the reports
    local v extra
    for v in "${VARIANTS[@]}"; do
        extra=""
        if [[ $v == close ]]; then extra=" -H 'Connection: close'"; fi
        echo "wrk -t$THREADS -c$CONNS -d${DUR}s --latency$extra http://127.0.0.1:PORT/"
    done
}

# --- measuring ---------------------------------------------------------------------------
now_ns() { date +%s%N; }

# "n1/n2/..." established connections per server process on a port, largest first
# (HAProxy's threads in one process are not told apart).
conns_per_process() {
    if ! command -v ss >/dev/null; then echo "-"; return; fi
    { ss -tnpH state established "sport = :$1" 2>/dev/null || true; } |
        { grep -o 'pid=[0-9]*' || true; } | sort | uniq -c | sort -rn |
        awk '{ printf "%s%s", sep, $1; sep = "/" } END { print (NR ? "" : "0") }'
}

# CPU accounting, to show when something else used the machine during a run (a shared box
# makes a round untrustworthy), in clock ticks. cpu_busy: the machine's user+nice+system,
# plus irq+softirq (this kernel charges softirq work done in a process's context to that
# process). cpu_ours PID...: user+system of those processes and their descendants, plus what
# they had reaped (old workers, ...), plus what this shell's reaped children used (wrk, curl,
# moltctl, ...). CPU_ALL=0 (http.sh's definition): no irq+softirq, nothing the servers reaped.
CPU_ALL=1
cpu_busy() {
    if ((CPU_ALL)); then
        awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat
    else
        awk '/^cpu / { print $2 + $3 + $4; exit }' /proc/stat
    fi
}
# shellcheck disable=SC2016 # fields: awk's, not ours
cpu_ours() {
    local p all=() fields='$12 + $13 + $14 + $15'
    ((CPU_ALL)) || fields='$12 + $13'
    for p in "$@"; do
        all+=("$p")
        mapfile -t -O "${#all[@]}" all < <(descendants "$p")
    done
    {
        for p in "${all[@]}"; do
            sed 's/^.*) //' /proc/"$p"/stat 2>/dev/null | awk "{ print $fields }" || true
        done
        sed 's/^.*) //' /proc/$$/stat | awk '{ print $14 + $15 }'
    } | awk '{ t += $1 } END { print t + 0 }'
}
# other_cpu BUSY0 BUSY1 OURS0 OURS1 T0_NS T1_NS: % of all CPUs' time that others used.
other_cpu() {
    awk -v b="$(($2 - $1))" -v o="$(($4 - $3))" -v t="$(($6 - $5))" \
        -v n="$(nproc)" -v hz="$(getconf CLK_TCK)" 'BEGIN {
            cap = t / 1e9 * hz * n; f = (b - o) / cap * 100
            printf "%.0f\n", (f < 0 ? 0 : f) }'
}

# --- reports -------------------------------------------------------------------------------
fence() { # title file [lang]
    printf '%s:\n\n```%s\n' "$1" "${3:-}"
    cat "$2"
    printf '```\n\n'
}
cmdline() { local c; c=$(printf '%q ' "$@"); echo "${c% }"; }
rel() { sed -e "s|$TMP|\$TMP|g" -e "s|$ROOT|\$REPO|g"; }
# shellcheck disable=SC2120 # the arguments are optional
md_build() { # [more commands]: "Build:" and the commands of build_molt, fenced
    printf 'Build:\n\n```\n'
    printf '%s\n' "${BUILD_CMDS[@]}" "$@"
    printf '```\n\n'
}
log_tails() { # lines file...: the last lines of each $TMP/file, fenced, paths relative
    local n=$1 f
    shift
    for f in "$@"; do
        fence "\`$f\` ($(wc -l <"$TMP/$f") lines)" <(tail -n "$n" "$TMP/$f" | rel)
    done
}

cpu_model() { grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'; }
ram_gb() { awk '/MemTotal/ { printf "%.1f GB", $2 / 1048576 }' /proc/meminfo; }
git_rev() { git rev-parse --short HEAD 2>/dev/null || echo '?'; }
git_dirty() { # [all]: ", with uncommitted changes" if the checkout (all, else outside bench/) differs from HEAD
    if [[ ${1:-} == all ]]; then
        git diff --quiet HEAD -- 2>/dev/null || echo ', with uncommitted changes'
    else
        git diff --quiet HEAD -- . ':(exclude)bench' 2>/dev/null || echo ', with uncommitted changes outside bench/'
    fi
}
nginx_version() { "${NGINX:-nginx}" -v 2>&1; }
haproxy_version() { "${HAPROXY:-haproxy}" -v | head -n 1; }
wrk_version() { wrk -v 2>&1 | head -n 1 || true; }

# The "- Key: value" lines at the top of the reports (Markdown wants literal backticks
# inside single-quoted formats: SC2016).
meta_date() { printf -- '- Date: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"; }
# shellcheck disable=SC2120 # the argument is optional
meta_machine() { # [extra after the kernel]
    printf -- '- Machine: %s CPU(s), %s; kernel %s%s\n' "$(nproc)" "$(cpu_model)" "$(uname -sr)" "${1:-}"
}
# shellcheck disable=SC2016,SC2120
meta_molt() { # [all] [extra]: $MOLTD's version and the git revision (see git_dirty)
    printf -- '- molt: `%s` (git %s%s), Release build%s\n' "$("$MOLTD" --version)" "$(git_rev)" \
        "$(git_dirty "${1:-}")" "${2:-}"
}
# shellcheck disable=SC2016
meta_peers() { # nginx, HAProxy, wrk
    printf -- '- nginx: `%s`\n- HAProxy: `%s`\n- wrk: `%s`\n' "$(nginx_version)" "$(haproxy_version)" "$(wrk_version)"
}

# --- added for upgrade.sh ------------------------------------------------------------------
# bench_subreaper "$0" "$@": re-execute the calling script (same pid) as a child subreaper
# (prctl PR_SET_CHILD_SUBREAPER, kept across execve), once: the first call execs, the call in
# the re-executed script returns. Processes orphaned below it (a daemonized nginx master, the
# old master a binary upgrade leaves behind) become its children: bash reaps them, so they
# leave no zombie, their CPU time lands in this shell's (cpu_ours), and descendants (stop_tree)
# finds them. Call it first, before anything is started.
bench_subreaper() {
    if [[ ${BENCH_SUBREAPER:-} == "$$" ]]; then return 0; fi
    export BENCH_SUBREAPER=$$
    exec python3 -c 'import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed: " + os.strerror(ctypes.get_errno()))
os.execv("/bin/bash", ["bash"] + sys.argv[1:])' "$@"
}

# canary_start FILE DUR: the stall canary of lib.py (lib.canary) in the background for DUR s
# (0: until canary_stop), CANARY_PID; its one-line report goes to FILE. canary_stop: TERM it
# (it still reports) and wait for it.
canary_start() {
    python3 -c 'import sys, lib; lib.canary(float(sys.argv[1]))' "$2" >"$1" &
    CANARY_PID=$!
}
canary_stop() {
    kill -TERM "$CANARY_PID" 2>/dev/null || true
    wait "$CANARY_PID" || die "the stall canary failed"
    CANARY_PID=
}
canary_wait() { # the canary ends on its own (DUR > 0)
    wait "$CANARY_PID" || die "the stall canary failed"
    CANARY_PID=
}

# --- the servers of reload.sh and upgrade.sh (SERVERS: molt nginx haproxy, started with start) ---
# Server processes (the started pid and its descendants) right now.
nprocs() { echo $((1 + $(descendants "$(pid_of "$1")" | wc -l))); } # server
alive_or_die() {
    local s
    for s in "${SERVERS[@]}"; do
        kill -0 "$(pid_of "$s")" 2>/dev/null || die "$s died (see $TMP/$s/)"
    done
}
log_file() { # server -> the log where its reloads and upgrades show
    case $1 in
        molt) echo "$TMP/molt/stderr.log" ;;
        nginx) echo "$TMP/nginx/error.log" ;;
        haproxy) echo "$TMP/haproxy/stderr.log" ;;
    esac
}
log_lines() { wc -l <"$(log_file "$1")"; }
log_since() { tail -n +$(($2 + 1)) "$(log_file "$1")"; } # server lines-before
