/* fieldsync: storage/lock.c (being written). */
typedef int fsa__placeholder_t;
