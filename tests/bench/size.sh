#!/usr/bin/env bash
# fieldsync: the device binaries' size, beside the same build without the size options.
#
#   tests/bench/size.sh [aarch64|armhf|host]      (default aarch64)
#
# Builds the device configuration (no server, simulator, tests or benchmarks) twice, with the
# packages' flags (Debian's hardening flags from dpkg-buildflags, as toolchain/package.sh):
#   baseline  RelWithDebInfo (-O2), the linker's default ELF page alignment: the packages before
#             FSA_SMALL, in build-size-ARCH-o2/
#   value     the same with -DFSA_SMALL=ON and the toolchain file's FSA_MAX_PAGE_SIZE: what
#             toolchain/package.sh ships, in build-size-ARCH-small/
# and prints one BENCH line per binary: `fieldsync` (the command, libfieldsync linked in) and
# libfieldsync.so, stripped as the packages strip them, with the bytes of code and read-only
# data ("text", as size(1) counts it). Takes a few minutes (two builds of the library).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

target=${1:-aarch64}
case "$target" in
  host) debarch=$(dpkg --print-architecture) toolchain=() prefix= ;;
  aarch64)
    debarch=arm64 toolchain=(--toolchain toolchain/aarch64-linux-gnu.cmake)
    prefix=aarch64-linux-gnu- ;;
  armhf)
    debarch=armhf toolchain=(--toolchain toolchain/arm-linux-gnueabihf.cmake)
    prefix=arm-linux-gnueabihf- ;;
  -h | --help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "size.sh: unknown target '$target' (aarch64, armhf or host)" >&2; exit 2 ;;
esac
for tool in dpkg-buildflags "${prefix}strip" "${prefix}size"; do
  if ! command -v "$tool" >/dev/null; then
    echo "size.sh: $tool not found: run toolchain/install-deps.sh $target" >&2
    exit 1
  fi
done

flags() { DEB_BUILD_MAINT_OPTIONS=hardening=+all DEB_HOST_ARCH=$debarch dpkg-buildflags --get "$1"; }
cflags="$(flags CFLAGS) $(flags CPPFLAGS)"
ldflags=$(flags LDFLAGS)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# build <dir> <cmake args...>: the device build of the command and the shared library.
build() {
  local dir=$1
  shift
  cmake --no-warn-unused-cli -S . -B "$dir" "${toolchain[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DFSA_BUILD_SERVER=OFF -DFSA_BUILD_SIM=OFF -DFSA_BUILD_TESTS=OFF -DFSA_BUILD_BENCH=OFF \
    -DFSA_BUILD_MAN=OFF -DCMAKE_C_FLAGS="$cflags" -DCMAKE_EXE_LINKER_FLAGS="$ldflags" \
    -DCMAKE_SHARED_LINKER_FLAGS="$ldflags" "$@" >/dev/null
  cmake --build "$dir" -j "$(nproc 2>/dev/null || echo 2)" --target fieldsync libfieldsync_shared \
    >"$work/build.log" 2>&1 || {
    cat "$work/build.log" >&2
    echo "size.sh: the build in $dir failed" >&2
    exit 1
  }
}

# measure <file> <name>: "<bytes> <text>" of a stripped copy (stripped as package.sh does).
measure() {
  cp "$1" "$work/$2"
  "${prefix}strip" --remove-section=.comment --remove-section=.note --strip-unneeded "$work/$2"
  echo "$(stat -c %s "$work/$2") $("${prefix}size" "$work/$2" | awk 'NR == 2 {print $1}')"
}

base=build-size-$target-o2 small=build-size-$target-small
build "$base" -DFSA_SMALL=OFF -DFSA_MAX_PAGE_SIZE=
build "$small" -DFSA_SMALL=ON -UFSA_MAX_PAGE_SIZE
page=$(sed -n 's/^FSA_MAX_PAGE_SIZE:STRING=//p' "$small/CMakeCache.txt")

for bin in fieldsync:agent/fieldsync libfieldsync:agent/lib/libfieldsync.so; do
  name=${bin%%:*} path=$(readlink -f "$base/${bin#*:}")
  read -r b_bytes b_text < <(measure "$path" "$name-o2")
  path=$(readlink -f "$small/${bin#*:}")
  read -r v_bytes v_text < <(measure "$path" "$name-small")
  printf 'BENCH {"name":"size.%s","arch":"%s","value":%s,"unit":"bytes","baseline":%s,' \
    "$name" "$debarch" "$v_bytes" "$b_bytes"
  printf '"ratio":%s,"text":%s,"baseline_text":%s,"max_page_size":"%s",' \
    "$(awk -v v="$v_bytes" -v b="$b_bytes" 'BEGIN {printf "%.3f", v / b}')" "$v_text" "$b_text" \
    "${page:-default}"
  printf '"baseline_is":"-O2, default page alignment"}\n'
done
