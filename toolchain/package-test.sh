#!/usr/bin/env bash
# fieldsync: tests the install and the packages of one architecture, after
# toolchain/package.sh of the same one. Prints "ok:"/"FAIL:" per check and "N passed, N failed".
#
#   toolchain/package-test.sh host      the device build needs no CMocka and no libmicrohttpd;
#                                       tests/downstream against a staging prefix (cmake
#                                       --install --prefix), with find_package and with
#                                       pkg-config, shared and static, run; the amd64 packages
#                                       install, reinstall, remove and purge on this machine
#                                       (as root, and only where fieldsync is not installed)
#   toolchain/package-test.sh aarch64   the arm64 packages hold aarch64 binaries; tests/downstream
#                                       against the aarch64 staging prefix, run under qemu
#   toolchain/package-test.sh armhf     the same for armhf
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

target=${1:-host}
case "$target" in
  host) debarch=$(dpkg --print-architecture) dir=build-pkg toolchain=() ;;
  aarch64) debarch=arm64 dir=build-pkg-aarch64 qemu=qemu-aarch64 elf='ARM aarch64'
    toolchain=(--toolchain "$root/toolchain/aarch64-linux-gnu.cmake") ;;
  armhf) debarch=armhf dir=build-pkg-armhf qemu=qemu-arm elf='ARM, EABI5'
    toolchain=(--toolchain "$root/toolchain/arm-linux-gnueabihf.cmake") ;;
  -h | --help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "package-test.sh: unknown target '$target' (host, aarch64 or armhf)" >&2; exit 2 ;;
esac
version=$(sed -n 's/^project(fieldsync VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
triplet=$(dpkg-architecture -a "$debarch" -qDEB_HOST_MULTIARCH 2>/dev/null)
gnutype=$(dpkg-architecture -a "$debarch" -qDEB_HOST_GNU_TYPE 2>/dev/null)
packages=(libfieldsync1 libfieldsync-dev fieldsync fieldsync-server fieldsync-sim)
debs=()
for p in "${packages[@]}"; do debs+=("$root/dist/${p}_${version}_${debarch}.deb"); done
for d in "${debs[@]}" "$dir/CMakeCache.txt"; do
  if [ ! -f "$d" ]; then
    echo "package-test.sh: no $d: run toolchain/package.sh $target first" >&2
    exit 1
  fi
done

pass=0 failed=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
# check <description> <command...>: ok when the command succeeds (its output is shown on failure).
check() {
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then ok "$what"; else fail "$what"; printf '%s\n' "$out" | tail -20 | sed 's/^/    /'; fi
}
work=$(mktemp -d)
cleanup_install=0 server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null; fi
  if [ "$cleanup_install" = 1 ]; then
    dpkg --purge "${packages[@]}" >/dev/null 2>&1
    rm -rf /var/lib/fieldsync
    if getent passwd fieldsync >/dev/null; then deluser --quiet --system fieldsync >/dev/null 2>&1; fi
    if getent group fieldsync >/dev/null; then delgroup --quiet --system fieldsync >/dev/null 2>&1; fi
  fi
  rm -rf "$work"
}
trap cleanup EXIT
finish() {
  echo "$pass passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}

# needed_only <ELF> <regex>: every NEEDED library of ELF matches regex (else prints the others).
needed_only() {
  local bad
  bad=$(readelf -d "$1" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | grep -Ev "$2")
  [ -z "$bad" ] || { echo "$1 needs $bad"; return 1; }
}
has_needed() { readelf -d "$1" | grep -q "Shared library: \[$2\]"; }
# static_in <ELF>: libfieldsync is linked into ELF: no libfieldsync.so needed, fieldsync_open
# defined inside.
static_in() {
  ! has_needed "$1" 'libfieldsync\.so\.1' &&
    readelf -sW "$1" | awk '$8 == "fieldsync_open" && $7 != "UND" { found = 1 } END { exit !found }'
}
# machine_is <ELF or archive> <readelf machine>: every ELF header in it names that machine.
machine_is() {
  local m
  m=$(readelf -h "$1" 2>/dev/null | sed -n 's/^ *Machine: *//p' | sort -u)
  [ "$m" = "$2" ] || { echo "$1: machine '$m'"; return 1; }
}

# ---- the downstream app against a staging prefix ----
# Only the library's components (lib, dev) go to the prefix: the build's unit directory is
# absolute (/lib/systemd/system) and would land on this machine.
stage=$work/stage
for c in lib dev; do
  cmake --install "$dir" --prefix "$stage" --component "$c" >/dev/null
done
libdir=$stage/lib/$triplet
check "staging prefix has the libraries, header, .pc and CMake package" \
  test -f "$libdir/libfieldsync.so.1" -a -f "$libdir/libfieldsync.a" \
  -a -f "$stage/include/fieldsync/fieldsync.h" -a -f "$libdir/pkgconfig/fieldsync.pc" \
  -a -f "$libdir/cmake/fieldsync/fieldsyncConfig.cmake"
check "fieldsync.pc points into the staging prefix" grep -qx "prefix=$stage" "$libdir/pkgconfig/fieldsync.pc"

if [ "$target" = host ]; then
  cc=(cc) run=() cmake_pkg=(-DCMAKE_PREFIX_PATH="$stage")
  pkgenv=(PKG_CONFIG_PATH="$libdir/pkgconfig")
else
  sysroot=${FSA_SYSROOT:-$root/toolchain/sysroot/$triplet}
  cc=("$gnutype-gcc" "--sysroot=$sysroot") run=("$qemu" -L "$sysroot")
  cmake_pkg=(-Dfieldsync_DIR="$libdir/cmake/fieldsync")
  # Only the staged .pc: the -l flags of Libs.private resolve in the compiler's sysroot.
  pkgenv=(PKG_CONFIG_LIBDIR="$libdir/pkgconfig" PKG_CONFIG_PATH= PKG_CONFIG_SYSROOT_DIR=)
fi
ds=$work/downstream
mkdir -p "$ds/pc"
check "downstream: configure and build with find_package (CMake package)" \
  bash -c 'cmake -S "$0/tests/downstream" -B "$1" "${@:2}" >/dev/null && cmake --build "$1"' \
  "$root" "$ds/cmake" "${toolchain[@]}" "${cmake_pkg[@]}"
check "downstream: build with pkg-config (Makefile)" \
  env "${pkgenv[@]}" make -s -C tests/downstream O="$ds/pc" CC="${cc[*]}"
for exe in "$ds/cmake/downstream_shared" "$ds/pc/downstream_pc_shared"; do
  check "$(basename "$exe") links libfieldsync.so.1" has_needed "$exe" 'libfieldsync\.so\.1'
done
for exe in "$ds/cmake/downstream_static" "$ds/pc/downstream_pc_static"; do
  check "$(basename "$exe") has libfieldsync linked in (no libfieldsync.so)" static_in "$exe"
done
n=0
for exe in "$ds"/cmake/downstream_shared "$ds"/cmake/downstream_static "$ds"/pc/downstream_pc_shared \
  "$ds"/pc/downstream_pc_static; do
  n=$((n + 1))
  mkdir -p "$ds/run$n"
  check "run $(basename "$exe")${run:+ under ${run[0]}}" \
    env LD_LIBRARY_PATH="$libdir" "${run[@]}" "$exe" "$ds/run$n"
done
if [ "$target" != host ]; then
  # ---- the ARM packages: their architecture, and ARM binaries inside ----
  for deb in "${debs[@]}"; do
    check "$(basename "$deb") says Architecture: $debarch" \
      test "$(dpkg-deb -f "$deb" Architecture)" = "$debarch"
  done
  x=$work/x
  for deb in "${debs[@]}"; do dpkg-deb -x "$deb" "$x"; done
  machine=ARM
  if [ "$debarch" = arm64 ]; then machine=AArch64; fi
  for f in "$x/usr/bin/fieldsync" "$x/usr/bin/fieldsync-server" "$x/usr/bin/fieldsync-sim" \
    "$x/usr/lib/$triplet/libfieldsync.so.1.0.0"; do
    check "${f#"$x"} is $elf (file)" sh -c 'file -b "$0" | grep -q "$1"' "$f" "$elf"
  done
  check "/usr/lib/$triplet/libfieldsync.a holds $machine objects only" \
    machine_is "$x/usr/lib/$triplet/libfieldsync.a" "$machine"
  check "libfieldsync1 ($debarch) depends on the target's libraries (dpkg-shlibdeps)" \
    sh -c 'dpkg-deb -f "$0" Depends | grep -q "libc6 (>= " && dpkg-deb -f "$0" Depends | grep -q "libsqlite3-0 (>= "' \
    "${debs[0]}"
  finish
fi

# ---- the device build: only SQLite, libcurl, cJSON, mbedTLS and zlib ----
# A pkg-config that does not know CMocka, libmicrohttpd and libpq: the device build configures
# and builds without them, and the default build (which needs the first two) does not configure.
mkdir -p "$work/bin"
cat > "$work/bin/pkg-config" <<'EOF'
#!/bin/sh
case " $* " in *cmocka* | *libmicrohttpd* | *libpq*) exit 1 ;; esac
exec /usr/bin/pkg-config "$@"
EOF
chmod +x "$work/bin/pkg-config"
device=(-DFSA_BUILD_SERVER=OFF -DFSA_BUILD_SIM=OFF -DFSA_BUILD_TESTS=OFF -DFSA_BUILD_BENCH=OFF)
check "the default build does not configure without CMocka and libmicrohttpd (the check works)" \
  sh -c '! PKG_CONFIG="$0" cmake -S . -B "$1" >/dev/null 2>&1' "$work/bin/pkg-config" "$work/full"
check "the device build configures and builds without CMocka, libmicrohttpd and libpq" \
  bash -c 'PKG_CONFIG="$0" cmake -S . -B "$1" "${@:2}" >/dev/null && cmake --build "$1" -j "$(nproc)" >/dev/null' \
  "$work/bin/pkg-config" "$work/device" "${device[@]}"
check "the device build made only the library and the fieldsync command" \
  sh -c 'test -x "$0/agent/fieldsync" -a -f "$0/agent/lib/libfieldsync.so.1" -a ! -e "$0/sync/server/fieldsync-server" -a ! -e "$0/agent/fieldsync-sim" -a ! -d "$0/tests"' "$work/device"
allowed='^(libsqlite3\.so\.0|libcurl\.so\.4|libcjson\.so\.1|libmbedcrypto\.so\.[0-9]+|libz\.so\.1|libc\.so\.6|libm\.so\.6|ld-linux[-a-z0-9_.]*\.so\.[0-9])$'
check "fieldsync needs only SQLite, libcurl, cJSON, mbedTLS, zlib and libc" \
  needed_only "$work/device/agent/fieldsync" "$allowed"
check "libfieldsync.so needs only SQLite, libcurl, cJSON, mbedTLS, zlib and libc" \
  needed_only "$work/device/agent/lib/libfieldsync.so.1" "$allowed"

# ---- the amd64 packages on this machine: install, reinstall, remove, purge ----
if [ "$(id -u)" -ne 0 ]; then
  fail "the install test needs root (CI runs as root)"
  finish
fi
if dpkg-query -W "${packages[@]}" 2>/dev/null | grep -q . || [ -e /var/lib/fieldsync ] ||
  getent passwd fieldsync >/dev/null; then
  fail "fieldsync is installed here already (or /var/lib/fieldsync or its user exist): the install test needs a machine without it"
  finish
fi
cleanup_install=1
export DEBIAN_FRONTEND=noninteractive
journal=/var/lib/fieldsync/journal.db
unit=/lib/systemd/system/fieldsync.service
check "apt-get installs the five packages" apt-get install -y -q --no-install-recommends "${debs[@]}"
for p in "${packages[@]}"; do
  check "$p is installed" sh -c 'dpkg-query -W -f="\${Status}" "$0" | grep -qx "install ok installed"' "$p"
done
check "fieldsync --help runs" sh -c 'fieldsync --help | grep -q "^usage: fieldsync"'
check "fieldsync-server --help and fieldsync-sim --help run" \
  sh -c 'fieldsync-server --help >/dev/null && fieldsync-sim --help >/dev/null'
check "the fieldsync system user exists, without a login shell" \
  sh -c 'getent passwd fieldsync | grep -q ":/var/lib/fieldsync:/usr/sbin/nologin$"'
check "/var/lib/fieldsync is the fieldsync user's, mode 0700" \
  test "$(stat -c '%U:%G %a' /var/lib/fieldsync)" = "fieldsync:fieldsync 700"
check "systemd-analyze verify accepts the unit (binary and man page found)" systemd-analyze verify "$unit"
check "the unit is enabled (deb-systemd-helper's link)" \
  test -L /etc/systemd/system/multi-user.target.wants/fieldsync.service
condition=$(grep '^ConditionPathExists=' "$unit")
check "the unit names the journal in ConditionPathExists" test "$condition" = "ConditionPathExists=$journal"
check "the unit's condition fails while there is no journal" sh -c '! systemd-analyze condition "$0" >/dev/null 2>&1' "$condition"
check "man fieldsync renders" sh -c 'MANWIDTH=80 man fieldsync 2>&1 | grep -q "fieldsync - record field actions"'
check "man libfieldsync renders" sh -c 'MANWIDTH=80 man 3 libfieldsync 2>&1 | grep -q "libfieldsync - the fieldsync agent"'
check "pkg-config --libs fieldsync answers" sh -c 'pkg-config --libs fieldsync | grep -qw -- -lfieldsync'
header_version=$(for part in MAJOR MINOR PATCH; do
  sed -n "s/^#define FIELDSYNC_VERSION_$part \([0-9]*\)$/\1/p" /usr/include/fieldsync/fieldsync.h
done | paste -sd.)
check "pkg-config --modversion fieldsync is the installed header's version ($header_version)" \
  test "$(pkg-config --modversion fieldsync)" = "$header_version"
mkdir -p "$ds/sys"
check "downstream builds against the installed packages (pkg-config) and runs" \
  sh -c 'make -s -C tests/downstream O="$0" && "$0/downstream_pc_shared" "$0" >/dev/null' "$ds/sys"

# A journal with an unsynced op, set up as the unit's comment says.
secret=/var/lib/fieldsync/device.secret
openssl rand -hex 32 > "$work/secret"
install -o fieldsync -g fieldsync -m 0600 "$work/secret" "$secret"
check "fieldsync init as the fieldsync user" \
  runuser -u fieldsync -- fieldsync --db "$journal" init --device-id ci-dev1 \
  --server http://127.0.0.1:9 --secret-file "$secret"
check "the unit's condition holds once the journal exists" systemd-analyze condition "$condition"
check "record an op (unsynced)" runuser -u fieldsync -- fieldsync --db "$journal" ticket create T1 priority=HIGH
pending() { runuser -u fieldsync -- fieldsync --db "$journal" status --json | sed -n 's/.*"pending":\([0-9]*\).*/\1/p'; }
check "the journal holds 1 pending op" test "$(pending)" = 1

check "apt-get reinstalls fieldsync" apt-get install -y -q --reinstall "${debs[2]}"
check "the reinstall kept the journal and its op" test "$(pending)" = 1
check "the reinstall kept /var/lib/fieldsync 0700" \
  test "$(stat -c '%U:%G %a' /var/lib/fieldsync)" = "fieldsync:fieldsync 700"

check "dpkg removes the packages" dpkg --remove "${packages[@]}"
check "removal keeps the journal" test -f "$journal"
check "removal masks the unit (deb-systemd-helper)" test -L /etc/systemd/system/fieldsync.service

purge_log=$work/purge.log
check "dpkg purges the packages" sh -c 'dpkg --purge "$@" 2>"$0"' "$purge_log" "${packages[@]}"
check "purge says why it keeps the journal" \
  grep -q "purge keeps $journal: it holds 1 unsynced ops" "$purge_log"
check "purge keeps the journal with its unsynced op" test -f "$journal"
# What is left: nothing of the packages (files, unit state, dpkg's records) but that journal.
left() {
  find /usr /lib /etc /var/lib/dpkg/info /var/lib/systemd -xdev -name '*fieldsync*' 2>/dev/null
  dpkg-query -W "${packages[@]}" 2>/dev/null
}
check "purge leaves nothing of the packages behind" sh -c '[ -z "$0" ] || { echo "$0"; exit 1; }' "$(left)"

# A journal whose op has been synced, to the packaged fieldsync-server on loopback: purge deletes
# it, its directory and the user.
rm -rf /var/lib/fieldsync
deluser --quiet --system fieldsync >/dev/null 2>&1
check "apt-get installs the packages again" apt-get install -y -q --no-install-recommends "${debs[@]}"
install -o fieldsync -g fieldsync -m 0600 "$work/secret" "$secret"
(umask 077 && printf '{"devices": [{"id": "ci-dev1", "secret": "%s"}]}\n' "$(cat "$work/secret")" \
  > "$work/devices.json")
fieldsync-server --listen 127.0.0.1:0 --db "$work/server.db" --devices-file "$work/devices.json" \
  > "$work/server.log" 2>&1 &
server_pid=$!
url=""
for _ in $(seq 100); do
  url=$(sed -n 's/^listening on \(http:\/\/127\.0\.0\.1:[0-9]*\)$/\1/p' "$work/server.log")
  [ -z "$url" ] || break
  sleep 0.1
done
check "the packaged fieldsync-server listens on loopback" test -n "$url"
check "fieldsync init against it" runuser -u fieldsync -- fieldsync --db "$journal" init \
  --device-id ci-dev1 --server "${url:-http://127.0.0.1:9}" --secret-file "$secret"
check "record an op" runuser -u fieldsync -- fieldsync --db "$journal" ticket create T2 priority=LOW
check "fieldsync sync pushes it" runuser -u fieldsync -- fieldsync --db "$journal" sync --now
check "the journal holds no pending op" test "$(pending)" = 0
kill "$server_pid" 2>/dev/null
wait "$server_pid" 2>/dev/null
server_pid=""
check "dpkg purges the packages" dpkg --purge "${packages[@]}"
check "purge deletes a journal without unsynced ops, its directory and the user" \
  sh -c '! test -e /var/lib/fieldsync && ! getent passwd fieldsync && ! getent group fieldsync'
check "purge leaves nothing behind" sh -c '[ -z "$0" ] || { echo "$0"; exit 1; }' "$(left)"
finish
