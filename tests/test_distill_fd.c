/* test_distill_fd: finite differences through the whole tiny model (student + every head +
 * the loss): for every parameter tensor, its largest-gradient element and one random element,
 * central differences of the total loss against the backward's gradient. */
#include "testutil.h"
#include "distill.h"
#include "err.h"

int main(void) {
    iv2_set_quiet(1);
    iv2_distill_config c;
    iv2_distill_config_default(&c);
    snprintf(c.student, sizeof c.student, "iv2-tiny");
    snprintf(c.student_json, sizeof c.student_json,
             "{\"img\": 8, \"patch\": 4, \"frames\": 2, \"width\": 16, \"heads\": 2, \"mlp\": 24, \"depth\": 3,"
             " \"pool_heads\": 2, \"pool_dim\": 8}");
    c.n_clip = 2; c.clip_teacher[0] = 0; c.clip_student[0] = 1; c.clip_teacher[1] = 1; c.clip_student[1] = 2;
    c.n_mae = 1; c.mae_teacher[0] = 0; c.mae_student[0] = 2;
    c.alpha_final = 0.7f; c.alpha_mae = 1.3f;
    c.batch = 2; c.drop_path = 0; c.threads = 1;
    const int B = 2, T = 2, P = 4, nv = 1 + T * 2, CD = 6, MD = 5, FD = 4;
    iv2_trainer t;
    memset(&t, 0, sizeof t);
    if (iv2_trainer_init(&t, &c, CD, MD, FD, nv)) { CHECK(0, "init: %s", iv2_errmsg()); iv2_trainer_close(&t); return test_done(); }
    iv2_rng r;
    iv2_rng_seed(&r, 3, 1, 4, 1);
    /* every parameter O(1)-ish so that every path carries gradient (LayerScale starts at 1e-5) */
    float *sp = t.student->params, *hp = t.heads->params;
    for (size_t i = 0; i < t.student->n_elems; i++) sp[i] += (float)(iv2_rng_uniform(&r) - 0.5) * 0.5f;
    for (size_t i = 0; i < t.heads->n_params; i++) hp[i] += (float)(iv2_rng_uniform(&r) - 0.5) * 0.5f;
    iv2_batch b;
    memset(&b, 0, sizeof b);
    b.B = B; b.nv = nv; b.step = 0;
    b.frames = malloc((size_t)B * T * 8 * 8 * 3);
    for (int i = 0; i < B * T * 8 * 8 * 3; i++) b.frames[i] = (uint8_t)(iv2_rng_u64(&r) >> 56);
    b.vis = malloc(sizeof(int32_t) * B * nv);
    float attn[T * P];
    for (int i = 0; i < T * P; i++) attn[i] = 1;
    for (int s = 0; s < B; s++) iv2_mask_draw(IV2_MASK_ATTENTION, attn, T, P, 0.5f, &r, b.vis + s * nv);
    for (int k = 0; k < 2; k++) { b.clip[k] = malloc(sizeof(float) * B * nv * CD); }
    b.mae[0] = malloc(sizeof(float) * B * (nv - 1) * MD);
    b.final = malloc(sizeof(float) * B * FD);
    float *tg[4] = {b.clip[0], b.clip[1], b.mae[0], b.final};
    int rows[4] = {B * nv, B * nv, B * (nv - 1), B}, dd[4] = {CD, CD, MD, FD};
    for (int q = 0; q < 4; q++)
        for (int i = 0; i < rows[q]; i++) {
            double n = 0;
            for (int j = 0; j < dd[q]; j++) { tg[q][i * dd[q] + j] = (float)(iv2_rng_uniform(&r) - 0.5); n += tg[q][i * dd[q] + j] * tg[q][i * dd[q] + j]; }
            for (int j = 0; j < dd[q]; j++) tg[q][i * dd[q] + j] /= (float)sqrt(n);
        }
    CHECK(iv2_trainer_forward_backward(&t, &b, 1) == 0, "%s", iv2_errmsg());
    float *gs = malloc(sizeof(float) * t.student->n_elems), *gh = malloc(sizeof(float) * t.heads->n_params);
    memcpy(gs, t.student->grads, sizeof(float) * t.student->n_elems);
    memcpy(gh, t.heads->grads, sizeof(float) * t.heads->n_params);
    int bad = 0, n = 0;
    for (int grp = 0; grp < 2; grp++) {
        int nt = grp ? t.heads->n_table : t.student->n_param;
        for (int i = 0; i < nt; i++) {
            const char *name = grp ? t.heads->table[i].name : t.student->param[i].name;
            size_t off = grp ? t.heads->table[i].off : t.student->param[i].offset, cnt = grp ? t.heads->table[i].n : t.student->param[i].numel;
            float *p = (grp ? hp : sp) + off, *g = (grp ? gh : gs) + off;
            size_t pick[2] = {0, iv2_rng_below(&r, (uint32_t)cnt)};
            for (size_t j = 1; j < cnt; j++) if (fabsf(g[j]) > fabsf(g[pick[0]])) pick[0] = j;
            for (int k = 0; k < 2; k++) {
                size_t j = pick[k];
                float keep = p[j], e = 3e-3f;
                p[j] = keep + e; iv2_trainer_forward_backward(&t, &b, 0); double lp = t.loss.total;
                p[j] = keep - e; iv2_trainer_forward_backward(&t, &b, 0); double lm = t.loss.total;
                p[j] = keep;
                double num = (lp - lm) / (2 * e);
                n++;
                if (!(fabs(num - g[j]) <= 3e-2 * fabs(num) + 3e-4)) {
                    bad++;
                    fprintf(stderr, "%s[%zu]: backward %.6g, finite difference %.6g\n", name, j, g[j], num);
                }
            }
        }
    }
    CHECK(bad == 0, "%d of %d finite-difference checks off", bad, n);
    CHECK(n >= 2 * 30, "checked %d elements", n);
    free(gs); free(gh);
    iv2_batch_free(&b);
    iv2_trainer_close(&t);
    return test_done();
}
