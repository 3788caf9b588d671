# fieldsync: cross-compile for 32-bit ARM Linux (hard float) with arm-linux-gnueabihf-gcc.
#   toolchain/install-deps.sh armhf
#   cmake -S . -B build-armhf --toolchain toolchain/arm-linux-gnueabihf.cmake
set(CMAKE_SYSTEM_PROCESSOR armv7l)
set(FSA_TRIPLET arm-linux-gnueabihf)
set(FSA_TARGET_ARCH armhf)
set(FSA_QEMU qemu-arm)
# ELF alignment for 4 KiB pages, the only page size of 32-bit ARM Linux (ld's default, 64 KiB,
# pads each binary with up to 64 KB of zeros between code and data).
set(FSA_MAX_PAGE_SIZE 4096 CACHE STRING "The largest page size the binaries load on")
include(${CMAKE_CURRENT_LIST_DIR}/cross-common.cmake)
