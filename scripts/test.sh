#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs, then runs
# the Rust tests (unit, storage conformance against embedded / Redis / Redis
# Cluster, engine, IPC end to end with the real binary) and the Python
# client's pytest suite against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== cargo build"
cargo build --workspace --all-targets --locked

echo "== cargo test"
cargo test --workspace --locked -- --test-threads=2

echo "== cluster (manifests, Dockerfile)"
cluster/validate.sh

if [ -f python-client/pyproject.toml ]; then
  echo "== python client"
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e 'python-client[test]'
  target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
  AFT_SIDECAR_BIN="$target_dir/debug/aft-sidecar" .venv/bin/python -m pytest -q python-client/tests
fi
