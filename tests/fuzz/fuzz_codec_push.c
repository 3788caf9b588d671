/* fieldsync fuzz target: the server's push decoder (sync/codec.h, fsa_codec_decode_push), which
 * reads the body in one pass without a tree, against the cJSON tree decoder it replaced
 * (fsa__codec_decode_push_tree). */
#include "sync/codec.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/sync/codec_push_diff.h"

/*
 * The input is a push body as it is. Invariant: both decoders give the same answer: the same
 * status, error code and message, batch id, and every op member for member, payloads byte for
 * byte (tests/sync/codec_push_diff.h).
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly size bytes, so that ASan sees any read past the body. */
    char *body = fuzz_alloc(size);
    if (size > 0)
        memcpy(body, data, size);
    size_t op = 0;
    const char *why = codec_push_diff(body, size, &op);
    if (why != NULL)
        fprintf(stderr, "the push decoders differ in %s (op %zu)\n", why, op);
    FUZZ_CHECK(why == NULL);
    fsa_free(body);
    return 0;
}
