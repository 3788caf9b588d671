# bench_sim: fieldsync-sim --scenario all with 1000 and 10000 devices (or the sizes given), the same
# run; wall time and peak RSS of each, and how the cost per device grew.
fsa_add_bench(bench_sim SOURCES ${CMAKE_CURRENT_LIST_DIR}/bench_sim.c LIBS fsa_port)
target_compile_definitions(bench_sim PRIVATE FSA_SIM_BIN="$<TARGET_FILE:fieldsync-sim>")
add_dependencies(bench_sim fieldsync-sim fieldsync-server)
