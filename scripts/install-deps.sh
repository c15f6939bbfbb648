#!/usr/bin/env bash
# Installs what building and testing aft-sidecar needs on a fresh Debian/Ubuntu
# machine beyond Rust and a C/C++ compiler (the `zmq` crate builds libzmq from
# source): redis-server and redis-cli (tests start real servers) and Python's
# venv module (the Python client's tests). Idempotent: skips what is there.
set -euo pipefail

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)

if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "install-deps: installing ${need_apt[*]} with apt-get"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# A running redis-server service is not needed (tests start their own); keep
# the Debian package's default instance from holding port 6379 in CI.
if command -v systemctl >/dev/null 2>&1; then
  systemctl stop redis-server >/dev/null 2>&1 || true
fi
