/* fieldsync: storage/journal.c (being written). */
typedef int fsa__placeholder_t;
