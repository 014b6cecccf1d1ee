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

int iv2_optim_set_overlap(iv2_optim *o, int on) {
    if (o->n_groups) iv2_panic("iv2_optim_set_overlap: after iv2_optim_add");
    if (!on) { o->overlap = 0; return 0; }
    iv2_backend *be = o->be;
    if (!be->adamw_chunks || !be->event_create)
        return iv2_err("backend %s: no side stream for the optimiser", be->name);
    o->overlap = 1;
    if (!o->grads_done) o->grads_done = be->event_create(be);
    if (!o->all_done) o->all_done = be->event_create(be);
    return 0;
}

static int cmp_chunk(const void *a, const void *b) {
    uint64_t x = ((const iv2_adamw_chunk *)a)->off, y = ((const iv2_adamw_chunk *)b)->off;
    return x < y ? -1 : x > y;
}

/* the buffer's tensors cut in pieces of at most `most` elements, in offset order */
static iv2_adamw_chunk *make_chunks(const iv2_dparam *table, int n_table, size_t most, int *n_out) {
    int n = 0, cap = 0;
    iv2_adamw_chunk *ch = NULL;
    for (int j = 0; j < n_table; j++)
        for (size_t at = 0; at < table[j].n; at += most) {
            if (n == cap) { cap = cap ? 2 * cap : 256; ch = iv2_realloc(ch, sizeof *ch * (size_t)cap); }
            size_t left = table[j].n - at;
            ch[n++] = (iv2_adamw_chunk){.off = table[j].off + at, .n = (uint32_t)(left < most ? left : most),
                                        .no_wd = (uint32_t)table[j].no_wd};
        }
    if (n) qsort(ch, (size_t)n, sizeof *ch, cmp_chunk);
    *n_out = n;
    return ch;
}

void iv2_optim_add(iv2_optim *o, void *params, void *grads, size_t n, const iv2_dparam *table, int n_table) {
    if (o->n_groups >= 2) iv2_panic("iv2_optim_add: more than 2 groups");
    iv2_optim_group *g = &o->g[o->n_groups++];
    g->params = params; g->grads = grads; g->n = n; g->table = table; g->n_table = n_table;
    g->m = o->be->alloc(o->be, n * sizeof(float));
    g->v = o->be->alloc(o->be, n * sizeof(float));
    if (!g->m || !g->v) iv2_panic("optimiser: cannot allocate %zu moments", n);
    if (o->be->adamw_chunks) {   /* one launch per step for the whole buffer: its tensors cut in pieces */
        g->hchunks = make_chunks(table, n_table, o->overlap ? IV2_ADAMW_CHUNK_SIDE : IV2_ADAMW_CHUNK, &g->n_chunks);
        if (g->n_chunks) {
            g->chunks = o->be->alloc(o->be, sizeof *g->hchunks * (size_t)g->n_chunks);
            if (!g->chunks) iv2_panic("optimiser: cannot allocate %d chunks", g->n_chunks);
            o->be->upload_raw(o->be, g->chunks, g->hchunks, sizeof *g->hchunks * (size_t)g->n_chunks);
        }
    }
    if (o->overlap) {   /* one piece until iv2_optim_set_pieces cuts it */
        const size_t all = n;
        if (iv2_optim_set_pieces(o, o->n_groups - 1, &all, 1)) iv2_panic("optimiser: %s", iv2_errmsg());
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

static void free_pieces(iv2_backend *be, iv2_optim_group *g) {
    for (int k = 0; k < g->n_pieces; k++) be->event_destroy(be, g->piece_done[k]);
    free(g->piece_done);
    free(g->piece_end);
    free(g->piece_chunk);
    g->piece_done = NULL; g->piece_end = NULL; g->piece_chunk = NULL;
    g->n_pieces = 0;
}

int iv2_optim_set_pieces(iv2_optim *o, int gi, const size_t *ends, int n) {
    if (!o->overlap || gi < 0 || gi >= o->n_groups)
        return iv2_err("optimiser: pieces need overlap on and group %d", gi);
    iv2_optim_group *g = &o->g[gi];
    if (n < 1 || ends[n - 1] != g->n) return iv2_err("optimiser: the last piece must end at %zu", g->n);
    int *pc = iv2_malloc(sizeof(int) * (size_t)(n + 1));
    pc[0] = 0;
    int c = 0;
    for (int k = 0; k < n; k++) {
        if (k && ends[k] <= ends[k - 1]) { free(pc); return iv2_err("optimiser: piece ends not increasing at %d", k); }
        while (c < g->n_chunks && g->hchunks[c].off < ends[k]) {
            if (g->hchunks[c].off + g->hchunks[c].n > ends[k]) {
                free(pc);
                return iv2_err("optimiser: a tensor straddles the piece end %zu", ends[k]);
            }
            c++;
        }
        pc[k + 1] = c;
    }
    iv2_optim_join(o);
    free_pieces(o->be, g);
    g->n_pieces = n;
    g->piece_chunk = pc;
    g->piece_end = iv2_malloc(sizeof(size_t) * (size_t)n);
    memcpy(g->piece_end, ends, sizeof(size_t) * (size_t)n);
    g->piece_done = iv2_malloc(sizeof(iv2_event *) * (size_t)n);
    for (int k = 0; k < n; k++) g->piece_done[k] = o->be->event_create(o->be);
    return 0;
}

void iv2_optim_wait_params(iv2_optim *o, int gi, size_t upto) {
    if (!o->pending || gi < 0 || gi >= o->n_groups || upto == 0) return;
    iv2_optim_group *g = &o->g[gi];
    int k = g->waited;
    while (k < g->n_pieces && (k == 0 ? 0 : g->piece_end[k - 1]) < upto) k++;   /* pieces that start below upto */
    if (k > g->waited) {   /* the side stream runs in order: the last of them is all of them */
        o->be->event_wait(o->be, g->piece_done[k - 1], IV2_STREAM_COMPUTE);
        g->waited = k;
    }
}

void iv2_optim_join(iv2_optim *o) {
    if (!o->pending) return;
    o->be->event_wait(o->be, o->all_done, IV2_STREAM_COMPUTE);
    o->pending = 0;
}

void iv2_optim_sync_master(iv2_optim *o) {
    iv2_backend *be = o->be;
    iv2_optim_join(o);
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
    iv2_backend *be = o->be;
    if (!be) return;   /* be->free waits for a pending step (compute.h) */
    for (int i = 0; i < o->n_groups; i++) {
        iv2_optim_group *g = &o->g[i];
        be->free(be, g->m);
        be->free(be, g->v);
        if (g->master) be->free(be, g->master);
        if (g->chunks) be->free(be, g->chunks);
        free(g->hchunks);
        free_pieces(be, g);
    }
    if (o->grads_done) be->event_destroy(be, o->grads_done);
    if (o->all_done) be->event_destroy(be, o->all_done);
    if (o->acc) be->free(be, o->acc);
    memset(o, 0, sizeof *o);
}

double iv2_optim_grad_norm(iv2_optim *o) {
    iv2_backend *be = o->be;
    iv2_optim_join(o);
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

/* the overlapped step: each group's pieces on the side stream, after the gradients */
static void step_beside(iv2_optim *o, float lr, const iv2_distill_config *c, int64_t t, float grad_scale) {
    iv2_backend *be = o->be;
    iv2_optim_join(o);   /* one pending step at a time */
    be->event_record(be, o->grads_done, IV2_STREAM_COMPUTE);
    be->event_wait(be, o->grads_done, IV2_STREAM_SIDE);
    for (int i = 0; i < o->n_groups; i++) {
        iv2_optim_group *g = &o->g[i];
        float *master = g->master ? g->master : (float *)g->params;
        for (int k = 0; k < g->n_pieces; k++) {
            int c0 = g->piece_chunk[k], nc = g->piece_chunk[k + 1] - c0;
            be->adamw_chunks(be, g->params, master, g->grads, g->m, g->v,
                             (char *)g->chunks + sizeof(iv2_adamw_chunk) * (size_t)c0, nc, lr, c->beta1, c->beta2,
                             c->eps, c->weight_decay, (int)t, grad_scale, IV2_STREAM_SIDE);
            be->event_record(be, g->piece_done[k], IV2_STREAM_SIDE);
        }
        g->waited = 0;
    }
    be->event_record(be, o->all_done, IV2_STREAM_SIDE);
    o->pending = 1;
}

void iv2_optim_step(iv2_optim *o, float lr, const iv2_distill_config *c, int64_t t, float grad_scale) {
    iv2_backend *be = o->be;
    if (o->overlap) { step_beside(o, lr, c, t, grad_scale); return; }
    for (int i = 0; i < o->n_groups; i++) {
        iv2_optim_group *g = &o->g[i];
        if (g->chunks) {   /* every tensor in one launch */
            float *master = g->master ? g->master : (float *)g->params;
            be->adamw_chunks(be, g->params, master, g->grads, g->m, g->v, g->chunks, g->n_chunks, lr, c->beta1,
                             c->beta2, c->eps, c->weight_decay, (int)t, grad_scale, IV2_STREAM_COMPUTE);
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
