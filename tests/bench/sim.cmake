# bench_sim: fieldsync-sim --scenario all with 1000 devices (or argv[1]); wall time and peak RSS
# of the simulator (and, separately, of the largest server it started) as BENCH lines.
fsa_add_bench(bench_sim SOURCES ${CMAKE_CURRENT_LIST_DIR}/bench_sim.c LIBS fsa_port)
target_compile_definitions(bench_sim PRIVATE FSA_SIM_BIN="$<TARGET_FILE:fieldsync-sim>")
add_dependencies(bench_sim fieldsync-sim fieldsync-server)
