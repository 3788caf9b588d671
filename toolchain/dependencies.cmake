# fieldsync: finds the system dependencies of the parts being built; a missing one stops
# configuration and names the Debian package that provides it. Included by CMakeLists.txt.

find_package(PkgConfig)
if(NOT PKG_CONFIG_FOUND)
  message(FATAL_ERROR "pkg-config not found: install the Debian package 'pkg-config' "
                      "(or run toolchain/install-deps.sh)")
endif()
find_package(Threads REQUIRED)

# fsa_require_pkg(<target> <pkg-config module> <debian package>)
function(fsa_require_pkg target module debpkg)
  pkg_check_modules(${target} QUIET IMPORTED_TARGET GLOBAL ${module})
  if(NOT ${target}_FOUND)
    message(FATAL_ERROR "dependency '${module}' not found: install the Debian package "
                        "'${debpkg}' (or run toolchain/install-deps.sh${FSA_DEPS_ARCH_HINT})")
  endif()
  add_library(fsa::${target} ALIAS PkgConfig::${target})
endfunction()

if(CMAKE_CROSSCOMPILING)
  set(FSA_DEPS_ARCH_HINT " ${FSA_TARGET_ARCH}")
endif()

fsa_require_pkg(sqlite3 sqlite3 libsqlite3-dev)
fsa_require_pkg(curl libcurl libcurl4-openssl-dev)
fsa_require_pkg(cjson libcjson libcjson-dev)
fsa_require_pkg(zlib zlib zlib1g-dev)
# Only for the parts that use them (the options of CMakeLists.txt): a device build has neither.
if(FSA_BUILD_TESTS)
  fsa_require_pkg(cmocka cmocka libcmocka-dev)
endif()
if(FSA_BUILD_SERVER OR FSA_BUILD_TESTS)
  fsa_require_pkg(microhttpd libmicrohttpd libmicrohttpd-dev)
endif()

# Debian 12's mbedTLS 2.28 ships no pkg-config file, so it is found by header and library.
find_path(MBEDTLS_INCLUDE_DIR mbedtls/md.h)
find_library(MBEDCRYPTO_LIBRARY mbedcrypto)
find_library(MBEDX509_LIBRARY mbedx509)
find_library(MBEDTLS_LIBRARY mbedtls)
if(NOT MBEDTLS_INCLUDE_DIR OR NOT MBEDCRYPTO_LIBRARY OR NOT MBEDTLS_LIBRARY OR NOT MBEDX509_LIBRARY)
  message(FATAL_ERROR "dependency 'mbedtls' not found: install the Debian package "
                      "'libmbedtls-dev' (or run toolchain/install-deps.sh${FSA_DEPS_ARCH_HINT})")
endif()
add_library(fsa_mbedcrypto INTERFACE)
target_include_directories(fsa_mbedcrypto SYSTEM INTERFACE ${MBEDTLS_INCLUDE_DIR})
target_link_libraries(fsa_mbedcrypto INTERFACE ${MBEDCRYPTO_LIBRARY})
add_library(fsa::mbedcrypto ALIAS fsa_mbedcrypto)
add_library(fsa_mbedtls INTERFACE)
target_link_libraries(fsa_mbedtls INTERFACE ${MBEDTLS_LIBRARY} ${MBEDX509_LIBRARY} fsa_mbedcrypto)
add_library(fsa::mbedtls ALIAS fsa_mbedtls)

# libpq (Debian: libpq-dev) is optional: with it fieldsync-server also runs on PostgreSQL
# (--db postgresql://...). The ARM sysroots do not carry it, so the ARM builds have the SQLite
# backend only; a host build without libpq-dev says so here and builds without it.
# Asked only when the server is built.
set(FSA_HAVE_LIBPQ OFF)
if(FSA_BUILD_SERVER)
  pkg_check_modules(libpq QUIET IMPORTED_TARGET GLOBAL libpq)
  if(libpq_FOUND)
    add_library(fsa::libpq ALIAS PkgConfig::libpq)
    set(FSA_HAVE_LIBPQ ON)
  else()
    message(STATUS "libpq not found (Debian: libpq-dev): fieldsync-server without PostgreSQL")
  endif()
endif()
