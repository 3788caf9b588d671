# sync/engine.c against a scripted in-test server (libmicrohttpd) on loopback: the protocol's
# batch-level answers and a misbehaving server.
fsa_add_test(test_sync_engine_proto SOURCES test_engine_proto.c
             LIBS fsa_test_server_harness fsa_sync fsa::microhttpd fsa::zlib LABELS integration)
