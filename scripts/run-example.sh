#!/usr/bin/env bash
# Builds molt and runs moltd in the foreground on examples/molt.json:
# 2 workers serving the hello plugin on 127.0.0.1:8080.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
molt_install_deps

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null

ctl="build/moltctl -s build/run/control.sock"
cat <<MSG
moltd is starting in the foreground on examples/molt.json (Ctrl-C stops it gracefully).
From another terminal:
  curl http://127.0.0.1:8080/          hello from the hello plugin
  $ctl status   workers, pids, requests
  $ctl reload   after editing examples/molt.json: a new generation, or a rollback and why
  $ctl stop     graceful stop; returns once moltd is gone
MSG
exec build/moltd -c examples/molt.json
