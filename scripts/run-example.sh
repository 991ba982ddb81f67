#!/usr/bin/env bash
# Builds molt and runs moltd in the foreground on examples/molt.json:
# 2 workers serving the hello plugin on 127.0.0.1:8080.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
molt_install_deps

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null

sock=build/run/control.sock
cat <<MSG
moltd is starting in the foreground on examples/molt.json (Ctrl-C stops it).
From another terminal:
  curl http://127.0.0.1:8080/                      # hello from the hello plugin
  build/moltctl -s $sock status                    # workers, pids, requests
  kill -HUP \$(pgrep -o moltd)                     # reload (zero-downtime reload: coming; logs that it is not yet built)
  build/moltctl -s $sock stop                      # graceful stop (or Ctrl-C here)
MSG
exec build/moltd -c examples/molt.json
