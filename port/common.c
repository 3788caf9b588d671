/* fieldsync: port helpers shared by every implementation: log formatting, level names, UUIDs (v4
 * random, v7 time-ordered). */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "port/limits.h"
#include "port/port.h"

static const char level_names[][6] = {"debug", "info", "warn", "error", "off"};

const char *fsa_log_level_str(fsa_log_level_t level)
{
    if ((unsigned)level <= FSA_LOG_OFF)
        return level_names[level];
    return "?";
}

fsa_status_t fsa_log_level_parse(const char *name, fsa_log_level_t *out)
{
    if (name == NULL || out == NULL)
        return FSA_EINVAL;
    for (unsigned i = 0; i <= FSA_LOG_OFF; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (fsa_log_level_t)i;
            return FSA_OK;
        }
    }
    return FSA_EINVAL;
}

void fsa_logv(const fsa_port_t *port, fsa_log_level_t level, const char *fmt, va_list ap)
{
    if (port == NULL || port->log == NULL || level < port->log_level || level >= FSA_LOG_OFF)
        return;
    char line[FSA_LIMIT_LOG_LINE];
    int n = vsnprintf(line, sizeof line, fmt, ap);
    if (n < 0)
        return;
    fsa_one_line(line);
    port->log(port->ctx, level, line);
}

void fsa_one_line(char *s)
{
    for (unsigned char *p = (unsigned char *)s; *p != '\0'; p++) {
        /* The character here (u, n bytes), decoded as far as the test needs: ASCII, a two-byte
         * sequence, or one of three bytes led by 0xe2, each byte after the first a continuation
         * byte (so never the NUL, and a lone lead byte of Latin-1 text leaves the next character
         * alone); any other byte of 0x80 or more (0xff) matches nothing. */
        unsigned a = *p, u = a < 0x80 ? a : 0xff, n = 1;
        if (a >= 0xc2 && a <= 0xdf && (p[1] & 0xc0) == 0x80)
            u = (a & 0x1f) << 6 | (p[1] & 0x3f), n = 2;
        else if (a == 0xe2 && (p[1] & 0xc0) == 0x80 && (p[2] & 0xc0) == 0x80)
            u = 0x2000 | (p[1] & 0x3f) << 6 | (p[2] & 0x3f), n = 3;
        /* Shown as '?', a byte each: a C0 control; DEL and the C1 controls (U+0080-U+009F: some
         * terminals take U+009B for ESC [); the marks ALM (U+061C), LRM and RLM (U+200E-U+200F),
         * the line and paragraph separators and the bidi embeddings and overrides
         * (U+2028-U+202E), the bidi isolates (U+2066-U+2069): they steer a terminal, or reorder
         * or break what a person reads. */
        if (u < 0x20 || u - 0x7f < 0x21 || u == 0x61c || (u | 1) == 0x200f || u - 0x2028 < 7 ||
            u - 0x2066 < 4) {
            memset(p, '?', n);
            p += n - 1;
        }
    }
}

void fsa_log(const fsa_port_t *port, fsa_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fsa_logv(port, level, fmt, ap);
    va_end(ap);
}

/* A UUID of the given version from the port's random source, the first 48 bits the wall clock's
 * ms and the last 40 bits tail when timed (version 8: fsa_uuid8). */
static fsa_status_t uuid_make(const fsa_port_t *port, int version, bool timed, uint64_t tail,
                              char out[FSA_UUID_STR_LEN])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    out[0] = '\0';
    if (port == NULL)
        return FSA_EINVAL;
    fsa_status_t st = port->random(port->ctx, b, sizeof b);
    if (st != FSA_OK)
        return st;
    if (timed) {
        int64_t ms = port->wall_now(port->ctx).ms;
        uint64_t t = ms > 0 ? (uint64_t)ms : 0;
        for (int i = 0; i < 6; i++)
            b[i] = (unsigned char)(t >> (40 - 8 * i));
        for (int i = 0; i < 5; i++)
            b[11 + i] = (unsigned char)(tail >> (32 - 8 * i));
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | (version << 4)); /* version */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);           /* variant 10xx */
    char *p = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[b[i] >> 4];
        *p++ = hex[b[i] & 15];
    }
    *p = '\0';
    return FSA_OK;
}

fsa_status_t fsa_uuid4(const fsa_port_t *port, char out[FSA_UUID_STR_LEN])
{
    return uuid_make(port, 4, false, 0, out);
}

fsa_status_t fsa_uuid8(const fsa_port_t *port, uint64_t tail, char out[FSA_UUID_STR_LEN])
{
    return uuid_make(port, 8, true, tail, out);
}
