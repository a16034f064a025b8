#!/usr/bin/env bash
# Set-up of the lab's SR-IOV level (`make testbed-lab-d`): everything under build/lab-d for one nested run (shared notes "libvirt-qemu-lab" §5, §6).
#   trixie/                 Debian trixie chroot with QEMU 10, whose `igb` is an SR-IOV PF (needs glibc 2.38,
#                           so it cannot run on bookworm directly)
#   vmlinux, kroot/         the Debian kernel as a PVH ELF and its module tree (L1 and L2 load modules from it)
#   l1-initramfs.cpio.gz    outer guest: mounts this machine's root read-only over 9p + tmpfs overlay
#   l2-initramfs.cpio.gz    inner guest: the libvirt test bed's busybox guest with igbvf, reporting PCI add/remove
# The outer guest runs this machine's own libvirtd 9.0 + QEMU 7.2 and the project's virtualenv, so those are
# installed here too (no daemon is started on this machine). Safe to run again; it redoes only what is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

OUT=build/lab-d
apt_install mmdebstrap libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 \
  qemu-utils busybox-static kmod cpio xz-utils iproute2
mkdir -p "$OUT"

if [ ! -x "$OUT/trixie/usr/bin/qemu-system-x86_64" ]; then
  # The Debian archive this machine already uses, so the chroot comes from the same mirror.
  mirror=$(apt-get indextargets --format '$(REPO_URI) $(CODENAME)' | awk '$2 == "bookworm" {print $1; exit}')
  [ -n "$mirror" ] || { echo "set-up: no bookworm entry in the apt sources to take the mirror from" >&2; exit 1; }
  rm -rf "$OUT/trixie.tmp"
  echo "set-up: building the trixie chroot with QEMU 10 from $mirror"
  mmdebstrap --quiet --mode=root --variant=apt --include=qemu-system-x86 trixie "$OUT/trixie.tmp" "$mirror"
  mkdir -p "$OUT/trixie.tmp/l1root" "$OUT/trixie.tmp/labout"
  mv "$OUT/trixie.tmp" "$OUT/trixie"
fi

if [ ! -s "$OUT/vmlinux" ] || [ ! -s "$OUT/kver" ]; then
  rm -rf "$OUT/kroot"
  mkdir -p "$OUT/kroot"
  kver=$(bash testbed/libvirt/kernel.sh "$OUT/kroot")
  python3 testbed/libvirt/extract_vmlinux.py "$OUT/kroot/boot/vmlinuz-$kver" "$OUT/vmlinux.tmp"
  mv "$OUT/vmlinux.tmp" "$OUT/vmlinux"
  # L1 keeps only the module tree (it links it into its /lib/modules); libvirt >= 10 also reads modules.alias.
  rm -rf "$OUT/kroot/boot" "$OUT/kroot/usr"
  depmod -b "$OUT/kroot" "$kver"
  echo "$kver" > "$OUT/kver"
fi
kver=$(cat "$OUT/kver")

if [ ! -s "$OUT/l1-initramfs.cpio.gz" ] || [ lab/sriov/l1-initramfs-init.sh -nt "$OUT/l1-initramfs.cpio.gz" ] \
  || [ testbed/libvirt/build_initramfs.sh -nt "$OUT/l1-initramfs.cpio.gz" ]; then
  MODULES="virtio_pci 9pnet_virtio 9p overlay" INIT=lab/sriov/l1-initramfs-init.sh \
    bash testbed/libvirt/build_initramfs.sh "$OUT/kroot" "$kver" "$OUT/l1-initramfs.cpio.gz"
fi
if [ ! -s "$OUT/l2-initramfs.cpio.gz" ] || [ testbed/libvirt/guest-init.sh -nt "$OUT/l2-initramfs.cpio.gz" ] \
  || [ testbed/libvirt/build_initramfs.sh -nt "$OUT/l2-initramfs.cpio.gz" ]; then
  MODULES=igbvf bash testbed/libvirt/build_initramfs.sh "$OUT/kroot" "$kver" "$OUT/l2-initramfs.cpio.gz"
fi
echo "set-up: the SR-IOV lab is ready under $OUT (kernel $kver)"
