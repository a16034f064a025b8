#!/usr/bin/env bash
# Starts virtlogd and libvirtd by hand (these machines have no systemd) unless they already run, and waits
# until qemu:///system answers. The pids of daemons started here are kept in build/libvirt/*.owned, so
# stop.sh (and the test that stops libvirtd) only ever stop what this script started.
#
# start.sh --private DIR starts instead a second, private libvirtd for the lab: in its own mount namespace,
# with /run/libvirt, /var/lib/libvirt, /var/log/libvirt and /etc/libvirt/qemu replaced by folders under DIR
# (its socket is DIR/run/libvirt-sock; URI qemu+unix:///system?socket=DIR/run/libvirt-sock) and a copy of
# qemu.conf with QEMU's seccomp sandbox off: the lab's guest-to-host channel is a QEMU guestfwd that spawns
# socat per guest connection, which the sandbox (spawn=deny) kills. The system's libvirtd, its domains and
# /etc stay untouched; the capabilities cache is shared, so the private daemon answers within a second.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p build/libvirt

private=
if [ "${1:-}" = --private ]; then
  [ -n "${2:-}" ] || { echo "start: --private needs a folder" >&2; exit 2; }
  mkdir -p "$2"
  private=$(cd "$2" && pwd)
fi

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

start_private() {
  local d=$1
  if [ -s "$d/libvirtd.pid" ] && kill -0 "$(cat "$d/libvirtd.pid")" 2>/dev/null; then
    return 0
  fi
  mkdir -p "$d"/{run,lib,log/qemu,etc-qemu}
  {
    cat /etc/libvirt/qemu.conf
    echo 'seccomp_sandbox = 0'
    # No virtlogd in the namespace: QEMU writes its log file itself.
    echo 'stdio_handler = "file"'
  } > "$d/qemu.conf"
  unshare -m --propagation private sh -c '
    set -e
    d=$1
    mount --bind "$d/qemu.conf" /etc/libvirt/qemu.conf
    mount --bind "$d/etc-qemu" /etc/libvirt/qemu
    mount --bind "$d/run" /run/libvirt
    mount --bind "$d/lib" /var/lib/libvirt
    mount --bind "$d/log" /var/log/libvirt
    exec libvirtd -d --pid-file "$d/libvirtd.pid"
  ' sh "$d"
}

if [ -n "$private" ]; then
  uri="qemu+unix:///system?socket=$private/run/libvirt-sock"
  start_private "$private"
else
  uri=qemu:///system
  start_daemon virtlogd
  start_daemon libvirtd
fi

# The first start probes QEMU's capabilities for x86_64 and i386 (~12 s); later starts use the cache.
for _ in $(seq 1 240); do
  if virsh -q -c "$uri" version >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
echo "start: libvirtd did not answer on $uri within 120 s; see /var/log/libvirt/ and 'libvirtd -v'" >&2
exit 1
