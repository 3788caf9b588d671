fsa_add_bench(bench_lock SOURCES bench_lock.c LIBS fsa_storage)
