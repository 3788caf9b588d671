# bench_server: fieldsync-server apply throughput (500-op batches) against bare SQLite batched
# inserts with the same pragmas, and push latency with 100 devices at once. Uses the real binary
# through the integration tests' harness (tests/sync/server_harness.c).
fsa_add_bench(bench_server SOURCES ${CMAKE_CURRENT_LIST_DIR}/bench_server.c
              LIBS fsa_test_server_harness fsa::sqlite3 fsa::curl Threads::Threads)
