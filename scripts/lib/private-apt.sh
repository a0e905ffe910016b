# Sourced by the scripts that fetch Debian packages without installing them.

# A private apt configuration whose sources are the system's own Debian
# sources with deb-src added, so `apt-get source` works without touching /etc.
private_apt() {
  local root=$1
  mkdir -p "$root/sources.d" "$root/lists/partial" "$root/cache/archives/partial"
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -e $f ]] || continue
    sed -E 's/^Types:[[:space:]]*deb[[:space:]]*$/Types: deb deb-src/' "$f" >"$root/sources.d/$(basename "$f")"
  done
  if [[ -s /etc/apt/sources.list ]]; then
    { grep -E '^deb ' /etc/apt/sources.list || true
      grep -E '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' || true
    } >"$root/sources.d/system.list"
  fi
  cat >"$root/apt.conf" <<CONF
Dir::Etc::SourceList "/dev/null";
Dir::Etc::SourceParts "$root/sources.d";
Dir::State::Lists "$root/lists";
Dir::Cache "$root/cache";
Dir::State::status "/var/lib/dpkg/status";
Debug::NoLocking "true";
APT::Sandbox::User "root";
CONF
}
