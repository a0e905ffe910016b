# Unpacks one of Debian's packages into the cache on first use ($RECLAIM_CACHE_DIR, default
# ~/.cache/reclaim) and prints the path of a binary in it. Nothing is installed system-wide.
#   debian_tool PACKAGE BINARY      e.g. debian_tool prometheus promtool
debian_tool() {
  local package=$1 binary=$2
  local cache_root=${RECLAIM_CACHE_DIR:-$HOME/.cache/reclaim}
  local path=$cache_root/$package/usr/bin/$binary
  if [[ ! -x $path ]]; then
    # shellcheck source=private-apt.sh
    source "$(dirname "${BASH_SOURCE[0]}")/private-apt.sh"
    local work
    work=$(mktemp -d "${TMPDIR:-/tmp}/reclaim-$package.XXXXXX")
    private_apt "$work/apt"
    APT_CONFIG=$work/apt/apt.conf apt-get -qq update >&2
    (cd "$work" && APT_CONFIG=$work/apt/apt.conf apt-get -qq download "$package" >&2)
    mkdir -p "$cache_root"
    rm -rf "${cache_root:?}/$package"
    dpkg -x "$work/${package}"_*.deb "$cache_root/$package"
    rm -rf "$work"
  fi
  echo "$path"
}
