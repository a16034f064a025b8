#!/usr/bin/env bash
# DPDK for the data-path tests: Debian's dpdk-testpmd, and DPDK 24.11 from trixie run through trixie's
# own loader (bookworm's glibc is too old for it) under build/dpdk/trixie. 22.11 lacks the ring
# telemetry (>= 24.03) the health checks use; tests pick the newest testpmd found.
# Safe to run again: it only adds what is missing. Nothing touches the system's apt state except
# apt_install of bookworm packages.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

# dpdk-testpmd lives in dpdk-dev (not dpdk); the memif PMD is a separate library package.
apt_install dpdk-dev librte-net-memif23

P=build/dpdk/trixie
if [ -x "$P/fs/usr/bin/dpdk-testpmd" ]; then
  exit 0
fi
rm -rf "$P"
mkdir -p "$P/apt/lists/partial" "$P/apt/cache/archives/partial" "$P/debs" "$P/fs"
# Same archive as the system's own sources; bookworm's keyring verifies trixie.
uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
uri=${uri:-http://deb.debian.org/debian}
cat >"$P/apt/trixie.sources" <<SRC
Types: deb
URIs: $uri
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
abs=$(cd "$P" && pwd)
APTX=(-o "Dir::Etc::SourceList=$abs/apt/trixie.sources" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$abs/apt/lists" -o "Dir::Cache=$abs/apt/cache" -o APT::Sandbox::User=root)
apt-get "${APTX[@]}" update -qq
# Every DPDK library testpmd may load, plus the runtime libraries of trixie they link against
# (the loader must not mix bookworm's glibc in).
mapfile -t rte < <(apt-cache "${APTX[@]}" depends --recurse --no-recommends --no-suggests dpdk-dev \
  | grep -E '^librte-[a-z0-9-]+25$' | sort -u)
runtime=(libc6 gcc-14-base libgcc-s1 ibverbs-providers libbsd0 libmd0 libelf1t64 libzstd1 zlib1g libfdt1
  libibverbs1 libnl-3-200 libnl-route-3-200 libjansson4 libnuma1 libpcap0.8t64 libdbus-1-3 libsystemd0
  libcap2 liblzma5 libatomic1 libipsec-mb2 libisal2 libssl3t64 libxdp1 libbpf1 libmnl0 libexpat1 libbz2-1.0)
(cd "$P/debs" && apt-get "${APTX[@]}" download -qq dpdk-dev "${rte[@]}" "${runtime[@]}")
for d in "$P"/debs/*.deb; do dpkg -x "$d" "$P/fs"; done
echo "set-up: DPDK $(ls "$P"/debs/dpdk-dev_*.deb | sed 's/.*dpdk-dev_\([^_]*\)_.*/\1/') under $P"
