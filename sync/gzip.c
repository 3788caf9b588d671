/* fieldsync: gzip of whole buffers (one gzip member), the wire's compression; the only zlib user.
 */
#include "sync/gzip.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>

#include <zlib.h>

#include "port/alloc.h"

/* windowBits for a gzip header and trailer (zlib's convention: 16 + the window's log2). */
#define GZIP_WBITS (16 + MAX_WBITS)

/* gzip.h spells zlib's levels without zlib.h. FSA_GZIP_LEVEL_DEFAULT, 6, is what deflateInit2
 * makes of Z_DEFAULT_COMPRESSION (-1). */
_Static_assert(FSA_GZIP_LEVEL_FAST == Z_BEST_SPEED, "FSA_GZIP_LEVEL_FAST is zlib's best speed");

/*
 * The output buffer is deflateBound's worst case, so deflate never runs out of room; the loop only
 * exists because zlib counts in 32-bit units.
 */
fsa_status_t fsa_gzip_compress(const void *in, size_t len, int level, unsigned char **out,
                               size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    *out = NULL;
    *out_len = 0;
    /* 0 would store the bytes in a gzip envelope, larger than they came: no caller wants that. */
    if (level < Z_BEST_SPEED || level > Z_BEST_COMPRESSION)
        return FSA_EINVAL;
    if ((uLong)len != len)
        return FSA_ETOOLARGE;
    if (deflateInit2(&zs, level, Z_DEFLATED, GZIP_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return FSA_ENOMEM;
    fsa_status_t st = FSA_ENOMEM;
    size_t cap = (size_t)deflateBound(&zs, (uLong)len);
    unsigned char *buf = cap >= len ? fsa_malloc(cap) : NULL;
    if (buf == NULL)
        goto out;
    const unsigned char *src = in;
    size_t in_left = len;
    size_t produced = 0;
    int zrc;
    do {
        if (zs.avail_in == 0 && in_left > 0) {
            uInt chunk = in_left > UINT_MAX ? UINT_MAX : (uInt)in_left;
            zs.next_in = (Bytef *)(uintptr_t)src;
            zs.avail_in = chunk;
            src += chunk;
            in_left -= chunk;
        }
        size_t room = cap - produced;
        uInt avail = room > UINT_MAX ? UINT_MAX : (uInt)room;
        zs.next_out = buf + produced;
        zs.avail_out = avail;
        zrc = deflate(&zs, in_left == 0 ? Z_FINISH : Z_NO_FLUSH);
        produced += avail - zs.avail_out;
        if (zrc == Z_STREAM_ERROR || (zrc != Z_STREAM_END && produced == cap)) {
            st = FSA_EIO;
            goto out;
        }
    } while (zrc != Z_STREAM_END);
    *out = buf;
    *out_len = produced;
    buf = NULL;
    st = FSA_OK;
out:
    deflateEnd(&zs);
    fsa_free(buf);
    return st;
}

/* The gzip trailer: CRC-32 of the uncompressed bytes, then their count modulo 2^32, both
 * little-endian (RFC 1952, section 2.3.1). */
#define GZIP_TRAILER 8
#define GZIP_HEADER 10

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

bool fsa_gzip_member_of(const unsigned char *gz, size_t gz_len, const void *in, size_t len)
{
    if (gz == NULL || gz_len < GZIP_HEADER + GZIP_TRAILER || (in == NULL && len > 0))
        return false;
    const unsigned char *trailer = gz + gz_len - GZIP_TRAILER;
    if (le32(trailer + 4) != (uint32_t)len)
        return false;
    uLong crc = crc32(0L, Z_NULL, 0);
    const unsigned char *p = in;
    for (size_t left = len; left > 0;) {
        uInt chunk = left > UINT_MAX ? UINT_MAX : (uInt)left;
        crc = crc32(crc, p, chunk);
        p += chunk;
        left -= chunk;
    }
    return (uint32_t)crc == le32(trailer);
}

fsa_status_t fsa_gzip_inflate(const void *in, size_t len, size_t max, char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if ((uInt)len != len || max >= SIZE_MAX / 2)
        return FSA_ETOOLARGE;
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, GZIP_WBITS) != Z_OK)
        return FSA_ENOMEM;
    /* A first guess of the size, grown by doubling up to max + 1 (one byte past max tells that
     * the output would pass it). */
    size_t cap = len * 4 + 1024;
    if (cap > max + 1)
        cap = max + 1;
    char *buf = fsa_malloc(cap + 1);
    fsa_status_t st = buf != NULL ? FSA_OK : FSA_ENOMEM;
    size_t got = 0;
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)len;
    while (st == FSA_OK) {
        if (got == cap) {
            if (cap > max) {
                st = FSA_ETOOLARGE;
                break;
            }
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            char *nb = fsa_realloc(buf, ncap + 1);
            if (nb == NULL) {
                st = FSA_ENOMEM;
                break;
            }
            buf = nb;
            cap = ncap;
        }
        z.next_out = (Bytef *)(buf + got);
        z.avail_out = (uInt)(cap - got);
        int rc = inflate(&z, Z_NO_FLUSH);
        got = cap - z.avail_out;
        if (rc == Z_STREAM_END) {
            if (z.avail_in != 0)
                st = FSA_EINVAL; /* trailing bytes after the gzip member */
            else if (got > max)
                st = FSA_ETOOLARGE;
            break;
        }
        if (rc == Z_BUF_ERROR && z.avail_in == 0 && got < cap) {
            st = FSA_EINVAL; /* truncated stream */
            break;
        }
        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            st = rc == Z_MEM_ERROR ? FSA_ENOMEM : FSA_EINVAL;
            break;
        }
    }
    inflateEnd(&z);
    if (st != FSA_OK) {
        fsa_free(buf);
        return st;
    }
    buf[got] = '\0';
    *out = buf;
    *out_len = got;
    return FSA_OK;
}
