/* vit.h: the three ViTs of iv2 (InternViT-6B teacher, VideoMAEv2-g teacher, InternVideo2
 * student), written once against the compute interface (compute.h).
 *
 * One config struct describes all three (presets compiled in, JSON overrides on top). A model
 * owns ONE parameter buffer (backend memory, be->dtype) described by a parameter table, and,
 * when asked, ONE gradient buffer laid out exactly like it (so the optimiser runs over flat
 * buffers and per-tensor decisions such as weight decay come from the table).
 *
 * Token layout. Patches are numbered p = t*G*G + y*G + x (G = img/patch, t over tubelets), the
 * (t, y, x) raster order shared by the three models. With a CLS token (InternViT, student) token
 * 0 is CLS and patch p is token 1+p; without (VideoMAE) patch p is token p.
 *
 * Samples. One "sample" is what the model sees at once: one frame for InternViT (cfg.frames 1,
 * 257 tokens), one 16-frame clip for VideoMAE (2048 tokens), one 8-frame clip for the student
 * (2049 tokens). Frames are uint8 RGB [S * cfg.frames, img, img, 3] in backend memory and are
 * normalised with the ImageNet mean/std inside (be->patchify).
 *
 * Parameter names are the official checkpoint names (see teachers.md §2, §3.4 and
 * internvideo2_stage1.md §2.2):
 *   InternViT: cls_token [1,1,C], pos_embed [1,1+G*G,C], patch_embed.proj.{weight,bias},
 *     blocks.{i}.{norm1.weight, attn.qkv.weight, attn.q_norm.weight, attn.k_norm.weight,
 *     attn.proj.{weight,bias}, ls1.gamma, norm2.weight, mlp.fc1.{weight,bias},
 *     mlp.fc2.{weight,bias}, ls2.gamma}, clip_projector.{norm1_q,norm1_k,norm1_v}.{weight,bias},
 *     clip_projector.cross_attn.{q,k,v}.weight, clip_projector.cross_attn.{q,k,v}_bias,
 *     clip_projector.cross_attn.proj.{weight,bias}.
 *   VideoMAE: encoder.patch_embed.proj.{weight,bias}, encoder.blocks.{i}.{norm1,norm2}.{weight,bias},
 *     encoder.blocks.{i}.attn.{qkv.weight, q_bias, v_bias, proj.weight, proj.bias},
 *     encoder.blocks.{i}.mlp.fc{1,2}.{weight,bias}, encoder.norm.{weight,bias}.
 *   Student: as InternViT (same names, pos_embed [1,1+T*G*G,C]).
 * The loader also accepts the HF InternVL remote-code names (embeddings.*, encoder.layers.{i}.*,
 * ls1/ls2 without .gamma), the transformers-native InternVLVision and VideoMAE names (q/k/v
 * split; concatenated on load), the prefixes module./model./vision_model./encoder. where
 * ambiguous-free, Conv weights [C,3,(kt,)p,p] for the GEMM weight [C, 3*kt*p*p], and a 2-D
 * kernel as kt = 1. A learned pos_embed of another grid is bicubic-resized (PyTorch semantics).
 * Keys that belong to other parts of an official checkpoint are ignored (InternVL-C text tower,
 * VideoMAE decoder, student heads: see iv2_vit_load_st to consume those yourself).
 *
 * Errors follow err.h: -1/NULL after iv2_err naming the file, tensor and reason. */
#ifndef IV2_VIT_H
#define IV2_VIT_H
#include <stddef.h>
#include <stdint.h>
#include "compute.h"
#include "safetensors.h"

enum { IV2_VIT_INTERNVIT = 0, IV2_VIT_VIDEOMAE = 1, IV2_VIT_STUDENT = 2 };
enum { IV2_NORM_RMS = 0, IV2_NORM_LN = 1 };
enum { IV2_POS_LEARNED = 0, IV2_POS_SINCOS1D = 1 };   /* SINCOS1D: fixed table, not a parameter */

#define IV2_VIT_MAX_OUT 64   /* most block outputs one forward can return */

typedef struct iv2_vit_config {
    char name[32];        /* preset name it came from ("internvit-6b", ...) */
    int arch;             /* IV2_VIT_INTERNVIT | IV2_VIT_VIDEOMAE | IV2_VIT_STUDENT */
    int img, patch;       /* 224, 14 */
    int frames;           /* frames per sample: 1 (InternViT), 16 (VideoMAE), 8 (student) */
    int tubelet;          /* 1, or 2 (VideoMAE) */
    int width, depth, heads, mlp;
    int norm;             /* IV2_NORM_RMS | IV2_NORM_LN (blocks; final norm is the same kind) */
    float eps;            /* block norm eps (1e-6) */
    int qk_norm;          /* RMSNorm of q and k over the full width (eps 1e-6) */
    int qkv_bias;         /* VideoMAE: q_bias and v_bias (k bias zero) */
    int layerscale;       /* ls1/ls2 gammas */
    float ls_init;        /* init value of the gammas (0.1 InternViT, 1e-5 student) */
    int cls;              /* CLS token */
    int pos;              /* IV2_POS_LEARNED | IV2_POS_SINCOS1D */
    int final_norm;       /* a final norm (VideoMAE encoder.norm) exists */
    int gelu;             /* IV2_GELU_ERF | IV2_GELU_TANH (compute.h) */
    int pool_heads;       /* attention pool heads (0 = no pool head) */
    int pool_dim;         /* pool output width (768) */
    float pool_eps;       /* pool LayerNorm eps (1e-5) */
    float drop_path;      /* student: max drop-path rate (linear over depth) of the preset; iv2-distill
                             uses it unless its run config sets drop_path */
} iv2_vit_config;

/* Fill cfg from a preset: internvit-6b, internvit-tiny, videomae-g, videomae-tiny, iv2-1b,
 * iv2-6b, iv2-s, iv2-b, iv2-l, iv2-tiny. -1 with the list of names on an unknown one. */
int iv2_vit_preset(const char *name, iv2_vit_config *cfg);
/* Apply a JSON object of overrides ({"depth": 2, "gelu": "tanh", "norm": "ln", ...}; keys are
 * the field names above; arch/norm/pos/gelu also as strings). Unknown keys are errors. */
int iv2_vit_config_json(iv2_vit_config *cfg, const char *json);
/* Check a config for consistency (divisibility, ranges); -1 naming the field. */
int iv2_vit_config_check(const iv2_vit_config *cfg);
/* The config as a JSON object (all fields); returns bytes written (snprintf semantics). */
int iv2_vit_config_to_json(const iv2_vit_config *cfg, char *buf, size_t cap);
/* Config of a weights file: its "iv2.config" metadata (written by iv2_vit_save) when present,
 * else the preset `fallback` (may be NULL: then an error). */
int iv2_vit_config_from_file(const char *path, const char *fallback, iv2_vit_config *cfg);

/* Derived sizes. */
int iv2_vit_grid(const iv2_vit_config *cfg);       /* G = img / patch */
int iv2_vit_patches(const iv2_vit_config *cfg);    /* (frames/tubelet) * G * G */
int iv2_vit_tokens(const iv2_vit_config *cfg);     /* patches + cls */

typedef struct iv2_vit_param {
    char name[96];        /* official name (see above) */
    int ndim;
    int64_t shape[6];
    size_t offset;        /* elements into iv2_vit.params (and .grads) */
    size_t numel;
    int no_wd;            /* excluded from weight decay: 1-D tensors, biases, pos/cls */
} iv2_vit_param;

/* Memory plan (bytes) for a forward: weights, parameter grads, activations. */
typedef struct iv2_vit_plan {
    size_t weights;       /* the parameter buffer */
    size_t grads;         /* gradient buffer (training only) */
    size_t activations;   /* arena for `batch` samples of `tokens` tokens */
    size_t outputs;       /* caller-side output buffers for the requested blocks */
    size_t adamw;         /* training: AdamW m, v (f32) and, when esize < 4, the f32 master copy */
    int batch, tokens;
    int recompute;        /* training: blocks recomputed in the backward (iv2_vit.recompute) */
} iv2_vit_plan;
/* train = 1: activations saved for backward (student, no recompute); 0: inference, one block's scratch. */
iv2_vit_plan iv2_vit_memory_plan(const iv2_vit_config *cfg, size_t esize, int batch, int tokens, int n_out, int train);
/* Training plan with `recompute` blocks recomputed (iv2_vit.recompute) and, with recompute 0,
 * keep_normed (iv2_vit.keep_normed): activations are exactly the bytes iv2_vit_forward_train's
 * arena allocates (saved activations + backward scratch). */
iv2_vit_plan iv2_vit_train_plan(const iv2_vit_config *cfg, size_t esize, int batch, int tokens, int recompute,
                                int keep_normed);
/* one line "weights 23.6 GB, activations 290 MB (8 frames x 257 tokens), outputs ..." into buf */
void iv2_vit_plan_str(const iv2_vit_plan *p, char *buf, size_t cap);

struct iv2_vit_state;     /* private: layer pointers, activation arena, scratch */

typedef struct iv2_vit {
    iv2_backend *be;
    iv2_vit_config cfg;
    iv2_vit_param *param; /* the table, in file order */
    int n_param;
    size_t n_elems;       /* total elements of the parameter buffer */
    void *params;         /* ONE buffer, be->dtype, n_elems */
    void *grads;          /* NULL until iv2_vit_alloc_grads; same layout as params */
    int batch;            /* inference: samples per internal batch (frame batch of InternViT) */
    int recompute;        /* training: blocks 0..recompute-1 keep only their input in the forward
                             and are recomputed just before their backward (the official
                             checkpoint_num); 0 = none, >= depth = all. Same ops in the same order, so
                             the same gradients (bit for bit on the CPU) */
    int keep_normed;      /* training with recompute 0: every block keeps its own normed inputs (h1,
                             h2) and GELU output (g) for its backward, instead of one shared set the
                             backward recomputes: 2 C + mlp more per token and block, a LayerNorm
                             pair and a GELU less per block's backward. The same values (on CUDA
                             g is then the fused GEMM epilogue's, within bf16 of the GELU kernel's) */
    struct iv2_vit_state *st;
    /* optional backward hook (data-parallel gradient buckets, distill/dist.c): called by
     * iv2_vit_backward when grads[from, n_elems) are final (after each block, then from = 0);
     * on CUDA they are final in stream order, not yet synchronised. */
    void (*grads_ready)(void *ctx, size_t from);
    void *grads_ready_ctx;
    /* optional forward hook (the optimiser's step beside the forward, distill/optim.c): called by
     * iv2_vit_forward_train before it queues work that reads params[0, upto) */
    void (*params_needed)(void *ctx, size_t upto);
    void *params_needed_ctx;
} iv2_vit;

iv2_vit *iv2_vit_create(iv2_backend *be, const iv2_vit_config *cfg);   /* params zeroed */
void iv2_vit_free(iv2_vit *m);
/* bytes the model's activation arenas hold now (inference + training), for logs */
size_t iv2_vit_arena_bytes(const iv2_vit *m);
/* Deterministic random init from seed (same on every backend): the official schemes
 * (trunc-normal .02 Linears, zero biases, unit norms, ls_init gammas, 3-D sin-cos student
 * pos_embed, fix_init_weight rescale for the student); teachers get the same so that tests can
 * run random teachers. */
int iv2_vit_init_random(iv2_vit *m, uint64_t seed);
/* Load a safetensors file (any naming above), converting any float dtype. Every missing,
 * mis-shaped or unexpected tensor is named in the error (one message: the count of each kind
 * and the first six names of each). */
int iv2_vit_load(iv2_vit *m, const char *path);
/* The same on an open file; marks the consumed tensors (t->used = 1). strict = 1 also marks the
 * known ignorable keys used and fails on any other tensor; strict = 0 leaves every unknown or
 * ignorable tensor unused for the caller (e.g. the trainer loading its heads from the same
 * file and then checking for leftovers). Missing and mis-shaped tensors fail either way. */
int iv2_vit_load_st(iv2_vit *m, iv2_st_file *f, int strict);
int iv2_vit_save(iv2_vit *m, const char *path);     /* official names, F32, iv2.config metadata */
/* Add the parameters (converted to dtype dt, host copies kept in *hold until freed with
 * free()) and the config metadata to a writer, for files that hold more than the model. */
int iv2_vit_save_add(iv2_vit *m, iv2_st_writer *w, iv2_dtype dt, void **hold);
const iv2_vit_param *iv2_vit_find(const iv2_vit *m, const char *name);
/* Pointer into params / grads for a named tensor (NULL if absent). */
void *iv2_vit_tensor(iv2_vit *m, const char *name);
void *iv2_vit_grad(iv2_vit *m, const char *name);

/* Where block l's parameters begin in the buffer (the stem's lie before block 0's, the final norm's
 * and the pooling head's after the last block's): n_elems for l >= depth. */
size_t iv2_vit_params_before(const iv2_vit *m, int l);

/* Gradient buffer (zeroed) and its reset. */
int iv2_vit_alloc_grads(iv2_vit *m);
void iv2_vit_zero_grads(iv2_vit *m);

/* One forward. Inputs and wanted outputs; output buffers belong to the caller (backend memory,
 * NULL = not wanted). n_tok below is n_vis when vis is given, else iv2_vit_tokens(cfg). */
typedef struct iv2_vit_io {
    const uint8_t *frames;   /* backend, uint8 [S * cfg.frames, img, img, 3] */
    int S;                   /* samples */
    const int32_t *vis;      /* HOST int32 [S][n_vis]: visible token indices, sorted ascending,
                                0 = CLS (the official mask always keeps it), patch p = cls + p;
                                NULL = all tokens */
    int n_vis;
    const int32_t *vis_rows; /* backend int32 [S][n_vis]: s * iv2_vit_tokens(cfg) + vis[s][i], the
                                rows of the full token grid kept, already in backend memory (a
                                training batch copied ahead; vis is still needed, for the checks).
                                iv2_vit_forward_train only; NULL = made from vis and uploaded */
    const float *drop;       /* HOST [depth][S] drop-path scales (0 or 1/keep), NULL = none;
                                training only; the attention branch, and the MLP branch too
                                unless drop_mlp is given */
    const float *drop_mlp;   /* HOST [depth][S] scales of the MLP branch (NULL = drop). The
                                official blocks (timm DropPath x2) draw the branches independently */
    int n_out;               /* requested block outputs */
    int blocks[IV2_VIT_MAX_OUT];   /* 0-based block indices, ascending */
    int final_norm_last;     /* apply the final norm to block depth-1's output (VideoMAE) */
    void *out[IV2_VIT_MAX_OUT];    /* [S][n_tok][width] each: raw residual stream after the block */
    void *pooled;            /* [S][pool_dim] attention-pool output */
    float *pool_attn;        /* f32 [S][n_tok - cls]: pool attention, head-mean, over non-CLS tokens */
} iv2_vit_io;

/* Inference forward: any S, internally in batches of m->batch samples so memory stays bounded
 * (default: 8 frames for InternViT-6B-width models, 64 for smaller InternViTs; 1 clip for
 * VideoMAE-g / student width >= 1024, else 8). Set m->batch before the first call; the arena is
 * sized then and re-sized only when the token count or a larger batch asks for it. */
int iv2_vit_forward(iv2_vit *m, iv2_vit_io *io);
/* Training forward: all S samples at once, activations saved for iv2_vit_backward (the arena
 * is re-made when S or n_tok changes). Same outputs as iv2_vit_forward; final_norm_last is not
 * supported here. Every block runs (the backward needs them all). Blocks below m->recompute keep
 * only their input; the arena is re-made when m->recompute changes. */
int iv2_vit_forward_train(iv2_vit *m, iv2_vit_io *io);
/* Backward of the last iv2_vit_forward_train: dout[k] (backend [S][n_tok][width], may be NULL)
 * is the gradient of the loss w.r.t. io->out[k], dpooled ([S][pool_dim], may be NULL) w.r.t.
 * io->pooled. ACCUMULATES into m->grads (allocated on first use). Inputs are not modified. */
int iv2_vit_backward(iv2_vit *m, const iv2_vit_io *io, void *const *dout, const void *dpooled);

/* PyTorch bicubic resize (align_corners False, A = -0.75) of a [gin*gin, C] grid of rows to
 * [gout*gout, C]; host fp32. */
void iv2_bicubic_resize_rows(float *dst, const float *src, int gin, int gout, int C);
/* Position tables (host fp32): VideoMAE 1-D sinusoid [n, d]; student 3-D sin-cos
 * [1 + t*g*g, d] with a zero CLS row (internvideo2 pos_embed.py get_3d_sincos_pos_embed). */
void iv2_sincos_1d_table(float *dst, int n, int d);
void iv2_sincos_3d_table(float *dst, int d, int g, int t, int cls);

#endif
