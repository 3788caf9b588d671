# bench_sync: drain a 100,000-op backlog with the real engine to the loopback server, beside a
# bare libcurl keep-alive POST loop against the same server.
fsa_add_bench(bench_sync SOURCES ${CMAKE_CURRENT_LIST_DIR}/bench_sync.c
              LIBS fsa_test_server_harness fsa_sync fsa::curl)
