# fieldsync-sim: the real binary, each scenario with a small fleet against the server it starts,
# --server mode against a harness server, usage errors; and its invariant checkers on hand-made
# server states (proof that every way an invariant can break makes it fail).
fsa_add_test(test_agent_sim SOURCES test_sim.c LIBS fsa_test_server_harness fsa::cjson
             LABELS integration)
target_compile_definitions(test_agent_sim PRIVATE
  FSA_SIM_BIN="$<TARGET_FILE:fieldsync-sim>" FSA_TEST_EMULATOR="${fsa_emulator}")
add_dependencies(test_agent_sim fieldsync-sim fieldsync-server)

fsa_add_test(test_agent_sim_checks SOURCES test_sim_checks.c LIBS fsa_sim_checks)
