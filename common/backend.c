/* backend.c: picks a compute backend by name ("cpu", "cuda", "cuda:N"). */
#include <stdlib.h>
#include <string.h>
#include "compute.h"
#include "err.h"

iv2_backend *iv2_backend_create(const char *spec, int threads) {
    if (!spec || !*spec || strcmp(spec, "cpu") == 0) return iv2_cpu_backend_create(threads);
    if (strncmp(spec, "cuda", 4) == 0 && (spec[4] == '\0' || spec[4] == ':')) {
        int dev = 0;
        if (spec[4] == ':') {
            char *end = NULL;
            long d = strtol(spec + 5, &end, 10);
            if (end == spec + 5 || *end || d < 0 || d > 1024) {
                iv2_err("backend '%s': bad device ordinal (want cuda:N with N >= 0)", spec);
                return NULL;
            }
            dev = (int)d;
        }
#ifdef IV2_CUDA
        iv2_backend *be = iv2_cuda_backend_create(dev);
        if (!be) iv2_err_ctx("backend '%s'", spec);
        return be;
#else
        (void)dev;
        iv2_err("backend '%s': CUDA support not compiled in (rebuild with make CUDA=1)", spec);
        return NULL;
#endif
    }
    iv2_err("backend '%s': unknown (want cpu, cuda or cuda:N)", spec);
    return NULL;
}

void iv2_backend_destroy(iv2_backend *be) {
    if (be && be->destroy) be->destroy(be);
}
