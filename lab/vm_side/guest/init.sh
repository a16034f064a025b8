#!/bin/bash
# PID 1 of the lab guest after the switch to the host's root (9p, read-only, under a tmpfs overlay).
# Mounts the kernel file systems, loads the guest modules from build/lab/kernel, configures the service
# NIC (QEMU user networking, only its guestfwd is reachable), gives containerd a real tmpfs for its
# instance folders (overlayfs snapshots cannot sit on an overlay upper), then runs the lab agent.
# Markers on the serial console: LAB-INIT-FAILED <what>, LAB-AGENT-EXIT <code>.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
fail() {
  echo "LAB-INIT-FAILED $*" >/dev/console
  echo o >/proc/sysrq-trigger
  sleep 10
}
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
# No tmpfs on /tmp: the root overlay is already writable, and a checkout under /tmp (a CI clone) must
# stay visible to the guest.
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "cgroup2"
# dpdk-mode pods get the hugepage mount bound into their containers.
mkdir -p /dev/hugepages
mount -t hugetlbfs nodev /dev/hugepages || fail "hugetlbfs"
# 256 MiB of 2 MiB pages for a DPDK app in a dpdk-mode pod (the guest itself needs < 400 MiB).
echo 128 >/proc/sys/vm/nr_hugepages
echo 1 >/proc/sys/kernel/sysrq

repo=$(arg lab.repo)
kver=$(uname -r)
mkdir -p "/lib/modules/$kver"
mount --bind "$repo/build/lab/kernel/lib/modules/$kver" "/lib/modules/$kver" || fail "modules of $kver"
modprobe -a virtio_net virtio_console veth e1000e vfio-pci || fail "modprobe"

ip link set lo up
svc_mac=$(arg lab.svcmac)
for n in /sys/class/net/*; do
  if [ "$(cat "$n/address")" = "$svc_mac" ]; then
    ip link set "${n##*/}" name svc0
    ip addr add 10.0.2.15/24 dev svc0
    ip link set svc0 up
  fi
done
ip link show svc0 >/dev/null 2>&1 || fail "no service NIC with MAC $svc_mac"

mkdir -p "$repo/build/containerd/instances"
mount -t tmpfs tmpfs "$repo/build/containerd/instances" || fail "tmpfs for containerd"
hostname lab-guest

cd "$repo" || fail "cd $repo"
# Not exec'd: bash as PID 1 reaps the orphans (containerd shims re-parent here) while the agent runs.
.venv/bin/python -m lab.vm_side.agent --port-name "$(arg lab.agentport)" </dev/null >/dev/console 2>&1
echo "LAB-AGENT-EXIT $?" >/dev/console
echo o >/proc/sysrq-trigger
sleep 10
