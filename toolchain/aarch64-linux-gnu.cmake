# fieldsync: cross-compile for 64-bit ARM Linux with Debian's aarch64-linux-gnu-gcc.
#   toolchain/install-deps.sh aarch64
#   cmake -S . -B build-aarch64 --toolchain toolchain/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(FSA_TRIPLET aarch64-linux-gnu)
set(FSA_TARGET_ARCH aarch64)
set(FSA_QEMU qemu-aarch64)
include(${CMAKE_CURRENT_LIST_DIR}/cross-common.cmake)
