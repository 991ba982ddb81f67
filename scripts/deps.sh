#!/usr/bin/env bash
# Installs the Debian 12 packages molt needs to build, test and run, if any
# is missing. Sourced by scripts/run-example.sh and scripts/test.sh.
set -euo pipefail

MOLT_DEPS=(
    gcc make cmake pkg-config           # toolchain
    libev-dev uuid-dev libmsgpack-dev libjansson-dev libhttp-parser-dev nettle-dev libxxhash-dev uthash-dev  # libraries
    check                               # unit and integration test framework
    curl wrk                            # real clients used by the tests
)

molt_install_deps() {
    local missing=()
    for p in "${MOLT_DEPS[@]}"; do
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
