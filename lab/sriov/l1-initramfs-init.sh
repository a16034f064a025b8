#!/bin/sh
# Init of the SR-IOV lab's outer guest (L1) initramfs: mounts this machine's root, exported read-only over 9p as
# "l1root", under a tmpfs overlay (so L1 can write anywhere and nothing reaches the host), then hands over
# to the script named by `labd.init=` on the kernel command line (a path on that root).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do
  insmod "/lib/modules/$m" || echo "l1-initramfs: insmod $m failed"
done
init=
for arg in $(cat /proc/cmdline); do
  case "$arg" in labd.init=*) init=${arg#labd.init=} ;; esac
done
mkdir -p /lower /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose l1root /lower
mount -t tmpfs -o size=1500m tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot
if [ -z "$init" ] || [ ! -x "/newroot$init" ]; then
  echo "l1-initramfs: labd.init=$init is not an executable on the shared root; powering off"
  poweroff -f
fi
for d in proc sys dev; do
  mount -o move "/$d" "/newroot/$d"
done
exec switch_root /newroot "$init"
