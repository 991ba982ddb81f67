#!/usr/bin/env bash
# Installs the Debian 12 packages molt needs to build, test and run, if any
# is missing. Sourced by scripts/run-example.sh and scripts/test.sh.
# `molt_install_deps fuzz` also installs MOLT_FUZZ_DEPS (the fuzz build, fuzz/).
# `molt_install_deps memcheck` also installs MOLT_MEMCHECK_DEPS (scripts/memcheck.sh).
set -euo pipefail

MOLT_DEPS=(
    gcc make cmake pkg-config           # toolchain
    libev-dev uuid-dev libmsgpack-dev libjansson-dev libhttp-parser-dev nettle-dev libxxhash-dev uthash-dev  # libraries
    check                               # unit and integration test framework
    curl wrk python3                    # real clients used by the tests (python3: tests/chaos/)
    systemd                             # systemd-socket-activate, systemd-analyze (tests/integration/test_systemd.c)
    util-linux passwd                   # setpriv; useradd, groupadd (integ_production makes a user)
    man-db                              # man and groff: integ_sdk renders the installed man pages
)

# Only for the libFuzzer build (fuzz/README.md): clang 14, its libFuzzer and
# sanitizer runtimes (libclang_rt.fuzzer), llvm-symbolizer for readable stacks.
MOLT_FUZZ_DEPS=(
    clang libclang-rt-14-dev llvm
)

# Only for scripts/memcheck.sh: the integration suites with moltd under valgrind.
MOLT_MEMCHECK_DEPS=(
    valgrind
)

molt_install_deps() {
    local missing=() want=("${MOLT_DEPS[@]}")
    [ "${1:-}" = fuzz ] && want+=("${MOLT_FUZZ_DEPS[@]}")
    [ "${1:-}" = memcheck ] && want+=("${MOLT_MEMCHECK_DEPS[@]}")
    for p in "${want[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "molt: installing ${missing[*]}" >&2
        local sudo=()
        [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        "${sudo[@]}" apt-get update -q
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${missing[@]}"
    fi
}
