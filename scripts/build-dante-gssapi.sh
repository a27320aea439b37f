#!/usr/bin/env bash
# Builds Dante (sockd, socksify, libdsocksd) with GSSAPI from Debian's source package, so the tests
# and benchmarks have a third-party RFC 1961 peer. Debian's dante-server/dante-client binaries are
# configured --without-gssapi; this is the same source with Debian's patches, configured with it.
#
#   scripts/build-dante-gssapi.sh           build unless already built; print the install prefix
#   scripts/build-dante-gssapi.sh --force   rebuild even if built
#   scripts/build-dante-gssapi.sh --print   print the prefix of the current build (exit 1 if none)
#
# Installs into ${FERRY_CACHE:-$HOME/.cache/ferry}/dante-gssapi/<debian-version>/ and points
# dante-gssapi/current at it. Inside the prefix: sbin/sockd, bin/socksify, lib/libdsocksd.so (the
# Debian patches rename libdsocks to libdsocksd). The last line of stdout is the prefix; progress
# goes to stderr. Needs root or sudo for apt (a deb-src entry, build dependencies, the source).
set -euo pipefail

log() { echo "build-dante-gssapi: $*" >&2; }

has_deb_src() {
  grep -rqsE '^[[:space:]]*(deb-src[[:space:]]|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/
}

# The stanzas of deb822 .sources files whose Types include deb, as deb-src stanzas.
deb822_as_src() {
  [ "$#" -gt 0 ] || return 0
  awk 'BEGIN { RS = ""; ORS = "" }
    {
      n = split($0, line, "\n"); deb = 0
      for (i = 1; i <= n; i++) if (line[i] ~ /^Types:/ && (line[i] " ") ~ /[ \t]deb[ \t]/) deb = 1
      if (!deb) next
      for (i = 1; i <= n; i++) print (line[i] ~ /^Types:/ ? "Types: deb-src" : line[i]) "\n"
      print "\n"
    }' "$@"
}

# All in one function, so bash has read the whole file before it runs any of it.
main() {
  cache="${FERRY_CACHE:-$HOME/.cache/ferry}/dante-gssapi"
  force=0
  case "${1:-}" in
    --force) force=1 ;;
    --print)
      if [ -f "$cache/current/.complete" ]; then
        readlink -f "$cache/current"
        exit 0
      fi
      echo "build-dante-gssapi: not built (run scripts/build-dante-gssapi.sh)" >&2
      exit 1
      ;;
    "") ;;
    *)
      echo "usage: $0 [--force | --print]" >&2
      exit 2
      ;;
  esac

  # Built already: do not touch apt at all (CI runs this on every start).
  if [ "$force" -eq 0 ] && [ -f "$cache/current/.complete" ]; then
    log "already built in $(readlink -f "$cache/current")"
    readlink -f "$cache/current"
    exit 0
  fi

  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      log "need root (or sudo) for apt-get"
      exit 1
    fi
  fi
  apt_get() { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }

  # apt-get source needs deb-src entries. If there are none, mirror the machine's own deb entries
  # (same mirrors, suites and keys, so Ubuntu works too) as deb-src in ferry-deb-src.*.
  if ! has_deb_src; then
    local src822 srclist
    src822="$(shopt -s nullglob; deb822_as_src /etc/apt/sources.list.d/*.sources)"
    srclist="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      sed -nE 's/^[[:space:]]*deb[[:space:]]/deb-src /p' || true)"
    if [ -z "$src822$srclist" ]; then
      log "no deb entries in /etc/apt to derive deb-src entries from"
      exit 1
    fi
    log "adding deb-src entries beside the deb ones"
    local header="# Added by ferry's scripts/build-dante-gssapi.sh (apt-get source dante)."
    if [ -n "$src822" ]; then
      printf '%s\n%s\n' "$header" "$src822" | "${sudo[@]}" tee /etc/apt/sources.list.d/ferry-deb-src.sources >/dev/null
    fi
    if [ -n "$srclist" ]; then
      printf '%s\n%s\n' "$header" "$srclist" | "${sudo[@]}" tee /etc/apt/sources.list.d/ferry-deb-src.list >/dev/null
    fi
    apt_get update >&2
  elif ! apt-cache showsrc dante >/dev/null 2>&1; then
    apt_get update >&2
  fi

  # Debian's build dependencies minus debhelper (we run configure/make ourselves), plus autotools
  # (the patches change configure.ac and Makefile.am), bison and the Kerberos headers for GSSAPI.
  deps=(dpkg-dev gcc make autoconf automake libtool libtool-bin bison flex libkrb5-dev libpam0g-dev)
  missing=()
  for p in "${deps[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt_get install -y --no-install-recommends "${missing[@]}" >&2
  fi

  version="$(apt-cache showsrc dante | sed -n 's/^Version: //p' | sort -V | tail -n 1)"
  if [ -z "$version" ]; then
    log "apt-cache showsrc dante found no source package"
    exit 1
  fi
  prefix="$cache/$version"
  mkdir -p "$cache"
  work="$(mktemp -d "$cache/build.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  # apt-get source downloads as the _apt user when that user can write there.
  chmod 755 "$work"

  log "fetching dante $version source into $work"
  # apt-get source unpacks the .orig tarball and applies debian/patches (dpkg-source -x).
  (cd "$work" && apt-get source "dante=$version" >&2)
  src="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'dante-*' | head -n 1)"

  cd "$src"
  log "configuring with GSSAPI"
  autoreconf -fi >&2
  # Same paths as Debian's rules apart from the prefix; the config files are always given on the
  # command line (sockd -f, SOCKS_CONF), and no pidfile, so several servers can run at once.
  ./configure --prefix="$prefix" --disable-pidfile --with-gssapi >&2
  # Debian's rules copy the generated parser into the two other directories that build it.
  cp lib/config_parse.c lib/config_scan.c dlib/
  cp lib/config_parse.c lib/config_scan.c sockd/
  if ! grep -q '^#define HAVE_GSSAPI 1' include/autoconf.h; then
    log "configure did not enable GSSAPI (see the output above)"
    exit 1
  fi

  log "building"
  make -j"$(nproc)" >&2
  rm -rf "$prefix"
  make install >&2
  # Debian's multiarch patch makes socksify preload the bare name libdsocksd.so.0, which the
  # loader finds in /usr/lib (dante-client's, without GSSAPI); make it use the full path.
  sed -i 's|^SOCKS_USEFULLPATH="${SOCKS_USEFULLPATH:-}"$|SOCKS_USEFULLPATH="${SOCKS_USEFULLPATH:-yes}"|' \
    "$prefix/bin/socksify"
  grep -q 'SOCKS_USEFULLPATH:-yes' "$prefix/bin/socksify" || {
    log "could not make socksify preload $prefix/lib/libdsocksd.so.0"
    exit 1
  }
  "$prefix/sbin/sockd" -v >&2 || true
  touch "$prefix/.complete"
  ln -sfn "$version" "$cache/current"
  log "installed in $prefix"
  echo "$prefix"
}

main "$@"
