#!/usr/bin/env bash
# The main job: builds aft-sidecar, starts it on the embedded store (no
# server needed) in a temporary directory, runs concurrent two-function DAG
# transactions through its real ZeroMQ IPC sockets, and prints what happened
# and the number of read-atomicity anomalies (0).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked -p aft-sidecar --bins
exec target/release/aft-demo "$@"
