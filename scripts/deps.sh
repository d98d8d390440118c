# Sourced by the scripts in this folder: installs what gridlb's build and tests need on a
# Debian machine when it is missing.

# Run as root, or through sudo when there is one.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

apt_updated=
# ensure_pkg COMMAND PACKAGE: install the Debian PACKAGE unless COMMAND is on the PATH.
ensure_pkg() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "installing $2 (for $1)..." >&2
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq >&2; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >&2
  command -v "$1" >/dev/null 2>&1 || { echo "could not install $2" >&2; return 1; }
}

# Pingora's build compiles zlib-ng with cmake and a C compiler.
ensure_build_tools() {
  ensure_pkg cmake cmake
  ensure_pkg cc gcc
}
