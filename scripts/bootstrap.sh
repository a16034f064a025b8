#!/usr/bin/env bash
# Python environment for the project: Debian packages the wheels need, then .venv with the project
# installed editable with all extras. Safe to run again; it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# libvirt-python builds against libvirt-dev; pkg-config finds it. gcc builds small test binaries.
# iproute2: the netns tests create namespaces with `ip netns` and check the kernel with `ip -j`.
apt_install python3 python3-venv python3-dev gcc make pkg-config libvirt-dev iproute2
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[host,guest,dev]'
touch .venv/.stamp
