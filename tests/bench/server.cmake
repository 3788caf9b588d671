# bench_server: fieldsync-server apply throughput (500-op batches) against bare SQLite batched
# inserts with the same pragmas, and push latency with 100 devices at once. Uses the real binary
# through the integration tests' harness (tests/sync/server_harness.c).
fsa_add_bench(bench_server SOURCES ${CMAKE_CURRENT_LIST_DIR}/bench_server.c
              LIBS fsa_test_server_harness fsa::sqlite3 fsa::curl Threads::Threads)

# bench_server_scale: apply throughput with 1, 2 and 4 server processes on one database (SQLite,
# and PostgreSQL beside bare libpq inserts when built with libpq), and a scoped pull at 1,000 vs
# 100,000 entities. Starts its own PostgreSQL cluster (tests/sync/pg_harness.c).
fsa_add_bench(bench_server_scale SOURCES ${CMAKE_CURRENT_LIST_DIR}/bench_server_scale.c
              LIBS fsa_test_server_harness fsa::curl Threads::Threads)
if(FSA_HAVE_LIBPQ)
  target_compile_definitions(bench_server_scale PRIVATE FSA_TEST_HAVE_PG=1)
endif()
