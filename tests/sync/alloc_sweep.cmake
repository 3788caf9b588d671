# Allocation failure sweeps (curl's torture mode) of the journal, the codec and the resolver.
# dladdr() tells which library a failed allocation came from. One ctest test per sweep (or group of
# sweeps): they run in parallel, and the longest (the journal's record) has a timeout of its own.
# A new sweep in test_alloc_sweep.c needs a part here (the program refuses a filter that matches
# nothing, but cannot tell a sweep that no filter names). Label "sweep": CI runs them in its host,
# sanitizer and coverage builds, not under qemu (.ci/run).
fsa_add_test(test_sync_alloc_sweep SOURCES test_alloc_sweep.c
             LIBS fsa_sync fsa_test_server_harness fsa::sqlite3 ${CMAKE_DL_LIBS}
             PARTS codec=*codec_* resolver=*resolver journal_open=*journal_open*
                   journal_record=*journal_record journal_outbox=*journal_outbox
                   journal_conflicts=*journal_conflicts journal_reopen=*journal_reopen
                   engine=*engine_sync
             LABELS unit sweep)
# Under qemu the sweeps fail every 8th allocation only (FSA_TEST_SCALE, when set, decides instead).
if(CMAKE_CROSSCOMPILING_EMULATOR)
  foreach(part codec resolver journal_open journal_record journal_outbox journal_conflicts
               journal_reopen engine)
    set_property(TEST test_sync_alloc_sweep_${part} APPEND PROPERTY ENVIRONMENT FSA_TEST_EMULATED=1)
  endforeach()
endif()
