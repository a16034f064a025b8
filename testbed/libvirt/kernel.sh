#!/usr/bin/env bash
# kernel.sh KROOT: unpacks the Debian kernel bookworm's linux-image-amd64 points at into KROOT (boot/ and
# lib/modules/) and prints its version. The .deb is cached under build/libvirt/dl, shared by the tier C
# and tier D set-ups. Run from the repository root.
set -euo pipefail
kroot=$1
kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kpkg" ] || { echo "set-up: cannot find the kernel package linux-image-amd64 depends on" >&2; exit 1; }
mkdir -p build/libvirt/dl
if ! ls build/libvirt/dl/"${kpkg}"_*.deb >/dev/null 2>&1; then
  echo "set-up: downloading $kpkg" >&2
  # apt warns that it downloads unsandboxed as root into a directory _apt cannot read; harmless here.
  (cd build/libvirt/dl && apt-get download -qq "$kpkg" 2>/dev/null)
fi
dpkg-deb -x build/libvirt/dl/"${kpkg}"_*.deb "$kroot"
echo "${kpkg#linux-image-}"
