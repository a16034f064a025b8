#!/usr/bin/env bash
# Stops the libvirtd and virtlogd that start.sh started (never daemons someone else started) and
# restores /dev/kvm. QEMU processes of running domains outlive libvirtd; tests destroy the domains they start.
set -euo pipefail
cd "$(dirname "$0")/../.."

stop() {
  local owned=build/libvirt/$1.owned pid
  [ -s "$owned" ] || return 0
  pid=$(cat "$owned")
  rm -f "$owned"
  # The pid file names the same process only while the daemon we started still runs.
  [ "$(cat "/run/$1.pid" 2>/dev/null)" = "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  echo "stop: $1 (pid $pid) did not exit within 5 s" >&2
  return 1
}
stop libvirtd
stop virtlogd
if [ -e build/libvirt/kvm-mode.orig ]; then
  read -r mode owner group < build/libvirt/kvm-mode.orig
  chown "$owner:$group" /dev/kvm && chmod "$mode" /dev/kvm
  rm -f build/libvirt/kvm-mode.orig
fi
