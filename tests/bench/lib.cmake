# bench_lib: recording through libfieldsync's public API beside the journal directly, and a
# check-in's p99 latency while the library's sync thread drains a 100,000-op backlog beside idle.
fsa_add_bench(bench_lib SOURCES ${CMAKE_CURRENT_LIST_DIR}/bench_lib.c
              LIBS fsa_lib fsa_test_server_harness)
