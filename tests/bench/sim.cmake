# bench_sim: fieldsync-sim --scenario all with 1000 and 10000 devices (or the sizes given), the same
# run, on fieldsync-server with 2 processes on PostgreSQL (a private cluster) when built with
# libpq; wall time and peak RSS of each, each scenario's time, and how the cost per device grew.
fsa_add_bench(bench_sim SOURCES ${CMAKE_CURRENT_LIST_DIR}/bench_sim.c
              LIBS fsa_port fsa_test_server_harness)
if(FSA_HAVE_LIBPQ)
  target_compile_definitions(bench_sim PRIVATE FSA_TEST_HAVE_PG=1)
endif()
target_compile_definitions(bench_sim PRIVATE FSA_SIM_BIN="$<TARGET_FILE:fieldsync-sim>")
add_dependencies(bench_sim fieldsync-sim fieldsync-server)
