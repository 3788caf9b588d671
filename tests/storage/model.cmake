fsa_add_test(test_storage_model SOURCES test_model.c LIBS fsa_model)
