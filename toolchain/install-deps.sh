#!/usr/bin/env bash
# fieldsync: installs what the build and tests need, with apt. Idempotent, and quick when all is
# already there.
#
#   toolchain/install-deps.sh            host build and tests (Debian 12)
#   toolchain/install-deps.sh aarch64    also the aarch64 cross compiler, qemu-user and a sysroot
#   toolchain/install-deps.sh armhf      likewise for 32-bit ARM (arm-linux-gnueabihf)
#
# The target's libraries are Debian's own multiarch -dev packages (arm64/armhf), but unpacked
# into a sysroot (toolchain/sysroot/<triplet>) instead of installed with dpkg. Installing them
# with dpkg would require every "Multi-Arch: same" package (libssl3, linux-libc-dev, ...) to be
# at exactly the host's version, which fails whenever the mirror serves the architectures at
# different versions (seen during security updates). The sysroot keeps the host untouched.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
arch=${1:-}
case "$arch" in
  "" | aarch64 | armhf) ;;
  -h | --help)
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0 ;;
  *)
    echo "install-deps.sh: unknown target '$arch' (expected aarch64 or armhf)" >&2
    exit 2 ;;
esac

host_pkgs=(build-essential cmake pkg-config file openssl ca-certificates
  libsqlite3-dev sqlite3 libcurl4-openssl-dev libcjson-dev libmbedtls-dev libcmocka-dev
  libmicrohttpd-dev zlib1g-dev libgnutls28-dev gcovr)
# PostgreSQL: libpq for fieldsync-server's PostgreSQL backend, and the server itself for the tests,
# which start a private cluster of their own (tests/sync/pg_harness.c).
host_pkgs+=(libpq-dev postgresql)
# The man pages (scdoc turns docs/man/*.scd into roff; mandoc checks them).
host_pkgs+=(scdoc mandoc)
# The Debian packages (toolchain/package.sh) and their tests (toolchain/package-test.sh): lintian,
# man-db to render the installed page, and what the package's maintainer scripts use.
host_pkgs+=(lintian man-db adduser systemd)
# clang and its libFuzzer runtime, which Debian's clang package does not pull in (toolchain/fuzz.sh).
host_pkgs+=(clang libclang-rt-14-dev)
# The static analysers and the format check of toolchain/lint.sh.
host_pkgs+=(cppcheck clang-tidy clang-format)
# The target's libraries, unpacked into the sysroot with their dependencies.
target_pkgs=(libc6-dev libsqlite3-dev libcurl4-openssl-dev libcjson-dev libmbedtls-dev
  libcmocka-dev libmicrohttpd-dev zlib1g-dev libgnutls28-dev)

case "$arch" in
  aarch64) triplet=aarch64-linux-gnu debarch=arm64 host_pkgs+=(gcc-aarch64-linux-gnu qemu-user) ;;
  armhf) triplet=arm-linux-gnueabihf debarch=armhf host_pkgs+=(gcc-arm-linux-gnueabihf qemu-user) ;;
esac

sudo_=()
if [ "$(id -u)" -ne 0 ]; then sudo_=(sudo); fi
export DEBIAN_FRONTEND=noninteractive

missing=()
for p in "${host_pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

# A mirror in the middle of a sync answers with a size mismatch; a retry usually gets past it.
# Usage: apt_update <apt-get command words...>
apt_update() {
  local log i
  log=$(mktemp)
  for i in 1 2 3 4; do
    if "$@" update -q >"$log" 2>&1 && ! grep -q '^E:' "$log"; then
      rm -f "$log"
      return 0
    fi
    [ $i -eq 4 ] || sleep $((i * 5))
  done
  echo "install-deps.sh: warning: apt-get update reported errors; going on with the lists it has:" >&2
  grep '^E:' "$log" >&2 || true
  rm -f "$log"
}

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps.sh: installing ${missing[*]}"
  apt_update "${sudo_[@]}" apt-get
  "${sudo_[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

[ -n "$arch" ] || exit 0

sysroot="${FSA_SYSROOT:-$here/sysroot/$triplet}"
stamp="$sysroot/.fieldsync-sysroot"
# v2: the sysroot also keeps each package's control data (.fieldsync-dpkg/, see below).
want="v2 $debarch ${target_pkgs[*]}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "install-deps.sh: building the $debarch sysroot in $sysroot"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/state"
: > "$work/state/status"
# A private apt world: the target's architecture only, an empty dpkg status, private lists and
# cache. It resolves the target packages' whole dependency closure without touching the host.
aptopts=(-o "APT::Architecture=$debarch" -o "APT::Architectures::=$debarch"
  -o "Dir::State::Lists=$work/lists" -o "Dir::State::status=$work/state/status"
  -o "Dir::Cache=$work/cache" -o "Dir::Cache::archives=$work/cache/archives"
  -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
apt_update apt-get "${aptopts[@]}"
apt-get "${aptopts[@]}" -y -q --no-install-recommends install --download-only \
  "${target_pkgs[@]}" >"$work/download.log" 2>&1 || {
  cat "$work/download.log" >&2
  echo "install-deps.sh: could not download the $debarch packages" >&2
  exit 1
}

rm -rf "$sysroot.new"
mkdir -p "$sysroot.new"
# Each package's control data goes beside its files, in .fieldsync-dpkg/<package>/: its control
# stanza, its file list and its shlibs and symbols files. toolchain/package.sh makes a dpkg
# database of them so that dpkg-shlibdeps maps the target's libraries to their packages and
# versions, as it does on a real target (the sysroot has no /var/lib/dpkg of its own).
mkdir -p "$sysroot.new/.fieldsync-dpkg"
for deb in "$work"/cache/archives/*.deb; do
  dpkg-deb -x "$deb" "$sysroot.new"
  meta="$sysroot.new/.fieldsync-dpkg/$(dpkg-deb -f "$deb" Package)"
  mkdir -p "$meta" "$work/ctl"
  dpkg-deb -f "$deb" > "$meta/control"
  dpkg-deb -c "$deb" | awk '{ for (i = 6; i <= NF && $i != "->"; i++) printf "%s%s", (i > 6 ? " " : ""), $i; print "" }' |
    sed -e 's#^\./#/#' -e 's#/$##' -e 's#^$#/.#' > "$meta/list"
  rm -rf "$work/ctl" && dpkg-deb -e "$deb" "$work/ctl"
  for f in shlibs symbols; do
    if [ -f "$work/ctl/$f" ]; then cp "$work/ctl/$f" "$meta/$f"; fi
  done
done
# Absolute symlinks (libz.so -> /lib/...) would point into the host; make them relative.
find "$sysroot.new" -type l -lname '/*' | while read -r link; do
  target=$(readlink "$link")
  rel=$(realpath -m --relative-to="$(dirname "$link")" "$sysroot.new$target")
  ln -sfn "$rel" "$link"
done
echo "$want" > "$sysroot.new/.fieldsync-sysroot"
rm -rf "$sysroot"
mv "$sysroot.new" "$sysroot"
echo "install-deps.sh: $debarch sysroot ready ($(find "$work"/cache/archives -name '*.deb' | wc -l) packages)"
