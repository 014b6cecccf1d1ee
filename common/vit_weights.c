/* vit_weights.c: the parameter table (official names), random init, loading from safetensors
 * under every accepted naming, saving. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "err.h"
#include "vit_impl.h"

/* ---- the table ---- */

static size_t add_param(iv2_vit *m, int *cap, size_t at, const char *name, int ndim, const int64_t *shape) {
    if (m->n_param == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        m->param = iv2_realloc(m->param, sizeof(iv2_vit_param) * (size_t)*cap);
    }
    iv2_vit_param *p = &m->param[m->n_param++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) { p->shape[i] = shape[i]; p->numel *= (size_t)shape[i]; }
    size_t len = strlen(name);
    p->no_wd = ndim <= 1 || (len > 5 && !strcmp(name + len - 5, ".bias")) || strstr(name, "_bias") ||
               strstr(name, "pos_embed") || strstr(name, "cls_token");
    if (at == NOOFF) {
        at = (m->n_elems + 15) & ~(size_t)15;   /* 64-byte aligned tensors in fp32 */
        m->n_elems = at + p->numel;
    }
    p->offset = at;
    return at;
}

/* ADD(name, dims...) with the name printf-formatted into nb */
#define ADDN(dst, fmt_name, ...) do { const int64_t sh_[] = {__VA_ARGS__}; \
    dst = add_param(m, &cap, NOOFF, fmt_name, (int)(sizeof sh_ / sizeof sh_[0]), sh_); } while (0)

int vit_build_table(iv2_vit *m) {
    const iv2_vit_config *c = &m->cfg;
    vit_off *o = &m->st->off;
    int cap = 0;
    char nb[96];
    int64_t C = c->width, H = c->mlp, p = c->patch, T = iv2_vit_tokens(c);
    int vmae = c->arch == IV2_VIT_VIDEOMAE, ln = c->norm == IV2_NORM_LN;
    const char *pre = vmae ? "encoder." : "";
    memset(o, 0xff, sizeof *o);   /* every offset NOOFF */
    o->blk = iv2_malloc(sizeof(vit_block_off) * (size_t)c->depth);
    memset(o->blk, 0xff, sizeof(vit_block_off) * (size_t)c->depth);

    if (c->cls) ADDN(o->cls, "cls_token", 1, 1, C);
    if (c->pos == IV2_POS_LEARNED) ADDN(o->pos, "pos_embed", 1, T, C);
    snprintf(nb, sizeof nb, "%spatch_embed.proj.weight", pre);
    if (c->arch == IV2_VIT_INTERNVIT && c->tubelet == 1) ADDN(o->pe_w, nb, C, 3, p, p);
    else ADDN(o->pe_w, nb, C, 3, c->tubelet, p, p);
    snprintf(nb, sizeof nb, "%spatch_embed.proj.bias", pre);
    ADDN(o->pe_b, nb, C);
    for (int i = 0; i < c->depth; i++) {
        vit_block_off *b = &o->blk[i];
#define BN(suffix) (snprintf(nb, sizeof nb, "%sblocks.%d.%s", pre, i, suffix), nb)
        ADDN(b->norm1_w, BN("norm1.weight"), C);
        if (ln) ADDN(b->norm1_b, BN("norm1.bias"), C);
        ADDN(b->qkv_w, BN("attn.qkv.weight"), 3 * C, C);
        if (c->qkv_bias) {
            /* one [3C] bias region: q_bias | k (zero, no tensor) | v_bias, so the fused qkv GEMM
             * takes it as its bias */
            ADDN(b->qkv_b, BN("attn.q_bias"), C);
            m->n_elems = b->qkv_b + 2 * C;
            const int64_t sh[] = {C};
            add_param(m, &cap, b->qkv_b + 2 * C, BN("attn.v_bias"), 1, sh);
            m->n_elems = b->qkv_b + 3 * C;
        }
        if (c->qk_norm) {
            ADDN(b->q_norm, BN("attn.q_norm.weight"), C);
            ADDN(b->k_norm, BN("attn.k_norm.weight"), C);
        }
        ADDN(b->proj_w, BN("attn.proj.weight"), C, C);
        ADDN(b->proj_b, BN("attn.proj.bias"), C);
        if (c->layerscale) ADDN(b->ls1, BN("ls1.gamma"), C);
        ADDN(b->norm2_w, BN("norm2.weight"), C);
        if (ln) ADDN(b->norm2_b, BN("norm2.bias"), C);
        ADDN(b->fc1_w, BN("mlp.fc1.weight"), H, C);
        ADDN(b->fc1_b, BN("mlp.fc1.bias"), H);
        ADDN(b->fc2_w, BN("mlp.fc2.weight"), C, H);
        ADDN(b->fc2_b, BN("mlp.fc2.bias"), C);
        if (c->layerscale) ADDN(b->ls2, BN("ls2.gamma"), C);
#undef BN
    }
    if (c->final_norm) {
        snprintf(nb, sizeof nb, "%snorm.weight", pre);
        ADDN(o->norm_w, nb, C);
        if (ln) { snprintf(nb, sizeof nb, "%snorm.bias", pre); ADDN(o->norm_b, nb, C); }
    }
    if (c->pool_heads) {
        ADDN(o->pq_lw, "clip_projector.norm1_q.weight", C);
        ADDN(o->pq_lb, "clip_projector.norm1_q.bias", C);
        ADDN(o->pk_lw, "clip_projector.norm1_k.weight", C);
        ADDN(o->pk_lb, "clip_projector.norm1_k.bias", C);
        ADDN(o->pv_lw, "clip_projector.norm1_v.weight", C);
        ADDN(o->pv_lb, "clip_projector.norm1_v.bias", C);
        ADDN(o->pq_w, "clip_projector.cross_attn.q.weight", C, C);
        ADDN(o->pq_b, "clip_projector.cross_attn.q_bias", C);
        ADDN(o->pk_w, "clip_projector.cross_attn.k.weight", C, C);
        ADDN(o->pk_b, "clip_projector.cross_attn.k_bias", C);
        ADDN(o->pv_w, "clip_projector.cross_attn.v.weight", C, C);
        ADDN(o->pv_b, "clip_projector.cross_attn.v_bias", C);
        ADDN(o->pp_w, "clip_projector.cross_attn.proj.weight", c->pool_dim, C);
        ADDN(o->pp_b, "clip_projector.cross_attn.proj.bias", c->pool_dim);
    }
    m->n_elems = (m->n_elems + 15) & ~(size_t)15;
    return 0;
}

const iv2_vit_param *iv2_vit_find(const iv2_vit *m, const char *name) {
    for (int i = 0; i < m->n_param; i++)
        if (!strcmp(m->param[i].name, name)) return &m->param[i];
    return NULL;
}

void *iv2_vit_tensor(iv2_vit *m, const char *name) {
    const iv2_vit_param *p = iv2_vit_find(m, name);
    return p ? IV2_AT(m->be, m->params, p->offset) : NULL;
}

void *iv2_vit_grad(iv2_vit *m, const char *name) {
    const iv2_vit_param *p = iv2_vit_find(m, name);
    return p && m->grads ? IV2_AT(m->be, m->grads, p->offset) : NULL;
}

int iv2_vit_alloc_grads(iv2_vit *m) {
    if (!m->grads) {
        m->grads = m->be->alloc(m->be, m->n_elems * m->be->esize);
        if (!m->grads) return iv2_err("model %s: cannot allocate %zu gradient elements", m->cfg.name, m->n_elems);
    }
    m->be->memset0(m->be, m->grads, m->n_elems * m->be->esize);
    return 0;
}

void iv2_vit_zero_grads(iv2_vit *m) {
    if (m->grads) m->be->memset0(m->be, m->grads, m->n_elems * m->be->esize);
}

/* ---- random init ---- */

/* counter-based randomness: value k of a tensor depends only on (seed, tensor name, k), so the
 * fill runs in parallel and does not depend on thread count or table order */
static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double unif_at(uint64_t s, uint64_t k) {
    return ((mix64(s + (k + 1) * 0x9E3779B97F4A7C15ull) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* N(0, std) / div, Box-Muller (both outputs used); clamped to timm trunc_normal_'s absolute
 * bounds [-2, 2], which at std .02 are 100 sigma away */
static void fill_normal(float *h, size_t n, uint64_t s, double std, double div) {
    size_t pairs = (n + 1) / 2;
#pragma omp parallel for schedule(static)
    for (size_t j = 0; j < pairs; j++) {
        double u = unif_at(s, 2 * j), v = unif_at(s, 2 * j + 1);
        double r = sqrt(-2.0 * log(u)) * std, a = 6.283185307179586 * v;
        double x0 = r * cos(a), x1 = r * sin(a);
        x0 = x0 < -2 ? -2 : x0 > 2 ? 2 : x0;
        x1 = x1 < -2 ? -2 : x1 > 2 ? 2 : x1;
        h[2 * j] = (float)(x0 / div);
        if (2 * j + 1 < n) h[2 * j + 1] = (float)(x1 / div);
    }
}

static void fill_uniform(float *h, size_t n, uint64_t s, double bound) {
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < n; k++) h[k] = (float)((2 * unif_at(s, k) - 1) * bound);
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

int iv2_vit_init_random(iv2_vit *m, uint64_t seed) {
    const iv2_vit_config *c = &m->cfg;
    iv2_backend *be = m->be;
    size_t maxn = 0;
    for (int i = 0; i < m->n_param; i++) if (m->param[i].numel > maxn) maxn = m->param[i].numel;
    float *h = iv2_malloc(sizeof(float) * (maxn ? maxn : 1));
    be->memset0(be, m->params, m->n_elems * be->esize);
    for (int i = 0; i < m->n_param; i++) {
        const iv2_vit_param *p = &m->param[i];
        /* every tensor has its own stream, so the values do not depend on the table's order */
        uint64_t r = seed ^ iv2_hash64(p->name, strlen(p->name));
        const char *n = p->name;
        if (strstr(n, "patch_embed.proj.")) {
            /* PyTorch Conv default: kaiming_uniform(a=sqrt 5) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
            double fan_in = 3.0 * c->tubelet * c->patch * c->patch;
            fill_uniform(h, p->numel, r, 1.0 / sqrt(fan_in));
        } else if (!strcmp(n, "pos_embed")) {
            if (c->arch == IV2_VIT_STUDENT)
                iv2_sincos_3d_table(h, c->width, iv2_vit_grid(c), c->frames / c->tubelet, 1);
            else
                fill_normal(h, p->numel, r, .02, 1);
        } else if (!strcmp(n, "cls_token")) {
            fill_normal(h, p->numel, r, .02, 1);
        } else if (ends_with(n, ".gamma")) {
            for (size_t k = 0; k < p->numel; k++) h[k] = c->ls_init;
        } else if (p->ndim == 2) {
            /* Linear weights: trunc_normal(.02); the student's fix_init_weight divides proj and
             * fc2 of block i (1-based) by sqrt(2 i) */
            double div = 1;
            int bi;
            if (c->arch == IV2_VIT_STUDENT && sscanf(n, "blocks.%d.", &bi) == 1 &&
                (ends_with(n, "attn.proj.weight") || ends_with(n, "mlp.fc2.weight")))
                div = sqrt(2.0 * (bi + 1));
            fill_normal(h, p->numel, r, .02, div);
        } else if (ends_with(n, ".weight")) {
            for (size_t k = 0; k < p->numel; k++) h[k] = 1.0f;   /* norms */
        } else {
            for (size_t k = 0; k < p->numel; k++) h[k] = 0.0f;   /* biases */
        }
        be->upload(be, IV2_AT(be, m->params, p->offset), h, p->numel);
    }
    free(h);
    return 0;
}

/* ---- name mapping ---- */

static int starts(const char *s, const char *pre) { return !strncmp(s, pre, strlen(pre)); }

/* keys of official checkpoints that are not part of the model (see vit.h) */
static int ignorable(int arch, const char *s) {
    static const char *ivit[] = {"transformer.", "text_projection", "logit_scale", "language_model.", "mlp1.", NULL};
    static const char *vmae[] = {"decoder.", "encoder_to_decoder.", "mask_token", "decoder_pos_embed", NULL};
    static const char *stud[] = {"clip_decoder.", "final_clip_decoder.", "mae_decoder.", "clip_pos_embed",
                                 "mae_pos_embed", NULL};
    const char **l = arch == IV2_VIT_INTERNVIT ? ivit : arch == IV2_VIT_VIDEOMAE ? vmae : stud;
    for (; *l; l++) if (starts(s, *l)) return 1;
    return 0;
}

/* rewrite "<from><i>.<rest>" as "<to><i>.<rest mapped by tab>" */
typedef struct { const char *from, *to; int part; } rename_t;

static int map_block(const char *s, const char *from, const char *to, const rename_t *tab, char *out, size_t cap,
                     int *part) {
    if (!starts(s, from)) return 0;
    const char *q = s + strlen(from);
    char *end;
    long i = strtol(q, &end, 10);
    if (end == q || *end != '.' || i < 0) return 0;
    const char *rest = end + 1;
    for (; tab && tab->from; tab++) {
        size_t n = strlen(tab->from);
        /* whole-component match: the rest equals the key or continues with '.' */
        if (!strncmp(rest, tab->from, n) && (rest[n] == 0 || rest[n] == '.' || tab->from[n - 1] == '.')) {
            snprintf(out, cap, "%s%ld.%s%s", to, i, tab->to, rest + n);
            *part = tab->part;
            return 1;
        }
    }
    snprintf(out, cap, "%s%ld.%s", to, i, rest);
    return 1;
}

/* 1: mapped to canonical out (part: -1 whole, 0/1/2 = q/k/v rows of a split qkv weight);
 * 0: ignorable; 2: unknown (out = the stripped name) */
static int map_name(int arch, const char *name, char *out, size_t cap, int *part) {
    const char *s = name;
    *part = -1;
    for (;;) {
        if (starts(s, "module.")) s += 7;
        else if (starts(s, "model.")) s += 6;
        else break;
    }
    if (arch == IV2_VIT_VIDEOMAE) {
        if (starts(s, "videomae.")) s += 9;
        if (ignorable(arch, s)) return 0;
        static const rename_t hf[] = {
            {"attention.attention.query.weight", "attn.qkv.weight", 0},
            {"attention.attention.key.weight", "attn.qkv.weight", 1},
            {"attention.attention.value.weight", "attn.qkv.weight", 2},
            {"attention.attention.q_bias", "attn.q_bias", -1},   /* older transformers */
            {"attention.attention.query.bias", "attn.q_bias", -1},
            {"attention.attention.value.bias", "attn.v_bias", -1},
            {"attention.attention.v_bias", "attn.v_bias", -1},
            {"attention.output.dense.", "attn.proj.", -1},
            {"intermediate.dense.", "mlp.fc1.", -1},
            {"output.dense.", "mlp.fc2.", -1},
            {"layernorm_before.", "norm1.", -1},
            {"layernorm_after.", "norm2.", -1},
            {NULL, NULL, 0}};
        if (map_block(s, "encoder.layer.", "encoder.blocks.", hf, out, cap, part)) return 1;
        if (starts(s, "embeddings.patch_embeddings.projection.")) {
            snprintf(out, cap, "encoder.patch_embed.proj.%s", s + strlen("embeddings.patch_embeddings.projection."));
            return 1;
        }
        if (starts(s, "layernorm.")) { snprintf(out, cap, "encoder.norm.%s", s + 10); return 1; }
        if (starts(s, "encoder.")) { snprintf(out, cap, "%s", s); return 1; }
        if (starts(s, "blocks.") || starts(s, "patch_embed.") || starts(s, "norm.")) {
            snprintf(out, cap, "encoder.%s", s);   /* converted files drop "encoder." */
            return 1;
        }
        snprintf(out, cap, "%s", s);
        return 2;
    }
    if (starts(s, "vision_model.")) s += 13;
    else if (starts(s, "vision_tower.")) s += 13;
    if (ignorable(arch, s)) return 0;
    if (!strcmp(s, "embeddings.class_embedding") || !strcmp(s, "embeddings.cls_token")) {
        snprintf(out, cap, "cls_token"); return 1;
    }
    if (!strcmp(s, "embeddings.position_embedding") || !strcmp(s, "embeddings.position_embeddings")) {
        snprintf(out, cap, "pos_embed"); return 1;
    }
    if (starts(s, "embeddings.patch_embedding.")) {
        snprintf(out, cap, "patch_embed.proj.%s", s + strlen("embeddings.patch_embedding.")); return 1;
    }
    if (starts(s, "embeddings.patch_embeddings.projection.")) {
        snprintf(out, cap, "patch_embed.proj.%s", s + strlen("embeddings.patch_embeddings.projection.")); return 1;
    }
    static const rename_t remote[] = {{"ls1", "ls1.gamma", -1}, {"ls2", "ls2.gamma", -1}, {NULL, NULL, 0}};
    if (map_block(s, "encoder.layers.", "blocks.", remote, out, cap, part)) {
        /* "ls1.gamma" must not become "ls1.gamma.gamma" */
        size_t n = strlen(out);
        if (n > 12 && !strcmp(out + n - 12, ".gamma.gamma")) out[n - 6] = 0;
        return 1;
    }
    static const rename_t native[] = {
        {"attention.q_proj.weight", "attn.qkv.weight", 0},
        {"attention.k_proj.weight", "attn.qkv.weight", 1},
        {"attention.v_proj.weight", "attn.qkv.weight", 2},
        {"attention.q_norm.", "attn.q_norm.", -1},
        {"attention.k_norm.", "attn.k_norm.", -1},
        {"attention.projection_layer.", "attn.proj.", -1},
        {"layernorm_before.", "norm1.", -1},
        {"layernorm_after.", "norm2.", -1},
        {"lambda_1", "ls1.gamma", -1},
        {"lambda_2", "ls2.gamma", -1},
        {NULL, NULL, 0}};
    if (map_block(s, "encoder.layer.", "blocks.", native, out, cap, part)) return 1;
    snprintf(out, cap, "%s", s);
    if (!strcmp(s, "cls_token") || !strcmp(s, "pos_embed") || starts(s, "patch_embed.") || starts(s, "blocks.") ||
        starts(s, "clip_projector."))
        return 1;
    return 2;
}

/* ---- loading ---- */

/* a list of names for one error category, capped */
typedef struct { char buf[1024]; int n; } namelist;
static void nl_add(namelist *l, const char *fmt, ...) IV2_PRINTF(2, 3);
static void nl_add(namelist *l, const char *fmt, ...) {
    l->n++;
    if (l->n > 6) return;
    size_t len = strlen(l->buf);
    if (len + 4 >= sizeof l->buf) return;
    if (len) { strcat(l->buf, "; "); len += 2; }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->buf + len, sizeof l->buf - len, fmt, ap);
    va_end(ap);
}

static void shape_str(char *b, size_t cap, int ndim, const int64_t *sh) {
    size_t n = snprintf(b, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++) n += snprintf(b + n, cap - n, "%s%lld", i ? "," : "", (long long)sh[i]);
    if (n < cap) snprintf(b + n, cap - n, "]");
}

/* shapes equal after dropping leading 1s */
static int same_shape(int na, const int64_t *a, int nb, const int64_t *b) {
    while (na > 1 && a[0] == 1) { a++; na--; }
    while (nb > 1 && b[0] == 1) { b++; nb--; }
    if (na != nb) return 0;
    for (int i = 0; i < na; i++) if (a[i] != b[i]) return 0;
    return 1;
}

int iv2_vit_load_st(iv2_vit *m, iv2_st_file *f, int strict) {
    const iv2_vit_config *c = &m->cfg;
    iv2_backend *be = m->be;
    int64_t C = c->width;
    unsigned char *got = iv2_calloc((size_t)m->n_param, 1);
    size_t maxn = 0;
    for (int i = 0; i < m->n_param; i++) if (m->param[i].numel > maxn) maxn = m->param[i].numel;
    float *h = NULL, *h2 = NULL;
    namelist unexpected = {{0}, 0}, bad = {{0}, 0}, missing = {{0}, 0};
    int rc = 0;
    for (int ti = 0; ti < f->n_tensors; ti++) {
        iv2_st_tensor *t = &f->tensors[ti];
        char canon[160], ss[64], ws[64];
        int part;
        int r = map_name(c->arch, t->name, canon, sizeof canon, &part);
        if (r == 0) { if (strict) t->used = 1; continue; }
        const iv2_vit_param *p = r == 1 ? iv2_vit_find(m, canon) : NULL;
        if (!p) {
            if (strict) nl_add(&unexpected, "'%s'", t->name);
            continue;
        }
        int pi = (int)(p - m->param);
        shape_str(ss, sizeof ss, t->ndim, t->shape);
        if (!iv2_dtype_is_float(t->dtype)) {
            nl_add(&bad, "'%s' has dtype %s (want a float type)", t->name, iv2_dtype_name(t->dtype));
            got[pi] |= part >= 0 ? 1u << part : 7u;
            continue;
        }
        size_t dst_off = p->offset, want_n = p->numel;
        int ok;
        int resize_from = 0;
        if (part >= 0) {
            int64_t sh[2] = {C, C};
            ok = same_shape(t->ndim, t->shape, 2, sh);
            dst_off += (size_t)part * C * C;
            want_n = (size_t)(C * C);
            snprintf(ws, sizeof ws, "[%lld,%lld]", (long long)C, (long long)C);
        } else if (strstr(p->name, "patch_embed.proj.weight")) {
            /* a Conv2d kernel [C,3,p,p] serves as Conv3d with kt = 1 and vice versa; the GEMM
             * weight [C, 3*kt*p*p] is accepted too */
            int64_t k = 3LL * c->tubelet * c->patch * c->patch;
            int64_t g1[] = {C, 3, c->patch, c->patch}, g2[] = {C, 3, c->tubelet, c->patch, c->patch}, g3[] = {C, k};
            ok = (c->tubelet == 1 && same_shape(t->ndim, t->shape, 4, g1)) || same_shape(t->ndim, t->shape, 5, g2) ||
                 same_shape(t->ndim, t->shape, 2, g3);
            shape_str(ws, sizeof ws, p->ndim, p->shape);
        } else {
            ok = same_shape(t->ndim, t->shape, p->ndim, p->shape);
            shape_str(ws, sizeof ws, p->ndim, p->shape);
            if (!ok && !strcmp(p->name, "pos_embed") && c->arch == IV2_VIT_INTERNVIT && t->ndim >= 1 &&
                t->shape[t->ndim - 1] == C && t->numel % (size_t)C == 0 && t->numel / (size_t)C > 1 &&
                t->numel / (size_t)C <= 1 + 1024 * 1024) {
                /* another grid: bicubic resize of the patch rows (PyTorch semantics) */
                size_t rows = t->numel / (size_t)C;
                int g = (int)lround(sqrt((double)(rows - 1)));
                if ((size_t)g * g == rows - 1) { ok = 1; resize_from = g; }
            }
        }
        if (!ok) {
            nl_add(&bad, "'%s' has shape %s, want %s", t->name, ss, ws);
            got[pi] |= part >= 0 ? 1u << part : 7u;   /* there, though bad: not missing too */
            continue;
        }
        unsigned bit = part >= 0 ? 1u << part : 7u;
        if (got[pi] & bit) {
            nl_add(&bad, "'%s' given twice (as %s)", t->name, p->name);
            continue;
        }
        got[pi] |= bit;
        t->used = 1;
        if (!h) h = iv2_malloc(sizeof(float) * (maxn ? maxn : 1));
        if (resize_from) {
            int G = iv2_vit_grid(c);
            h2 = iv2_realloc(h2, sizeof(float) * t->numel);
            if (iv2_st_read(f, t, h2, IV2_F32)) { rc = iv2_err_ctx("%s", f->path); goto done; }
            memcpy(h, h2, sizeof(float) * C);   /* CLS row */
            iv2_bicubic_resize_rows(h + C, h2 + C, resize_from, G, (int)C);
            iv2_info("%s: pos_embed resized from %dx%d to %dx%d (bicubic)", f->path, resize_from, resize_from, G, G);
        } else if (iv2_st_read(f, t, h, IV2_F32)) {
            rc = iv2_err_ctx("%s", f->path);
            goto done;
        }
        be->upload(be, IV2_AT(be, m->params, dst_off), h, want_n);
    }
    for (int i = 0; i < m->n_param; i++)
        if (got[i] != 7) nl_add(&missing, "'%s'%s", m->param[i].name, got[i] ? " (q/k/v parts incomplete)" : "");
    if (missing.n || bad.n || unexpected.n) {
        char msg[3600];
        size_t n = 0;
        if (missing.n)
            n += snprintf(msg + n, sizeof msg - n, "%d missing tensor%s: %s%s", missing.n, missing.n > 1 ? "s" : "",
                          missing.buf, missing.n > 6 ? " ..." : "");
        if (bad.n && n < sizeof msg)
            n += snprintf(msg + n, sizeof msg - n, "%s%d bad tensor%s: %s%s", n ? "; " : "", bad.n, bad.n > 1 ? "s" : "",
                          bad.buf, bad.n > 6 ? " ..." : "");
        if (unexpected.n && n < sizeof msg)
            snprintf(msg + n, sizeof msg - n, "%s%d unexpected tensor%s: %s%s", n ? "; " : "", unexpected.n,
                     unexpected.n > 1 ? "s" : "", unexpected.buf, unexpected.n > 6 ? " ..." : "");
        rc = iv2_err("%s: model %s: %s", f->path, c->name, msg);
    }
done:
    free(got); free(h); free(h2);
    return rc;
}

int iv2_vit_load(iv2_vit *m, const char *path) {
    iv2_st_file f;
    if (iv2_st_open(&f, path)) return -1;
    int rc = iv2_vit_load_st(m, &f, 1);
    iv2_st_close(&f);
    return rc;
}

/* ---- saving ---- */

int iv2_vit_save_add(iv2_vit *m, iv2_st_writer *w, iv2_dtype dt, void **hold) {
    iv2_backend *be = m->be;
    size_t es = iv2_dtype_size(dt);
    size_t total = 0;
    for (int i = 0; i < m->n_param; i++) total += m->param[i].numel;
    char *buf = iv2_malloc(total * es + 1);
    float *tmp = NULL;
    size_t at = 0, tmpn = 0;
    for (int i = 0; i < m->n_param; i++) {
        const iv2_vit_param *p = &m->param[i];
        if (p->numel > tmpn) { tmpn = p->numel; tmp = iv2_realloc(tmp, sizeof(float) * tmpn); }
        be->download(be, tmp, IV2_AT(be, m->params, p->offset), p->numel);
        iv2_convert(buf + at, dt, tmp, IV2_F32, p->numel);
        iv2_st_writer_add(w, p->name, dt, p->ndim, p->shape, buf + at);
        at += p->numel * es;
    }
    free(tmp);
    char js[1024];
    iv2_vit_config_to_json(&m->cfg, js, sizeof js);
    iv2_st_writer_meta(w, "iv2.config", js);
    iv2_st_writer_meta(w, "format", "pt");
    *hold = buf;
    return 0;
}

int iv2_vit_save(iv2_vit *m, const char *path) {
    iv2_st_writer w;
    iv2_st_writer_init(&w);
    void *hold = NULL;
    int rc = iv2_vit_save_add(m, &w, IV2_F32, &hold);
    if (!rc) rc = iv2_st_writer_write(&w, path);
    iv2_st_writer_free(&w);
    free(hold);
    return rc;
}
