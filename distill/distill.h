/* distill.h: the public surface of iv2-distill, the student trainer (InternVideo2 stage 1).
 *
 * Pieces, one file each:
 *   config.c     run config (JSON), every default = InternVideo2-1B stage 1 (docs/distill.md)
 *   mask.c       attention (Gumbel-top-k) / random / tube masks; the counter-based RNG
 *   heads.c      per-layer heads: forward and backward side by side, with their position embeds
 *   loss.c       the loss terms (2 - 2cos, mean per term, alpha-weighted) and the NaN guard
 *   optim.c      LR schedule, global grad-norm clip, AdamW with the no-decay exclusions
 *   checkpoint.c atomic checkpoints (safetensors + JSON metadata), keep-last-N, resume
 *   loader.c     cache shards -> batches (frames, visible indices, visible target rows); prefetch thread
 *   train.c      the training loop; eval.c held-out cosine per target; plot.c loss curves -> PNG
 *
 * Randomness is counter-based (a hash of seed and position): the mask of view v at step s, the
 * epoch permutation and the drop-path draws are pure functions of (seed, epoch, step, ...), so a
 * resumed run reproduces the uninterrupted one bit for bit with only the step in the checkpoint. */
#ifndef IV2_DISTILL_H
#define IV2_DISTILL_H
#include <stddef.h>
#include <stdint.h>
#include "compute.h"
#include "vit.h"

/* ------------------------------------------------------------------ RNG */

/* splitmix64 stream; seed with a hash of the position it belongs to. */
typedef struct iv2_rng { uint64_t s; } iv2_rng;
uint64_t iv2_hash_u64(uint64_t a, uint64_t b, uint64_t c, uint64_t d);
void iv2_rng_seed(iv2_rng *r, uint64_t a, uint64_t b, uint64_t c, uint64_t d);
uint64_t iv2_rng_u64(iv2_rng *r);
double iv2_rng_uniform(iv2_rng *r);        /* (0, 1), never 0 or 1 */
uint32_t iv2_rng_below(iv2_rng *r, uint32_t n);   /* unbiased [0, n) */

/* ------------------------------------------------------------------ config */

#define IV2_DISTILL_MAX_LAYERS 16

typedef enum { IV2_MASK_ATTENTION = 0, IV2_MASK_RANDOM, IV2_MASK_TUBE } iv2_mask_type;

#define IV2_RECOMPUTE_AUTO (-1)
#define IV2_RECOMPUTE_ALL 1000000

typedef struct iv2_distill_config {
    char student[32];          /* vit preset: "iv2-1b" */
    char student_json[1024];   /* JSON object of overrides on the preset ("" = none) */
    /* targets: clip_b{clip_teacher[i]} <-> student block clip_student[i]; mae_b{..} likewise */
    int n_clip, clip_teacher[IV2_DISTILL_MAX_LAYERS], clip_student[IV2_DISTILL_MAX_LAYERS];
    int n_mae, mae_teacher[IV2_DISTILL_MAX_LAYERS], mae_student[IV2_DISTILL_MAX_LAYERS];
    int layers_auto;           /* IV2_PAIR_CLIP | IV2_PAIR_MAE: that pairing comes from the cache
                                  (iv2_trainer_open); 0 by default, iv2-distill train sets both,
                                  "clip_layers" / "mae_layers" clear theirs */
    int use_final;             /* clip_pool target through the final head */
    float alpha_clip, alpha_final, alpha_mae;
    iv2_mask_type mask;
    float mask_ratio;          /* 0.8: per frame keep 256 - int(256*0.8) = 52 */
    int batch;                 /* global batch (4096 in the recipe) */
    int epochs;                /* 301 */
    int64_t steps;             /* > 0 overrides epochs * steps_per_epoch */
    float base_lr;             /* 1.5e-4, scaled by batch/256 */
    float base_min_lr;         /* 1e-5, scaled by batch/256 */
    float warmup_epochs;       /* 40 */
    int64_t warmup_steps;      /* >= 0 overrides warmup_epochs */
    float beta1, beta2, eps, weight_decay, clip_grad, drop_path;
    uint64_t seed;
    int64_t ckpt_every;        /* steps; 0 = only at the end */
    int keep_ckpt;             /* keep the last N checkpoints */
    int64_t eval_every;        /* steps; 0 = never during training */
    int eval_views;            /* views held out of training for eval (0 = none) */
    int log_every;             /* steps between progress lines, 0 = by time (the JSON line is every step) */
    int threads;               /* 0 = all cores */
    char device[32];           /* "cpu" | "cuda" | "cuda:N" */
    int prefetch;              /* 1 = loader thread builds the next batch */
    int loader_threads;        /* threads building one batch's samples: 0 = auto (4 on CUDA, capped by
                                  the cores; 1 on the CPU, whose cores train); the batch is the same */
    int recompute;             /* student blocks recomputed in the backward (the official checkpoint_num):
                                  IV2_RECOMPUTE_AUTO (none on the CPU; on CUDA the fewest
                                  blocks that fit: iv2_distill_auto_recompute), 0..depth, or
                                  IV2_RECOMPUTE_ALL; JSON "auto" | "all" | a count */
} iv2_distill_config;

void iv2_distill_config_default(iv2_distill_config *c);
/* Overrides the fields present in a JSON object (unknown keys are an error naming the key). */
int iv2_distill_config_parse(iv2_distill_config *c, const char *json, const char *what);
int iv2_distill_config_load(iv2_distill_config *c, const char *path);
/* Canonical JSON of every field (caller frees). */
char *iv2_distill_config_to_json(const iv2_distill_config *c);
int iv2_distill_config_check(const iv2_distill_config *c);

/* Default layer pairing (pairing.c). For each pairing flagged in c->layers_auto, the cache's
 * clip_b* (mae_b*) targets, ascending by block, pair with the student's last K blocks, ascending
 * (the recipe: clip_b42..47 <-> 34..39 and mae_b36..39 <-> 36..39 of the 40-block 1B student).
 * Explicit pairings are kept. -1 when the cache has more such targets than the student has
 * blocks (or than IV2_DISTILL_MAX_LAYERS). names/n: the cache's target names. */
enum { IV2_PAIR_CLIP = 1, IV2_PAIR_MAE = 2 };
int iv2_distill_pair_layers(iv2_distill_config *c, const char *const *names, int n, int student_depth);
/* "clip_b42->34 ... mae_b39->39" (+ " (from the cache)" per auto pairing) into buf. */
void iv2_distill_pairing_str(const iv2_distill_config *c, char *buf, size_t cap);

/* The derived run plan. */
typedef struct iv2_plan {
    int64_t train_videos, steps_per_epoch, total_steps, warmup_steps;
    float peak_lr, min_lr;
} iv2_plan;
int iv2_plan_make(iv2_plan *p, const iv2_distill_config *c, int64_t train_videos);
/* lr[i] = linspace(0, peak, W)[i] for i < W, then min + (peak-min)/2 (1 + cos(pi j / (T-W))). */
float iv2_lr_at(const iv2_plan *p, int64_t step);

/* ------------------------------------------------------------------ masks */

/* per frame: keep = P - int(P * ratio) (the recipe's 256 - int(256*0.8) = 52). */
int iv2_mask_keep(int P, float ratio);
/* number of visible tokens including CLS for a mask type on a T x P grid */
int iv2_mask_n_visible(iv2_mask_type t, int T, int P, float ratio);
/* Visible token indices, sorted, vis[0] = 0 (CLS), patch p of frame t at 1 + t*P + p.
 * attention: per frame, `keep` patches drawn without replacement in proportion to attn[t][p]
 *   (Gumbel-top-k: the keep largest log w + Gumbel); attn may be NULL for the other types.
 * random: T*P - int(T*P*ratio) patches uniformly over the clip.
 * tube: one per-frame pattern of `keep` patches, repeated in every frame.
 * Returns the count written (iv2_mask_n_visible), or -1 on a bad argument. */
int iv2_mask_draw(iv2_mask_type t, const float *attn, int T, int P, float ratio, iv2_rng *r, int32_t *vis);

/* ------------------------------------------------------------------ parameter tables */

typedef struct iv2_dparam {
    char name[96];
    int ndim;
    int64_t shape[6];  /* as iv2_vit_param: up to 5-D (the tubelet patch embedding) */
    size_t off, n;     /* elements into the parameter buffer */
    int no_wd;         /* excluded from weight decay */
} iv2_dparam;

/* ------------------------------------------------------------------ heads */

typedef struct iv2_heads_dims {
    int C;          /* student width */
    int pool_dim;   /* student pooled output width (768) */
    int n_clip, clip_dim;   /* 6 heads Linear(C->clip_dim)->LN->L2 */
    int n_mae, mae_dim;     /* 4 heads Linear(C->C)->GELU->Linear(C->mae_dim)->LN->L2 */
    int use_final, final_dim;   /* Linear(pool_dim->final_dim)->LN->L2 */
    int T, G;       /* patch grid T x G x G (8 x 16 x 16): clip_pos_embed [1+T*G*G, C], mae_pos_embed [T*G*G, C] */
    int max_rows;   /* B * n_visible, sizes the scratch */
} iv2_heads_dims;

typedef struct iv2_heads {
    iv2_heads_dims d;
    iv2_backend *be;
    void *params, *grads;      /* one buffer each, backend dtype */
    size_t n_params;
    iv2_dparam *table;
    int n_table;
    /* offsets (elements) of each tensor, filled by the layout */
    size_t clip_w[IV2_DISTILL_MAX_LAYERS], clip_b[IV2_DISTILL_MAX_LAYERS];
    size_t clip_lnw[IV2_DISTILL_MAX_LAYERS], clip_lnb[IV2_DISTILL_MAX_LAYERS];
    size_t mae_w1[IV2_DISTILL_MAX_LAYERS], mae_b1[IV2_DISTILL_MAX_LAYERS];
    size_t mae_w2[IV2_DISTILL_MAX_LAYERS], mae_b2[IV2_DISTILL_MAX_LAYERS];
    size_t mae_lnw[IV2_DISTILL_MAX_LAYERS], mae_lnb[IV2_DISTILL_MAX_LAYERS];
    size_t fin_w, fin_b, fin_lnw, fin_lnb, clip_pos, mae_pos;
    /* scratch for one head at a time (heads are independent, so forward + backward run per head) */
    void *x, *h1, *g1, *y, *yn, *tgt, *dx, *dh1, *dg1, *dy, *dyn;
    float *ln_mean, *ln_rstd;
    float *loss_rows;              /* backend f32 [n_clip + n_mae + use_final][max_rows] */
    int32_t *idx_pos, *idx_rows;   /* backend int32 [max_rows] */
    /* deferred readback (iv2_heads_defer .. iv2_heads_collect): each head's loss rows at their
     * own offset of loss_rows, and where its means go */
    int deferring, n_pending, pending_rows;
    struct { int off, M; double *mean_loss, *mean_cos; } pending[2 * IV2_DISTILL_MAX_LAYERS + 1];
} iv2_heads;

iv2_heads *iv2_heads_create(iv2_backend *be, const iv2_heads_dims *d);
size_t iv2_heads_count_params(const iv2_heads_dims *d);   /* what iv2_heads_create would allocate, per buffer */
void iv2_heads_free(iv2_heads *h);
/* trunc_normal(0.02) Linear weights, zero biases, LN 1/0, 3-D sin-cos pos embeds (CLS row 0). */
void iv2_heads_init(iv2_heads *h, uint64_t seed);
/* grid of the pos embeds: T frames of G x G patches (n_tokens = T*G*G) */

/* One head, forward then (when dinp != NULL) backward, accumulating parameter grads and dinp.
 * CLIP head k: inp [B, nv, C] the student block output on the visible tokens (token 0 = CLS),
 *   vis [B][nv] host int32 token indices (0 = CLS, 1+p patches), target host f32 [B*nv, clip_dim].
 * MAE head k: same inp, the CLS row skipped; target host f32 [B*(nv-1), mae_dim].
 * Final head: inp [B, pool_dim], target host f32 [B, final_dim].
 * scale multiplies sum of (2 - 2cos) into the returned loss and the gradient (alpha / count).
 * Returns the unscaled mean of (2 - 2cos) over the rows into *mean_loss, and the mean cosine
 * into *mean_cos (both may be NULL). */
int iv2_heads_clip(iv2_heads *h, int k, const void *inp, void *dinp, const int32_t *vis, int B, int nv,
                   const float *target, float scale, double *mean_loss, double *mean_cos);
int iv2_heads_mae(iv2_heads *h, int k, const void *inp, void *dinp, const int32_t *vis, int B, int nv,
                  const float *target, float scale, double *mean_loss, double *mean_cos);
int iv2_heads_final(iv2_heads *h, const void *inp, void *dinp, int B, const float *target, float scale,
                    double *mean_loss, double *mean_cos);
/* The same with the inputs in backend memory already (a staged batch: no upload, no check; the
 * only host wait is the loss rows' readback, none while deferring). M rows; targets in be->dtype, [M][dim].
 * clip: vis int32 [M] the visible token of each row (the pos-embed rows), M = B * nv.
 * mae: pos int32 [M] = vis[b][1 + j] - 1 (the pos-embed rows), rows int32 [M] = b * nv + 1 + j
 * (the rows of inp), M = B * (nv - 1). final: M = B. */
int iv2_heads_clip_dev(iv2_heads *h, int k, const void *inp, void *dinp, const int32_t *vis, int M,
                       const void *target, float scale, double *mean_loss, double *mean_cos);
int iv2_heads_mae_dev(iv2_heads *h, int k, const void *inp, void *dinp, const int32_t *pos, const int32_t *rows,
                      int M, const void *target, float scale, double *mean_loss, double *mean_cos);
int iv2_heads_final_dev(iv2_heads *h, const void *inp, void *dinp, int B, const void *target, float scale,
                        double *mean_loss, double *mean_cos);

/* A step's heads without a host wait each: after iv2_heads_defer, each head call queues its loss
 * rows (its mean_loss and mean_cos are filled in later); iv2_heads_collect reads them all back in
 * one wait and fills the means. At most one call per head between the two. */
void iv2_heads_defer(iv2_heads *h);
int iv2_heads_collect(iv2_heads *h);

/* Load the heads' tensors (official names) from an open safetensors file, marking them used. */
int iv2_heads_load_st(iv2_heads *h, iv2_st_file *f);

/* ------------------------------------------------------------------ loss */

typedef struct iv2_loss {
    double clip, final, mae, total;   /* per-term means of 2 - 2cos; total = sum alpha * term */
} iv2_loss;
/* the scale each row of a term carries: alpha / (layers * rows) */
float iv2_loss_scale(float alpha, int layers, int64_t rows);
void iv2_loss_total(iv2_loss *l, const iv2_distill_config *c);
int iv2_loss_check(const iv2_loss *l, int64_t step);   /* NaN / Inf -> -1 with a message */

/* ------------------------------------------------------------------ optimiser */

typedef struct iv2_optim_group {   /* one parameter buffer with its table */
    void *params, *grads;
    float *m, *v;                  /* f32 backend buffers */
    float *master;                 /* f32 master weights when params are not f32 (CUDA bf16); NULL on the CPU */
    size_t n;
    const iv2_dparam *table;
    int n_table;
    void *chunks;                  /* backend iv2_adamw_chunk table of the buffer (be->adamw_chunks), or NULL */
    iv2_adamw_chunk *hchunks;      /* its host copy, in offset order */
    int n_chunks;
    /* the step beside the next forward (overlap): n_pieces launches, piece k the chunks
     * [piece_chunk[k], piece_chunk[k + 1]), the elements below piece_end[k] and from the one before */
    int n_pieces;
    size_t *piece_end;             /* [n_pieces], increasing, the last n */
    int *piece_chunk;              /* [n_pieces + 1] */
    iv2_event **piece_done;        /* [n_pieces], recorded on the side stream after piece k */
    int waited;                    /* pieces [0, waited) of the pending step the compute stream waits for */
} iv2_optim_group;

typedef struct iv2_optim {
    iv2_backend *be;
    iv2_optim_group g[2];          /* student, heads */
    int n_groups;
    float *acc;                    /* f32 backend scalar for sumsq */
    int overlap;                   /* the step on the side stream, beside the next forward (iv2_optim_set_overlap) */
    int pending;                   /* an overlapped step is queued and the compute stream has not joined it */
    iv2_event *grads_done;         /* compute stream, before the step: where the side stream starts */
    iv2_event *all_done;           /* side stream, after the step's last launch */
} iv2_optim;

int iv2_optim_init(iv2_optim *o, iv2_backend *be);
void iv2_optim_add(iv2_optim *o, void *params, void *grads, size_t n, const iv2_dparam *table, int n_table);
void iv2_optim_free(iv2_optim *o);   /* waits for a pending step */
/* after loading weights into the parameter buffers: refresh the fp32 master copies (no-op on the CPU) */
void iv2_optim_sync_master(iv2_optim *o);
/* global L2 norm of all grads (before clipping) */
double iv2_optim_grad_norm(iv2_optim *o);
/* torch clip_grad_norm_: coef = min(1, max_norm / (norm + 1e-6)) */
float iv2_clip_coef(double norm, float max_norm);
/* one AdamW step t (1-based) on every group: grads scaled by grad_scale; wd 0 on no_wd tensors. */
void iv2_optim_step(iv2_optim *o, float lr, const iv2_distill_config *c, int64_t t, float grad_scale);

/* The step beside the next forward. AdamW reads and writes 28 bytes a parameter (some 12 ms of
 * the 1B student's 208 ms step on an H100), memory-bound work that can share the GPU with the next
 * step's GEMMs. With overlap on (before iv2_optim_add; needs be->adamw_chunks) iv2_optim_step
 * queues each group's step on the side stream in pieces (iv2_optim_set_pieces; one piece each by
 * default) of small chunks (IV2_ADAMW_CHUNK_SIDE) and returns; the forward then waits for each
 * piece just before it reads that piece's parameters (iv2_optim_wait_params), and everything else
 * that touches parameters, gradients or moments waits for all of it (iv2_optim_join: before
 * the grads are zeroed, a checkpoint, an eval). The same arithmetic in the same order per element:
 * only the schedule changes. Off by default until measured faster (IV2_OPTIM_OVERLAP=1 turns it
 * on in the trainer; docs/cuda.md). */
#define IV2_ADAMW_CHUNK_SIDE 8192   /* elements a block: ~230 KB of traffic, microseconds on an SM */
int iv2_optim_set_overlap(iv2_optim *o, int on);
/* cut group g's step at the element offsets ends[0..n-1] (increasing, the last the group's n; no
 * tensor may straddle a cut); -1 with iv2_err when they do not fit the chunks */
int iv2_optim_set_pieces(iv2_optim *o, int g, const size_t *ends, int n);
/* the compute stream's work queued next reads group g's parameters [0, upto): wait for the pieces
 * of the pending step that hold them (nothing when no step is pending) */
void iv2_optim_wait_params(iv2_optim *o, int g, size_t upto);
/* the compute stream's work queued next may touch any parameter, gradient or moment: wait for all
 * of the pending step */
void iv2_optim_join(iv2_optim *o);
/* the exclusion rule: 1-D params, names ending in "bias", pos embeds, cls token */
int iv2_no_weight_decay(const char *name, int ndim);

/* ------------------------------------------------------------------ loader */

/* One batch on the host: what a training (or eval) step needs, nothing more. */
typedef struct iv2_batch {
    int64_t step;                 /* -1 when empty */
    int B, nv;                    /* samples, visible tokens (with CLS) */
    int64_t *views;               /* [B] view indices into the cache set */
    uint8_t *frames;              /* [B][frames][size][size][3] */
    int32_t *vis;                 /* [B][nv] sorted, 0 = CLS */
    float *clip[IV2_DISTILL_MAX_LAYERS];   /* [B*nv][clip_dim] target rows at vis */
    float *mae[IV2_DISTILL_MAX_LAYERS];    /* [B*(nv-1)][mae_dim] target rows at vis[1:]-1 */
    float *final;                 /* [B][final_dim] */
    /* A batch for a backend (iv2_batch_alloc_for; the loader's when it has one): frames, vis and
     * everything below are be->alloc_host memory (pinned on CUDA), in the form the backend reads,
     * so the trainer moves them with raw copies on the copy stream. */
    iv2_backend *be;              /* NULL: a plain batch (malloc, f32 targets only) */
    int32_t *rows;                /* [B][nv] s * (1 + T*P) + vis: the student's rows of the token grid */
    int32_t *mae_pos;             /* [B][nv-1] vis[1:] - 1: the MAE targets' rows */
    void *tclip[IV2_DISTILL_MAX_LAYERS], *tmae[IV2_DISTILL_MAX_LAYERS], *tfinal;   /* targets in be->dtype:
                                     the same buffers as clip/mae/final when that is F32; otherwise
                                     those are NULL and the rows are copied in on the loader's
                                     threads: the stored bytes when the cache stores be->dtype,
                                     else converted row by row (iv2_cache_read_rows_as) */
} iv2_batch;

/* The index rows of a batch's vis (see iv2_batch): rows [B*nv], mae_pos [B*(nv-1)]; ntok = 1 + T*P. */
void iv2_batch_index_rows(const int32_t *vis, int B, int nv, int ntok, int32_t *rows, int32_t *mae_pos);

struct iv2_loader_thread;

typedef struct iv2_loader {
    struct iv2_cache_set *set;     /* the shards (owned) */
    iv2_distill_config cfg;
    int frames, size, T, P;        /* student frames and size; patch grid T x P */
    int t_clip[IV2_DISTILL_MAX_LAYERS], t_mae[IV2_DISTILL_MAX_LAYERS], t_pool, t_attn;   /* target indices */
    int clip_dim, mae_dim, final_dim;
    int nv;                        /* visible tokens per sample for the mask type */
    int64_t n_train, n_eval;       /* views: [0, n_train) train, [n_train, n_train + n_eval) held out */
    int64_t n_videos;              /* training videos (cache rows with views in [0, n_train)): one epoch */
    int64_t *video_first;          /* [n_videos] a video's first view; its views are adjacent */
    int *video_views;              /* [n_videos] its number of training views */
    int64_t *perm;                 /* the views of the current epoch's batches: one per video, in its order */
    int64_t perm_epoch, steps_per_epoch;
    struct iv2_loader_thread *th;  /* prefetch thread (NULL when off) */
    int64_t prefetch_end;          /* steps from here on are not built ahead (the run's end; 0: no end) */
    iv2_backend *be;               /* set before the first iv2_loader_next: its batches are for this
                                      backend (iv2_batch_alloc_for); NULL: plain batches */
    int threads;                   /* threads building a batch's samples (cfg.loader_threads resolved;
                                      any count gives the same bytes) */
    int via_f32;                   /* tests, bench: backend targets through f32 rows and a conversion
                                      even where the cache stores be->dtype (the path before the raw
                                      copy; the same bytes) */
} iv2_loader;

/* Open the shards (comma-separated folders) and check them against the config and the student
 * geometry: every named target exists, the token grids match (clip 1+T*P, mae T*P, attn T x P),
 * frames and size match. eval_views are held out (the last views in key order, rounded up to
 * whole videos so no video has views on both sides). */
int iv2_loader_open(iv2_loader *L, const char *dirs, const iv2_distill_config *c, int frames, int size, int T, int P);
void iv2_loader_close(iv2_loader *L);
int iv2_batch_alloc(iv2_batch *b, const iv2_loader *L, int B, int nv);
/* A batch for backend be (pinned host memory, targets in be->dtype); be NULL = iv2_batch_alloc. */
int iv2_batch_alloc_for(iv2_batch *b, const iv2_loader *L, int B, int nv, iv2_backend *be);
void iv2_batch_free(iv2_batch *b);
/* Build the batch of a step synchronously (epoch permutation, masks from (seed, step, sample)). */
int iv2_loader_build(iv2_loader *L, int64_t step, iv2_batch *b);
/* The batch of a step, built by the prefetch thread (which then starts on step + 1, unless that is
 * L->prefetch_end). The batch stays valid until the next call. Without prefetch it is built here. */
int iv2_loader_next(iv2_loader *L, int64_t step, iv2_batch **out);
/* Stop the prefetch thread (after the batch it is building) and free its batches; the next
 * iv2_loader_next starts it again. After it no thread holds the loader's address. */
void iv2_loader_stop_prefetch(iv2_loader *L);
/* Eval batch: held-out views [first, first + B) with every token visible (B may be smaller at the end). */
int iv2_loader_build_eval(iv2_loader *L, int64_t first, iv2_batch *b);

/* ------------------------------------------------------------------ checkpoints */

/* RUN/ckpt_<step:08>.safetensors: the student (official names), the heads (official names),
 * the AdamW moments (optim.m.<name>, optim.v.<name>), all F32, with metadata iv2.step (steps
 * done), iv2.distill (run config JSON), iv2.data (the training set's identity, data_json: view
 * and video counts and a hash of the view keys; may be NULL), iv2.config (student config) and
 * iv2.digest (a checksum
 * over every tensor, so a damaged file is an error, not a silent restart; iv2_trainer_open's
 * resume then goes back to the checkpoint before it). Written to a temp
 * file, fsynced, renamed, the folder fsynced; then all but the newest `keep` are removed. */
int iv2_ckpt_save(const char *dir, int64_t step, iv2_vit *student, iv2_heads *heads, iv2_optim *opt,
                  const char *cfg_json, const char *data_json, int keep);
/* Newest checkpoint in dir: 0 and its path and step, 1 when there is none, -1 on error. */
int iv2_ckpt_latest(const char *dir, char *path, size_t cap, int64_t *step);
/* The newest one before `step`: 0 and its path and step, 1 when there is none, -1 on error. */
int iv2_ckpt_before(const char *dir, int64_t step, char *path, size_t cap, int64_t *prev);
/* Load into student / heads / opt (heads and opt may be NULL); the digest and every tensor's
 * name and shape are checked. *step and *cfg_json (malloc'd, may be NULL) from the metadata. */
int iv2_ckpt_load(const char *path, iv2_vit *student, iv2_heads *heads, iv2_optim *opt, int64_t *step,
                  char **cfg_json);
/* A metadata string of a checkpoint (malloc'd), NULL when absent or unreadable. */
char *iv2_ckpt_meta(const char *path, const char *key);

/* ------------------------------------------------------------------ trainer */

/* One device slot: a batch's inputs in backend memory. The trainer has two, so that batch s+1's
 * copies (copy stream) fill one while step s computes (compute stream) from the other. */
typedef struct iv2_dev_batch {
    int64_t step;                  /* the batch it holds (-1 none), of S views */
    int S;
    int B, nv;                     /* batches it takes: at most B views (the local batch), nv tokens */
    uint8_t *frames;               /* [B][frames][img][img][3] */
    int32_t *vis, *rows, *mae_pos; /* as in iv2_batch */
    void *clip[IV2_DISTILL_MAX_LAYERS], *mae[IV2_DISTILL_MAX_LAYERS], *final;   /* targets, be->dtype */
    int32_t *hvis;                 /* host copy of vis (the student's checks read it) */
    iv2_event *copy_start, *copied;   /* copy stream: around the slot's copies (copy_s; the fence) */
    iv2_event *released;           /* compute stream: after the last op reading the slot */
} iv2_dev_batch;

typedef struct iv2_trainer {
    iv2_distill_config cfg;
    iv2_plan plan;
    iv2_backend *be;
    iv2_vit *student;
    iv2_heads *heads;
    iv2_optim opt;
    iv2_loader L;
    iv2_dparam *stab;              /* the student's table as iv2_dparam (for the optimiser) */
    int n_out, blocks[IV2_DISTILL_MAX_LAYERS * 2];   /* student blocks read out, ascending */
    int clip_out[IV2_DISTILL_MAX_LAYERS], mae_out[IV2_DISTILL_MAX_LAYERS];   /* head -> read-out slot */
    void *out[IV2_DISTILL_MAX_LAYERS * 2], *dout[IV2_DISTILL_MAX_LAYERS * 2], *pooled, *dpooled;
    uint8_t *frames;               /* backend copy of an eval batch's frames */
    iv2_dev_batch slot[2];         /* training batches on the device (step s in slot[s % 2]) */
    int32_t *mae_rows;             /* backend int32 [B*(nv-1)]: b * nv + 1 + j, the MAE heads' rows */
    int no_stage_ahead;            /* tests: copy each batch at its own step's start, into slot 0 */
    int stopped_by;                /* the signal iv2_trainer_run stopped on (0: it ran to its end) */
    float *drop;                   /* host [2][depth][B] drop-path scales: attention, MLP branch */
    const float *drop_override, *drop_mlp_override;   /* tests: fixed [depth][B] scales of each branch */
    int64_t step;                  /* steps done */
    size_t mem_free, mem_total;    /* backend memory before the model was allocated (be->mem_info) */
    char out_dir[2048];
    char *cfg_json;
    char *data_json;               /* the training set's identity (checkpoints' iv2.data) */
    char *damaged;                 /* a damaged newest checkpoint the resume went back past: set aside
                                      (renamed *.damaged) by the next checkpoint write, else it would
                                      outrank the new ones in keep_ckpt's pruning; NULL: none */
    /* last step's figures */
    iv2_loss loss;
    double grad_norm, step_s, copy_s;   /* copy_s: the batch's copies on the copy stream */
    float lr;
} iv2_trainer;

/* Build everything: backend, student (random init from seed), heads, optimiser, loader, output
 * folder. With resume, the newest checkpoint in out_dir is loaded (a damaged one is passed over
 * for the one before it; its config must match, and its training set: the same views of the
 * cache; resume = 2 continues on a changed set). */
int iv2_trainer_open(iv2_trainer *t, const char *cache_dirs, const iv2_distill_config *c, const char *out_dir, int resume);
/* The model half of iv2_trainer_open, without a cache (tests, bench): backend, student, heads
 * for targets of the given dims, optimiser and buffers for batches of c->batch x nv tokens. */
int iv2_trainer_init(iv2_trainer *t, const iv2_distill_config *c, int clip_dim, int mae_dim, int final_dim, int nv);
void iv2_trainer_close(iv2_trainer *t);
/* Forward and loss (t->loss), and with backward the gradients of the whole model (zeroed first).
 * The batch (any: built by hand or by a loader) goes to slot 0 by synchronous uploads. */
int iv2_trainer_forward_backward(iv2_trainer *t, const iv2_batch *b, int backward);
/* One step on a batch: forward, loss, backward, clip, AdamW. Fills t->loss, grad_norm, lr. */
int iv2_trainer_step(iv2_trainer *t, const iv2_batch *b);
/* The drop-path scales of a step's B samples (this rank's): [2][depth][B], attention branch then
 * MLP branch, each 0 or 1 / keep with keep = 1 - drop_path * block / (depth - 1) (timm's linspace);
 * drawn from (seed, step, block, branch); NULL without drop path. Fills and returns t->drop. */
const float *iv2_trainer_drop_scales(iv2_trainer *t, int64_t step, int B);
/* One more step on the batch already in slot 0 (put there by iv2_trainer_step or
 * iv2_trainer_forward_backward), numbered `step`: the step's compute alone, for benchmarks. */
int iv2_trainer_step_loaded(iv2_trainer *t, int64_t step);
/* The largest batch (per rank) whose memory plan fits in avail bytes: the config's student at its
 * depth, heads for targets of the given dims and nv visible tokens, `recompute` blocks recomputed,
 * esize-byte activations (what iv2-distill's memory plan prints; bench_vit sizes its batch with it). */
int iv2_distill_largest_batch(const iv2_distill_config *c, int clip_dim, int mae_dim, int final_dim, int nv,
                              int recompute, size_t esize, size_t avail);
/* recompute "auto" on a GPU: the fewest recomputed blocks (the first ones) with which the config's
 * batch per rank fits in avail bytes (the memory free at start) less a tenth and 1 GiB, for what
 * the plan does not count (cuBLASLt workspace, allocator slack, the eval arena); every block when
 * avail is 0 (not reported) or that small. Recomputing every block costs about 15 % of an H100
 * step (iv2-1b: 128 views/s recomputing none at 32 views, 109 all at 128). -1 on a bad config. */
int iv2_distill_auto_recompute(const iv2_distill_config *c, int clip_dim, int mae_dim, int final_dim, int nv,
                               size_t esize, size_t avail);
/* With no block recomputed, whether the config's batch per rank also fits in avail bytes (less
 * the same headroom) with every block keeping its normed inputs and GELU output
 * (iv2_vit.keep_normed: 2 C + mlp more per token and block, a LayerNorm pair and a GELU less per
 * block's backward); iv2_trainer_init keeps them when it does. 1, 0, or -1 on a bad config. */
int iv2_distill_keep_normed_fits(const iv2_distill_config *c, int clip_dim, int mae_dim, int final_dim, int nv,
                                 size_t esize, size_t avail);
/* Train to the plan's end (or max_steps more steps when > 0), logging and checkpointing. The
 * loader's batches go through the two slots: batch s+1 is copied on the copy stream while step s
 * runs its student backward (train.c). It returns with no thread of its own running (the
 * loader's prefetch thread is stopped), so the trainer struct may be moved between calls. */
int iv2_trainer_run(iv2_trainer *t, int64_t max_steps);
/* Ask iv2_trainer_run to stop after its current step, write a checkpoint and return with
 * t->stopped_by = sig (async-signal-safe: iv2-distill calls it from its SIGTERM, SIGINT and
 * SIGUSR1 handler; under MPI every rank stops at the same step). */
void iv2_trainer_request_stop(int sig);
/* Held-out eval: mean cosine per target over the eval views, every token visible; one JSON
 * object into out_json (malloc'd, may be NULL). */
int iv2_trainer_eval(iv2_trainer *t, char **out_json);

/* ------------------------------------------------------------------ plot */

/* Minimal PNG writer: 8-bit RGB, stored (uncompressed) deflate blocks, crc32, adler32. */
int iv2_png_write(const char *path, const uint8_t *rgb, int w, int h);
uint32_t iv2_adler32(const uint8_t *p, size_t n);
/* Loss curves from a metrics JSON-lines file ("step" events) to a w x h PNG: one polyline per
 * term (total, clip, final, mae; a term 0 throughout is left out), y ticks, step ticks, a title
 * and a legend in a built-in 5x7 font. log_y: log10 y axis (values <= 0 are not drawn). */
int iv2_plot_metrics(const char *metrics_path, const char *png_path, int w, int h, int log_y);

#endif
