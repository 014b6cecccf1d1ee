/* vit_impl.h: private to common/vit*.c (layer offsets, activation arena); not a public surface. */
#ifndef IV2_VIT_IMPL_H
#define IV2_VIT_IMPL_H
#include "vit.h"

#define NOOFF ((size_t)-1)   /* tensor absent in this config */

/* element offsets of one block's tensors into the parameter (and gradient) buffer */
typedef struct vit_block_off {
    size_t norm1_w, norm1_b, qkv_w, qkv_b /* [3C]: q_bias | zeros | v_bias (VideoMAE) */;
    size_t q_norm, k_norm, proj_w, proj_b, ls1;
    size_t norm2_w, norm2_b, fc1_w, fc1_b, fc2_w, fc2_b, ls2;
} vit_block_off;

typedef struct vit_off {
    size_t cls, pos, pe_w, pe_b;
    vit_block_off *blk;
    size_t norm_w, norm_b;                         /* final norm */
    size_t pq_lw, pq_lb, pk_lw, pk_lb, pv_lw, pv_lb; /* pool LayerNorms */
    size_t pq_w, pk_w, pv_w, pq_b, pk_b, pv_b, pp_w, pp_b;
} vit_off;

/* activations of one block; in inference all blocks share one set and x_mid/x_out alias x_in */
typedef struct vit_act_block {
    void *x_in, *h1, *q, *k, *v, *qkv, *qn, *kn, *a, *o, *x_mid, *h2, *f1, *g, *f2, *x_out;
    float *m1, *r1, *rq, *rk, *lse, *m2, *r2;
} vit_act_block;

typedef struct vit_arena {
    int S, n_tok, train;          /* what it is sized for */
    int recompute;                /* training: blocks 0..recompute-1 share one activation set */
    int keep;                     /* training, recompute 0: each block has its own h1, h2, g */
    size_t bytes;
    void **bufs; int n_bufs, cap_bufs;  /* everything allocated, freed together */
    void *patches;                /* the visible tokens' patchified pixels [S*n_tok, K] (CLS rows 0) */
    void *posx;                   /* the position table [T, C], its CLS row + cls - patch bias */
    int32_t *gidx; int n_gidx;    /* the visible tokens, s * T + token (backend int32 [S*n_tok]) */
    vit_act_block *blk;           /* depth entries (train) or 1 (inference) */
    void *xfin;                   /* the last block's output (alias) */
    /* pool */
    void *xm, *pqn, *pkn, *pvn, *pq, *pk, *pv, *po;
    float *pm_q, *pr_q, *pm_k, *pr_k, *pm_v, *pr_v, *plse, *pprobs;
    void *bwd;                    /* backward scratch (struct vit_bwd in vit.c), training only */
} vit_arena;

struct iv2_vit_state {
    vit_off off;
    void *sincos;                 /* fixed position table (VideoMAE), backend [P, C] */
    vit_arena inf, tr;            /* inference and training arenas */
    int last_S, last_nvis;        /* shape of the last training forward */
};

/* vit_weights.c */
int vit_build_table(iv2_vit *m);
/* vit.c */
void vit_arena_free(iv2_backend *be, vit_arena *a);

#endif
