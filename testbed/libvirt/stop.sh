#!/usr/bin/env bash
# Stops the libvirtd and virtlogd that start.sh started (by their pid files) and restores /dev/kvm.
# Running domains are destroyed by libvirtd's own shutdown only if configured; tests destroy theirs.
set -euo pipefail
cd "$(dirname "$0")/../.."

stop() {
  local pidfile=$1 pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  echo "stop: pid $pid from $pidfile did not exit within 5 s" >&2
  return 1
}
stop /run/libvirtd.pid
stop /run/virtlogd.pid
if [ -e build/libvirt/kvm-mode.orig ]; then
  read -r mode owner group < build/libvirt/kvm-mode.orig
  chown "$owner:$group" /dev/kvm && chmod "$mode" /dev/kvm
  rm -f build/libvirt/kvm-mode.orig
fi
