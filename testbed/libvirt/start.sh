#!/usr/bin/env bash
# Starts virtlogd and libvirtd by hand (these machines have no systemd) unless they already run, and waits
# until qemu:///system answers. The pids of daemons started here are kept in build/libvirt/*.owned, so
# stop.sh (and the test that stops libvirtd) only ever stop what this script started.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p build/libvirt

# QEMU probes KVM; with /dev/kvm 0600 root:root every domain start re-probes (start 4.3 s instead of 0.3 s)
# even though the guests use TCG. stop.sh restores the original mode.
if [ -e /dev/kvm ] && getent group kvm >/dev/null; then
  [ -e build/libvirt/kvm-mode.orig ] || stat -c '%a %U %G' /dev/kvm > build/libvirt/kvm-mode.orig
  chgrp kvm /dev/kvm
  chmod 0660 /dev/kvm
fi

# start_daemon NAME: starts NAME -d unless the one named by its default pid file runs.
start_daemon() {
  local name=$1 pidfile=/run/$1.pid
  if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    return 0
  fi
  "$name" -d
  for _ in $(seq 1 50); do
    [ -s "$pidfile" ] && break
    sleep 0.1
  done
  cp "$pidfile" "build/libvirt/$name.owned"
}
start_daemon virtlogd
start_daemon libvirtd

# The first start probes QEMU's capabilities for x86_64 and i386 (~12 s); later starts use the cache.
for _ in $(seq 1 240); do
  if virsh -q -c qemu:///system version >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
echo "start: libvirtd did not answer on qemu:///system within 120 s; see /var/log/libvirt/ and 'libvirtd -v'" >&2
exit 1
