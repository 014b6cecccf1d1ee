/* train.c: the training loop of iv2-distill.
 *
 * One step: frames of B views -> student forward on the visible tokens (drop path per sample)
 * -> the read-out blocks and the pooled output -> each head's forward, loss rows and backward
 * (heads are independent, so one at a time) -> student backward -> global grad norm, clip
 * coefficient, AdamW with the step's LR. The loader's thread builds the next batch meanwhile. */
#include "distill.h"
#include "cache.h"
#include "err.h"
#include "log.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int slot_of(const iv2_trainer *t, int block) {
    for (int i = 0; i < t->n_out; i++) if (t->blocks[i] == block) return i;
    return -1;
}

/* fields that may change between a run and its resumption */
static const char *const resume_free[] = {"steps", "epochs", "ckpt_every", "keep_ckpt", "eval_every", "log_every",
                                          "threads", "prefetch", "device", NULL};

static int student_config(const iv2_distill_config *c, iv2_vit_config *vc) {
    if (iv2_vit_preset(c->student, vc)) return -1;
    if (c->student_json[0] && iv2_vit_config_json(vc, c->student_json)) return iv2_err_ctx("student_overrides");
    vc->drop_path = c->drop_path;
    if (iv2_vit_config_check(vc)) return -1;
    if (vc->arch != IV2_VIT_STUDENT || !vc->cls) return iv2_err("preset %s is not a student (needs the student arch with a CLS token)", c->student);
    for (int k = 0; k < c->n_clip; k++)
        if (c->clip_student[k] >= vc->depth) return iv2_err("clip_layers: student block %d, the student has %d", c->clip_student[k], vc->depth);
    for (int k = 0; k < c->n_mae; k++)
        if (c->mae_student[k] >= vc->depth) return iv2_err("mae_layers: student block %d, the student has %d", c->mae_student[k], vc->depth);
    if (c->use_final && vc->pool_heads < 1) return iv2_err("use_final needs a student with an attention pool");
    return 0;
}

int iv2_trainer_init(iv2_trainer *t, const iv2_distill_config *c, int clip_dim, int mae_dim, int final_dim, int nv) {
    t->cfg = *c;
    iv2_vit_config vc;
    if (iv2_distill_config_check(c) || student_config(c, &vc)) return -1;
    if (!t->be && !(t->be = iv2_backend_create(c->device, c->threads))) return -1;
    iv2_backend *be = t->be;
    int G = iv2_vit_grid(&vc), T = vc.frames / vc.tubelet;
    t->student = iv2_vit_create(be, &vc);
    if (!t->student || iv2_vit_init_random(t->student, c->seed) || iv2_vit_alloc_grads(t->student)) return -1;
    int B = c->batch, ntok = 1 + T * G * G, eb = B * nv / ntok;
    eb = eb < 1 ? 1 : eb > B ? B : eb;
    size_t rows = (size_t)B * nv > (size_t)eb * ntok ? (size_t)B * nv : (size_t)eb * ntok;
    iv2_heads_dims hd = {.C = vc.width, .pool_dim = vc.pool_dim, .n_clip = c->n_clip, .clip_dim = clip_dim,
                         .n_mae = c->n_mae, .mae_dim = mae_dim, .use_final = c->use_final,
                         .final_dim = final_dim, .T = T, .G = G, .max_rows = (int)rows};
    t->heads = iv2_heads_create(be, &hd);
    if (!t->heads) return -1;
    iv2_heads_init(t->heads, c->seed + 1);
    /* the optimiser over both buffers, with the student's table in our form */
    t->stab = iv2_calloc((size_t)t->student->n_param, sizeof *t->stab);
    for (int i = 0; i < t->student->n_param; i++) {
        const iv2_vit_param *p = &t->student->param[i];
        iv2_dparam *q = &t->stab[i];
        snprintf(q->name, sizeof q->name, "%s", p->name);
        q->ndim = p->ndim;
        for (int j = 0; j < p->ndim && j < 4; j++) q->shape[j] = p->shape[j];   /* (moments are stored flat) */
        q->off = p->offset; q->n = p->numel;
        q->no_wd = p->no_wd || iv2_no_weight_decay(p->name, p->ndim);
    }
    if (iv2_optim_init(&t->opt, be)) return -1;
    iv2_optim_add(&t->opt, t->student->params, t->student->grads, t->student->n_elems, t->stab, t->student->n_param);
    iv2_optim_add(&t->opt, t->heads->params, t->heads->grads, t->heads->n_params, t->heads->table, t->heads->n_table);
    /* read-out blocks: the union of both pairings, ascending */
    for (int k = 0; k < c->n_clip + c->n_mae; k++) {
        int blk = k < c->n_clip ? c->clip_student[k] : c->mae_student[k - c->n_clip];
        if (slot_of(t, blk) >= 0) continue;
        int i = t->n_out++;
        while (i > 0 && t->blocks[i - 1] > blk) { t->blocks[i] = t->blocks[i - 1]; i--; }
        t->blocks[i] = blk;
    }
    for (int k = 0; k < c->n_clip; k++) t->clip_out[k] = slot_of(t, c->clip_student[k]);
    for (int k = 0; k < c->n_mae; k++) t->mae_out[k] = slot_of(t, c->mae_student[k]);
    size_t act = rows * vc.width * be->esize;
    for (int i = 0; i < t->n_out; i++) {
        t->out[i] = be->alloc(be, act);
        t->dout[i] = be->alloc(be, (size_t)B * nv * vc.width * be->esize);
        if (!t->out[i] || !t->dout[i]) return iv2_err("cannot allocate read-out buffers");
    }
    int sb = B > eb ? B : eb;
    t->pooled = be->alloc(be, (size_t)sb * vc.pool_dim * be->esize);
    t->dpooled = be->alloc(be, (size_t)sb * vc.pool_dim * be->esize);
    t->frames = be->alloc(be, (size_t)sb * vc.frames * vc.img * vc.img * 3);
    t->drop = iv2_calloc((size_t)2 * vc.depth * B, sizeof(float));
    t->cfg_json = iv2_distill_config_to_json(c);
    return 0;
}

int iv2_trainer_open(iv2_trainer *t, const char *cache_dirs, const iv2_distill_config *c, const char *out_dir, int resume) {
    memset(t, 0, sizeof *t);
    t->cfg = *c;
    snprintf(t->out_dir, sizeof t->out_dir, "%s", out_dir);
    iv2_vit_config vc;
    if (iv2_distill_config_check(c) || student_config(c, &vc)) return iv2_err_ctx("iv2-distill");
    int G = iv2_vit_grid(&vc), T = vc.frames / vc.tubelet;
    if (iv2_loader_open(&t->L, cache_dirs, c, vc.frames, vc.img, T, G * G)) goto fail;
    if (c->eval_views >= 0 && iv2_plan_make(&t->plan, c, t->L.n_train)) goto fail;
    if (iv2_trainer_init(t, c, t->L.clip_dim, t->L.mae_dim, t->L.final_dim, t->L.nv)) goto fail;
    if (mkdir(out_dir, 0755) && errno != EEXIST) { iv2_err("%s: cannot create the run folder", out_dir); goto fail; }
    if (resume) {
        char path[4096];
        int64_t step;
        int r = iv2_ckpt_latest(out_dir, path, sizeof path, &step);
        if (r < 0) goto fail;
        if (r == 1) iv2_info("resume: no checkpoint in %s, starting from step 0", out_dir);
        else {
            char *old = NULL;
            if (iv2_ckpt_load(path, t->student, t->heads, &t->opt, &t->step, &old)) goto fail;
            if (old && iv2_cache_meta_compare(old, t->cfg_json, resume_free)) {
                iv2_err_ctx("resume from %s: the run config differs", path);
                free(old);
                goto fail;
            }
            free(old);
            iv2_info("resumed from %s at step %lld", path, (long long)t->step);
        }
    }
    return 0;
fail:
    iv2_err_ctx("iv2-distill");
    iv2_trainer_close(t);
    return -1;
}

void iv2_trainer_close(iv2_trainer *t) {
    iv2_loader_close(&t->L);
    iv2_backend *be = t->be;
    if (be) {
        for (int i = 0; i < t->n_out; i++) { if (t->out[i]) be->free(be, t->out[i]); if (t->dout[i]) be->free(be, t->dout[i]); }
        if (t->pooled) be->free(be, t->pooled);
        if (t->dpooled) be->free(be, t->dpooled);
        if (t->frames) be->free(be, t->frames);
        if (t->opt.acc) iv2_optim_free(&t->opt);
    }
    iv2_heads_free(t->heads);
    iv2_vit_free(t->student);
    if (be) iv2_backend_destroy(be);
    free(t->stab);
    free(t->drop);
    free(t->cfg_json);
    memset(t, 0, sizeof *t);
}

/* timm DropPath with dpr = linspace(0, rate, depth), one draw per branch (the official block
 * calls DropPath twice): per block, branch and sample keep with 1 - dpr[l], scaled by 1 / keep;
 * drawn from (seed, step, block, branch) so a resumed run draws the same. Fills t->drop
 * [2][depth][B] (attention branch, then MLP branch); NULL when there is no drop path. */
static const float *drop_scales(iv2_trainer *t, int64_t step, int B) {
    int depth = t->student->cfg.depth;
    float rate = t->cfg.drop_path;
    if (t->drop_override) return t->drop_override;
    if (rate <= 0) return NULL;
    for (int br = 0; br < 2; br++)
        for (int l = 0; l < depth; l++) {
            double p = depth > 1 ? (double)rate * l / (depth - 1) : rate, keep = 1.0 - p;
            iv2_rng r;
            iv2_rng_seed(&r, t->cfg.seed, 0x64726f70 /* "drop" */, (uint64_t)step, (uint64_t)(br * depth + l));
            float *d = t->drop + ((size_t)br * depth + l) * B;
            for (int s = 0; s < B; s++) d[s] = p <= 0 ? 1.0f : iv2_rng_uniform(&r) < keep ? (float)(1.0 / keep) : 0.0f;
        }
    return t->drop;
}

int iv2_trainer_forward_backward(iv2_trainer *t, const iv2_batch *b, int backward) {
    iv2_backend *be = t->be;
    const iv2_distill_config *c = &t->cfg;
    const iv2_vit_config *vc = &t->student->cfg;
    int B = b->B, nv = b->nv, C = vc->width;
    iv2_vit_zero_grads(t->student);
    be->memset0(be, t->heads->grads, t->heads->n_params * be->esize);
    for (int i = 0; i < t->n_out; i++) be->memset0(be, t->dout[i], (size_t)B * nv * C * be->esize);
    be->memset0(be, t->dpooled, (size_t)B * vc->pool_dim * be->esize);
    be->upload_raw(be, t->frames, b->frames, (size_t)B * vc->frames * vc->img * vc->img * 3);
    iv2_vit_io io;
    memset(&io, 0, sizeof io);
    io.frames = t->frames; io.S = B; io.vis = b->vis; io.n_vis = nv;
    io.drop = drop_scales(t, b->step, B);
    io.drop_mlp = !io.drop ? NULL : t->drop_override ? t->drop_mlp_override : io.drop + (size_t)vc->depth * B;
    io.n_out = t->n_out;
    for (int i = 0; i < t->n_out; i++) { io.blocks[i] = t->blocks[i]; io.out[i] = t->out[i]; }
    io.pooled = c->use_final ? t->pooled : NULL;
    if (iv2_vit_forward_train(t->student, &io)) return iv2_err_ctx("step %lld: student forward", (long long)b->step);
    iv2_loss L = {0};
    double ml;
    float sc = iv2_loss_scale(c->alpha_clip, c->n_clip, (int64_t)B * nv);
    for (int k = 0; k < c->n_clip; k++) {
        if (iv2_heads_clip(t->heads, k, t->out[t->clip_out[k]], backward ? t->dout[t->clip_out[k]] : NULL, b->vis, B, nv, b->clip[k], sc, &ml, NULL)) return -1;
        L.clip += ml / c->n_clip;
    }
    sc = iv2_loss_scale(c->alpha_mae, c->n_mae, (int64_t)B * (nv - 1));
    for (int k = 0; k < c->n_mae; k++) {
        if (iv2_heads_mae(t->heads, k, t->out[t->mae_out[k]], backward ? t->dout[t->mae_out[k]] : NULL, b->vis, B, nv, b->mae[k], sc, &ml, NULL)) return -1;
        L.mae += ml / c->n_mae;
    }
    if (c->use_final) {
        if (iv2_heads_final(t->heads, t->pooled, backward ? t->dpooled : NULL, B, b->final, iv2_loss_scale(c->alpha_final, 1, B), &ml, NULL)) return -1;
        L.final = ml;
    }
    iv2_loss_total(&L, c);
    t->loss = L;
    if (iv2_loss_check(&L, b->step)) return -1;
    if (backward && iv2_vit_backward(t->student, &io, t->dout, c->use_final ? t->dpooled : NULL))
        return iv2_err_ctx("step %lld: student backward", (long long)b->step);
    return 0;
}

int iv2_trainer_step(iv2_trainer *t, const iv2_batch *b) {
    const iv2_distill_config *c = &t->cfg;
    if (iv2_trainer_forward_backward(t, b, 1)) return -1;
    t->grad_norm = iv2_optim_grad_norm(&t->opt);
    if (!isfinite(t->grad_norm)) return iv2_err("step %lld: gradient norm is not finite; stopping, the last good checkpoint is kept", (long long)b->step);
    t->lr = iv2_lr_at(&t->plan, b->step);
    iv2_optim_step(&t->opt, t->lr, c, b->step + 1, iv2_clip_coef(t->grad_norm, c->clip_grad));
    t->step = b->step + 1;
    return 0;
}

static int save(iv2_trainer *t) {
    if (iv2_ckpt_save(t->out_dir, t->step, t->student, t->heads, &t->opt, t->cfg_json, t->cfg.keep_ckpt)) return -1;
    return 0;
}

int iv2_trainer_run(iv2_trainer *t, int64_t max_steps) {
    const iv2_distill_config *c = &t->cfg;
    int64_t end = t->plan.total_steps;
    if (max_steps > 0 && t->step + max_steps < end) end = t->step + max_steps;
    char path[2300];
    snprintf(path, sizeof path, "%s/metrics.jsonl", t->out_dir);
    iv2_metrics m;
    if (iv2_metrics_open(&m, path)) return -1;
    if (t->step == 0) {
        iv2_metrics_write(&m, "start", "\"config\":%s,\"train_views\":%lld,\"eval_views\":%lld,\"steps\":%lld,"
                          "\"steps_per_epoch\":%lld,\"warmup_steps\":%lld,\"peak_lr\":%.6g,\"student_params\":%zu,"
                          "\"head_params\":%zu", t->cfg_json, (long long)t->L.n_train, (long long)t->L.n_eval,
                          (long long)t->plan.total_steps, (long long)t->plan.steps_per_epoch,
                          (long long)t->plan.warmup_steps, t->plan.peak_lr, t->student->n_elems, t->heads->n_params);
    }
    iv2_progress pr;
    iv2_progress_start(&pr, "steps", t->plan.total_steps, t->step);
    int64_t last_saved = t->step;
    int rc = 0;
    double ema = 0;
    while (t->step < end) {
        double t0 = iv2_now();
        iv2_batch *b;
        if (iv2_loader_next(&t->L, t->step, &b)) { rc = -1; break; }
        double t1 = iv2_now();
        if (iv2_trainer_step(t, b)) { rc = -1; break; }
        double dt = iv2_now() - t0;
        ema = ema == 0 ? dt : 0.9 * ema + 0.1 * dt;
        int64_t s = t->step - 1;
        iv2_metrics_write(&m, "step", "\"step\":%lld,\"epoch\":%lld,\"loss\":%.7g,\"clip\":%.7g,\"final\":%.7g,"
                          "\"mae\":%.7g,\"grad_norm\":%.6g,\"lr\":%.6g,\"views_s\":%.4g,\"tokens_s\":%.4g,"
                          "\"step_s\":%.4g,\"wait_s\":%.4g", (long long)s, (long long)(s / t->plan.steps_per_epoch),
                          t->loss.total, t->loss.clip, t->loss.final, t->loss.mae, t->grad_norm, t->lr,
                          c->batch / dt, (double)c->batch * t->L.nv / dt, dt, t1 - t0);
        char extra[160];
        snprintf(extra, sizeof extra, "loss %.4f lr %.3g |g| %.3g %.2f views/s", t->loss.total, t->lr, t->grad_norm, c->batch / ema);
        iv2_progress_update(&pr, t->step, extra);
        if (c->ckpt_every > 0 && t->step % c->ckpt_every == 0) {
            if (save(t)) { rc = -1; break; }
            last_saved = t->step;
        }
        if (c->eval_every > 0 && t->step % c->eval_every == 0 && t->L.n_eval > 0) {
            char *js;
            if (iv2_trainer_eval(t, &js)) { rc = -1; break; }
            iv2_metrics_write(&m, "eval", "\"step\":%lld,\"cos\":%s", (long long)t->step, js);
            free(js);
        }
    }
    if (rc == 0 && t->step != last_saved && save(t)) rc = -1;
    iv2_progress_end(&pr, rc ? "stopped" : "done");
    iv2_metrics_close(&m);
    return rc;
}
