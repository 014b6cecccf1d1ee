/* teachers.h: the two frozen teachers and the target tensors they give clip views.
 *
 * A teacher set holds InternViT (per frame, on the 8 even frames) and/or VideoMAE (on all 16),
 * loaded from safetensors or made from a preset with random weights ("preset:NAME[:seed][:{json overrides}]"),
 * and the list of targets to compute (cache.h names: clip_b{K}, clip_pool, clip_attn,
 * mae_b{K}). Views run in batches: iv2_teachers_run_batch sends n views (InternViT on 8n
 * frames, VideoMAE on n clips) through the teachers in one call, then iv2_teachers_fetch(v)
 * turns view v's outputs into one fp32 host tensor per target, post-processed as stored in the
 * cache (token 0 of clip_b* = frame-mean CLS; every token of clip_b*, clip_pool, mae_b*
 * L2-normalised; mae_b{last} after the final LayerNorm; clip_attn raw head-mean pool attention
 * [8][256]). A view's result does not depend on the batch it ran in or its place there, so a
 * resumed extract stores the same bytes: the CPU runs the views of a batch one at a time (its
 * GEMMs are not bit-exact across row counts; tested), CUDA runs the whole batch at once, always
 * padded to max_views views so that every call has the same shapes. */
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
    float *values[IV2_CACHE_MAX_TARGETS];   /* host [tokens][dim] per target, filled by fetch */
    int max_views;                    /* views per batch the buffers hold (iv2_teachers_set_batch; 1) */
    int n_views;                      /* views in the last run_batch */
    int no_sha;                       /* set before load: skip the weights' sha256 (a second device) */
    int pad;                          /* 1: whole batch in one pass, padded to max_views (CUDA);
                                         0: one view per internal pass (CPU) */
    /* backend scratch, for max_views views */
    uint8_t *d_frames;                /* [views][16] frames */
    uint8_t *d_ivit_frames;           /* [views][8] even frames (InternViT input) */
    void *d_ivit_out[IV2_VIT_MAX_OUT], *d_ivit_pool, *d_mae_out[IV2_VIT_MAX_OUT];
    float *d_ivit_attn;
    int ivit_blocks[IV2_VIT_MAX_OUT], n_ivit_blocks;
    int mae_blocks[IV2_VIT_MAX_OUT], n_mae_blocks;
    float *host;                      /* download scratch (one view) */
    uint8_t *stage;                   /* host staging of [views][16] frames (be->alloc_host) */
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
/* Views per batch (default 1): sizes the backend buffers and host staging for `views` views
 * and the teachers' internal batches (InternViT 8 x views frames, VideoMAE `views` clips).
 * Call before or after set_targets. */
int iv2_teachers_set_batch(iv2_teachers *ts, int views);
/* Run n <= max_views views; clips[i]: host uint8 [16][img][img][3]. Outputs stay on the
 * backend until fetched. */
int iv2_teachers_run_batch(iv2_teachers *ts, const uint8_t *const *clips, int n);
/* Fill ts->values with view v (0 <= v < n of the last run_batch). */
int iv2_teachers_fetch(iv2_teachers *ts, int v);
/* One view: run_batch of 1, then fetch. Fills ts->values. */
int iv2_teachers_run(iv2_teachers *ts, const uint8_t *frames);
/* Bytes of backend buffers (frames, outputs) and host staging the set holds for its batch. */
void iv2_teachers_buffer_bytes(const iv2_teachers *ts, size_t *backend, size_t *host);
/* JSON object text for the meta "teachers" field (malloc'd). */
char *iv2_teachers_meta_json(const iv2_teachers *ts);
void iv2_teachers_free(iv2_teachers *ts);

#endif
