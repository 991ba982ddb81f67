#!/usr/bin/env bash
# The integration suites (CTest's integ_* tests) with moltd under valgrind
# memcheck: the supervisor and every worker it forks (fork without exec, which
# valgrind follows), and `moltd -t` with its throwaway child. Clients (curl,
# wrk, moltctl) and the test programs themselves run natively.
#
#   bash scripts/memcheck.sh             # every suite; about 5 to 10 min on 2 cores
#   bash scripts/memcheck.sh integ_state # only the suites named
#
# Installs what it needs (scripts/deps.sh, plus valgrind), builds a plain Debug
# build into build-memcheck/, and runs the suites two at a time (nproc). Every
# valgrind process writes its own log, build-memcheck/memcheck/SUITE/vg.PID.log,
# next to the suite's CTest output (ctest.log). Exits non-zero when a test
# fails or when any process reports a memory error or a definite or indirect
# leak; still-reachable memory at exit is not an error (a worker exit()s with
# what it inherited from moltd still referenced). Suppressions, each with its
# reason: scripts/memcheck.supp.
#
# How the tests cope with valgrind's slowdown: the harness
# (tests/integration/harness.h) runs moltd under $MOLT_TEST_WRAPPER and
# multiplies its own waits, the tcase timeouts and the default config's
# timeouts by $MOLT_TEST_TIMEOUT_SCALE; CMake's MOLT_TEST_TIMEOUT_SCALE does
# the same for CTest's limits. MOLT_MEMCHECK_SCALE sets the factor (default 10).
# Not part of scripts/test.sh (the CI suite).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
molt_install_deps memcheck

dir=build-memcheck
# MOLT_TEST_WRAPPER is split on spaces: the log path must have none.
case $PWD in *' '*)
    echo "memcheck: $PWD has a space in it; run from a checkout whose path has none" >&2
    exit 2
    ;;
esac
scale=${MOLT_MEMCHECK_SCALE:-10}
jobs=$(nproc)
logs=$PWD/$dir/memcheck

# Suites that are not run under valgrind, each with the reason.
declare -A excluded=()

echo "== memcheck build ($dir: Debug, no sanitizer)"
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DMOLT_SANITIZE=OFF -DMOLT_TEST_TIMEOUT_SCALE="$scale" >/dev/null
cmake --build "$dir" -j"$jobs" >/dev/null

if [ $# -gt 0 ]; then
    suites=("$@")
else
    suites=()
    for s in $(ctest --test-dir "$dir" -N -R '^integ_' | sed -n 's/^ *Test *#[0-9]*: *\(integ_[A-Za-z0-9_]*\)$/\1/p'); do
        [ -n "${excluded[$s]:-}" ] || suites+=("$s")
    done
fi

# Full leak check; definite and indirect leaks are errors, still-reachable
# and possibly-lost blocks are not (the only possibly-lost ones are glibc's
# dlopen bookkeeping, _dl_find_object). --keep-debuginfo: a plugin unloaded
# before exit still has readable frames. The markers frame every error report.
vg=(valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect
    --errors-for-leak-kinds=definite,indirect --track-origins=yes --num-callers=40 --keep-debuginfo=yes
    --error-markers=@@memcheck-error@@,@@memcheck-end@@ --suppressions="$PWD/scripts/memcheck.supp")

rm -rf "$logs"
mkdir -p "$logs"
ulimit -c 0 # no vgcore files from the tests that crash a worker on purpose

run_suite() {
    local suite=$1 out=$logs/$1
    mkdir -p "$out"
    local t0=$SECONDS rc=0
    MOLT_TEST_WRAPPER="${vg[*]} --log-file=$out/vg.%p.log" MOLT_TEST_TIMEOUT_SCALE=$scale \
        ctest --test-dir "$dir" -R "^$suite\$" --output-on-failure >"$out/ctest.log" 2>&1 || rc=$?
    echo "$rc" >"$out/ctest.rc"
    echo "   $suite: tests $([ "$rc" -eq 0 ] && echo passed || echo FAILED) ($((SECONDS - t0)) s)"
}

echo "== integration suites under valgrind (timeouts x$scale, $jobs at a time): ${suites[*]}"
t0=$SECONDS
running=0
for suite in "${suites[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    run_suite "$suite" &
    running=$((running + 1))
done
wait || true

# An error shows up in the log of the process that made it, between the
# markers (leaks at exit included); a process killed by SIGKILL writes no
# ERROR SUMMARY, so the markers are what is counted.
status=0
echo "== results ($(((SECONDS - t0) / 60)) min $(((SECONDS - t0) % 60)) s)"
for suite in "${suites[@]}"; do
    out=$logs/$suite
    nlogs=0 errors=0 bad=()
    for f in "$out"/vg.*.log; do
        [ -e "$f" ] || continue
        nlogs=$((nlogs + 1))
        n=$(grep -c '@@memcheck-error@@' "$f" || true)
        if [ "$n" -gt 0 ]; then
            errors=$((errors + n))
            bad+=("$f")
        fi
    done
    rc=$(cat "$out/ctest.rc" 2>/dev/null || echo 1)
    printf '   %-16s %s, %d valgrind processes, %d valgrind errors\n' "$suite" \
        "$([ "$rc" -eq 0 ] && echo "tests passed" || echo "TESTS FAILED")" "$nlogs" "$errors"
    if [ "$rc" -ne 0 ]; then
        status=1
        echo "      CTest output: $out/ctest.log"
    fi
    if [ "$nlogs" -eq 0 ]; then
        status=1
        echo "      no valgrind log: moltd did not run under valgrind"
    fi
    if [ "$errors" -gt 0 ]; then
        status=1
        for f in "${bad[@]}"; do
            echo "      $f"
        done
    fi
done
for s in "${!excluded[@]}"; do
    [ $# -gt 0 ] || echo "   $s: not run (${excluded[$s]})"
done
echo "valgrind logs: $logs/SUITE/vg.PID.log"
[ "$status" -eq 0 ] && echo "memcheck: clean" || echo "memcheck: FAILED"
exit $status
