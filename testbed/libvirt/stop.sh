#!/usr/bin/env bash
# Stops the libvirtd and virtlogd that start.sh started (never daemons someone else started) and
# restores /dev/kvm. QEMU processes of running domains outlive libvirtd; tests destroy the domains they start.
# stop.sh --private DIR stops only the private libvirtd of `start.sh --private DIR`.
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
if [ "${1:-}" = --private ]; then
  pidfile=$2/libvirtd.pid
  if [ -s "$pidfile" ]; then
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then
        echo "stop: the private libvirtd (pid $pid) did not exit within 5 s" >&2
        exit 1
      fi
    fi
    rm -f "$pidfile"
  fi
  # /dev/kvm stays as start.sh set it while the system libvirtd of this checkout still runs.
  [ -e build/libvirt/libvirtd.owned ] && exit 0
else
  stop libvirtd
  stop virtlogd
fi
if [ -e build/libvirt/kvm-mode.orig ]; then
  read -r mode owner group < build/libvirt/kvm-mode.orig
  chown "$owner:$group" /dev/kvm && chmod "$mode" /dev/kvm
  rm -f build/libvirt/kvm-mode.orig
fi
