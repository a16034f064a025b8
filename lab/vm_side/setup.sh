#!/usr/bin/env bash
# Set-up of the lab's VM side (`make testbed-lab`): the libvirt/QEMU packages and the guest kernel of the libvirt test
# bed, the containerd test bed, and under build/lab/kernel the lab's own guest pieces: an initramfs that
# mounts this machine's root read-only over 9p under a tmpfs overlay, and the few kernel modules the guest
# loads after the switch (NICs, vfio-pci, veth, virtio console). Safe to run again; it redoes only what
# is missing or older than its sources.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

OUT=build/lab/kernel
# Loaded by the initramfs (9p root + overlay) and, after the switch, by the lab's init.
INITRAMFS_MODULES="virtio_pci 9pnet_virtio 9p overlay"
GUEST_MODULES="virtio_net virtio_console veth e1000e vfio-pci"

bash testbed/libvirt/setup.sh --no-start
bash testbed/containerd/setup.sh
# socat carries each guest connection of the service channel (QEMU guestfwd) to the host service;
# xmllint lets virt-xml-validate check the lab's domain XML against libvirt's schema; dpdk-dev has the
# dpdk-testpmd that a dpdk-mode pod runs.
apt_install socat util-linux libxml2-utils dpdk-dev

deb=$(ls build/libvirt/dl/linux-image-*.deb 2>/dev/null | head -n1)
[ -n "$deb" ] || { echo "lab set-up: no kernel package in build/libvirt/dl; testbed/libvirt/setup.sh failed?" >&2; exit 1; }
kver=$(basename "$deb" | sed -E 's/^linux-image-([^_]+)_.*/\1/')

if [ ! -e "$OUT/.complete" ] || [ lab/vm_side/guest/initramfs-init -nt "$OUT/initramfs.cpio.gz" ] ||
  [ testbed/libvirt/build_initramfs.sh -nt "$OUT/initramfs.cpio.gz" ]; then
  rm -rf "$OUT"
  mkdir -p "$OUT"
  kroot=$(mktemp -d "$PWD/build/lab/kroot.XXXXXX")
  trap 'rm -rf "$kroot"' EXIT
  dpkg-deb -x "$deb" "$kroot"
  MODULES=$INITRAMFS_MODULES INIT=lab/vm_side/guest/initramfs-init \
    bash testbed/libvirt/build_initramfs.sh "$kroot" "$kver" "$OUT/initramfs.cpio.gz"
  # Only the guest modules and their dependencies are kept (a few MB instead of ~400), re-indexed.
  mods=$OUT/lib/modules/$kver
  mkdir -p "$mods"
  cp "$kroot/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$mods/"
  for mod in $GUEST_MODULES; do
    modprobe -d "$kroot" -S "$kver" --show-depends "$mod" | awk '$1 == "insmod" {print $2}'
  done | sort -u | while read -r ko; do
    rel=${ko#"$kroot"/lib/modules/"$kver"/}
    mkdir -p "$mods/$(dirname "$rel")"
    cp "$ko" "$mods/$rel"
  done
  depmod -b "$OUT" "$kver"
  echo "$kver" > "$OUT/version"
  touch "$OUT/.complete"
fi
echo "lab set-up: guest kernel $kver, initramfs and modules ready in $OUT"
