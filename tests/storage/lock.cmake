fsa_add_test(test_storage_lock SOURCES test_lock.c LIBS fsa_storage)
