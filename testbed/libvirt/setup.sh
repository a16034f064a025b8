#!/usr/bin/env bash
# Tier C testbed: Debian's libvirtd 9.0 + QEMU 7.2 (TCG), started by hand (no systemd), and a small q35
# guest image under build/libvirt: the Debian kernel as a PVH vmlinux plus a busybox initramfs whose init
# reports PCI hot-plug (with the NIC's MAC) on the serial console. Safe to run again; it only redoes what
# is missing. Facts behind the choices: shared notes "libvirt-qemu-lab" (tier C).
# --no-start: packages and guest image only (the lab runs its own private libvirtd).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

OUT=build/libvirt
apt_install libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils \
  busybox-static kmod cpio xz-utils
mkdir -p "$OUT"

# The guest kernel: the version bookworm's linux-image-amd64 points at, so the script keeps working as
# Debian moves it. Only vmlinux and the initramfs are kept; the .deb stays as the download cache.
# The initramfs is rebuilt whenever its scripts change.
initramfs_sum=$(cat testbed/libvirt/build_initramfs.sh testbed/libvirt/guest-init.sh | sha256sum | cut -d' ' -f1)
if [ ! -s "$OUT/vmlinux" ] || [ ! -s "$OUT/initramfs.cpio.gz" ] \
  || [ "$(cat "$OUT/initramfs.sum" 2>/dev/null)" != "$initramfs_sum" ]; then
  kroot=$(mktemp -d "$OUT/kroot.XXXXXX")
  trap 'rm -rf "$kroot"' EXIT
  kver=$(bash testbed/libvirt/kernel.sh "$kroot")
  # PVH boot of the uncompressed ELF is ~2 s faster under TCG than the bzImage; it is the xz stream
  # inside vmlinuz.
  python3 testbed/libvirt/extract_vmlinux.py "$kroot/boot/vmlinuz-$kver" "$OUT/vmlinux.tmp"
  mv "$OUT/vmlinux.tmp" "$OUT/vmlinux"
  bash testbed/libvirt/build_initramfs.sh "$kroot" "$kver" "$OUT/initramfs.cpio.gz"
  echo "$initramfs_sum" > "$OUT/initramfs.sum"
fi

[ "${1:-}" = --no-start ] || bash testbed/libvirt/start.sh
