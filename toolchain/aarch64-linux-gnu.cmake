# fieldsync: cross-compile for 64-bit ARM Linux with Debian's aarch64-linux-gnu-gcc.
#   toolchain/install-deps.sh aarch64
#   cmake -S . -B build-aarch64 --toolchain toolchain/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(FSA_TRIPLET aarch64-linux-gnu)
set(FSA_TARGET_ARCH aarch64)
set(FSA_QEMU qemu-aarch64)
# ELF alignment for 16 KiB pages (ld's default on aarch64 is 64 KiB, which pads each binary with
# up to 64 KB of zeros between code and data): the binaries load on kernels with 4 KiB pages
# (Debian's arm64 kernel) and 16 KiB pages (e.g. the Raspberry Pi 5's), not on 64 KiB-page
# kernels (some arm64 servers). -DFSA_MAX_PAGE_SIZE=65536 builds for those.
set(FSA_MAX_PAGE_SIZE 16384 CACHE STRING "The largest page size the binaries load on")
include(${CMAKE_CURRENT_LIST_DIR}/cross-common.cmake)
