# storage/db.c: opening a journal, its pragmas and schema version, SQLite codes mapped.
fsa_add_test(test_storage_db SOURCES test_db.c LIBS fsa_storage fsa::sqlite3)
