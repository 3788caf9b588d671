# sync/transport over real HTTP(S) on loopback, against an in-test libmicrohttpd server.
# Its gzip level tests also push to the real fieldsync-server (the server harness, defined in
# CMakeLists.txt after this file is included: CMake resolves the name when it generates).
fsa_add_test(test_sync_transport SOURCES test_transport.c
             LIBS fsa_sync fsa_test_server_harness fsa::microhttpd fsa::zlib LABELS integration)
# GnuTLS (libmicrohttpd's TLS library) lets the in-test server check the client certificate of
# mutual TLS.
pkg_check_modules(fsa_test_gnutls QUIET IMPORTED_TARGET gnutls)
if(NOT fsa_test_gnutls_FOUND)
  message(FATAL_ERROR "dependency 'gnutls' not found: install the Debian package "
                      "'libgnutls28-dev' (or run toolchain/install-deps.sh${FSA_DEPS_ARCH_HINT})")
endif()
target_link_libraries(test_sync_transport PRIVATE PkgConfig::fsa_test_gnutls)
target_compile_definitions(test_sync_transport PRIVATE FSA_TEST_HAVE_GNUTLS=1)
