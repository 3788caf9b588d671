# fieldsync: shared part of the ARM toolchain files. Expects FSA_TRIPLET, FSA_TARGET_ARCH,
# FSA_QEMU and CMAKE_SYSTEM_PROCESSOR to be set by the including file.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_C_COMPILER ${FSA_TRIPLET}-gcc)

# The sysroot holds Debian's multiarch -dev packages for the target, unpacked by
# toolchain/install-deps.sh <arch> (see there for why they are not installed with dpkg).
if(NOT FSA_SYSROOT)
  if(DEFINED ENV{FSA_SYSROOT})
    set(FSA_SYSROOT "$ENV{FSA_SYSROOT}")
  else()
    set(FSA_SYSROOT "${CMAKE_CURRENT_LIST_DIR}/sysroot/${FSA_TRIPLET}")
  endif()
endif()
if(NOT EXISTS "${FSA_SYSROOT}/.fieldsync-sysroot")
  message(FATAL_ERROR "no ${FSA_TARGET_ARCH} sysroot at ${FSA_SYSROOT}: "
                      "run toolchain/install-deps.sh ${FSA_TARGET_ARCH}")
endif()
# Try-compiles re-read this file; pass the values on to them.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES FSA_SYSROOT FSA_TRIPLET FSA_TARGET_ARCH FSA_QEMU)

set(CMAKE_SYSROOT "${FSA_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH "${FSA_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(CMAKE_LIBRARY_ARCHITECTURE ${FSA_TRIPLET})

# pkg-config for the target: only the sysroot's .pc files, with paths prefixed by the sysroot.
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${FSA_SYSROOT}")
set(ENV{PKG_CONFIG_LIBDIR}
    "${FSA_SYSROOT}/usr/lib/${FSA_TRIPLET}/pkgconfig:${FSA_SYSROOT}/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

# ctest runs the target's test programs under qemu-user, with the sysroot as their root.
find_program(FSA_QEMU_PATH ${FSA_QEMU})
if(NOT FSA_QEMU_PATH)
  message(FATAL_ERROR "${FSA_QEMU} not found: install the Debian package 'qemu-user' "
                      "(or run toolchain/install-deps.sh ${FSA_TARGET_ARCH})")
endif()
set(CMAKE_CROSSCOMPILING_EMULATOR "${FSA_QEMU_PATH};-L;${FSA_SYSROOT}")
