fsa_add_test(test_storage_journal SOURCES test_journal.c vfs_fault.c LIBS fsa_storage fsa::sqlite3)
fsa_add_test(test_storage_journal_stress SOURCES test_journal_stress.c LIBS fsa_storage
             fsa::sqlite3)
fsa_add_test(test_storage_journal_changes SOURCES test_journal_changes.c vfs_fault.c LIBS fsa_storage
             fsa::sqlite3)
