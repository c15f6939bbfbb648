#!/usr/bin/env bash
# Installs what building and testing aft-sidecar needs on a fresh Debian/Ubuntu
# machine: libzmq (the ZeroMQ C library the `zmq` crate links), pkg-config,
# redis-server and redis-cli (tests start real servers), and a Python
# virtualenv for the Python client. Idempotent: skips what is already there.
set -euo pipefail

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
pkg-config --exists libzmq 2>/dev/null || need_apt+=(libzmq3-dev)

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
