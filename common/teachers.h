/* teachers.h: the two frozen teachers and the target tensors they give clip views.
 *
 * A teacher set holds InternViT (per frame, on the 8 even frames) and/or VideoMAE (on all 16),
 * loaded from safetensors or made from a preset with random weights ("preset:NAME[:seed][:{json overrides}]"),
 * and the list of targets to compute (cache.h names: clip_b{K}, clip_pool, clip_attn,
 * mae_b{K}). Views run in batches: iv2_teachers_run_batch sends n views (InternViT on 8n
 * frames, VideoMAE on n clips) through the teachers in one call and post-processes all their
 * outputs on the backend, with compute.h ops, into the targets as the cache stores them (token
 * 0 of clip_b* = frame-mean CLS; every token of clip_b*, clip_pool, mae_b* L2-normalised;
 * mae_b{last} after the final LayerNorm; clip_attn raw head-mean pool attention [8][256]);
 * then iv2_teachers_fetch(v) downloads view v's targets, one copy per target, as fp32 (or
 * iv2_teachers_fetch_target as the backend's own dtype, for storage in that dtype), or
 * iv2_teachers_fetch_async queues the whole batch's targets into host memory without waiting
 * (iv2-extract: the host encodes batch i while the device computes batch i + 1).
 * A view's result does not depend on the batch it ran in or its place there, so a
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
    /* teacher outputs; after run_batch each holds its targets at its start, [views][tokens][dim]
     * (clip_b*: [views][1 + 8P][C] over the raw [views][8][T][C]; clip_pool: [views][pool_dim]) */
    void *d_ivit_out[IV2_VIT_MAX_OUT], *d_ivit_pool, *d_mae_out[IV2_VIT_MAX_OUT];
    float *d_ivit_attn;
    /* post-processing scratch: clip_b* rows gathered before L2 [views][1 + 8P][C], the frames'
     * CLS rows [views][8][C], frame means [views][max(C, pool_dim)], and the gathers' row indices */
    void *d_gather, *d_cls, *d_mean;
    int32_t *d_tok_idx, *d_cls_idx;
    int ivit_blocks[IV2_VIT_MAX_OUT], n_ivit_blocks;
    int mae_blocks[IV2_VIT_MAX_OUT], n_mae_blocks;
    uint8_t *stage;                   /* host staging of [views][16] frames (be->alloc_host) */
    size_t backend_bytes, host_bytes; /* what the buffers above (and values) hold: the memory plan */
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
/* The dtype target t is held in on the backend: be->dtype, fp32 for clip_attn. */
iv2_dtype iv2_teachers_target_dtype(const iv2_teachers *ts, int t);
/* All targets of the last run_batch's views, downloaded without waiting (be->download_async:
 * one copy per target, queued after the batch's work), so the host can work on them while the
 * next batch runs. host: alloc_host memory of iv2_teachers_batch_bytes(ts) bytes; it may be read
 * only after an event recorded on the compute stream after this call has been synced. View v's
 * target t is then at iv2_teachers_host_target(ts, host, v, t), in iv2_teachers_target_dtype. */
size_t iv2_teachers_batch_bytes(const iv2_teachers *ts);
int iv2_teachers_fetch_async(iv2_teachers *ts, void *host);
const void *iv2_teachers_host_target(const iv2_teachers *ts, const void *host, int v, int t);
/* Copy target t of view v to host dst ([tokens][dim]) as dt: IV2_F32, or the dtype the backend
 * holds it in (then byte for byte, no conversion). One download; -1 for another dtype. */
int iv2_teachers_fetch_target(iv2_teachers *ts, int v, int t, void *dst, iv2_dtype dt);
/* One view: run_batch of 1, then fetch. Fills ts->values. */
int iv2_teachers_run(iv2_teachers *ts, const uint8_t *frames);
/* Bytes of backend buffers (frames, outputs, post-processing scratch) and host memory (frame
 * staging, ts->values) the set holds for its batch (0 before set_targets). */
void iv2_teachers_buffer_bytes(const iv2_teachers *ts, size_t *backend, size_t *host);
/* JSON object text for the meta "teachers" field (malloc'd). */
char *iv2_teachers_meta_json(const iv2_teachers *ts);
void iv2_teachers_free(iv2_teachers *ts);

#endif
