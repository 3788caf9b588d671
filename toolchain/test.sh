#!/usr/bin/env bash
# fieldsync: configures, builds and runs the tests of one build variant; ends with ctest's summary.
#
#   toolchain/test.sh [host|asan|clang|aarch64|armhf] [extra ctest arguments...]
#
#   host     the default: a RelWithDebInfo build in build/
#   asan     AddressSanitizer + UndefinedBehaviorSanitizer, clang, Debug at -O1, in build-asan/
#   clang    the host build with clang instead of gcc (warnings are errors there too), build-clang/
#   aarch64  cross build in build-aarch64/, tests run under qemu-aarch64
#   armhf    cross build in build-armhf/, tests run under qemu-arm
#            (both with the device packages' size flags, FSA_SMALL: what ships is what is tested)
#
# Run toolchain/install-deps.sh [aarch64|armhf] first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

variant=${1:-host}
[ $# -gt 0 ] && shift
jobs=$(nproc 2>/dev/null || echo 2)
case "$variant" in
  host) dir=build args=() ;;
  # Built by clang: this is CI's clang build (warnings are errors with both compilers), the
  # benchmarks included; gcc makes the host, coverage, Release and ARM builds. -O1, as the
  # sanitizers' own docs advise: the tests run ~10% faster than at -O0.
  asan) dir=build-asan args=(-DCMAKE_C_COMPILER=clang -DFSA_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
                             "-DCMAKE_C_FLAGS_DEBUG=-g -O1") ;;
  clang) dir=build-clang args=(-DCMAKE_C_COMPILER=clang) ;;
  aarch64) dir=build-aarch64 args=(--toolchain toolchain/aarch64-linux-gnu.cmake -DFSA_SMALL=ON) ;;
  armhf) dir=build-armhf args=(--toolchain toolchain/arm-linux-gnueabihf.cmake -DFSA_SMALL=ON) ;;
  -h | --help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "test.sh: unknown variant '$variant' (host, asan, clang, aarch64 or armhf)" >&2; exit 2 ;;
esac

cmake -S . -B "$dir" "${args[@]}" >/dev/null
cmake --build "$dir" -j "$jobs"
ctest --test-dir "$dir" --output-on-failure -j "$jobs" "$@"
