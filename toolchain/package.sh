#!/usr/bin/env bash
# fieldsync: builds the Debian packages of one architecture into dist/.
#
#   toolchain/package.sh [host|aarch64|armhf]
#
#   libfieldsync1      libfieldsync.so.1
#   libfieldsync-dev   the header, libfieldsync.so and .a, fieldsync.pc, the CMake package,
#                      libfieldsync(3)
#   fieldsync          the command and daemon, the systemd unit, fieldsync(1), the docs; its
#                      maintainer scripts (toolchain/deb/) make the fieldsync user and
#                      /var/lib/fieldsync
#   fieldsync-server   the reference server, fieldsync-server(1)
#   fieldsync-sim      the fleet simulator, fieldsync-sim(1)
#
# A release build with Debian's hardening flags (dpkg-buildflags) and the device options (no
# tests, no benchmarks, no fault hooks; optimised for size, FSA_SMALL) in build-pkg[-ARCH]/, installed per component with
# DESTDIR, stripped, with dependencies computed by dpkg-shlibdeps from the binaries (for ARM,
# against the sysroot's libraries and a dpkg database made from its packages' control data),
# built with dpkg-deb and checked with lintian (an error fails). Run toolchain/install-deps.sh
# [aarch64|armhf] first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

target=${1:-host}
case "$target" in
  host)
    debarch=$(dpkg --print-architecture) dir=build-pkg toolchain=() ;;
  aarch64)
    debarch=arm64 dir=build-pkg-aarch64 toolchain=(--toolchain toolchain/aarch64-linux-gnu.cmake) ;;
  armhf)
    debarch=armhf dir=build-pkg-armhf toolchain=(--toolchain toolchain/arm-linux-gnueabihf.cmake) ;;
  -h | --help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "package.sh: unknown target '$target' (host, aarch64 or armhf)" >&2; exit 2 ;;
esac
for tool in dpkg-deb dpkg-shlibdeps dpkg-buildflags lintian scdoc; do
  if ! command -v "$tool" >/dev/null; then
    echo "package.sh: $tool not found: run toolchain/install-deps.sh" >&2
    exit 1
  fi
done

triplet=$(dpkg-architecture -a "$debarch" -qDEB_HOST_MULTIARCH 2>/dev/null)
gnutype=$(dpkg-architecture -a "$debarch" -qDEB_HOST_GNU_TYPE 2>/dev/null)
if [ "$target" = host ]; then
  strip=strip objdump=objdump
else
  strip=$gnutype-strip objdump=$gnutype-objdump
  sysroot=${FSA_SYSROOT:-$root/toolchain/sysroot/$triplet}
  if [ ! -d "$sysroot/.fieldsync-dpkg" ]; then
    echo "package.sh: no $debarch sysroot with package data at $sysroot:" \
      "run toolchain/install-deps.sh $target" >&2
    exit 1
  fi
fi

version=$(sed -n 's/^project(fieldsync VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
maintainer=${FSA_MAINTAINER:-fieldsync developers <fieldsync@example.com>}
# Reproducible: the man pages' dates and the changelog come from the commit, so the
# architecture-independent files of the Multi-Arch: same packages are identical across builds.
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
export SOURCE_DATE_EPOCH

# ---- build ----
# Debian's flags for the target: hardening (stack protector, fortify, relro, bindnow) and
# -ffile-prefix-map; CPPFLAGS go with CFLAGS since CMake has no CPPFLAGS.
flags() { DEB_BUILD_MAINT_OPTIONS=hardening=+all DEB_HOST_ARCH=$debarch dpkg-buildflags --get "$1"; }
cflags="$(flags CFLAGS) $(flags CPPFLAGS)"
ldflags=$(flags LDFLAGS)
jobs=$(nproc 2>/dev/null || echo 2)
# The multiarch library directory (GNUInstallDirs chooses it only when not cross-compiling).
cmake --no-warn-unused-cli -S . -B "$dir" "${toolchain[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_INSTALL_LIBDIR="lib/$triplet" \
  -DFSA_SYSTEMD_UNITDIR=/lib/systemd/system \
  -DFSA_BUILD_TESTS=OFF -DFSA_BUILD_BENCH=OFF -DFSA_BUILD_SERVER=ON -DFSA_BUILD_SIM=ON \
  -DFSA_BUILD_MAN=ON -DFSA_SMALL=ON -DCMAKE_C_FLAGS="$cflags" -DCMAKE_EXE_LINKER_FLAGS="$ldflags" \
  -DCMAKE_SHARED_LINKER_FLAGS="$ldflags" >/dev/null
cmake --build "$dir" -j "$jobs"

# ---- one tree per package ----
stage=$dir/deb
rm -rf "$stage"
declare -A component=([libfieldsync1]=lib [libfieldsync-dev]=dev [fieldsync]=agent
  [fieldsync-server]=server [fieldsync-sim]=sim)
packages=(libfieldsync1 libfieldsync-dev fieldsync fieldsync-server fieldsync-sim)
for p in "${packages[@]}"; do
  DESTDIR=$root/$stage/$p cmake --install "$dir" --component "${component[$p]}" >/dev/null
  if [ -z "$(find "$stage/$p" -type f)" ]; then
    echo "package.sh: component ${component[$p]} installed nothing for $p" >&2
    exit 1
  fi
done

# Debian's conventions: stripped binaries (as dh_strip), non-executable shared libraries,
# compressed man pages and large docs, a copyright file and a changelog in each package.
changelog=$(mktemp)
trap 'rm -f "$changelog"' EXIT
{
  echo "fieldsync ($version) unstable; urgency=medium"
  echo
  echo "  * Built by toolchain/package.sh from commit $commit."
  echo
  echo " -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} > "$changelog"
for p in "${packages[@]}"; do
  tree=$stage/$p
  while IFS= read -r -d '' f; do
    case "$(file -b "$f")" in
      *"ELF"*"shared object"* | *"ELF"*"executable"*)
        "$strip" --remove-section=.comment --remove-section=.note --strip-unneeded "$f" ;;
      *"current ar archive"*)
        "$strip" --strip-debug --remove-section=.comment --enable-deterministic-archives "$f"
        # The objects are fat (CMakeLists.txt, FSA_SMALL) and the archive is made without their
        # intermediate form (agent/lib/): any app's compiler must be able to link it.
        headers=$("$objdump" -h "$f") # an objdump that fails stops the script (set -e)
        lto=$(grep -c '\.gnu\.\(debug\)\{0,1\}lto_' <<<"$headers" || true)
        if [ "$lto" != 0 ]; then
          echo "package.sh: $f holds $lto sections of GCC's LTO form" >&2
          exit 1
        fi ;;
    esac
  done < <(find "$tree" -type f -print0)
  find "$tree" -type f -name '*.so.*' -exec chmod 0644 {} +
  find "$tree/usr/share/man" -type f ! -name '*.gz' -exec gzip -9n {} + 2>/dev/null || true
  if [ -d "$tree/usr/share/doc" ]; then
    find "$tree/usr/share/doc" -type f -size +4k ! -name '*.gz' -exec gzip -9n {} +
  fi
  doc=$tree/usr/share/doc/$p
  mkdir -p "$doc"
  cp toolchain/deb/copyright "$doc/copyright"
  gzip -9nc "$changelog" > "$doc/changelog.gz"
  chmod 0644 "$doc/copyright" "$doc/changelog.gz"
done

# The shipped sizes, as measured (docs/performance.md "Size"; tests/bench/size.sh compares with
# the same build at -O2): the command with the library linked in, and the shared library.
size_line() {
  printf 'BENCH {"name":"size.%s","arch":"%s","value":%s,"unit":"bytes","stripped":true}\n' \
    "$1" "$debarch" "$(stat -c %s "$2")"
}
size_line fieldsync "$stage/fieldsync/usr/bin/fieldsync"
size_line libfieldsync "$(find "$stage/libfieldsync1" -type f -name 'libfieldsync.so.*' | head -1)"
# The promise for the device (issue 16): the aarch64 command, library linked in, within 250 KB.
# The linker starts the data a 16 KiB page after the code, so a few bytes too many cost 16 KiB:
# docs/performance.md "Size" says where bytes were found before (session 15 went over and warned
# here; session 16 came back under, and the guard fails over the goal again).
size_max=256000
size=$(stat -c %s "$stage/fieldsync/usr/bin/fieldsync")
if [ "$debarch" = arm64 ] && [ "$size" -gt $size_max ]; then
  echo "package.sh: the arm64 fieldsync is $size bytes, over $size_max (250 KB, issue 16)" >&2
  exit 1
fi

# ---- dependencies from the binaries ----
# dpkg-shlibdeps maps each library an ELF file needs to the package that ships it, through a
# dpkg database. For ARM that is one made from the sysroot's packages (install-deps.sh keeps
# their control data), with their files at the sysroot's paths; -l points at its libraries.
shlibdeps_args=()
work=$(mktemp -d)
trap 'rm -f "$changelog"; rm -rf "$work"' EXIT
if [ "$target" != host ]; then
  admin=$work/admin
  mkdir -p "$admin/info" "$admin/updates"
  echo 1 > "$admin/info/format" # the multiarch layout: pkg:arch.list for Multi-Arch: same
  : > "$admin/status"
  : > "$admin/available"
  sysreal=$(realpath "$sysroot")
  for meta in "$sysroot"/.fieldsync-dpkg/*/; do
    pkg=$(basename "$meta")
    arch=$(sed -n 's/^Architecture: //p' "$meta/control")
    name=$pkg
    if grep -q '^Multi-Arch: same' "$meta/control"; then name=$pkg:$arch; fi
    { grep -v '^Status:' "$meta/control"; echo "Status: install ok installed"; echo; } >> "$admin/status"
    sed "s#^/#$sysreal/#; s#^$sysreal/\\.\$#/.#" "$meta/list" > "$admin/info/$name.list"
    for f in shlibs symbols; do
      if [ -f "$meta/$f" ]; then cp "$meta/$f" "$admin/info/$name.$f"; fi
    done
  done
  shlibdeps_args=(--admindir="$admin" "-l$sysreal/lib/$triplet" "-l$sysreal/usr/lib/$triplet")
fi

# libfieldsync1's shlibs: an app built against this version needs at least this version.
mkdir -p "$stage/libfieldsync1/DEBIAN"
echo "libfieldsync 1 libfieldsync1 (>= $version)" > "$stage/libfieldsync1/DEBIAN/shlibs"
echo "activate-noawait ldconfig" > "$stage/libfieldsync1/DEBIAN/triggers"

# shlibdeps <package>: the Depends that its ELF files need ("" when it has none).
shlibdeps() {
  local tree=$stage/$1 elves=() f
  while IFS= read -r -d '' f; do
    case "$(file -b "$f")" in
      *"ELF"*"dynamically linked"* | *"ELF"*"shared object"*) elves+=("$f") ;;
    esac
  done < <(find "$tree" -type f ! -path "*/DEBIAN/*" -print0)
  [ ${#elves[@]} -gt 0 ] || return 0
  mkdir -p "$work/src/debian"
  printf 'Source: fieldsync\n\nPackage: %s\nArchitecture: any\n' "$1" > "$work/src/debian/control"
  (cd "$work/src" && DEB_HOST_ARCH=$debarch OBJDUMP=$objdump dpkg-shlibdeps -O \
    "${shlibdeps_args[@]}" "-S$root/$stage/libfieldsync1" "${elves[@]/#/$root/}" 2>"$work/shlibdeps.log") |
    sed -n 's/^shlibs:Depends=//p' || {
    cat "$work/shlibdeps.log" >&2
    echo "package.sh: dpkg-shlibdeps failed for $1" >&2
    return 1
  }
}

# ---- control files and the .debs ----
mkdir -p dist
rm -f dist/*_"${debarch}".deb
# control <package> <section> <multi-arch or ""> <extra depends or ""> <summary> <description>
control() {
  local p=$1 tree=$stage/$1 deps
  deps=$(shlibdeps "$p")
  if [ -n "$4" ]; then deps=${deps:+$deps, }$4; fi
  mkdir -p "$tree/DEBIAN"
  {
    echo "Package: $p"
    echo "Source: fieldsync"
    echo "Version: $version"
    echo "Architecture: $debarch"
    echo "Maintainer: $maintainer"
    echo "Installed-Size: $(du -sk --exclude=DEBIAN "$tree" | cut -f1)"
    if [ -n "$deps" ]; then echo "Depends: $deps"; fi
    echo "Section: $2"
    echo "Priority: optional"
    if [ -n "$3" ]; then echo "Multi-Arch: $3"; fi
    echo "Description: $5"
    printf '%s\n' "$6" | fold -s -w 78 | sed 's/ *$//; s/^/ /'
  } > "$tree/DEBIAN/control"
  (cd "$tree" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | LC_ALL=C sort -z |
    xargs -0 -r md5sum) > "$tree/DEBIAN/md5sums"
  find "$tree/DEBIAN" -type f -exec chmod 0644 {} +
  for s in postinst prerm postrm; do
    if [ -f "toolchain/deb/$p.$s" ]; then
      install -m 0755 "toolchain/deb/$p.$s" "$tree/DEBIAN/$s"
    fi
  done
  dpkg-deb --root-owner-group -Zxz --build "$tree" "dist/${p}_${version}_${debarch}.deb" >/dev/null
  echo "package.sh: dist/${p}_${version}_${debarch}.deb${deps:+ (Depends: $deps)}"
}

about="fieldsync records field actions (attendance, checkpoint tours, jobs, tickets) at once in a \
local SQLite journal on a field device and syncs them to the enterprise server when the network \
allows: never lost, never applied twice, never silently overwriting someone else's."
control libfieldsync1 libs same "" "offline-first sync agent for field devices (library)" \
  "$about This package holds the shared library, libfieldsync.so.1."
control libfieldsync-dev libdevel same \
  "libfieldsync1 (= $version), libsqlite3-dev, libcurl4-openssl-dev | libcurl-dev, libcjson-dev, zlib1g-dev, libmbedtls-dev, pkgconf | pkg-config" \
  "offline-first sync agent for field devices (development files)" \
  "$about This package holds what an app builds with: the header fieldsync/fieldsync.h, the \
static library, fieldsync.pc for pkg-config, the CMake package (find_package(fieldsync)) and \
libfieldsync(3)."
control fieldsync net "" "adduser" "offline-first sync agent for field devices" \
  "$about This package holds the fieldsync command and its daemon, a systemd unit that starts \
once a journal has been initialised in /var/lib/fieldsync, and the documentation."
control fieldsync-server net "" "" "reference server of the fieldsync protocol" \
  "$about This package holds fieldsync-server, the reference server (libmicrohttpd and \
SQLite) that a developer runs to test devices and simulated fleets; it is not the production \
server."
control fieldsync-sim devel "" "fieldsync-server (= $version)" \
  "fleet simulator for fieldsync" \
  "$about This package holds fieldsync-sim, which runs many simulated devices through the \
platform's race scenarios against a fieldsync server and checks that nothing was lost, doubled \
or silently overwritten."

# ---- lintian: no errors (the warnings left are listed in README.md with their reasons) ----
if ! lintian --fail-on error dist/*_"${version}"_"${debarch}".deb; then
  echo "package.sh: lintian reports errors in the $debarch packages" >&2
  exit 1
fi
echo "package.sh: lintian found no errors in the $debarch packages"
