#!/usr/bin/env bash
# The real containerd 1.7 test bed under build/containerd, without installing anything system-wide:
# containerd from Debian trixie (private apt configuration), runc, CNI plugins and busybox from
# bookworm, all unpacked with dpkg -x; a static pause binary; pause and busybox OCI archives; the
# test bed's CNI plugin. Safe to run again: every step is skipped when its output is up to date.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

HERE=testbed/containerd
P=build/containerd
FS=$P/fs
PYTHON=${PYTHON:-python3}

apt_install gcc libc6-dev python3 util-linux iproute2 libseccomp2
mkdir -p "$P"

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

fetch_packages() {
  local apt_dir=$PWD/$P/apt debs=$PWD/$P/debs
  local uri
  # The system's own Debian mirror, so trixie comes from where bookworm already does.
  uri=$(apt-get indextargets --format '$(REPO_URI)' 'Created-By: Packages' 2>/dev/null |
    grep -m1 '/debian/$' || echo 'http://deb.debian.org/debian/')
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$debs"
  cat >"$apt_dir/trixie.sources" <<EOF
Types: deb
URIs: $uri
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # Private lists and cache: the system's sources, preferences and package state stay untouched.
  local aptx=(-o "Dir::Etc::SourceList=$apt_dir/trixie.sources" -o Dir::Etc::SourceParts=/dev/null
    -o Dir::Etc::PreferencesParts=/dev/null -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::Cache=$apt_dir/cache" -o APT::Sandbox::User=root)
  rm -f "$debs"/*.deb
  echo "set-up: downloading containerd from trixie"
  apt-get "${aptx[@]}" -qq update
  (cd "$debs" && apt-get "${aptx[@]}" -qq download containerd)
  # bookworm's runc: trixie's needs a newer glibc than Debian 12 has.
  local bookworm=(runc containernetworking-plugins busybox-static)
  echo "set-up: downloading ${bookworm[*]} from bookworm"
  if ! (cd "$debs" && apt-get -o APT::Sandbox::User=root -qq download "${bookworm[@]}" 2>/dev/null); then
    apt-get -qq update # fresh machine or stale lists
    (cd "$debs" && apt-get -o APT::Sandbox::User=root -qq download "${bookworm[@]}")
  fi
}

if [ ! -e "$FS/.complete" ]; then
  fetch_packages
  rm -rf "$FS"
  for deb in "$P"/debs/*.deb; do
    dpkg -x "$deb" "$FS"
  done
  touch "$FS/.complete"
fi

version=$("$FS/usr/bin/containerd" --version | awk '{print $3}')
case $version in
  1.7.* | v1.7.*) ;;
  *)
    echo "set-up: expected containerd 1.7.x in $FS, got '$version'; remove $FS and run again" >&2
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
  links=()
  for applet in $("$FS/bin/busybox" --list); do
    [ "$applet" = busybox ] || links+=(--symlink "/bin/$applet=busybox")
  done
  "$PYTHON" "$HERE/oci_image.py" --ref localhost/test/busybox:1.0 --out "$P/images/busybox.tar" \
    --entrypoint /bin/sh --file "/bin/busybox=$FS/bin/busybox" "${links[@]}" \
    --dir /tmp --dir /etc --dir /root
fi
echo "set-up: containerd $version test bed ready in $P"
