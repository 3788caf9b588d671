# fieldsync: cross-compile for 32-bit ARM Linux (hard float) with arm-linux-gnueabihf-gcc.
#   toolchain/install-deps.sh armhf
#   cmake -S . -B build-armhf --toolchain toolchain/arm-linux-gnueabihf.cmake
set(CMAKE_SYSTEM_PROCESSOR armv7l)
set(FSA_TRIPLET arm-linux-gnueabihf)
set(FSA_TARGET_ARCH armhf)
set(FSA_QEMU qemu-arm)
include(${CMAKE_CURRENT_LIST_DIR}/cross-common.cmake)
