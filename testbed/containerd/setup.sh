#!/usr/bin/env bash
# The real containerd test beds, without installing anything system-wide: containerd 1.7 (Debian trixie,
# NRI v0.6.1) under build/containerd and containerd 2.1 (Debian forky, NRI v0.8.0) under
# build/containerd-2.1, each from a private apt configuration; runc, CNI plugins and busybox from
# bookworm, all unpacked with dpkg -x; a static pause binary; pause and busybox OCI archives; the test
# bed's CNI plugin. Safe to run again: every step is skipped when its output is up to date.
# Usage: setup.sh [1.7|2.1]...   (default: both)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

HERE=testbed/containerd
PYTHON=${PYTHON:-python3}

apt_install gcc libc6-dev python3 util-linux iproute2 libseccomp2

# newer TARGET SOURCE...: true when TARGET is missing or older than any SOURCE.
newer() {
  local target=$1 src
  shift
  [ -e "$target" ] || return 0
  for src in "$@"; do
    [ "$src" -nt "$target" ] && return 0
  done
  return 1
}

# fetch_packages PREFIX SUITE: containerd from SUITE, the rest from the system's bookworm, into PREFIX/debs.
fetch_packages() {
  local apt_dir=$PWD/$1/apt debs=$PWD/$1/debs suite=$2
  local uri
  # The system's own Debian mirror, so SUITE comes from where bookworm already does.
  uri=$(apt-get indextargets --format '$(REPO_URI)' 'Created-By: Packages' 2>/dev/null |
    grep -m1 '/debian/$' || echo 'http://deb.debian.org/debian/')
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$debs"
  cat >"$apt_dir/$suite.sources" <<SOURCES
Types: deb
URIs: $uri
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  # Private lists and cache: the system's sources, preferences and package state stay untouched.
  local aptx=(-o "Dir::Etc::SourceList=$apt_dir/$suite.sources" -o Dir::Etc::SourceParts=/dev/null
    -o Dir::Etc::PreferencesParts=/dev/null -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::Cache=$apt_dir/cache" -o APT::Sandbox::User=root)
  rm -f "$debs"/*.deb
  echo "set-up: downloading containerd from $suite"
  apt-get "${aptx[@]}" -qq update
  (cd "$debs" && apt-get "${aptx[@]}" -qq download containerd)
  # bookworm's runc: the newer suites' runc needs a newer glibc than Debian 12 has.
  local bookworm=(runc containernetworking-plugins busybox-static)
  echo "set-up: downloading ${bookworm[*]} from bookworm"
  if ! (cd "$debs" && apt-get -o APT::Sandbox::User=root -qq download "${bookworm[@]}" 2>/dev/null); then
    apt-get -qq update # fresh machine or stale lists
    (cd "$debs" && apt-get -o APT::Sandbox::User=root -qq download "${bookworm[@]}")
  fi
}

# build_bed PREFIX SUITE SERIES: containerd SERIES.x from SUITE, ready to run from PREFIX.
build_bed() {
  local P=$1 suite=$2 series=$3
  local FS=$P/fs version
  mkdir -p "$P"
  if [ ! -e "$FS/.complete" ]; then
    fetch_packages "$P" "$suite"
    rm -rf "$FS"
    for deb in "$P"/debs/*.deb; do
      dpkg -x "$deb" "$FS"
    done
    touch "$FS/.complete"
  fi

  # Also proves the binary runs on this machine's glibc (the newer suites link against newer ones).
  if ! version=$("$FS/usr/bin/containerd" --version | awk '{print $3}'); then
    echo "set-up: $FS/usr/bin/containerd from $suite does not run here (glibc?); see the error above" >&2
    exit 1
  fi
  case $version in
    "$series".* | "v$series".*) ;;
    *)
      echo "set-up: expected containerd $series.x in $FS, got '$version'; remove $FS and run again" >&2
      exit 1
      ;;
  esac

  if newer "$P/pause" "$HERE/pause.c"; then
    gcc -static -Os -s -o "$P/pause" "$HERE/pause.c"
  fi

  mkdir -p "$P/cni/bin"
  if newer "$P/cni/bin/cni-veth" "$HERE/cni-veth"; then
    install -m 0755 "$HERE/cni-veth" "$P/cni/bin/cni-veth"
  fi
  ln -sfn "../../fs/usr/lib/cni/loopback" "$P/cni/bin/loopback"

  mkdir -p "$P/images"
  if newer "$P/images/pause.tar" "$P/pause" "$HERE/oci_image.py"; then
    "$PYTHON" "$HERE/oci_image.py" --ref localhost/test/pause:1.0 --out "$P/images/pause.tar" \
      --entrypoint /pause --file "/pause=$P/pause"
  fi
  if newer "$P/images/busybox.tar" "$FS/bin/busybox" "$HERE/oci_image.py"; then
    local links=() applet
    for applet in $("$FS/bin/busybox" --list); do
      [ "$applet" = busybox ] || links+=(--symlink "/bin/$applet=busybox")
    done
    "$PYTHON" "$HERE/oci_image.py" --ref localhost/test/busybox:1.0 --out "$P/images/busybox.tar" \
      --entrypoint /bin/sh --file "/bin/busybox=$FS/bin/busybox" "${links[@]}" \
      --dir /tmp --dir /etc --dir /root
  fi
  echo "set-up: containerd $version test bed ready in $P"
}

# The prefixes and suites here are also in testbed/containerd/runtime.py (RUNTIMES).
[ $# -gt 0 ] || set -- 1.7 2.1
for series in "$@"; do
  case $series in
    1.7) build_bed build/containerd trixie 1.7 ;;
    2.1) build_bed build/containerd-2.1 forky 2.1 ;;
    *)
      echo "set-up: unknown containerd series '$series'; known: 1.7 2.1" >&2
      exit 2
      ;;
  esac
done
