/* fieldsync: the one JSON string escaper (a C string to a quoted JSON string literal), and the one
 * integer-to-digits writer of the hand-written JSON. */
#ifndef FSA_PORT_JSONSTR_H
#define FSA_PORT_JSONSTR_H

#include <stddef.h>
#include <stdint.h>

/*
 * Pure code, in port/ because every layer writes JSON by hand somewhere (the library's answers,
 * the CLI's ops, the lock statistics, the server's scope lists, the simulator's report) and
 * port is the one layer below all of them.
 *
 * Writes s as a JSON string literal: quoted; '"' and '\' escaped; \b \f \n \r \t short; the
 * other control characters and DEL as \u00XX; every other byte as is (UTF-8 passes through).
 * snprintf's contract: writes at most cap bytes into out, always NUL-terminated when cap > 0
 * (out may be NULL when cap is 0), and returns the length of the whole literal without the
 * NUL: the text was cut when the result is >= cap. s NULL is written as the empty string "".
 */
size_t fsa_json_quote(const char *s, char *out, size_t cap);

/* The most fsa_json_quote can return for a string of n bytes: 6 per byte and the quotes. */
#define FSA_JSON_QUOTE_MAX(n) (6 * (size_t)(n) + 2)

/* Writes m's decimal digits so that they end just before end (up to 20 bytes before it, no NUL);
 * returns where they begin. Without printf: the hot paths (the journal's numbers, the push
 * encoder) write many. */
char *fsa_digits_u64(char *end, uint64_t m);

#endif
