/* fieldsync: the one JSON string escaper (port/jsonstr.h). */
#include "port/jsonstr.h"

/* Puts c at out[n] when it fits below cap - 1 (room for the NUL); counts it either way. */
static size_t put(char *out, size_t cap, size_t n, char c)
{
    if (n + 1 < cap)
        out[n] = c;
    return n + 1;
}

size_t fsa_json_quote(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = put(out, cap, 0, '"');
    for (const unsigned char *p = (const unsigned char *)(s != NULL ? s : ""); *p != '\0'; p++) {
        char esc = 0;
        switch (*p) {
        case '"': esc = '"'; break;
        case '\\': esc = '\\'; break;
        case '\n': esc = 'n'; break;
        case '\r': esc = 'r'; break;
        case '\t': esc = 't'; break;
        case '\b': esc = 'b'; break;
        case '\f': esc = 'f'; break;
        default: break;
        }
        if (esc != 0) {
            n = put(out, cap, n, '\\');
            n = put(out, cap, n, esc);
        } else if (*p < 0x20 || *p == 0x7f) {
            n = put(out, cap, n, '\\');
            n = put(out, cap, n, 'u');
            n = put(out, cap, n, '0');
            n = put(out, cap, n, '0');
            n = put(out, cap, n, hex[*p >> 4]);
            n = put(out, cap, n, hex[*p & 15]);
        } else {
            n = put(out, cap, n, (char)*p);
        }
    }
    n = put(out, cap, n, '"');
    if (cap > 0)
        out[n < cap ? n : cap - 1] = '\0';
    return n;
}

char *fsa_digits_u64(char *end, uint64_t m)
{
    char *p = end;
    do {
        *--p = (char)('0' + m % 10);
        m /= 10;
    } while (m != 0);
    return p;
}
