# Allocation failure sweeps (curl's torture mode) of the journal, the codec and the resolver.
# dladdr() tells which library a failed allocation came from.
fsa_add_test(test_sync_alloc_sweep SOURCES test_alloc_sweep.c
             LIBS fsa_sync fsa_test_server_harness fsa::sqlite3 ${CMAKE_DL_LIBS})
# Under qemu the sweeps fail every 8th allocation only (FSA_TEST_SCALE, when set, decides instead).
if(CMAKE_CROSSCOMPILING_EMULATOR)
  set_tests_properties(test_sync_alloc_sweep PROPERTIES ENVIRONMENT FSA_TEST_EMULATED=1)
endif()
