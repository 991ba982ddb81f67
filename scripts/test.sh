#!/usr/bin/env bash
# Builds molt twice (plain, and with ASan+UBSan) and runs the whole test
# suite through CTest in both builds; then builds the libFuzzer targets with
# clang (fuzz/) and runs each for a short smoke run (30 s, two at a time).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
molt_install_deps fuzz

jobs=$(nproc)
status=0
for variant in plain asan; do
    dir=build-test-$variant
    flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
    [ "$variant" = asan ] && flags+=(-DMOLT_SANITIZE=ON)
    echo "== $variant build ($dir)"
    cmake -S . -B "$dir" "${flags[@]}" >/dev/null
    cmake --build "$dir" -j"$jobs" >/dev/null
    echo "== $variant tests"
    # Leaks are errors; ASan must not be fooled by the forked children.
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ctest --test-dir "$dir" --output-on-failure -j"$jobs" || status=1
done

# The fuzz build: clang, only the fuzz targets; the seeds in fuzz/corpus/ are read, never written.
dir=build-test-fuzz
echo "== fuzz build ($dir)"
CC=clang cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOLT_FUZZ=ON -DBUILD_TESTING=OFF >/dev/null
cmake --build "$dir" --target fuzz -j"$jobs" >/dev/null
echo "== fuzz smoke runs"
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$dir/fuzz" --output-on-failure -j"$jobs" || status=1
exit $status
