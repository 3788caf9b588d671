# sync/transport over real HTTP(S) on loopback, against an in-test libmicrohttpd server.
fsa_add_test(test_sync_transport SOURCES test_transport.c
             LIBS fsa_sync fsa::microhttpd fsa::zlib LABELS integration)
# With GnuTLS headers (libgnutls28-dev) the in-test server also checks the client certificate of
# mutual TLS; without them that one check is left out.
pkg_check_modules(fsa_test_gnutls QUIET IMPORTED_TARGET gnutls)
if(fsa_test_gnutls_FOUND)
  target_link_libraries(test_sync_transport PRIVATE PkgConfig::fsa_test_gnutls)
  target_compile_definitions(test_sync_transport PRIVATE FSA_TEST_HAVE_GNUTLS=1)
endif()
