/* train.c: the training loop of iv2-distill.
 *
 * One step: frames of B views -> student forward on the visible tokens (drop path per sample)
 * -> the read-out blocks and the pooled output -> each head's forward, loss rows and backward
 * (heads are independent, so one at a time) -> student backward -> global grad norm, clip
 * coefficient, AdamW with the step's LR. The loader's thread builds the next batch meanwhile.
 *
 * The data path (issue 8): the loader's batches are pinned and already in the device's form
 * (targets in be->dtype, index rows), so moving one to the device is raw copies on the copy
 * stream into a device slot (iv2_dev_batch). Two slots: once step s's student backward is
 * queued, batch s+1 is copied into the other slot while the GPU runs that backward; step s+1's
 * compute waits for those copies (event), and copies into a slot wait until the step that read
 * it last is done with it (event). */
#include "distill.h"
#include "cache.h"
#include "dist.h"
#include "err.h"
#include "log.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>

/* the optimiser's table copies the student's shapes (up to 5-D) */
_Static_assert(sizeof ((iv2_dparam *)0)->shape == sizeof ((iv2_vit_param *)0)->shape, "iv2_dparam.shape too small");

static int slot_of(const iv2_trainer *t, int block) {
    for (int i = 0; i < t->n_out; i++) if (t->blocks[i] == block) return i;
    return -1;
}

/* the student blocks the heads read: the union of both pairings, ascending, into blocks[]
 * (room for 2 * IV2_DISTILL_MAX_LAYERS); returns their number */
static int readout_blocks(const iv2_distill_config *c, int *blocks) {
    int n = 0;
    for (int k = 0; k < c->n_clip + c->n_mae; k++) {
        int blk = k < c->n_clip ? c->clip_student[k] : c->mae_student[k - c->n_clip], dup = 0;
        for (int i = 0; i < n; i++) dup |= blocks[i] == blk;
        if (dup) continue;
        int i = n++;
        while (i > 0 && blocks[i - 1] > blk) { blocks[i] = blocks[i - 1]; i--; }
        blocks[i] = blk;
    }
    return n;
}

/* fields that may change between a run and its resumption */
static const char *const resume_free[] = {"steps", "epochs", "ckpt_every", "keep_ckpt", "eval_every", "log_every",
                                          "threads", "prefetch", "loader_threads", "device", "recompute", NULL};

static int student_config(const iv2_distill_config *c, iv2_vit_config *vc) {
    if (iv2_vit_preset(c->student, vc)) return -1;
    if (c->student_json[0] && iv2_vit_config_json(vc, c->student_json)) return iv2_err_ctx("student_overrides");
    if (c->drop_path >= 0) vc->drop_path = c->drop_path;   /* else the preset's (-1, the default) */
    if (iv2_vit_config_check(vc)) return -1;
    if (vc->arch != IV2_VIT_STUDENT || !vc->cls) return iv2_err("preset %s is not a student (needs the student arch with a CLS token)", c->student);
    for (int k = 0; k < c->n_clip; k++)
        if (c->clip_student[k] >= vc->depth) return iv2_err("clip_layers: student block %d, the student has %d", c->clip_student[k], vc->depth);
    for (int k = 0; k < c->n_mae; k++)
        if (c->mae_student[k] >= vc->depth) return iv2_err("mae_layers: student block %d, the student has %d", c->mae_student[k], vc->depth);
    if (c->use_final && vc->pool_heads < 1) return iv2_err("use_final needs a student with an attention pool");
    return 0;
}

/* Bytes a run needs at batch B: the model part (student and heads: weights, grads, AdamW) into
 * *model, and what grows with B (student activations with R blocks recomputed, or with none and
 * keep (iv2_vit.keep_normed), head scratch, read-out buffers, eval frames, the two device batch
 * slots) as the return value. Mirrors the allocations of iv2_trainer_init. */
static size_t batch_bytes(const iv2_vit_config *vc, const iv2_heads_dims *hd, size_t head_params, int n_out,
                          size_t esize, int B, int nv, int R, int keep, size_t *model) {
    iv2_vit_plan p = iv2_vit_train_plan(vc, esize, B, nv, R, keep);
    size_t opt = sizeof(float) * (esize < sizeof(float) ? 3 : 2);   /* m, v (+ fp32 master) */
    if (model) *model = p.weights + p.grads + p.adamw + head_params * (2 * esize + opt);
    size_t ntok = (size_t)hd->T * hd->G * hd->G + 1, rows_v = (size_t)B * nv, eb = rows_v / ntok;
    eb = eb < 1 ? 1 : eb > (size_t)B ? (size_t)B : eb;
    size_t rows = rows_v > eb * ntok ? rows_v : eb * ntok, sb = (size_t)B > eb ? (size_t)B : eb;
    size_t W = hd->C;
    int dims[] = {hd->clip_dim, hd->mae_dim, hd->final_dim, hd->pool_dim};
    for (int i = 0; i < 4; i++) if ((size_t)dims[i] > W) W = dims[i];
    size_t slots = (size_t)hd->n_clip + hd->n_mae + (hd->use_final ? 1 : 0);   /* loss rows of each head */
    size_t heads = 11 * rows * W * esize + rows * ((2 + slots) * sizeof(float) + 2 * sizeof(int32_t));
    size_t readout = (size_t)n_out * (rows + rows_v) * vc->width * esize;
    size_t frames = (size_t)vc->frames * vc->img * vc->img * 3;
    size_t other = 2 * sb * vc->pool_dim * esize + sb * frames;   /* pooled, dpooled; eval frames */
    size_t targets = ((size_t)hd->n_clip * rows_v * hd->clip_dim + (size_t)hd->n_mae * (rows_v - B) * hd->mae_dim +
                      (hd->use_final ? (size_t)B * hd->final_dim : 0)) * esize;
    size_t slot = (size_t)B * frames + targets + 3 * rows_v * sizeof(int32_t);   /* one device batch slot */
    return p.activations + heads + readout + other + 2 * slot + (rows_v - B) * sizeof(int32_t);
}

static int largest_batch(const iv2_vit_config *vc, const iv2_heads_dims *hd, size_t head_params, int n_out,
                         size_t esize, int nv, int R, size_t avail) {
    size_t model;
    batch_bytes(vc, hd, head_params, n_out, esize, 1, nv, R, 0, &model);
    int lo = 0, hi = 1 << 24;   /* the largest B with model + batch_bytes(B) <= avail */
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (model + batch_bytes(vc, hd, head_params, n_out, esize, mid, nv, R, 0, NULL) <= avail) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* the student, the heads' dims and the read-out count of a run config, for its memory plan */
static int plan_setup(const iv2_distill_config *c, int clip_dim, int mae_dim, int final_dim, iv2_vit_config *vc,
                      iv2_heads_dims *hd, int *n_out) {
    if (student_config(c, vc)) return -1;
    int blocks[2 * IV2_DISTILL_MAX_LAYERS];
    *n_out = readout_blocks(c, blocks);
    *hd = (iv2_heads_dims){.C = vc->width, .pool_dim = vc->pool_dim, .n_clip = c->n_clip, .clip_dim = clip_dim,
                           .n_mae = c->n_mae, .mae_dim = mae_dim, .use_final = c->use_final, .final_dim = final_dim,
                           .T = vc->frames / vc->tubelet, .G = iv2_vit_grid(vc), .max_rows = 1};
    return 0;
}

/* what the memory plan does not count (cuBLASLt workspace, allocator slack, the eval arena): a
 * tenth of the free memory and 1 GiB */
static size_t plan_headroom(size_t avail) { return avail / 10 + ((size_t)1 << 30); }

int iv2_distill_largest_batch(const iv2_distill_config *c, int clip_dim, int mae_dim, int final_dim, int nv,
                              int recompute, size_t esize, size_t avail) {
    iv2_vit_config vc;
    iv2_heads_dims hd;
    int n_out;
    if (plan_setup(c, clip_dim, mae_dim, final_dim, &vc, &hd, &n_out)) return -1;
    int R = recompute < 0 ? 0 : recompute > vc.depth ? vc.depth : recompute;
    return largest_batch(&vc, &hd, iv2_heads_count_params(&hd), n_out, esize, nv, R, avail);
}

int iv2_distill_keep_normed_fits(const iv2_distill_config *c, int clip_dim, int mae_dim, int final_dim, int nv,
                                 size_t esize, size_t avail) {
    iv2_vit_config vc;
    iv2_heads_dims hd;
    int n_out;
    if (plan_setup(c, clip_dim, mae_dim, final_dim, &vc, &hd, &n_out)) return -1;
    if (avail <= plan_headroom(avail)) return 0;
    size_t model, b = batch_bytes(&vc, &hd, iv2_heads_count_params(&hd), n_out, esize, iv2_dist_local_batch(c->batch),
                                  nv, 0, 1, &model);
    return model + b <= avail - plan_headroom(avail);
}

int iv2_distill_auto_recompute(const iv2_distill_config *c, int clip_dim, int mae_dim, int final_dim, int nv,
                                size_t esize, size_t avail) {
    iv2_vit_config vc;
    iv2_heads_dims hd;
    int n_out;
    if (plan_setup(c, clip_dim, mae_dim, final_dim, &vc, &hd, &n_out)) return -1;
    if (avail <= plan_headroom(avail)) return vc.depth;   /* not reported (0), or too little to plan with */
    size_t room = avail - plan_headroom(avail), hp = iv2_heads_count_params(&hd), model;
    int B = iv2_dist_local_batch(c->batch);
    for (int R = 0; R < vc.depth; R++) {   /* the fewest blocks; a count that fits fits with more */
        size_t b = batch_bytes(&vc, &hd, hp, n_out, esize, B, nv, R, 0, &model);
        if (model + b <= room) return R;
    }
    return vc.depth;
}

static const char *human(char *b, size_t x) {   /* b: 16 bytes */
    if (x >= (1ull << 30)) snprintf(b, 16, "%.2f GiB", x / 1073741824.0);
    else snprintf(b, 16, "%.1f MiB", x / 1048576.0);
    return b;
}

/* ---- device batch slots ---- */

static int slot_alloc(iv2_trainer *t, iv2_dev_batch *d, int B, int nv, const iv2_heads_dims *hd) {
    iv2_backend *be = t->be;
    const iv2_vit_config *vc = &t->student->cfg;
    size_t rv = (size_t)B * nv, rm = (size_t)B * (nv - 1);
    d->step = -1;
    d->B = B; d->nv = nv;
    d->frames = be->alloc(be, (size_t)B * vc->frames * vc->img * vc->img * 3);
    d->vis = be->alloc(be, sizeof(int32_t) * rv);
    d->rows = be->alloc(be, sizeof(int32_t) * rv);
    d->mae_pos = be->alloc(be, sizeof(int32_t) * (rm ? rm : 1));
    for (int k = 0; k < hd->n_clip; k++) d->clip[k] = be->alloc(be, rv * hd->clip_dim * be->esize);
    for (int k = 0; k < hd->n_mae; k++) d->mae[k] = be->alloc(be, rm * hd->mae_dim * be->esize);
    if (hd->use_final) d->final = be->alloc(be, (size_t)B * hd->final_dim * be->esize);
    d->hvis = iv2_calloc(rv, sizeof(int32_t));
    d->copy_start = be->event_create(be);
    d->copied = be->event_create(be);
    d->released = be->event_create(be);
    if (!d->frames || !d->mae_pos || !d->copied || !d->released) return iv2_err("cannot allocate a device batch slot");
    return 0;
}

static void slot_free(iv2_backend *be, iv2_dev_batch *d) {
    void *bufs[] = {d->frames, d->vis, d->rows, d->mae_pos, d->final};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) if (bufs[i]) be->free(be, bufs[i]);
    for (int k = 0; k < IV2_DISTILL_MAX_LAYERS; k++) {
        if (d->clip[k]) be->free(be, d->clip[k]);
        if (d->mae[k]) be->free(be, d->mae[k]);
    }
    iv2_event *ev[] = {d->copy_start, d->copied, d->released};
    for (int i = 0; i < 3; i++) if (ev[i]) be->event_destroy(be, ev[i]);
    free(d->hvis);
    memset(d, 0, sizeof *d);
}

static int slot_check(const iv2_dev_batch *d, const iv2_batch *b) {
    if (b->B < 1 || b->B > d->B || b->nv != d->nv)
        return iv2_err("step %lld: a batch of %d views x %d visible tokens, the trainer's are for %d x %d",
                       (long long)b->step, b->B, b->nv, d->B, d->nv);
    return 0;
}

/* Queue the copies of a loader batch (pinned, in the device's form) into slot d on the copy
 * stream; returns at once. They start once the compute stream is done with d's last batch. */
static void slot_stage(iv2_trainer *t, iv2_dev_batch *d, const iv2_batch *b) {
    iv2_backend *be = t->be;
    const iv2_vit_config *vc = &t->student->cfg;
    const iv2_heads_dims *hd = &t->heads->d;
    size_t B = (size_t)b->B, rv = B * b->nv, rm = B * (b->nv - 1), es = be->esize;
    be->event_wait(be, d->released, IV2_STREAM_COPY);
    be->event_record(be, d->copy_start, IV2_STREAM_COPY);
    be->upload_async(be, d->frames, b->frames, B * vc->frames * vc->img * vc->img * 3);
    be->upload_async(be, d->vis, b->vis, sizeof(int32_t) * rv);
    be->upload_async(be, d->rows, b->rows, sizeof(int32_t) * rv);
    be->upload_async(be, d->mae_pos, b->mae_pos, sizeof(int32_t) * rm);
    for (int k = 0; k < hd->n_clip; k++) be->upload_async(be, d->clip[k], b->tclip[k], rv * hd->clip_dim * es);
    for (int k = 0; k < hd->n_mae; k++) be->upload_async(be, d->mae[k], b->tmae[k], rm * hd->mae_dim * es);
    if (hd->use_final) be->upload_async(be, d->final, b->tfinal, B * hd->final_dim * es);
    be->event_record(be, d->copied, IV2_STREAM_COPY);
    memcpy(d->hvis, b->vis, sizeof(int32_t) * rv);
    d->step = b->step;
    d->S = b->B;
}

/* A batch built by hand (tests, bench: malloc'd, f32 targets) into slot d with the synchronous
 * uploads of the compute stream (converting the targets); the index rows are made here. */
static void slot_load(iv2_trainer *t, iv2_dev_batch *d, const iv2_batch *b) {
    iv2_backend *be = t->be;
    const iv2_vit_config *vc = &t->student->cfg;
    const iv2_heads_dims *hd = &t->heads->d;
    size_t B = (size_t)b->B, rv = B * b->nv, rm = B * (b->nv - 1);
    be->event_sync(be, d->copied);   /* no copy of an earlier batch still writing d */
    be->event_record(be, d->copy_start, IV2_STREAM_COMPUTE);
    int32_t *idx = iv2_malloc(sizeof(int32_t) * (rv + rm + 1));
    iv2_batch_index_rows(b->vis, b->B, b->nv, iv2_vit_tokens(vc), idx, idx + rv);
    be->upload_raw(be, d->frames, b->frames, B * vc->frames * vc->img * vc->img * 3);
    be->upload_raw(be, d->vis, b->vis, sizeof(int32_t) * rv);
    be->upload_raw(be, d->rows, idx, sizeof(int32_t) * rv);
    be->upload_raw(be, d->mae_pos, idx + rv, sizeof(int32_t) * rm);
    free(idx);
    for (int k = 0; k < hd->n_clip; k++) be->upload(be, d->clip[k], b->clip[k], rv * hd->clip_dim);
    for (int k = 0; k < hd->n_mae; k++) be->upload(be, d->mae[k], b->mae[k], rm * hd->mae_dim);
    if (hd->use_final) be->upload(be, d->final, b->final, B * hd->final_dim);
    be->event_record(be, d->copied, IV2_STREAM_COMPUTE);   /* in stream order already; for copy_s */
    memcpy(d->hvis, b->vis, sizeof(int32_t) * rv);
    d->step = b->step;
    d->S = b->B;
}

/* the memory plan at the start of a run: what the configured batch needs with and without
 * recompute, and the largest batch that fits in what the backend had free before we started */
static void print_memory_plan(const iv2_trainer *t, int nv, size_t avail, size_t total) {
    const iv2_vit_config *vc = &t->student->cfg;
    const iv2_heads_dims *hd = &t->heads->d;
    size_t es = t->be->esize, hp = t->heads->n_params, model;
    int B = iv2_dist_local_batch(t->cfg.batch) /* per rank */, R = t->student->recompute < vc->depth ? t->student->recompute : vc->depth, n = t->n_out;
    int keep = R == 0 && t->student->keep_normed;
    iv2_vit_plan p = iv2_vit_train_plan(vc, es, B, nv, R, keep);
    size_t act = batch_bytes(vc, hd, hp, n, es, B, nv, R, keep, &model);
    size_t act0 = batch_bytes(vc, hd, hp, n, es, B, nv, 0, 0, NULL);
    size_t actall = batch_bytes(vc, hd, hp, n, es, B, nv, vc->depth, 0, NULL);
    char h[10][16];
    iv2_info("memory plan (%s, %s): student weights %s, grads %s, AdamW %s; heads %s (params, grads, AdamW); "
             "student activations %s at batch %d x %d tokens with %d of %d blocks recomputed%s; with heads scratch, "
             "read-outs and 2 batch slots %s (%s recomputing none, %s all); total %s", t->be->name, iv2_dtype_name(t->be->dtype),
             human(h[0], p.weights), human(h[1], p.grads), human(h[2], p.adamw),
             human(h[3], model - p.weights - p.grads - p.adamw), human(h[4], p.activations), B, nv, R, vc->depth,
             keep ? " and each block keeping its normed inputs and GELU output" : "",
             human(h[5], act), human(h[6], act0), human(h[7], actall), human(h[8], model + act));
    if (!avail) { iv2_info("memory plan: the backend does not report its free memory; no largest batch"); return; }
    const iv2_distill_config *c = &t->cfg;
    int bmax = iv2_distill_largest_batch(c, hd->clip_dim, hd->mae_dim, hd->final_dim, nv, R, es, avail);
    int b0 = iv2_distill_largest_batch(c, hd->clip_dim, hd->mae_dim, hd->final_dim, nv, 0, es, avail);
    int ball = iv2_distill_largest_batch(c, hd->clip_dim, hd->mae_dim, hd->final_dim, nv, vc->depth, es, avail);
    iv2_info("memory plan: %s free of %s at start: the largest batch that fits is %d with %d blocks recomputed "
             "(%d recomputing none, %d recomputing all)", human(h[0], avail), human(h[1], total), bmax, R, b0, ball);
    if (model + act > avail)
        iv2_warn("memory plan: batch %d needs %s, more than the %s free", B, human(h[0], model + act), human(h[1], avail));
}

/* AdamW beside the next step's forward (distill.h, "the step beside the next forward"):
 * IV2_OPTIM_OVERLAP=1 turns it on, on a backend with a side stream */
static int optim_overlap(iv2_trainer *t) {
    const char *e = getenv("IV2_OPTIM_OVERLAP");
    return iv2_optim_set_overlap(&t->opt, e && !strcmp(e, "1"));
}

static void params_needed(void *ctx, size_t upto) { iv2_optim_wait_params(&((iv2_trainer *)ctx)->opt, 0, upto); }

/* the student's step in pieces of a block each (the stem with block 0, the final norm and the
 * pooling head with the last block), each waited for just before the forward reads it */
static int optim_pieces(iv2_trainer *t) {
    int depth = t->student->cfg.depth;   /* >= 1 (iv2_vit_config_check) */
    size_t *ends = iv2_malloc(sizeof(size_t) * (size_t)depth);
    for (int l = 0; l < depth; l++) ends[l] = iv2_vit_params_before(t->student, l + 1);   /* the last: n_elems */
    int rc = iv2_optim_set_pieces(&t->opt, 0, ends, depth);
    free(ends);
    if (rc) return -1;
    t->student->params_needed = params_needed;   /* its context set by forward_backward */
    return 0;
}

int iv2_trainer_init(iv2_trainer *t, const iv2_distill_config *c, int clip_dim, int mae_dim, int final_dim, int nv) {
    t->cfg = *c;
    iv2_vit_config vc;
    if (iv2_distill_config_check(c) || student_config(c, &vc) || iv2_dist_check_batch(c->batch)) return -1;
    t->cfg.drop_path = vc.drop_path;   /* resolved: the preset's unless the run config sets it */
    if (!t->be && !(t->be = iv2_backend_create(c->device, c->threads))) return -1;
    iv2_backend *be = t->be;
    int G = iv2_vit_grid(&vc), T = vc.frames / vc.tubelet;
    size_t mem_free = 0, mem_total = 0;   /* before we allocate anything big (memory plan) */
    if (be->mem_info) be->mem_info(be, &mem_free, &mem_total);
    t->student = iv2_vit_create(be, &vc);
    if (!t->student || iv2_vit_init_random(t->student, c->seed) || iv2_vit_alloc_grads(t->student)) return -1;
    /* auto: none on the CPU (RAM is rarely the limit and recompute costs a forward of every
     * block); on a GPU the fewest blocks that let the batch fit (iv2_distill_auto_recompute) */
    int R = c->recompute;
    if (R == IV2_RECOMPUTE_AUTO)
        R = be->dtype == IV2_F32 ? 0 : iv2_distill_auto_recompute(c, clip_dim, mae_dim, final_dim, nv, be->esize, mem_free);
    if (R < 0) return -1;
    t->student->recompute = R > vc.depth ? vc.depth : R;
    /* on a GPU with no block recomputed, each block also keeps its normed inputs and GELU output
     * where the plan leaves room (the same headroom); not on the CPU, where recomputing them costs
     * nothing measurable (bench_recompute: iv2-s 1.00x) and the memory is 29 % more */
    t->student->keep_normed = R == 0 && be->dtype != IV2_F32 &&
        iv2_distill_keep_normed_fits(c, clip_dim, mae_dim, final_dim, nv, be->esize, mem_free) == 1;
    int B = iv2_dist_local_batch(c->batch), ntok = 1 + T * G * G, eb = B * nv / ntok;   /* this rank's share */
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
        for (int j = 0; j < p->ndim; j++) q->shape[j] = p->shape[j];
        q->off = p->offset; q->n = p->numel;
        q->no_wd = p->no_wd || iv2_no_weight_decay(p->name, p->ndim);
    }
    if (iv2_optim_init(&t->opt, be) || optim_overlap(t)) return -1;
    iv2_optim_add(&t->opt, t->student->params, t->student->grads, t->student->n_elems, t->stab, t->student->n_param);
    iv2_optim_add(&t->opt, t->heads->params, t->heads->grads, t->heads->n_params, t->heads->table, t->heads->n_table);
    if (t->opt.overlap && optim_pieces(t)) return -1;
    t->n_out = readout_blocks(c, t->blocks);
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
    if (!be->upload_async || !be->event_create) return iv2_err("backend %s has no copy stream", be->name);
    for (int i = 0; i < 2; i++) if (slot_alloc(t, &t->slot[i], B, nv, &hd)) return -1;
    size_t rm = (size_t)B * (nv - 1);
    int32_t *mr = iv2_malloc(sizeof(int32_t) * (rm + 1));   /* the same for every batch: once, here */
    for (int b = 0; b < B; b++) for (int j = 0; j < nv - 1; j++) mr[(size_t)b * (nv - 1) + j] = b * nv + 1 + j;
    t->mae_rows = be->alloc(be, sizeof(int32_t) * (rm + 1));
    be->upload_raw(be, t->mae_rows, mr, sizeof(int32_t) * rm);
    free(mr);
    t->drop = iv2_calloc((size_t)2 * vc.depth * B, sizeof(float));
    t->cfg_json = iv2_distill_config_to_json(&t->cfg);
    t->mem_free = mem_free;
    t->mem_total = mem_total;
    return 0;
}

/* The pairings the config leaves to the cache (pairing.c), from the first shard's targets. */
static int pair_from_cache(iv2_distill_config *c, const char *cache_dirs, int depth) {
    if (!c->layers_auto) return 0;
    char dir[4096];
    size_t n = strcspn(cache_dirs, ",");
    if (n >= sizeof dir) return iv2_err("cache path too long");
    memcpy(dir, cache_dirs, n);
    dir[n] = 0;
    iv2_cache *cache;
    if (iv2_cache_open(&cache, dir, IV2_CACHE_RDONLY)) return -1;
    int nt = iv2_cache_n_targets(cache);
    const char *names[IV2_CACHE_MAX_TARGETS];
    for (int i = 0; i < nt && i < IV2_CACHE_MAX_TARGETS; i++) names[i] = iv2_cache_target_at(cache, i)->name;
    int rc = iv2_distill_pair_layers(c, names, nt < IV2_CACHE_MAX_TARGETS ? nt : IV2_CACHE_MAX_TARGETS, depth);
    iv2_cache_close(cache);
    return rc ? iv2_err_ctx("%s: default layer pairing", dir) : 0;
}

/* The training set's identity for the checkpoints: view and video counts, held-out views and an
 * FNV-1a hash of the training views' (shard, row, view) keys in order. A cache that grew or was
 * re-extracted with other rows changes it, and with it every epoch's data order. */
static char *data_json(const iv2_loader *L) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int64_t i = 0; i < L->n_train; i++) {
        uint64_t w[3] = {(uint64_t)L->set->view_shard[i], (uint64_t)L->set->view_key[i].row, L->set->view_key[i].view};
        const uint8_t *p = (const uint8_t *)w;
        for (size_t j = 0; j < sizeof w; j++) h = (h ^ p[j]) * 0x100000001b3ULL;
    }
    char buf[256];
    snprintf(buf, sizeof buf, "{\"train_views\":%lld,\"train_videos\":%lld,\"eval_views\":%lld,\"keys\":\"%016llx\"}",
             (long long)L->n_train, (long long)L->n_videos, (long long)L->n_eval, (unsigned long long)h);
    return iv2_strdup(buf);
}

/* a resumed run must see the training set its checkpoint was trained on (any: warn only) */
static int check_resume_data(const iv2_trainer *t, const char *path, int any) {
    char *old = iv2_ckpt_meta(path, "iv2.data");
    int rc = 0;
    if (!old) iv2_warn("%s records no training set (an older checkpoint): the cache is not checked", path);
    else if (iv2_meta_compare_where(t->data_json, old, NULL, "in the checkpoint")) {
        if (any) iv2_warn("resume from %s on another training set (%s): the data order changes", path, iv2_errmsg());
        else rc = iv2_err_ctx("resume from %s: the training set differs (the cache grew, shrank or was re-extracted, "
                              "and the data order would change; --resume-any-cache continues anyway)", path);
    }
    free(old);
    return rc;
}

/* steps / epochs may change on resume (a run extended): the cosine schedule is then recomputed
 * over the new length, and the learning rate at the resumed step moves; say by how much */
static void warn_schedule_change(const iv2_trainer *t, const char *old_json) {
    iv2_distill_config oc = t->cfg;
    iv2_plan op;
    if (iv2_distill_config_parse(&oc, old_json, "checkpoint") || iv2_plan_make(&op, &oc, t->plan.train_videos)) {
        iv2_err_clear();
        return;
    }
    if (op.total_steps == t->plan.total_steps && op.warmup_steps == t->plan.warmup_steps) return;
    iv2_warn("the run's length changed (%lld steps, warmup %lld; the checkpoint's run: %lld, warmup %lld): the learning "
             "rate follows the new schedule from step %lld (%.3g there, %.3g on the old one)",
             (long long)t->plan.total_steps, (long long)t->plan.warmup_steps, (long long)op.total_steps,
             (long long)op.warmup_steps, (long long)t->step, iv2_lr_at(&t->plan, t->step), iv2_lr_at(&op, t->step));
}

int iv2_trainer_open(iv2_trainer *t, const char *cache_dirs, const iv2_distill_config *c0, const char *out_dir, int resume) {
    memset(t, 0, sizeof *t);
    iv2_distill_config cfg = *c0, *c = &cfg;
    snprintf(t->out_dir, sizeof t->out_dir, "%s", out_dir);
    iv2_vit_config vc;
    iv2_distill_config bare = cfg;   /* the student alone: the pairings still to derive left out */
    if (bare.layers_auto & IV2_PAIR_CLIP) bare.n_clip = 0;
    if (bare.layers_auto & IV2_PAIR_MAE) bare.n_mae = 0;
    if (iv2_distill_config_check(c) || student_config(&bare, &vc) || pair_from_cache(c, cache_dirs, vc.depth) ||
        student_config(c, &vc))
        return -1;   /* the tool's die() names iv2-distill */
    t->cfg = *c;
    char pairing[1024];
    iv2_distill_pairing_str(c, pairing, sizeof pairing);
    iv2_info("layer pairing (teacher target -> student block): %s", pairing);
    int G = iv2_vit_grid(&vc), T = vc.frames / vc.tubelet;
    if (iv2_loader_open(&t->L, cache_dirs, c, vc.frames, vc.img, T, G * G)) goto fail;
    if (c->eval_views >= 0 && iv2_plan_make(&t->plan, c, t->L.n_videos)) goto fail;
    if (iv2_trainer_init(t, c, t->L.clip_dim, t->L.mae_dim, t->L.final_dim, t->L.nv)) goto fail;
    t->data_json = data_json(&t->L);
    t->L.be = t->be;   /* pinned batches in the backend's form */
    if (c->eval_views >= 0) print_memory_plan(t, t->L.nv, t->mem_free, t->mem_total);
    else iv2_info("eval on %s: at batch %d x %d tokens a view", t->be->name, c->batch, t->L.nv);   /* not the training plan */
    if (mkdir(out_dir, 0755) && errno != EEXIST) { iv2_err("%s: cannot create the run folder", out_dir); goto fail; }
    if (resume) {
        char path[4096];
        int64_t step;
        int r = iv2_ckpt_latest(out_dir, path, sizeof path, &step);
        if (r < 0) goto fail;
        if (r == 1) iv2_info("resume: no checkpoint in %s, starting from step 0", out_dir);
        else {
            char *old = NULL;
            while (iv2_ckpt_load(path, t->student, t->heads, &t->opt, &t->step, &old)) {
                /* a damaged file (a disk error; the digest or the header says so, before anything was
                 * loaded): the checkpoint before it, which keep_ckpt kept. Every rank sees the same
                 * files and goes back the same way; rank 0 sets the damaged one aside at its next write */
                if (!strstr(iv2_errmsg(), "corrupt") || strstr(iv2_errmsg(), "cannot open")) goto fail;
                char keep[2048], prev[4096];
                snprintf(keep, sizeof keep, "%s", iv2_errmsg());
                int64_t ps;
                int rb = iv2_ckpt_before(out_dir, step, prev, sizeof prev, &ps);
                if (rb) {
                    if (rb == 1) iv2_err("%s; no checkpoint before it to go back to", keep);
                    goto fail;
                }
                iv2_warn("%s; resuming from the checkpoint before it, %s", keep, prev);
                if (!t->damaged) t->damaged = iv2_strdup(path);   /* the newest: it outranks the rest */
                snprintf(path, sizeof path, "%s", prev);
                step = ps;
            }
            if (old && iv2_meta_compare_where(t->cfg_json, old, resume_free, "in the checkpoint")) {
                iv2_err_ctx("resume from %s: the run config differs", path);
                free(old);
                goto fail;
            }
            if (old) warn_schedule_change(t, old);
            free(old);
            if (check_resume_data(t, path, resume == 2)) goto fail;
            iv2_info("resumed from %s at step %lld", path, (long long)t->step);
        }
    }
    return 0;
fail:
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
        for (int i = 0; i < 2; i++) slot_free(be, &t->slot[i]);
        if (t->mae_rows) be->free(be, t->mae_rows);
        if (t->opt.acc) iv2_optim_free(&t->opt);
    }
    iv2_heads_free(t->heads);
    iv2_vit_free(t->student);
    if (be) iv2_backend_destroy(be);
    free(t->stab);
    free(t->drop);
    free(t->cfg_json);
    free(t->data_json);
    free(t->damaged);
    memset(t, 0, sizeof *t);
}

/* timm DropPath with dpr = linspace(0, rate, depth), one draw per branch (the official block
 * calls DropPath twice): per block, branch and sample keep with 1 - dpr[l], scaled by 1 / keep;
 * drawn from (seed, step, block, branch) so a resumed run draws the same. Fills t->drop
 * [2][depth][B] (attention branch, then MLP branch); NULL when there is no drop path. */
const float *iv2_trainer_drop_scales(iv2_trainer *t, int64_t step, int B) {
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
            int first = iv2_dist_rank() * B, Bg = B * iv2_dist_world();   /* draws of the global batch, our slice */
            for (int s = 0; s < Bg; s++) {
                float v = p <= 0 ? 1.0f : iv2_rng_uniform(&r) < keep ? (float)(1.0 / keep) : 0.0f;
                if (s >= first && s < first + B) d[s - first] = v;
            }
        }
    return t->drop;
}

/* Each head's forward, loss rows and backward on slot d's indices and targets; the loss rows of
 * all heads are read back once, after the last head (a host wait per head left the GPU idle
 * between heads) */
static int heads_loss(iv2_trainer *t, const iv2_dev_batch *d, int backward, iv2_loss *L) {
    const iv2_distill_config *c = &t->cfg;
    int B = d->S, nv = d->nv;
    double ml_clip[IV2_DISTILL_MAX_LAYERS] = {0}, ml_mae[IV2_DISTILL_MAX_LAYERS] = {0}, ml_fin = 0;
    iv2_heads_defer(t->heads);
    int rc = 0;
    float sc = iv2_loss_scale(c->alpha_clip, c->n_clip, (int64_t)B * nv);
    for (int k = 0; k < c->n_clip && !rc; k++) {
        int o = t->clip_out[k];
        rc = iv2_heads_clip_dev(t->heads, k, t->out[o], backward ? t->dout[o] : NULL, d->vis, B * nv, d->clip[k], sc,
                                &ml_clip[k], NULL);
    }
    sc = iv2_loss_scale(c->alpha_mae, c->n_mae, (int64_t)B * (nv - 1));
    for (int k = 0; k < c->n_mae && !rc; k++) {
        int o = t->mae_out[k];
        rc = iv2_heads_mae_dev(t->heads, k, t->out[o], backward ? t->dout[o] : NULL, d->mae_pos, t->mae_rows,
                               B * (nv - 1), d->mae[k], sc, &ml_mae[k], NULL);
    }
    if (c->use_final && !rc)
        rc = iv2_heads_final_dev(t->heads, t->pooled, backward ? t->dpooled : NULL, B, d->final,
                                 iv2_loss_scale(c->alpha_final, 1, B), &ml_fin, NULL);
    iv2_heads_collect(t->heads);   /* also after a failure: no deferral is left behind */
    if (rc) return -1;
    /* summed in the order the per-head readback summed them */
    for (int k = 0; k < c->n_clip; k++) L->clip += ml_clip[k] / c->n_clip;
    for (int k = 0; k < c->n_mae; k++) L->mae += ml_mae[k] / c->n_mae;
    if (c->use_final) L->final = ml_fin;
    return 0;
}

/* Forward, loss and (with backward) the gradients of the batch in slot d. The compute stream
 * waits for d's copies before its first op; the heads are the last to read d, so d is released
 * after them and the next copies into it may run beside the student backward. */
static int forward_backward(iv2_trainer *t, iv2_dev_batch *d, int backward) {
    iv2_backend *be = t->be;
    const iv2_distill_config *c = &t->cfg;
    const iv2_vit_config *vc = &t->student->cfg;
    int B = d->S, nv = d->nv, C = vc->width;
    int64_t step = d->step;
    for (int i = 0; i < t->n_out; i++) be->memset0(be, t->dout[i], (size_t)B * nv * C * be->esize);
    be->memset0(be, t->dpooled, (size_t)B * vc->pool_dim * be->esize);
    be->event_wait(be, d->copied, IV2_STREAM_COMPUTE);   /* the batch is on the device */
    iv2_vit_io io;
    memset(&io, 0, sizeof io);
    io.frames = d->frames; io.S = B; io.vis = d->hvis; io.vis_rows = d->rows; io.n_vis = nv;
    io.drop = iv2_trainer_drop_scales(t, step, B);
    io.drop_mlp = !io.drop ? NULL : t->drop_override ? t->drop_mlp_override : io.drop + (size_t)vc->depth * B;
    io.n_out = t->n_out;
    for (int i = 0; i < t->n_out; i++) { io.blocks[i] = t->blocks[i]; io.out[i] = t->out[i]; }
    io.pooled = c->use_final ? t->pooled : NULL;
    t->student->params_needed_ctx = t;   /* where the trainer is now: a caller may have moved the struct */
    int rc = iv2_vit_forward_train(t->student, &io) ? iv2_err_ctx("step %lld: student forward", (long long)step) : 0;
    /* the last step's AdamW, when it runs beside the forward (optim_overlap), reads the grads and
     * writes the heads: all of it before the grads are zeroed */
    iv2_optim_join(&t->opt);
    iv2_vit_zero_grads(t->student);
    be->memset0(be, t->heads->grads, t->heads->n_params * be->esize);
    iv2_loss L = {0};
    if (!rc) rc = heads_loss(t, d, backward, &L);
    be->event_record(be, d->released, IV2_STREAM_COMPUTE);   /* even after a failure: no copy may wait on an older point */
    if (rc) return -1;
    iv2_loss_total(&L, c);
    t->loss = L;
    if (iv2_loss_check(&L, step)) return -1;
    if (backward && iv2_dist_grads_begin(t)) return -1;   /* heads' grads are final: their bucket starts */
    if (backward && iv2_vit_backward(t->student, &io, t->dout, c->use_final ? t->dpooled : NULL))
        return iv2_err_ctx("step %lld: student backward", (long long)step);
    return 0;
}

int iv2_trainer_forward_backward(iv2_trainer *t, const iv2_batch *b, int backward) {
    iv2_dev_batch *d = &t->slot[0];
    if (slot_check(d, b)) return -1;
    slot_load(t, d, b);
    return forward_backward(t, d, backward);
}

/* the rest of a step after its backward: the gradient average over ranks, norm, clip, AdamW */
static int finish_step(iv2_trainer *t, int64_t step) {
    const iv2_distill_config *c = &t->cfg;
    if (iv2_dist_grads_end(t)) return -1;   /* averaged over ranks */
    t->grad_norm = iv2_optim_grad_norm(&t->opt);
    if (!isfinite(t->grad_norm)) return iv2_err("step %lld: gradient norm is not finite; stopping, the last good checkpoint is kept", (long long)step);
    t->lr = iv2_lr_at(&t->plan, step);
    iv2_optim_step(&t->opt, t->lr, c, step + 1, iv2_clip_coef(t->grad_norm, c->clip_grad));
    t->step = step + 1;
    return 0;
}

int iv2_trainer_step(iv2_trainer *t, const iv2_batch *b) {
    if (iv2_trainer_forward_backward(t, b, 1)) return -1;
    return finish_step(t, b->step);
}

int iv2_trainer_step_loaded(iv2_trainer *t, int64_t step) {
    iv2_dev_batch *d = &t->slot[0];
    d->step = step;
    if (forward_backward(t, d, 1)) return -1;
    return finish_step(t, step);
}

/* The loader's batch of `step` into slot d (copies queued, not waited for); the host's wait for
 * the loader is added to *wait. The loader's previous batch goes back to its prefetch thread
 * here, so its copies (into either slot) must be done first. */
static int fetch(iv2_trainer *t, int64_t step, iv2_dev_batch *d, double *wait) {
    for (int i = 0; i < 2; i++) t->be->event_sync(t->be, t->slot[i].copied);
    double t0 = iv2_now();
    iv2_batch *b;
    int rc = iv2_loader_next(&t->L, step, &b);
    *wait += iv2_now() - t0;
    if (rc || slot_check(d, b)) return -1;
    if (b->be == t->be && b->rows) slot_stage(t, d, b);
    else slot_load(t, d, b);   /* a loader without the backend (not the trainer's own) */
    return 0;
}

static int save(iv2_trainer *t) {
    iv2_optim_join(&t->opt);
    if (t->damaged && iv2_dist_rank() == 0) {   /* before the write: pruning would keep it as the newest */
        char aside[4200];
        snprintf(aside, sizeof aside, "%s.damaged", t->damaged);
        if (rename(t->damaged, aside) == 0) iv2_warn("set the damaged checkpoint aside as %s", aside);
        else iv2_warn("cannot set %s aside (%s): remove it, or keep_ckpt may keep it over newer ones", t->damaged,
                      strerror(errno));
    }
    free(t->damaged);
    t->damaged = NULL;
    if (iv2_dist_check_weights(t)) return -1;
    int rc = iv2_dist_rank() == 0 ? iv2_ckpt_save(t->out_dir, t->step, t->student, t->heads, &t->opt, t->cfg_json, t->data_json, t->cfg.keep_ckpt) : 0;
    return iv2_dist_bcast_rc(rc, "checkpoint");   /* rank 0 writes; the others learn whether it worked */
}

/* End of a run: steps, step time and the fraction of it the host spent waiting for the loader's
 * batch (with prefetch it should be near 0), and the batches' copy time on the copy stream (run
 * beside the compute), on stderr and as a "summary" line. */
static void summary(const iv2_trainer *t, iv2_metrics *m, int64_t steps, double sum_step, double sum_wait,
                    double sum_copy) {
    double frac = sum_step > 0 ? sum_wait / sum_step : 0, vps = sum_step > 0 ? (double)t->cfg.batch * steps / sum_step : 0;
    iv2_info("%lld steps in %.2f s (%.4g s/step, %.4g views/s on %s); waiting for data %.3g s, %.1f%% of step time; "
             "copies %.3g s on the copy stream", (long long)steps, sum_step, sum_step / steps, vps, t->be->name, sum_wait,
             100 * frac, sum_copy);
    iv2_metrics_write(m, "summary", "\"steps\":%lld,\"step_s\":%.6g,\"wait_s\":%.6g,\"wait_frac\":%.4f,\"copy_s\":%.6g,"
                      "\"views_s\":%.4g,\"device\":\"%s\"", (long long)steps, sum_step, sum_wait, frac, sum_copy, vps,
                      t->be->name);
}

static volatile sig_atomic_t stop_request;   /* the first stop signal, from a handler */

void iv2_trainer_request_stop(int sig) {
    if (!stop_request) stop_request = sig;
}

static int run_steps(iv2_trainer *t, int64_t max_steps) {
    const iv2_distill_config *c = &t->cfg;
    int64_t end = t->plan.total_steps;
    if (max_steps > 0 && t->step + max_steps < end) end = t->step + max_steps;
    t->L.prefetch_end = end;   /* no batch built past the last step of this call */
    if (t->step >= t->plan.total_steps) {   /* a finished run, resumed: nothing to do, nothing logged */
        if (iv2_dist_rank() == 0)
            iv2_info("%s: the run is complete (step %lld of %lld): nothing to do (raise steps or epochs to go on)",
                     t->out_dir, (long long)t->step, (long long)t->plan.total_steps);
        return 0;
    }
    char path[2300];
    snprintf(path, sizeof path, "%s/metrics.jsonl", t->out_dir);
    iv2_metrics m;
    memset(&m, 0, sizeof m);
    if (iv2_dist_rank() == 0 && iv2_metrics_open(&m, path)) return -1;   /* only rank 0 writes files */
    if (t->step == 0) {
        char pairing[1024];
        iv2_distill_pairing_str(c, pairing, sizeof pairing);
        iv2_metrics_write(&m, "start", "\"config\":%s,\"train_views\":%lld,\"train_videos\":%lld,\"eval_views\":%lld,\"steps\":%lld,"
                          "\"steps_per_epoch\":%lld,\"warmup_steps\":%lld,\"peak_lr\":%.6g,\"student_params\":%zu,"
                          "\"head_params\":%zu,\"pairing\":\"%s\"", t->cfg_json, (long long)t->L.n_train, (long long)t->L.n_videos, (long long)t->L.n_eval,
                          (long long)t->plan.total_steps, (long long)t->plan.steps_per_epoch,
                          (long long)t->plan.warmup_steps, t->plan.peak_lr, t->student->n_elems, t->heads->n_params, pairing);
    } else   /* the step lines from here on supersede any an interrupted invocation logged past its checkpoint */
        iv2_metrics_write(&m, "resume", "\"step\":%lld,\"steps\":%lld", (long long)t->step, (long long)t->plan.total_steps);
    iv2_progress pr;
    iv2_progress_start(&pr, "steps", t->plan.total_steps, t->step);
    if (c->log_every > 0) pr.interval = 0;   /* every log_every steps; 0 = log.h's timing */
    int64_t last_saved = t->step, first = t->step;
    int rc = 0;
    double ema = 0, sum_step = 0, sum_wait = 0, sum_copy = 0;   /* this invocation's step, data-wait, copy time */
    int ahead = !t->no_stage_ahead;
    int64_t staged = -1;   /* the step whose batch the last step copied ahead (into slot[step % 2]) */
    while (t->step < end) {
        int64_t s = t->step;
        double t0 = iv2_now(), wait = 0;   /* the step's time includes its waits for the loader */
        iv2_dev_batch *d = &t->slot[ahead ? s % 2 : 0];
        if (staged != s && fetch(t, s, d, &wait)) { rc = -1; break; }
        if (forward_backward(t, d, 1)) { rc = -1; break; }
        /* the student backward is queued: copy the next batch into the other slot beside it */
        if (ahead && s + 1 < end) {
            if (fetch(t, s + 1, &t->slot[(s + 1) % 2], &wait)) { rc = -1; break; }
            staged = s + 1;
        }
        if (finish_step(t, s)) { rc = -1; break; }
        t->copy_s = t->be->event_seconds(t->be, d->copy_start, d->copied);   /* done: the step waited for them */
        double dt = iv2_now() - t0;
        ema = ema == 0 ? dt : 0.9 * ema + 0.1 * dt;
        sum_step += dt;
        sum_wait += wait;
        sum_copy += t->copy_s;
        iv2_metrics_write(&m, "step", "\"step\":%lld,\"epoch\":%lld,\"loss\":%.7g,\"clip\":%.7g,\"final\":%.7g,"
                          "\"mae\":%.7g,\"grad_norm\":%.6g,\"lr\":%.6g,\"views_s\":%.4g,\"tokens_s\":%.4g,"
                          "\"step_s\":%.4g,\"wait_s\":%.4g,\"wait_frac\":%.4f,\"copy_s\":%.4g", (long long)s,
                          (long long)(s / t->plan.steps_per_epoch), t->loss.total, t->loss.clip, t->loss.final,
                          t->loss.mae, t->grad_norm, t->lr, c->batch / dt, (double)c->batch * t->L.nv / dt, dt, wait,
                          dt > 0 ? wait / dt : 0.0, t->copy_s);
        char extra[160];
        snprintf(extra, sizeof extra, "loss %.4f lr %.3g |g| %.3g %.2f views/s", t->loss.total, t->lr, t->grad_norm, c->batch / ema);
        if (iv2_dist_rank() == 0 && (c->log_every <= 0 || t->step % c->log_every == 0 || t->step == end))
            iv2_progress_update(&pr, t->step, extra);   /* rank 0 alone prints progress (docs/distill.md) */
        /* the eval before the checkpoint of the same step: a run killed between the two redoes both
         * on resume (else the eval of that step would be lost) */
        if (c->eval_every > 0 && t->step % c->eval_every == 0 && t->L.n_eval > 0 && iv2_dist_rank() == 0) {
            char *js;
            if (iv2_trainer_eval(t, &js)) { rc = -1; break; }
            iv2_metrics_write(&m, "eval", "\"step\":%lld,\"cos\":%s", (long long)t->step, js);
            free(js);
        }
        if (c->ckpt_every > 0 && t->step % c->ckpt_every == 0) {
            if (save(t)) { rc = -1; break; }
            last_saved = t->step;
        }
        int sig = iv2_dist_max_int(stop_request);   /* a collective only with several ranks */
        if (sig && t->step < end) { t->stopped_by = sig; break; }
    }
    if (rc == 0 && t->step != last_saved && save(t)) rc = -1;
    if (rc) {   /* the metrics end with the reason too (a non-finite loss, a full disk) */
        char ek[4200];
        iv2_metrics_write(&m, "failed", "\"step\":%lld,\"error\":\"%s\"", (long long)t->step,
                          iv2_json_escape(ek, sizeof ek, iv2_errmsg()));
    }
    if (rc == 0 && t->stopped_by) {
        iv2_metrics_write(&m, "stopped", "\"step\":%lld,\"signal\":%d", (long long)t->step, t->stopped_by);
        iv2_info("stopped by signal %d at step %lld; the checkpoint of that step is written (--resume continues)",
                 t->stopped_by, (long long)t->step);
    }
    if (iv2_dist_rank() == 0)
        iv2_progress_end(&pr, rc || t->stopped_by ? "stopped" : t->step < t->plan.total_steps ? "paused at --max-steps "
                         "(--resume goes on)" : "done");
    if (rc == 0 && t->step > first) summary(t, &m, t->step - first, sum_step, sum_wait, sum_copy);
    iv2_metrics_close(&m);
    return rc;
}

int iv2_trainer_run(iv2_trainer *t, int64_t max_steps) {
    int rc = run_steps(t, max_steps);
    /* no thread of the loader outlives the call: the caller may move the trainer (the threads
     * would keep its old address) or close its cache; the next call starts the thread again */
    iv2_loader_stop_prefetch(&t->L);
    return rc;
}
