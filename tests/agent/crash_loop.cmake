# The crash loop: fieldsync and its daemon killed at random moments against the real server.
fsa_add_test(test_agent_crash_loop SOURCES test_crash_loop.c
             LIBS fsa_test_server_harness fsa_storage fsa::sqlite3 LABELS integration)
target_compile_definitions(test_agent_crash_loop PRIVATE
  FSA_FIELDSYNC_BIN="$<TARGET_FILE:fieldsync>" FSA_TEST_EMULATOR="${fsa_emulator}")
add_dependencies(test_agent_crash_loop fieldsync fieldsync-server)
