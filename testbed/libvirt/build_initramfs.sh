#!/usr/bin/env bash
# build_initramfs.sh KROOT KVER OUT: a busybox initramfs with the NIC drivers the hot-plug tests use and an
# init that reports PCI devices appearing and disappearing on the serial console (the tests' guest-side
# oracle, independent of libvirt). Variants: MODULES="mod ..." replaces the module list (dependencies are
# added), INIT=FILE replaces the init script.
set -euo pipefail
kroot=$1 kver=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

mkdir -p "$stage"/{bin,dev,proc,sys,run,lib/modules}
cp /bin/busybox "$stage/bin/busybox"
for applet in sh mount umount insmod cat readlink basename sleep ls echo mkdir rm poweroff switch_root; do
  ln -s busybox "$stage/bin/$applet"
done

# Load order from the module dependencies (modprobe --show-depends over an index built by depmod -b);
# "builtin" lines need nothing. Modules are stored uncompressed so busybox insmod can load them.
depmod -b "$kroot" "$kver"
: > "$stage/lib/modules/order"
for mod in ${MODULES:-e1000e virtio_pci virtio_net}; do
  modprobe -d "$kroot" -S "$kver" --show-depends "$mod" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
  name=$(basename "$ko"); name=${name%.xz}
  case "$ko" in
    *.xz) xz -dc "$ko" > "$stage/lib/modules/$name" ;;
    *) cp "$ko" "$stage/lib/modules/$name" ;;
  esac
  echo "$name" >> "$stage/lib/modules/order"
done

install -m 0755 "${INIT:-$here/guest-init.sh}" "$stage/init"
(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) > "$out.tmp"
mv "$out.tmp" "$out"
