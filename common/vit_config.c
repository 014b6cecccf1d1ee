/* vit_config.c: presets, JSON overrides, derived sizes, memory plan, position tables and the
 * PyTorch-exact bicubic resize of learned position embeddings. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "err.h"
#include "safetensors.h"
#include "vit.h"

static void base_internvit(iv2_vit_config *c) {
    memset(c, 0, sizeof *c);
    c->arch = IV2_VIT_INTERNVIT;
    c->img = 224; c->patch = 14; c->frames = 1; c->tubelet = 1;
    c->width = 3200; c->depth = 48; c->heads = 25; c->mlp = 12800;
    c->norm = IV2_NORM_RMS; c->eps = 1e-6f; c->qk_norm = 1; c->qkv_bias = 0;
    c->layerscale = 1; c->ls_init = 0.1f; c->cls = 1; c->pos = IV2_POS_LEARNED;
    c->final_norm = 0; c->gelu = IV2_GELU_ERF;
    c->pool_heads = 16; c->pool_dim = 768; c->pool_eps = 1e-5f;
}

static void base_videomae(iv2_vit_config *c) {
    memset(c, 0, sizeof *c);
    c->arch = IV2_VIT_VIDEOMAE;
    c->img = 224; c->patch = 14; c->frames = 16; c->tubelet = 2;
    c->width = 1408; c->depth = 40; c->heads = 16; c->mlp = 6144;
    c->norm = IV2_NORM_LN; c->eps = 1e-6f; c->qk_norm = 0; c->qkv_bias = 1;
    c->layerscale = 0; c->cls = 0; c->pos = IV2_POS_SINCOS1D; c->final_norm = 1;
    c->gelu = IV2_GELU_ERF; c->pool_eps = 1e-5f;
}

/* the student: the official FusedMLP uses the tanh GELU (internvideo2_stage1.md §2.2) */
static void base_student(iv2_vit_config *c, int w, int d, int h, int mlp, float dp) {
    base_internvit(c);
    c->arch = IV2_VIT_STUDENT;
    c->frames = 8;
    c->width = w; c->depth = d; c->heads = h; c->mlp = mlp;
    c->ls_init = 1e-5f; c->gelu = IV2_GELU_TANH; c->drop_path = dp;
}

static const char *preset_names = "internvit-6b, internvit-tiny, videomae-g, videomae-tiny, iv2-1b, iv2-6b, "
                                  "iv2-s, iv2-b, iv2-l, iv2-tiny";

int iv2_vit_preset(const char *name, iv2_vit_config *c) {
    if (!name) return iv2_err("vit preset: no name (one of %s)", preset_names);
    if (!strcmp(name, "internvit-6b")) base_internvit(c);
    else if (!strcmp(name, "internvit-tiny")) {
        base_internvit(c);
        c->width = 96; c->depth = 6; c->heads = 3; c->mlp = 384; c->pool_heads = 4; c->pool_dim = 128;
    } else if (!strcmp(name, "videomae-g")) base_videomae(c);
    else if (!strcmp(name, "videomae-tiny")) {
        base_videomae(c);
        c->width = 96; c->depth = 4; c->heads = 3; c->mlp = 384;
    } else if (!strcmp(name, "iv2-1b")) base_student(c, 1408, 40, 16, 6144, 0.25f);
    else if (!strcmp(name, "iv2-6b")) base_student(c, 3200, 48, 25, 12800, 0.3f);
    else if (!strcmp(name, "iv2-s")) base_student(c, 384, 12, 6, 1536, 0.1f);
    else if (!strcmp(name, "iv2-b")) base_student(c, 768, 12, 12, 3072, 0.1f);
    else if (!strcmp(name, "iv2-l")) base_student(c, 1024, 24, 16, 4096, 0.2f);
    else if (!strcmp(name, "iv2-tiny")) {
        base_student(c, 96, 6, 3, 384, 0.0f);
        c->pool_heads = 4; c->pool_dim = 128;
    } else return iv2_err("unknown model preset '%s' (one of %s)", name, preset_names);
    snprintf(c->name, sizeof c->name, "%s", name);
    return 0;
}

int iv2_vit_grid(const iv2_vit_config *c) { return c->img / c->patch; }
int iv2_vit_patches(const iv2_vit_config *c) {
    int g = iv2_vit_grid(c);
    return (c->frames / c->tubelet) * g * g;
}
int iv2_vit_tokens(const iv2_vit_config *c) { return iv2_vit_patches(c) + (c->cls ? 1 : 0); }

int iv2_vit_config_check(const iv2_vit_config *c) {
#define NEED(cond, ...) do { if (!(cond)) return iv2_err(__VA_ARGS__); } while (0)
    NEED(c->arch >= 0 && c->arch <= 2, "model config: arch %d is not internvit|videomae|student", c->arch);
    NEED(c->img > 0 && c->patch > 0 && c->img % c->patch == 0, "model config: img %d is not a multiple of patch %d",
         c->img, c->patch);
    NEED(c->img <= 8192, "model config: img %d too large", c->img);
    NEED(c->tubelet >= 1 && c->frames >= 1 && c->frames % c->tubelet == 0,
         "model config: frames %d is not a multiple of tubelet %d", c->frames, c->tubelet);
    NEED(c->width > 0 && c->heads > 0 && c->width % c->heads == 0, "model config: width %d is not a multiple of heads %d",
         c->width, c->heads);
    NEED(c->depth > 0 && c->depth <= 1024, "model config: depth %d out of range", c->depth);
    NEED(c->mlp > 0, "model config: mlp %d must be positive", c->mlp);
    NEED(c->norm == IV2_NORM_RMS || c->norm == IV2_NORM_LN, "model config: norm %d unknown", c->norm);
    NEED(c->gelu == IV2_GELU_ERF || c->gelu == IV2_GELU_TANH, "model config: gelu %d unknown", c->gelu);
    NEED(c->pos == IV2_POS_LEARNED || c->pos == IV2_POS_SINCOS1D, "model config: pos %d unknown", c->pos);
    NEED(c->pos != IV2_POS_SINCOS1D || !c->cls, "model config: the sincos1d position table has no CLS row (cls false)");
    NEED(c->eps > 0 && c->pool_eps > 0, "model config: eps must be positive");
    NEED(c->pool_heads >= 0, "model config: pool_heads %d negative", c->pool_heads);
    if (c->pool_heads)
        NEED(c->width % c->pool_heads == 0 && c->pool_dim > 0,
             "model config: width %d is not a multiple of pool_heads %d (or pool_dim %d <= 0)", c->width,
             c->pool_heads, c->pool_dim);
    NEED(c->drop_path >= 0 && c->drop_path < 1, "model config: drop_path %g not in [0,1)", c->drop_path);
    NEED((double)iv2_vit_tokens(c) * c->width < 2e9, "model config: %d tokens x width %d too large",
         iv2_vit_tokens(c), c->width);
#undef NEED
    return 0;
}

static const char *arch_s[] = {"internvit", "videomae", "student"};
static const char *norm_s[] = {"rms", "ln"};
static const char *pos_s[] = {"learned", "sincos1d"};
static const char *gelu_s[] = {"erf", "tanh"};

/* an int field given as a number or as one of names[] */
static int json_enum(const cJSON *v, const char *key, const char **names, int n, int *out) {
    if (cJSON_IsNumber(v)) { *out = v->valueint; return 0; }
    if (cJSON_IsString(v)) {
        for (int i = 0; i < n; i++)
            if (!strcmp(v->valuestring, names[i])) { *out = i; return 0; }
        if (names == norm_s && !strcmp(v->valuestring, "layer_norm")) { *out = IV2_NORM_LN; return 0; }
        if (names == norm_s && !strcmp(v->valuestring, "rms_norm")) { *out = IV2_NORM_RMS; return 0; }
    }
    return iv2_err("model config: '%s' must be a number or a known name", key);
}

int iv2_vit_config_json(iv2_vit_config *c, const char *json) {
    cJSON *root = cJSON_Parse(json);
    if (!root) return iv2_err("model config: not valid JSON (near \"%.20s\")", cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() : "");
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return iv2_err("model config: not a JSON object");
    }
    int rc = 0;
    for (cJSON *v = root->child; v && rc == 0; v = v->next) {
        const char *k = v->string;
        int *ip = NULL; float *fp = NULL;
        if (!strcmp(k, "name")) {
            if (!cJSON_IsString(v)) { rc = iv2_err("model config: 'name' must be a string"); break; }
            snprintf(c->name, sizeof c->name, "%s", v->valuestring);
            continue;
        }
        if (!strcmp(k, "arch")) { rc = json_enum(v, k, arch_s, 3, &c->arch); continue; }
        if (!strcmp(k, "norm")) { rc = json_enum(v, k, norm_s, 2, &c->norm); continue; }
        if (!strcmp(k, "pos")) { rc = json_enum(v, k, pos_s, 2, &c->pos); continue; }
        if (!strcmp(k, "gelu")) { rc = json_enum(v, k, gelu_s, 2, &c->gelu); continue; }
#define I(f) else if (!strcmp(k, #f)) ip = &c->f
#define F(f) else if (!strcmp(k, #f)) fp = &c->f
        if (0) {}
        I(img); I(patch); I(frames); I(tubelet); I(width); I(depth); I(heads); I(mlp); I(qk_norm); I(qkv_bias);
        I(layerscale); I(cls); I(final_norm); I(pool_heads); I(pool_dim);
        F(eps); F(ls_init); F(pool_eps); F(drop_path);
#undef I
#undef F
        else { rc = iv2_err("model config: unknown key '%s'", k); break; }
        if (ip) {
            if (cJSON_IsBool(v)) *ip = cJSON_IsTrue(v);
            else if (cJSON_IsNumber(v) && v->valuedouble == (double)(int)v->valuedouble) *ip = (int)v->valuedouble;
            else rc = iv2_err("model config: '%s' must be an integer", k);
        } else {
            if (cJSON_IsNumber(v)) *fp = (float)v->valuedouble;
            else rc = iv2_err("model config: '%s' must be a number", k);
        }
    }
    cJSON_Delete(root);
    return rc;
}

int iv2_vit_config_to_json(const iv2_vit_config *c, char *buf, size_t cap) {
    return snprintf(buf, cap,
                    "{\"name\":\"%s\",\"arch\":\"%s\",\"img\":%d,\"patch\":%d,\"frames\":%d,\"tubelet\":%d,"
                    "\"width\":%d,\"depth\":%d,\"heads\":%d,\"mlp\":%d,\"norm\":\"%s\",\"eps\":%.9g,"
                    "\"qk_norm\":%d,\"qkv_bias\":%d,\"layerscale\":%d,\"ls_init\":%.9g,\"cls\":%d,\"pos\":\"%s\","
                    "\"final_norm\":%d,\"gelu\":\"%s\",\"pool_heads\":%d,\"pool_dim\":%d,\"pool_eps\":%.9g,"
                    "\"drop_path\":%.9g}",
                    c->name, arch_s[(unsigned)c->arch < 3 ? c->arch : 0], c->img, c->patch, c->frames, c->tubelet,
                    c->width, c->depth, c->heads, c->mlp, norm_s[c->norm & 1], c->eps, c->qk_norm, c->qkv_bias,
                    c->layerscale, c->ls_init, c->cls, pos_s[c->pos & 1], c->final_norm, gelu_s[c->gelu & 1],
                    c->pool_heads, c->pool_dim, c->pool_eps, c->drop_path);
}

int iv2_vit_config_from_file(const char *path, const char *fallback, iv2_vit_config *cfg) {
    iv2_st_file f;
    if (iv2_st_open(&f, path)) return -1;
    const char *js = iv2_st_meta(&f, "iv2.config");
    int rc;
    if (js) {
        memset(cfg, 0, sizeof *cfg);
        rc = iv2_vit_config_json(cfg, js);
        if (!rc) rc = iv2_vit_config_check(cfg);
        if (rc) iv2_err_ctx("%s: metadata iv2.config", path);
    } else if (fallback) {
        rc = iv2_vit_preset(fallback, cfg);
    } else {
        rc = iv2_err("%s: no iv2.config metadata: name a preset for it", path);
    }
    iv2_st_close(&f);
    return rc;
}

/* ---- memory plan ---- */

static size_t block_params(const iv2_vit_config *c) {
    size_t C = c->width, H = c->mlp, ln = c->norm == IV2_NORM_LN;
    size_t n = C * (1 + ln) * 2;                /* norm1, norm2 */
    n += 3 * C * C + (c->qkv_bias ? 2 * C : 0); /* qkv; q_bias and v_bias (k has none) */
    n += c->qk_norm ? 2 * C : 0;
    n += C * C + C;                             /* proj */
    n += c->layerscale ? 2 * C : 0;
    n += H * C + H + C * H + C;                 /* mlp */
    return n;
}

static size_t model_params(const iv2_vit_config *c) {
    size_t C = c->width, K = 3 * (size_t)c->tubelet * c->patch * c->patch;
    size_t n = K * C + C + (c->cls ? C : 0);
    if (c->pos == IV2_POS_LEARNED) n += (size_t)iv2_vit_tokens(c) * C;
    n += (size_t)c->depth * block_params(c);
    if (c->final_norm) n += C * (c->norm == IV2_NORM_LN ? 2 : 1);
    if (c->pool_heads) n += 6 * C + 3 * C * C + 3 * C + (size_t)c->pool_dim * C + c->pool_dim;
    return n;
}

/* bytes of one block's own training activations (block_alloc in vit.c) */
static size_t block_act_bytes(const iv2_vit_config *c, size_t esize, size_t M) {
    size_t C = c->width, H = c->mlp;
    size_t e = c->qk_norm ? 5 * C : 3 * C;   /* q, k, v, qn, kn | fused qkv */
    e += 2 * C + H + C + C;                   /* a, o, f1, f2, x_mid */
    size_t f = (c->qk_norm ? 2 : 0) + 4 + (size_t)c->heads;   /* rq, rk, norm stats, lse */
    return M * (e * esize + f * sizeof(float));
}

/* Mirrors arena_make in vit.c (test_vit_recompute checks the two agree to the byte). */
iv2_vit_plan iv2_vit_train_plan(const iv2_vit_config *c, size_t esize, int batch, int tokens, int recompute,
                                int keep_normed) {
    iv2_vit_plan p = {0};
    size_t S = batch, C = c->width, H = c->mlp, M = S * tokens, T = iv2_vit_tokens(c);
    size_t K = 3 * (size_t)c->tubelet * c->patch * c->patch, D = c->depth;
    size_t R = recompute < 0 ? 0 : (size_t)recompute > D ? D : (size_t)recompute;
    p.batch = batch; p.tokens = tokens; p.recompute = (int)R;
    p.weights = model_params(c) * esize;
    p.grads = p.weights;
    p.adamw = model_params(c) * sizeof(float) * (esize < sizeof(float) ? 3 : 2);
    size_t e = M * K + T * C;                          /* the visible tokens' patches, the position table */
    if (R == 0 && keep_normed) e += M * C + D * M * (2 * C + H);   /* block 0 input; each block's h1, h2, g */
    else e += M * C * (1 + 2) + M * H;                 /* block 0 input, shared h1, h2, g */
    e += M * C * D;                                    /* every block's output */
    if (c->pool_heads) e += 4 * S * C + 4 * M * C;
    /* backward scratch */
    e += M * C * 10 + 2 * M * H + T * C;   /* dx, dh, dq | dk | dv, dqn, dkn, da, dout, df2; df1, dg; dposx */
    if (c->pool_heads) e += 4 * S * C + 4 * M * C;
    size_t f32 = c->pool_heads ? 2 * S + 5 * M + S * c->pool_heads : 0;
    size_t ints = M;
    p.activations = e * esize + f32 * sizeof(float) + ints * sizeof(int32_t) +
                    block_act_bytes(c, esize, M) * (D - R + (R > 0));
    return p;
}

iv2_vit_plan iv2_vit_memory_plan(const iv2_vit_config *c, size_t esize, int batch, int tokens, int n_out, int train) {
    iv2_vit_plan p = {0};
    size_t C = c->width, H = c->mlp, M = (size_t)batch * tokens;
    size_t K = 3 * (size_t)c->tubelet * c->patch * c->patch;
    if (train) p = iv2_vit_train_plan(c, esize, batch, tokens, 0, 0);
    else {
        p.batch = batch; p.tokens = tokens;
        p.weights = model_params(c) * esize;
        size_t act = M * K + (size_t)iv2_vit_tokens(c) * C + M * (9 * C + H);
        if (c->pool_heads) act += M * 3 * C * 2 + (size_t)batch * 4 * C;
        p.activations = act * esize + M * 7 * sizeof(float);
    }
    p.outputs = (size_t)n_out * M * C * esize;
    return p;
}

static void human(char *b, size_t cap, size_t x) {
    if (x >= (1ull << 30)) snprintf(b, cap, "%.2f GiB", x / (double)(1ull << 30));
    else if (x >= (1ull << 20)) snprintf(b, cap, "%.1f MiB", x / (double)(1ull << 20));
    else snprintf(b, cap, "%.1f KiB", x / 1024.0);
}

void iv2_vit_plan_str(const iv2_vit_plan *p, char *buf, size_t cap) {
    char w[32], g[32], a[32], o[32];
    human(w, sizeof w, p->weights); human(g, sizeof g, p->grads);
    human(a, sizeof a, p->activations); human(o, sizeof o, p->outputs);
    if (p->grads) {
        char ad[32];
        human(ad, sizeof ad, p->adamw);
        snprintf(buf, cap, "weights %s, grads %s, AdamW %s, activations %s (batch %d x %d tokens, saved for backward, "
                 "%d blocks recomputed)", w, g, ad, a, p->batch, p->tokens, p->recompute);
    }
    else if (p->outputs)
        snprintf(buf, cap, "weights %s, activations %s (batch %d x %d tokens), outputs %s", w, a, p->batch, p->tokens,
                 o);
    else
        snprintf(buf, cap, "weights %s, activations %s (batch %d x %d tokens)", w, a, p->batch, p->tokens);
}

/* ---- position tables ---- */

void iv2_sincos_1d_table(float *dst, int n, int d) {
    for (int p = 0; p < n; p++)
        for (int j = 0; j < d; j++) {
            double ang = p / pow(10000.0, 2.0 * (j / 2) / d);
            dst[(size_t)p * d + j] = (float)((j % 2) ? cos(ang) : sin(ang));
        }
}

/* MAE 1-D sincos over positions: [sin(pos*omega) | cos(pos*omega)], omega_i = 10000^(-i/(D/2)),
 * in float32 as numpy computes it in pos_embed.py */
static void sincos_1d_half(float *dst, int D, float pos) {
    int h = D / 2;
    for (int i = 0; i < h; i++) {
        float om = (float)i / (float)(D / 2.0);
        om = (float)(1.0 / pow(10000.0, (double)om));
        float a = pos * om;
        dst[i] = sinf(a);
        dst[h + i] = cosf(a);
    }
}

void iv2_sincos_3d_table(float *dst, int d, int g, int t, int cls) {
    int dt = d / 4, ds = d / 4 * 3;
    size_t row = 0;
    /* widths that are not multiples of 8 leave a few trailing channels at zero */
    memset(dst, 0, sizeof(float) * (size_t)d * ((size_t)t * g * g + (cls ? 1 : 0)));
    if (cls) { memset(dst, 0, sizeof(float) * d); row = 1; }
    for (int ti = 0; ti < t; ti++)
        for (int y = 0; y < g; y++)
            for (int x = 0; x < g; x++, row++) {
                float *r = dst + row * d;
                sincos_1d_half(r, dt, (float)ti);
                /* meshgrid(w, h): the first half of the spatial part encodes x, the second y */
                sincos_1d_half(r + dt, ds / 2, (float)x);
                sincos_1d_half(r + dt + ds / 2, ds / 2, (float)y);
            }
}

/* ---- bicubic (ATen upsample_bicubic2d, align_corners=False, A=-0.75) ---- */

static void cubic_w(double t, double w[4]) {
    const double A = -0.75;
    double x = t + 1;
    w[0] = ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
    x = t;
    w[1] = ((A + 2) * x - (A + 3)) * x * x + 1;
    x = 1 - t;
    w[2] = ((A + 2) * x - (A + 3)) * x * x + 1;
    x = 2 - t;
    w[3] = ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

void iv2_bicubic_resize_rows(float *dst, const float *src, int gin, int gout, int C) {
    if (gin == gout) { memcpy(dst, src, sizeof(float) * (size_t)gin * gin * C); return; }
    double scale = (double)gin / gout;
    int *iy = iv2_malloc(sizeof(int) * 4 * gout);
    double *wy = iv2_malloc(sizeof(double) * 4 * gout);
    for (int o = 0; o < gout; o++) {
        double s = scale * (o + 0.5) - 0.5;
        int i0 = (int)floor(s);
        cubic_w(s - i0, wy + 4 * o);
        for (int k = 0; k < 4; k++) iy[4 * o + k] = clampi(i0 - 1 + k, 0, gin - 1);
    }
    for (int oy = 0; oy < gout; oy++)
        for (int ox = 0; ox < gout; ox++) {
            float *d = dst + ((size_t)oy * gout + ox) * C;
            for (int c = 0; c < C; c++) {
                double acc = 0;
                for (int a = 0; a < 4; a++) {
                    double racc = 0;
                    for (int b = 0; b < 4; b++)
                        racc += wy[4 * ox + b] * src[((size_t)iy[4 * oy + a] * gin + iy[4 * ox + b]) * C + c];
                    acc += wy[4 * oy + a] * racc;
                }
                d[c] = (float)acc;
            }
        }
    free(iy); free(wy);
}
