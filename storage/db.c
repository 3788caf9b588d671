/* fieldsync: storage/db.c (being written). */
typedef int fsa__placeholder_db_t;
