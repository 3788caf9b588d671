/* fieldsync: storage/model.c (being written). */
typedef int fsa__placeholder_t;
