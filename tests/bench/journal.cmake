fsa_add_bench(bench_journal SOURCES bench_journal.c LIBS fsa_storage fsa::sqlite3)
