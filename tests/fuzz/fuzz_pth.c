/* libFuzzer target: the .pth / .bin reader behind iv2-weights convert (ZIP directory, ZIP64,
 * the pickle machine, storage resolution, tensor extents), then every accepted tensor is
 * looked up, its storage checked and copied out as F32, and its name mapped for each model.
 * Built with -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION so the CRC-32 checks pass and the
 * mutations reach the pickle and the tensors (common/pth.c). Seeds: tests/fixtures/pth.
 * Build and run: see tests/fuzz/README.md. */
#include "pth.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const models[] = {"videomae", "internvit", "student", "raw"};
    iv2_pth_file f;
    if (iv2_pth_open_mem(&f, data, size, "fuzz.pth") != 0) return 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const iv2_pth_tensor *t = &f.tensors[i];
        if (iv2_pth_find(&f, t->name) == NULL) abort();   /* lookup must find every tensor */
        char out[256];
        for (int m = 0; m < 4; m++) iv2_pth_map_name(models[m], t->name, out, sizeof out);
        /* a strided view (stride 0) may have far more elements than its storage: cap the copy */
        if (t->numel > (1u << 20) || iv2_pth_verify(&f, t)) continue;
        float *dst = malloc(t->numel * sizeof(float) + 1);
        iv2_pth_read(&f, t, dst, IV2_F32);
        free(dst);
    }
    iv2_pth_close(&f);
    return 0;
}
