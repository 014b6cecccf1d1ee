/* libFuzzer target: the safetensors header validator and tensor copy-out.
 * Build and run: see tests/fuzz/README.md. */
#include "safetensors.h"
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    iv2_st_file f;
    if (iv2_st_open_mem(&f, data, size, "fuzz") == 0) {
        for (int i = 0; i < f.n_tensors; i++) {
            const iv2_st_tensor *t = &f.tensors[i];
            if (iv2_st_find(&f, t->name) != t) abort();       /* lookup must find every tensor */
            float *dst = malloc(t->numel * sizeof(float) + 1); /* numel <= size: the offsets are validated */
            iv2_st_read(&f, t, dst, IV2_F32);
            free(dst);
        }
        iv2_st_meta(&f, "format");
        iv2_st_close(&f);
    }
    return 0;
}
