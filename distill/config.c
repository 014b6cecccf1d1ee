/* config.c: the run config. Defaults are InternVideo2-1B stage 1 (scripts/pretraining/1B_pt.sh,
 * run_pretraining.py); docs/distill.md lists every key. The derived plan (steps, warmup, LRs)
 * and the schedule live here too, since they are pure functions of the config. */
#include "distill.h"
#include "err.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void iv2_distill_config_default(iv2_distill_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->student, sizeof c->student, "iv2-1b");
    c->n_clip = 6;   /* InternViT 42..47 <-> student 34..39 */
    for (int i = 0; i < 6; i++) { c->clip_teacher[i] = 42 + i; c->clip_student[i] = 34 + i; }
    c->n_mae = 4;    /* VideoMAE 36..39 <-> student 36..39 */
    for (int i = 0; i < 4; i++) { c->mae_teacher[i] = 36 + i; c->mae_student[i] = 36 + i; }
    c->layers_auto = 0;   /* iv2-distill train sets IV2_PAIR_CLIP | IV2_PAIR_MAE: the pairings from the cache */
    c->use_final = 1;
    c->alpha_clip = c->alpha_final = c->alpha_mae = 1.0f;
    c->mask = IV2_MASK_ATTENTION;
    c->mask_ratio = 0.8f;
    c->batch = 4096;
    c->epochs = 301;
    c->steps = 0;
    c->base_lr = 1.5e-4f;
    c->base_min_lr = 1e-5f;
    c->warmup_epochs = 40;
    c->warmup_steps = -1;
    c->beta1 = 0.9f; c->beta2 = 0.98f; c->eps = 1e-6f;
    c->weight_decay = 0.05f;
    c->clip_grad = 3.0f;
    c->drop_path = -1;   /* the student preset's: iv2-1b 0.25 (the recipe), iv2-6b 0.3 */
    c->seed = 0;
    c->ckpt_every = 1000;
    c->keep_ckpt = 3;
    c->eval_every = 0;
    c->eval_views = 0;
    c->log_every = 10;
    c->threads = 0;
    snprintf(c->device, sizeof c->device, "cpu");
    c->prefetch = 1;
    c->loader_threads = 0;
    c->recompute = IV2_RECOMPUTE_AUTO;
}

static const char *mask_name(iv2_mask_type t) {
    return t == IV2_MASK_RANDOM ? "random" : t == IV2_MASK_TUBE ? "tube" : "attention";
}

/* "layers" arrays: [[teacher, student], ...] */
static int parse_pairs(const cJSON *a, int *n, int *teacher, int *student, const char *key) {
    if (!cJSON_IsArray(a)) return iv2_err("\"%s\": expected an array of [teacher_block, student_block] pairs", key);
    int k = cJSON_GetArraySize(a);
    if (k > IV2_DISTILL_MAX_LAYERS) return iv2_err("\"%s\": %d pairs, at most %d", key, k, IV2_DISTILL_MAX_LAYERS);
    for (int i = 0; i < k; i++) {
        const cJSON *p = cJSON_GetArrayItem(a, i);
        if (!cJSON_IsArray(p) || cJSON_GetArraySize(p) != 2 || !cJSON_IsNumber(cJSON_GetArrayItem(p, 0)) ||
            !cJSON_IsNumber(cJSON_GetArrayItem(p, 1)))
            return iv2_err("\"%s\"[%d]: expected [teacher_block, student_block]", key, i);
        double t = cJSON_GetArrayItem(p, 0)->valuedouble, u = cJSON_GetArrayItem(p, 1)->valuedouble;
        if (t != floor(t) || u != floor(u)) return iv2_err("\"%s\"[%d]: block numbers are whole numbers", key, i);
        if (t < 0 || u < 0) return iv2_err("\"%s\"[%d]: negative block", key, i);
        if (t > 4096 || u > 4096) return iv2_err("\"%s\"[%d]: block %g is past any model's depth", key, i, t > u ? t : u);
        teacher[i] = (int)t;
        student[i] = (int)u;
    }
    *n = k;
    return 0;
}

/* a number for a float field: finite as a float (1e40 would be inf there) */
static int get_num(const cJSON *it, double *v) {
    if (!cJSON_IsNumber(it)) return iv2_err("\"%s\": expected a number", it->string);
    if (!isfinite((float)it->valuedouble)) return iv2_err("\"%s\": %g is beyond a float's range", it->string, it->valuedouble);
    *v = it->valuedouble;
    return 0;
}

/* a whole number in [lo, hi] (64.0 is 64): no silent truncation of 2.7 to 2, no overflow of the
 * field's type (1e12 into an int) */
static int get_int(const cJSON *it, double lo, double hi, double *v) {
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble))
        return iv2_err("\"%s\": expected a whole number", it->string);
    if (it->valuedouble < lo || it->valuedouble > hi)
        return iv2_err("\"%s\": %g is out of range [%.0f, %.0f]", it->string, it->valuedouble, lo, hi);
    *v = it->valuedouble;
    return 0;
}
#define INT_LIM 2147483647.0
#define I64_LIM 9007199254740992.0   /* 2^53: every whole number up to it is exact in JSON's doubles */

int iv2_distill_config_parse(iv2_distill_config *c, const char *json, const char *what) {
    cJSON *root = cJSON_Parse(json);
    if (!root) return iv2_err("%s: not valid JSON (near \"%.20s\")", what, cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() : "");
    if (!cJSON_IsObject(root)) { cJSON_Delete(root); return iv2_err("%s: expected a JSON object", what); }
    int rc = 0;
    for (const cJSON *it = root->child; it && rc == 0; it = it->next) {
        const char *k = it->string;
        double v = 0;
        for (const cJSON *e = root->child; e != it && rc == 0; e = e->next)   /* else the last one would win silently */
            if (!strcmp(e->string, k)) rc = iv2_err("key \"%s\" given twice", k);
        if (rc) break;
#define NUM(key, field, cast) else if (!strcmp(k, key)) { if ((rc = get_num(it, &v)) == 0) c->field = (cast)v; }
#define INT(key, field, cast, lo, hi) else if (!strcmp(k, key)) { if ((rc = get_int(it, lo, hi, &v)) == 0) c->field = (cast)v; }
        if (!strcmp(k, "student")) {
            iv2_vit_config pc;
            if (!cJSON_IsString(it) || strlen(it->valuestring) >= sizeof c->student) rc = iv2_err("\"student\": expected a preset name");
            else if (iv2_vit_preset(it->valuestring, &pc) || pc.arch != IV2_VIT_STUDENT)
                rc = iv2_err("\"student\": '%s' is not a student preset (iv2-tiny, iv2-s, iv2-b, iv2-l, iv2-1b, iv2-6b)",
                             it->valuestring);
            else snprintf(c->student, sizeof c->student, "%s", it->valuestring);
        } else if (!strcmp(k, "student_overrides")) {
            char *s = cJSON_PrintUnformatted(it);
            if (!cJSON_IsObject(it) || strlen(s) >= sizeof c->student_json) rc = iv2_err("\"student_overrides\": expected a (small) object");
            /* the run config's drop_path (default: the preset's) is the one key for it */
            else if (cJSON_GetObjectItemCaseSensitive(it, "drop_path"))
                rc = iv2_err("\"student_overrides\": drop_path is a key of the run config itself (\"drop_path\": %g at the top level)",
                             cJSON_GetObjectItemCaseSensitive(it, "drop_path")->valuedouble);
            else snprintf(c->student_json, sizeof c->student_json, "%s", s);
            cJSON_free(s);
        } else if (!strcmp(k, "clip_layers")) {
            rc = parse_pairs(it, &c->n_clip, c->clip_teacher, c->clip_student, k);
            c->layers_auto &= ~IV2_PAIR_CLIP;
        } else if (!strcmp(k, "mae_layers")) {
            rc = parse_pairs(it, &c->n_mae, c->mae_teacher, c->mae_student, k);
            c->layers_auto &= ~IV2_PAIR_MAE;
        }
        else if (!strcmp(k, "use_final")) {
            if (!cJSON_IsBool(it)) rc = iv2_err("\"use_final\": expected true or false");
            else c->use_final = cJSON_IsTrue(it);
        } else if (!strcmp(k, "prefetch")) {
            if (!cJSON_IsBool(it)) rc = iv2_err("\"prefetch\": expected true or false");
            else c->prefetch = cJSON_IsTrue(it);
        } else if (!strcmp(k, "recompute")) {
            if (cJSON_IsString(it) && !strcmp(it->valuestring, "auto")) c->recompute = IV2_RECOMPUTE_AUTO;
            else if (cJSON_IsString(it) && !strcmp(it->valuestring, "all")) c->recompute = IV2_RECOMPUTE_ALL;
            else if (cJSON_IsNumber(it) && it->valuedouble >= 0 && it->valuedouble < IV2_RECOMPUTE_ALL &&
                     it->valuedouble == (int)it->valuedouble)
                c->recompute = (int)it->valuedouble;
            else rc = iv2_err("\"recompute\": expected \"auto\", \"all\" or a block count >= 0");
        } else if (!strcmp(k, "mask")) {
            const char *s = cJSON_IsString(it) ? it->valuestring : "";
            if (!strcmp(s, "attention")) c->mask = IV2_MASK_ATTENTION;
            else if (!strcmp(s, "random")) c->mask = IV2_MASK_RANDOM;
            else if (!strcmp(s, "tube")) c->mask = IV2_MASK_TUBE;
            else rc = iv2_err("\"mask\": expected \"attention\", \"random\" or \"tube\"");
        } else if (!strcmp(k, "device")) {
            if (!cJSON_IsString(it) || strlen(it->valuestring) >= sizeof c->device) rc = iv2_err("\"device\": expected \"cpu\" or \"cuda[:N]\"");
            else snprintf(c->device, sizeof c->device, "%s", it->valuestring);
        }
        NUM("alpha_clip", alpha_clip, float) NUM("alpha_final", alpha_final, float) NUM("alpha_mae", alpha_mae, float)
        NUM("mask_ratio", mask_ratio, float) INT("batch", batch, int, -INT_LIM, INT_LIM)
        INT("epochs", epochs, int, 0, INT_LIM) INT("steps", steps, int64_t, -I64_LIM, I64_LIM)
        NUM("lr", base_lr, float) NUM("min_lr", base_min_lr, float)
        NUM("warmup_epochs", warmup_epochs, float) INT("warmup_steps", warmup_steps, int64_t, -I64_LIM, I64_LIM)
        NUM("beta1", beta1, float) NUM("beta2", beta2, float) NUM("eps", eps, float)
        NUM("weight_decay", weight_decay, float) NUM("clip_grad", clip_grad, float) NUM("drop_path", drop_path, float)
        INT("seed", seed, uint64_t, 0, I64_LIM) INT("ckpt_every", ckpt_every, int64_t, -I64_LIM, I64_LIM)
        INT("keep_ckpt", keep_ckpt, int, -INT_LIM, INT_LIM) INT("eval_every", eval_every, int64_t, -I64_LIM, I64_LIM)
        INT("eval_views", eval_views, int, 0, INT_LIM) INT("log_every", log_every, int, -INT_LIM, INT_LIM)
        INT("threads", threads, int, -INT_LIM, INT_LIM) INT("loader_threads", loader_threads, int, -INT_LIM, INT_LIM)
        else rc = iv2_err("unknown key \"%s\" (see docs/distill.md)", k);
#undef NUM
#undef INT
    }
    cJSON_Delete(root);
    if (rc) return iv2_err_ctx("%s", what);
    if (iv2_distill_config_check(c)) return iv2_err_ctx("%s", what);
    return 0;
}

int iv2_distill_config_load(iv2_distill_config *c, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return iv2_err("%s: cannot open config", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0 || n > (1 << 20)) { fclose(f); return iv2_err("%s: config larger than 1 MiB", path); }
    char *buf = iv2_malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    buf[got] = 0;
    int rc = iv2_distill_config_parse(c, buf, path);
    free(buf);
    return rc;
}

int iv2_distill_config_check(const iv2_distill_config *c) {
    if (c->batch < 1) return iv2_err("batch %d must be >= 1", c->batch);
    if (c->epochs < 1 && c->steps <= 0) return iv2_err("need epochs >= 1 or steps >= 1");
    if (c->steps < 0) return iv2_err("steps %lld must be >= 0 (0: epochs decide)", (long long)c->steps);
    if (!(c->warmup_epochs >= 0) || c->warmup_steps < -1)
        return iv2_err("warmup_epochs must be >= 0 and warmup_steps >= 0 (-1: warmup_epochs decide)");
    if (c->ckpt_every < 0 || c->eval_every < 0) return iv2_err("ckpt_every and eval_every must be >= 0 (0: never during the run)");
    if (c->threads < 0) return iv2_err("threads %d must be >= 0 (0: all cores)", c->threads);
    if (!(c->alpha_clip >= 0 && c->alpha_final >= 0 && c->alpha_mae >= 0)) return iv2_err("alpha_clip, alpha_final and alpha_mae must be >= 0");
    if (!(c->mask_ratio >= 0 && c->mask_ratio < 1)) return iv2_err("mask_ratio %g must be in [0, 1)", c->mask_ratio);
    if (!(c->base_lr >= 0) || !(c->base_min_lr >= 0)) return iv2_err("lr and min_lr must be >= 0");
    if (!(c->beta1 >= 0 && c->beta1 < 1 && c->beta2 >= 0 && c->beta2 < 1)) return iv2_err("betas must be in [0, 1)");
    if (!(c->eps > 0)) return iv2_err("eps must be > 0");
    if (!(c->weight_decay >= 0)) return iv2_err("weight_decay must be >= 0");
    if (!(c->clip_grad >= 0)) return iv2_err("clip_grad must be >= 0 (0 = off)");
    if (!(c->drop_path == -1 || (c->drop_path >= 0 && c->drop_path < 1)))
        return iv2_err("drop_path %g must be in [0, 1) (or -1: the student preset's)", c->drop_path);
    if (c->n_clip + c->n_mae == 0 && !c->use_final) return iv2_err("no targets: clip_layers, mae_layers and use_final are all empty");
    if (c->keep_ckpt < 1) return iv2_err("keep_ckpt must be >= 1");
    if (c->log_every < 0) return iv2_err("log_every must be >= 0 (0: a progress line every few seconds)");
    if (c->loader_threads < 0 || c->loader_threads > 64) return iv2_err("loader_threads %d must be in [0, 64] (0 = auto)", c->loader_threads);
    if (c->eval_views < -1) return iv2_err("eval_views must be >= 0");   /* -1: iv2-distill eval's own (the whole cache) */
    return 0;
}

char *iv2_distill_config_to_json(const iv2_distill_config *c) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "student", c->student);
    if (c->student_json[0]) cJSON_AddItemToObject(o, "student_overrides", cJSON_Parse(c->student_json));
    cJSON *a = cJSON_AddArrayToObject(o, "clip_layers");
    for (int i = 0; i < c->n_clip; i++) {
        int p[2] = {c->clip_teacher[i], c->clip_student[i]};
        cJSON_AddItemToArray(a, cJSON_CreateIntArray(p, 2));
    }
    a = cJSON_AddArrayToObject(o, "mae_layers");
    for (int i = 0; i < c->n_mae; i++) {
        int p[2] = {c->mae_teacher[i], c->mae_student[i]};
        cJSON_AddItemToArray(a, cJSON_CreateIntArray(p, 2));
    }
    cJSON_AddBoolToObject(o, "use_final", c->use_final);
    cJSON_AddNumberToObject(o, "alpha_clip", c->alpha_clip);
    cJSON_AddNumberToObject(o, "alpha_final", c->alpha_final);
    cJSON_AddNumberToObject(o, "alpha_mae", c->alpha_mae);
    cJSON_AddStringToObject(o, "mask", mask_name(c->mask));
    cJSON_AddNumberToObject(o, "mask_ratio", c->mask_ratio);
    cJSON_AddNumberToObject(o, "batch", c->batch);
    cJSON_AddNumberToObject(o, "epochs", c->epochs);
    cJSON_AddNumberToObject(o, "steps", (double)c->steps);
    cJSON_AddNumberToObject(o, "lr", c->base_lr);
    cJSON_AddNumberToObject(o, "min_lr", c->base_min_lr);
    cJSON_AddNumberToObject(o, "warmup_epochs", c->warmup_epochs);
    cJSON_AddNumberToObject(o, "warmup_steps", (double)c->warmup_steps);
    cJSON_AddNumberToObject(o, "beta1", c->beta1);
    cJSON_AddNumberToObject(o, "beta2", c->beta2);
    cJSON_AddNumberToObject(o, "eps", c->eps);
    cJSON_AddNumberToObject(o, "weight_decay", c->weight_decay);
    cJSON_AddNumberToObject(o, "clip_grad", c->clip_grad);
    cJSON_AddNumberToObject(o, "drop_path", c->drop_path);
    cJSON_AddNumberToObject(o, "seed", (double)c->seed);
    cJSON_AddNumberToObject(o, "ckpt_every", (double)c->ckpt_every);
    cJSON_AddNumberToObject(o, "keep_ckpt", c->keep_ckpt);
    cJSON_AddNumberToObject(o, "eval_every", (double)c->eval_every);
    cJSON_AddNumberToObject(o, "eval_views", c->eval_views);
    cJSON_AddNumberToObject(o, "log_every", c->log_every);
    cJSON_AddNumberToObject(o, "threads", c->threads);
    cJSON_AddStringToObject(o, "device", c->device);
    cJSON_AddBoolToObject(o, "prefetch", c->prefetch);
    cJSON_AddNumberToObject(o, "loader_threads", c->loader_threads);
    if (c->recompute == IV2_RECOMPUTE_AUTO) cJSON_AddStringToObject(o, "recompute", "auto");
    else if (c->recompute >= IV2_RECOMPUTE_ALL) cJSON_AddStringToObject(o, "recompute", "all");
    else cJSON_AddNumberToObject(o, "recompute", c->recompute);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    char *r = iv2_strdup(s);
    cJSON_free(s);
    return r;
}

/* Steps per epoch = videos // batch (drop_last, as the DistributedSampler in the recipe; an epoch
 * is one pass over the videos, whatever number of views the cache holds of each). */
int iv2_plan_make(iv2_plan *p, const iv2_distill_config *c, int64_t train_videos) {
    memset(p, 0, sizeof *p);
    p->train_videos = train_videos;
    p->steps_per_epoch = train_videos / c->batch;
    if (p->steps_per_epoch < 1)
        return iv2_err("%lld training videos are fewer than one batch of %d", (long long)train_videos, c->batch);
    p->total_steps = c->steps > 0 ? c->steps : (int64_t)c->epochs * p->steps_per_epoch;
    p->warmup_steps = c->warmup_steps >= 0 ? c->warmup_steps : (int64_t)(c->warmup_epochs * p->steps_per_epoch);
    if (p->warmup_steps > p->total_steps) p->warmup_steps = p->total_steps;
    p->peak_lr = c->base_lr * c->batch / 256.0f;
    p->min_lr = c->base_min_lr * c->batch / 256.0f;
    return 0;
}

/* utils.cosine_scheduler: warmup = np.linspace(0, peak, W) (endpoint included), then the cosine
 * over the remaining T - W steps with j counted from the end of warmup. */
float iv2_lr_at(const iv2_plan *p, int64_t step) {
    int64_t W = p->warmup_steps, T = p->total_steps;
    if (step < W) return W == 1 ? 0.0f : (float)((double)p->peak_lr * step / (double)(W - 1));
    int64_t J = T - W, j = step - W;
    if (J <= 0) return p->min_lr;
    if (j > J) j = J;
    return (float)(p->min_lr + 0.5 * ((double)p->peak_lr - p->min_lr) * (1.0 + cos(M_PI * (double)j / (double)J)));
}
