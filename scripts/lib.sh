# Shared shell helpers for the project's set-up scripts. Source it; it defines functions only.

# apt_install PKG...: installs the Debian packages that are missing, refreshing the package lists
# once per machine boot (a fresh machine has none, and apt-cache needs them).
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "set-up: need root to install Debian packages: ${missing[*]}" >&2
    return 1
  fi
  local stamp=/run/vfhotplug-apt-updated
  if [ ! -e "$stamp" ]; then
    apt-get update -qq && touch "$stamp"
  fi
  echo "set-up: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
