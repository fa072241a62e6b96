#!/usr/bin/env bash
# Packs the build dependencies the GPU machine lacks (hiredis and PCRE2 headers, libraries and
# pkg-config files; a pkgconf binary as a fallback) into a relocatable folder, by default
# shared/gpu-deps/, which scripts/gpu-check.sh puts on PKG_CONFIG_PATH / LD_LIBRARY_PATH.
#
#   scripts/gpu/pack-deps.sh [DEST]        # run on Debian 12 with libhiredis-dev and libpcre2-dev
#
# Layout of DEST (~1 MiB):
#   include/hiredis/*.h, include/pcre2.h
#   lib/libhiredis.so*, lib/libpcre2-8.so*   real files, soname symlinks and the -l symlinks
#   lib/pkgconfig/hiredis.pc, libpcre2-8.pc  prefix=${pcfiledir}/../.. (relocatable)
#   libexec/pkgconf, bin/pkg-config          pkgconf for a machine without pkg-config
#   MANIFEST                                 where each file came from, with versions
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEST=${1:-$ROOT/shared/gpu-deps}
MULTIARCH=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
LIBDIRS=("/usr/lib/$MULTIARCH" "/lib/$MULTIARCH" /usr/lib /usr/lib64)

die() { echo "pack-deps: $*" >&2; exit 1; }

find_lib() {  # find_lib NAME.so -> the path of the unversioned dev symlink (or the library)
  local d
  for d in "${LIBDIRS[@]}"; do
    if [[ -e $d/$1 ]]; then echo "$d/$1"; return 0; fi
  done
  return 1
}

[[ -d /usr/include/hiredis ]] || die "/usr/include/hiredis is missing: apt-get install libhiredis-dev"
[[ -f /usr/include/pcre2.h ]] || die "/usr/include/pcre2.h is missing: apt-get install libpcre2-dev"
HIREDIS_SO=$(find_lib libhiredis.so) || die "libhiredis.so is missing: apt-get install libhiredis-dev"
PCRE2_SO=$(find_lib libpcre2-8.so) || die "libpcre2-8.so is missing: apt-get install libpcre2-dev"

version_of() {  # version_of MODULE FALLBACK
  pkg-config --modversion "$1" 2>/dev/null || echo "$2"
}
HIREDIS_VERSION=$(version_of hiredis 0.14.1)
PCRE2_VERSION=$(version_of libpcre2-8 10.42)

TMP="$DEST.tmp.$$"
rm -rf "$TMP"
mkdir -p "$TMP/include" "$TMP/lib/pkgconfig" "$TMP/bin" "$TMP/libexec"
trap 'rm -rf "$TMP"' EXIT

cp -a /usr/include/hiredis "$TMP/include/hiredis"
cp -a /usr/include/pcre2.h "$TMP/include/pcre2.h"

# copy_lib DEVLINK: the real file, its soname symlink and the unversioned -l symlink.
copy_lib() {
  local dev=$1 real soname base
  real=$(readlink -f "$dev")
  base=$(basename "$dev")
  cp "$real" "$TMP/lib/$(basename "$real")"
  soname=$(objdump -p "$real" 2>/dev/null | awk '/SONAME/ {print $2}')
  [[ -n $soname ]] || soname=$(basename "$real")
  if [[ $soname != "$(basename "$real")" ]]; then ln -sf "$(basename "$real")" "$TMP/lib/$soname"; fi
  if [[ $base != "$soname" && $base != "$(basename "$real")" ]]; then ln -sf "$soname" "$TMP/lib/$base"; fi
  echo "$base -> $soname -> $(basename "$real")  (from $real)" >>"$TMP/MANIFEST"
}
: >"$TMP/MANIFEST"
copy_lib "$HIREDIS_SO"
copy_lib "$PCRE2_SO"

# Relocatable pkg-config files: ${pcfiledir} is the folder of the .pc file (pkg-config and
# pkgconf both define it). hiredis' upstream .pc puts include/hiredis on the path; the sources
# include <hiredis/hiredis.h>, so include/ is there too.
cat >"$TMP/lib/pkgconfig/hiredis.pc" <<PC
prefix=\${pcfiledir}/../..
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: hiredis
Description: Minimalistic C client library for Redis (packed by scripts/gpu/pack-deps.sh)
Version: $HIREDIS_VERSION
Libs: -L\${libdir} -lhiredis
Cflags: -I\${includedir} -I\${includedir}/hiredis -D_FILE_OFFSET_BITS=64
PC
cat >"$TMP/lib/pkgconfig/libpcre2-8.pc" <<PC
prefix=\${pcfiledir}/../..
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: libpcre2-8
Description: PCRE2 8-bit library (packed by scripts/gpu/pack-deps.sh)
Version: $PCRE2_VERSION
Libs: -L\${libdir} -lpcre2-8
Cflags: -I\${includedir}
PC

# A pkg-config for machines without one (CMake's FindPkgConfig needs the binary).
if PKGCONF=$(command -v pkgconf) && LIBPKGCONF=$(find_lib libpkgconf.so.3); then
  cp "$(readlink -f "$PKGCONF")" "$TMP/libexec/pkgconf"
  cp "$(readlink -f "$LIBPKGCONF")" "$TMP/libexec/libpkgconf.so.3"
  cat >"$TMP/bin/pkg-config" <<'SH'
#!/bin/sh
# pkgconf packed by scripts/gpu/pack-deps.sh, with its own libpkgconf.
here=$(cd "$(dirname "$0")/../libexec" && pwd)
LD_LIBRARY_PATH="$here${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/pkgconf" "$@"
SH
  chmod +x "$TMP/bin/pkg-config"
  echo "bin/pkg-config -> libexec/pkgconf $(pkgconf --version)  (from $PKGCONF)" >>"$TMP/MANIFEST"
fi
{
  echo "hiredis $HIREDIS_VERSION, libpcre2-8 $PCRE2_VERSION"
  # shellcheck disable=SC1091
  echo "packed on $(. /etc/os-release && echo "$PRETTY_NAME"), glibc $(ldd --version | head -1 | awk '{print $NF}')"
} >>"$TMP/MANIFEST"

rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$TMP" "$DEST"
trap - EXIT
echo "pack-deps: wrote $DEST ($(du -sh "$DEST" | cut -f1))"
