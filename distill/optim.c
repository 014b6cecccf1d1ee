/* optim.c: global grad-norm clipping and AdamW over the student's and the heads' parameter
 * buffers, weight decay skipped on 1-D tensors, biases, position embeddings and the CLS token
 * (optim_factory.get_parameter_groups + the model's no_weight_decay list). */
#include "distill.h"
#include "err.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

int iv2_no_weight_decay(const char *name, int ndim) {
    if (ndim <= 1 || ends_with(name, "bias")) return 1;
    return strstr(name, "pos_embed") != NULL || strstr(name, "cls_token") != NULL;
}

int iv2_optim_init(iv2_optim *o, iv2_backend *be) {
    memset(o, 0, sizeof *o);
    o->be = be;
    o->acc = be->alloc(be, sizeof(float));
    return o->acc ? 0 : iv2_err("optimiser: cannot allocate");
}

void iv2_optim_add(iv2_optim *o, void *params, void *grads, size_t n, const iv2_dparam *table, int n_table) {
    if (o->n_groups >= 2) iv2_panic("iv2_optim_add: more than 2 groups");
    iv2_optim_group *g = &o->g[o->n_groups++];
    g->params = params; g->grads = grads; g->n = n; g->table = table; g->n_table = n_table;
    g->m = o->be->alloc(o->be, n * sizeof(float));
    g->v = o->be->alloc(o->be, n * sizeof(float));
    if (!g->m || !g->v) iv2_panic("optimiser: cannot allocate %zu moments", n);
    if (o->be->adamw_chunks) {   /* one launch per step for the whole buffer: its tensors cut in pieces */
        int cap = 0;
        iv2_adamw_chunk *ch = NULL;
        for (int j = 0; j < n_table; j++)
            for (size_t at = 0; at < table[j].n; at += IV2_ADAMW_CHUNK) {
                if (g->n_chunks == cap) { cap = cap ? 2 * cap : 256; ch = iv2_realloc(ch, sizeof *ch * (size_t)cap); }
                size_t left = table[j].n - at;
                ch[g->n_chunks++] = (iv2_adamw_chunk){.off = table[j].off + at,
                                                      .n = (uint32_t)(left < IV2_ADAMW_CHUNK ? left : IV2_ADAMW_CHUNK),
                                                      .no_wd = (uint32_t)table[j].no_wd};
            }
        if (g->n_chunks) {
            g->chunks = o->be->alloc(o->be, sizeof *ch * (size_t)g->n_chunks);
            if (!g->chunks) iv2_panic("optimiser: cannot allocate %d chunks", g->n_chunks);
            o->be->upload_raw(o->be, g->chunks, ch, sizeof *ch * (size_t)g->n_chunks);
        }
        free(ch);
    }
    if (o->be->dtype != IV2_F32) {   /* fp32 master copy of low-precision params */
        iv2_backend *be = o->be;
        float *host = iv2_malloc(sizeof(float) * (n ? n : 1));
        be->download(be, host, params, n);
        g->master = be->alloc(be, n * sizeof(float));
        be->upload_raw(be, g->master, host, n * sizeof(float));
        free(host);
    }
}

void iv2_optim_sync_master(iv2_optim *o) {
    iv2_backend *be = o->be;
    for (int i = 0; i < o->n_groups; i++) {
        iv2_optim_group *g = &o->g[i];
        if (!g->master) continue;
        float *host = iv2_malloc(sizeof(float) * (g->n ? g->n : 1));
        be->download(be, host, g->params, g->n);
        be->upload_raw(be, g->master, host, g->n * sizeof(float));
        free(host);
    }
}

void iv2_optim_free(iv2_optim *o) {
    for (int i = 0; i < o->n_groups; i++) {
        o->be->free(o->be, o->g[i].m);
        o->be->free(o->be, o->g[i].v);
        if (o->g[i].master) o->be->free(o->be, o->g[i].master);
        if (o->g[i].chunks) o->be->free(o->be, o->g[i].chunks);
    }
    if (o->acc) o->be->free(o->be, o->acc);
    memset(o, 0, sizeof *o);
}

double iv2_optim_grad_norm(iv2_optim *o) {
    iv2_backend *be = o->be;
    be->memset0(be, o->acc, sizeof(float));
    for (int i = 0; i < o->n_groups; i++) be->sumsq(be, o->acc, o->g[i].grads, o->g[i].n);
    float s = 0;
    be->download_raw(be, &s, o->acc, sizeof s);
    return sqrt((double)s);
}

float iv2_clip_coef(double norm, float max_norm) {
    if (max_norm <= 0) return 1.0f;
    double c = (double)max_norm / (norm + 1e-6);
    return c < 1.0 ? (float)c : 1.0f;
}

void iv2_optim_step(iv2_optim *o, float lr, const iv2_distill_config *c, int64_t t, float grad_scale) {
    iv2_backend *be = o->be;
    for (int i = 0; i < o->n_groups; i++) {
        iv2_optim_group *g = &o->g[i];
        if (g->chunks) {   /* every tensor in one launch (CUDA) */
            float *master = g->master ? g->master : (float *)g->params;
            be->adamw_chunks(be, g->params, master, g->grads, g->m, g->v, g->chunks, g->n_chunks, lr, c->beta1,
                             c->beta2, c->eps, c->weight_decay, (int)t, grad_scale);
            continue;
        }
        for (int j = 0; j < g->n_table; j++) {
            const iv2_dparam *p = &g->table[j];
            float wd = p->no_wd ? 0.0f : c->weight_decay;
            /* on the CPU the fp32 params are their own master copy */
            float *master = g->master ? g->master + p->off : (float *)IV2_AT(be, g->params, p->off);
            be->adamw(be, IV2_AT(be, g->params, p->off), master, IV2_AT(be, g->grads, p->off), g->m + p->off,
                      g->v + p->off, p->n, lr, c->beta1, c->beta2, c->eps, wd, (int)t, grad_scale);
        }
    }
}
