/* teachers.h: the two frozen teachers and the target tensors they give one clip view.
 *
 * A teacher set holds InternViT (per frame, on the 8 even frames) and/or VideoMAE (on all 16),
 * loaded from safetensors or made from a preset with random weights ("preset:NAME[:seed][:{json overrides}]"),
 * and the list of targets to compute (cache.h names: clip_b{K}, clip_pool, clip_attn,
 * mae_b{K}). iv2_teachers_run turns one view's 16 frames into one fp32 host tensor per target,
 * post-processed as stored in the cache (token 0 of clip_b* = frame-mean CLS; every token of
 * clip_b*, clip_pool, mae_b* L2-normalised; mae_b{last} after the final LayerNorm; clip_attn
 * raw head-mean pool attention [8][256]). The result does not depend on what else is run, so a
 * resumed extract stores the same bytes. */
#ifndef IV2_TEACHERS_H
#define IV2_TEACHERS_H
#include <stdint.h>
#include "cache.h"
#include "compute.h"
#include "vit.h"

typedef struct iv2_teachers {
    iv2_backend *be;
    iv2_vit *ivit, *mae;             /* NULL when that teacher is not used */
    char ivit_src[512], mae_src[512]; /* "path" or "preset:NAME[:seed][:{json overrides}]" */
    char ivit_sha[65], mae_sha[65];   /* sha256 of the weights file, "" for presets */
    int n_targets;
    iv2_cache_target targets[IV2_CACHE_MAX_TARGETS];
    float *values[IV2_CACHE_MAX_TARGETS];   /* host [tokens][dim] per target, filled by run */
    /* backend scratch */
    uint8_t *d_frames;                /* 16 frames */
    void *d_ivit_out[IV2_VIT_MAX_OUT], *d_ivit_pool, *d_mae_out[IV2_VIT_MAX_OUT];
    float *d_ivit_attn;
    int ivit_blocks[IV2_VIT_MAX_OUT], n_ivit_blocks;
    int mae_blocks[IV2_VIT_MAX_OUT], n_mae_blocks;
    float *host;                      /* download scratch */
    uint8_t *stage;                   /* host staging of the 8 even frames */
    size_t host_cap;
} iv2_teachers;

/* Load a teacher: spec is a safetensors path or "preset:NAME[:seed][:{json overrides}]". which is "internvit" or
 * "videomae". The backend must outlive the set. */
int iv2_teachers_load(iv2_teachers *ts, iv2_backend *be, const char *which, const char *spec);
/* Choose targets: list is comma-separated names with block ranges ("clip_b42-47,clip_pool,
 * clip_attn,mae_b36-39"), or NULL / "recipe" = the last 6 InternViT blocks, pool, attention,
 * last 4 VideoMAE blocks (of the teachers loaded). dtype is the storage dtype of the block and
 * pool targets (clip_attn is always fp32). Then allocates the buffers. */
int iv2_teachers_set_targets(iv2_teachers *ts, const char *list, iv2_dtype dtype);
/* frames: host uint8 [16][224][224][3]. Fills ts->values. */
int iv2_teachers_run(iv2_teachers *ts, const uint8_t *frames);
/* JSON object text for the meta "teachers" field (malloc'd). */
char *iv2_teachers_meta_json(const iv2_teachers *ts);
void iv2_teachers_free(iv2_teachers *ts);

#endif
