#!/usr/bin/env bash
# Starts virtlogd and libvirtd by hand (these machines have no systemd) unless they already run, and waits
# until qemu:///system answers. Undo with stop.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

# QEMU probes KVM; with /dev/kvm 0600 root:root every domain start re-probes (start 4.3 s instead of 0.3 s)
# even though the guests use TCG. stop.sh restores the original mode.
if [ -e /dev/kvm ] && getent group kvm >/dev/null; then
  mkdir -p build/libvirt
  [ -e build/libvirt/kvm-mode.orig ] || stat -c '%a %U %G' /dev/kvm > build/libvirt/kvm-mode.orig
  chgrp kvm /dev/kvm
  chmod 0660 /dev/kvm
fi

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
running /run/virtlogd.pid || virtlogd -d
running /run/libvirtd.pid || libvirtd -d

# The first start probes QEMU's capabilities for x86_64 and i386 (~12 s); later starts use the cache.
for _ in $(seq 1 240); do
  if virsh -q -c qemu:///system version >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
echo "start: libvirtd did not answer on qemu:///system within 120 s; see /var/log/libvirt/ and 'libvirtd -v'" >&2
exit 1
