#!/bin/bash
# PID 1 of the SR-IOV lab's outer guest (L1), on this machine's root shared read-only over 9p with a tmpfs overlay.
# Plays the physical host: creates igbvf VFs on the emulated igb PF, starts this machine's libvirtd 9.0, runs
# the check (lab.sriov.check, with the project's virtualenv) and powers off. Everything it reports goes to
# the read-write 9p share "labout": l1.log (this script's output) and result.json.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=/run/labd-out
t0=$(cut -d' ' -f1 /proc/uptime)

mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p "$out" /dev/pts /dev/shm /tmp
# devtmpfs lacks these links; bash's process substitution needs /dev/fd.
ln -sfn /proc/self/fd /dev/fd
ln -sfn /proc/self/fd/0 /dev/stdin
ln -sfn /proc/self/fd/1 /dev/stdout
ln -sfn /proc/self/fd/2 /dev/stderr
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 labout "$out"
exec > >(tee "$out/l1.log") 2>&1
finish() {
  echo "l1: done at uptime $(cut -d' ' -f1 /proc/uptime) s (init started at $t0 s)"
  sync
  echo o > /proc/sysrq-trigger
  sleep 60
}
trap finish EXIT
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
# No tmpfs on /tmp: the root overlay is already writable, and a checkout under /tmp (a CI clone) must
# stay visible here.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
hostname labd-l1
ip link set lo up

# The kernel's module tree from the set-up, where modprobe and libvirt look for it.
kver=$(uname -r)
mkdir -p /lib/modules
ln -sfn "$repo/build/lab-d/kroot/lib/modules/$kver" "/lib/modules/$kver"
# e1000e drives the spare non-SR-IOV NIC (the "not a VF" error case). No udev here to load them on demand.
modprobe -a igb igbvf vfio-pci e1000e || { echo "l1: modprobe igb igbvf vfio-pci e1000e failed"; exit 1; }

# The emulated igb PF (8086:10c9): bring it up and create the VFs.
pf_pci=
for d in /sys/bus/pci/devices/*; do
  [ "$(cat "$d/vendor"):$(cat "$d/device")" = 0x8086:0x10c9 ] && pf_pci=${d##*/}
done
[ -n "$pf_pci" ] || { echo "l1: no igb PF (8086:10c9) on PCI"; exit 1; }
for _ in $(seq 1 50); do
  pf=$(ls "/sys/bus/pci/devices/$pf_pci/net" 2>/dev/null | head -n1)
  [ -n "$pf" ] && break
  sleep 0.1
done
[ -n "$pf" ] || { echo "l1: igb PF $pf_pci has no netdev"; exit 1; }
ip link set "$pf" up
echo 2 > "/sys/bus/pci/devices/$pf_pci/sriov_numvfs"
echo "l1: PF $pf ($pf_pci) with $(cat "/sys/bus/pci/devices/$pf_pci/sriov_numvfs") VFs at uptime $(cut -d' ' -f1 /proc/uptime) s"

mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/qemu /var/cache/libvirt/qemu /run/libvirt
virtlogd -d
libvirtd -d
for _ in $(seq 1 240); do
  virsh -q -c qemu:///system version >/dev/null 2>&1 && break
  sleep 0.5
done
echo "l1: libvirtd answers at uptime $(cut -d' ' -f1 /proc/uptime) s"

cd "$repo"
"$repo/.venv/bin/python" -m lab.sriov.check --pf "$pf" --result "$out/result.json" --work "$out/l2"
echo "l1: check exited with $?"
cp /var/log/libvirt/qemu/labd-l2.log "$out/" 2>/dev/null
