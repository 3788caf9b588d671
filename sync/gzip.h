/* fieldsync: gzip of whole buffers (one gzip member), the wire's compression; the only zlib user.
 */
#ifndef FSA_SYNC_GZIP_H
#define FSA_SYNC_GZIP_H

#include <stdbool.h>
#include <stddef.h>

#include "port/port.h"

/*
 * Used by the transport (request bodies it sends) and by fieldsync-server (answers it sends,
 * request bodies it reads). Buffers come from the project's allocator (fsa_free). Pure: no I/O,
 * no global state.
 */

/* zlib's compression levels that the wire uses (zlib's numbers, so that this header does not need
 * zlib.h). FAST (zlib's Z_BEST_SPEED) takes a quarter to half of DEFAULT's CPU for 10-16% more
 * bytes on push bodies; DEFAULT is what zlib's Z_DEFAULT_COMPRESSION means. The transport chooses
 * between them by which side of an exchange is the slower (transport.h); the server's answers use
 * DEFAULT. */
#define FSA_GZIP_LEVEL_FAST 1
#define FSA_GZIP_LEVEL_DEFAULT 6

/* Compresses in[0..len) at level (1..9; FSA_GZIP_LEVEL_*) into one gzip member in a new buffer
 * (*out, *out_len). The header's XFL byte says the level as gzip defines it (4 for level 1, 2 for
 * 9, else 0). Returns FSA_OK, FSA_EINVAL (level out of 1..9), FSA_ETOOLARGE (len past what zlib
 * can count), FSA_ENOMEM, FSA_EIO (zlib failed); on failure *out is NULL. */
fsa_status_t fsa_gzip_compress(const void *in, size_t len, int level, unsigned char **out,
                               size_t *out_len) FSA_MUST_CHECK;

/*
 * Whether the gzip member gz[0..gz_len) (as fsa_gzip_compress makes it) holds exactly in[0..len):
 * its trailer's CRC-32 and size (modulo 2^32, as gzip counts) are those of in. Reads the trailer
 * and checksums in, never inflates: a cheap proof that a member made earlier is still the one for
 * these bytes (the transport's compression ahead). False for a gz too short to have a trailer.
 */
bool fsa_gzip_member_of(const unsigned char *gz, size_t gz_len, const void *in, size_t len);

/*
 * Inflates one gzip member in[0..len) into a new NUL-terminated buffer of at most max bytes (the
 * NUL not counted). Stops as soon as the output would pass max (FSA_ETOOLARGE): a gzip bomb costs
 * at most max bytes of work and memory. FSA_EINVAL: corrupt, truncated, or bytes after the
 * member; FSA_ENOMEM. On failure *out is NULL.
 */
fsa_status_t fsa_gzip_inflate(const void *in, size_t len, size_t max, char **out,
                              size_t *out_len) FSA_MUST_CHECK;

#endif
