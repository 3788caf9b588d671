# The journal under I/O faults: a fault-injecting SQLite VFS (vfs_fault.c) fails each write, sync
# and open in turn.
fsa_add_test(test_storage_journal_faults SOURCES test_journal_faults.c vfs_fault.c LIBS fsa_storage
             fsa::sqlite3)
# Under qemu the sweeps run every 8th fault point (FSA_TEST_SCALE, when set, decides instead).
if(CMAKE_CROSSCOMPILING_EMULATOR)
  set_tests_properties(test_storage_journal_faults PROPERTIES ENVIRONMENT FSA_TEST_EMULATED=1)
endif()
