/* eval.c: held-out views with every token visible; the cosine of each head's output to its
 * teacher target, averaged over views and tokens, per target (clip_b*, mae_b*, clip_pool). */
#include "distill.h"
#include "err.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int iv2_trainer_eval(iv2_trainer *t, char **out_json) {
    iv2_loader *L = &t->L;
    iv2_backend *be = t->be;
    const iv2_distill_config *c = &t->cfg;
    if (L->n_eval < 1) return iv2_err("eval: no held-out views (set eval_views in the config)");
    iv2_optim_join(&t->opt);   /* the last step's AdamW, if it runs beside, before the weights are read */
    int ntok = 1 + L->T * L->P;
    int eb = (int)(t->heads->d.max_rows / ntok);
    if (eb > c->batch) eb = c->batch;
    iv2_batch b;
    iv2_batch_alloc(&b, L, eb, ntok);
    int K = c->n_clip + c->n_mae + (c->use_final ? 1 : 0);
    double *sum = iv2_calloc((size_t)K + 1, sizeof(double));
    int64_t done = 0;
    int rc = 0;
    for (int64_t first = 0; first < L->n_eval && !rc; first += eb) {
        int S = iv2_loader_build_eval(L, first, &b);
        if (S < 0) { rc = -1; break; }
        const iv2_vit_config *vc = &t->student->cfg;
        be->upload_raw(be, t->frames, b.frames, (size_t)S * vc->frames * vc->img * vc->img * 3);
        iv2_vit_io io;
        memset(&io, 0, sizeof io);
        io.frames = t->frames; io.S = S;
        io.n_out = t->n_out;
        for (int i = 0; i < t->n_out; i++) { io.blocks[i] = t->blocks[i]; io.out[i] = t->out[i]; }
        io.pooled = c->use_final ? t->pooled : NULL;
        if (iv2_vit_forward(t->student, &io)) { rc = iv2_err_ctx("eval forward"); break; }
        double cs;
        for (int k = 0; k < c->n_clip && !rc; k++) {
            rc = iv2_heads_clip(t->heads, k, t->out[t->clip_out[k]], NULL, b.vis, S, ntok, b.clip[k], 0, NULL, &cs);
            sum[k] += cs * S;
        }
        for (int k = 0; k < c->n_mae && !rc; k++) {
            rc = iv2_heads_mae(t->heads, k, t->out[t->mae_out[k]], NULL, b.vis, S, ntok, b.mae[k], 0, NULL, &cs);
            sum[c->n_clip + k] += cs * S;
        }
        if (c->use_final && !rc) {
            rc = iv2_heads_final(t->heads, t->pooled, NULL, S, b.final, 0, NULL, &cs);
            sum[K - 1] += cs * S;
        }
        done += S;
    }
    iv2_batch_free(&b);
    if (!rc && out_json) {
        size_t cap = 64 + (size_t)K * 48, n = 0;
        char *js = iv2_malloc(cap);
        n += snprintf(js + n, cap - n, "{\"views\":%lld", (long long)done);
        for (int k = 0; k < c->n_clip; k++) n += snprintf(js + n, cap - n, ",\"clip_b%d\":%.6f", c->clip_teacher[k], sum[k] / done);
        for (int k = 0; k < c->n_mae; k++) n += snprintf(js + n, cap - n, ",\"mae_b%d\":%.6f", c->mae_teacher[k], sum[c->n_clip + k] / done);
        if (c->use_final) n += snprintf(js + n, cap - n, ",\"clip_pool\":%.6f", sum[K - 1] / done);
        snprintf(js + n, cap - n, "}");
        *out_json = js;
    }
    free(sum);
    return rc;
}
