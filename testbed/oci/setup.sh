#!/usr/bin/env bash
# The OCI hooks test bed: Debian's podman 4.3 (run with the containerd test bed's runc, since podman's
# default crun refuses this machine's hybrid cgroup layout). runc and busybox come from
# testbed/containerd/setup.sh, which this runs first. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

bash testbed/containerd/setup.sh
apt_install podman
echo "set-up: podman $(podman --version | awk '{print $3}') ready"
