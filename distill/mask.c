/* mask.c: which tokens the student sees, and the counter-based RNG every draw uses.
 *
 * The attention mask reproduces torch.multinomial(attn, 256)[:keep] per frame (sampling without
 * replacement in proportion to the weights) as Gumbel-top-k: the `keep` largest log w_i + G_i,
 * G_i = -log(-log U_i), have exactly the Plackett-Luce law of the first `keep` draws. */
#include "distill.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t iv2_hash_u64(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
    uint64_t h = mix64(a + 0x9e3779b97f4a7c15ULL);
    h = mix64(h ^ (b + 0x632be59bd9b4e019ULL));
    h = mix64(h ^ (c + 0x85157af5a9d8c2b1ULL));
    return mix64(h ^ (d + 0x2545f4914f6cdd1dULL));
}

void iv2_rng_seed(iv2_rng *r, uint64_t a, uint64_t b, uint64_t c, uint64_t d) { r->s = iv2_hash_u64(a, b, c, d); }

uint64_t iv2_rng_u64(iv2_rng *r) { return mix64(r->s += 0x9e3779b97f4a7c15ULL); }

double iv2_rng_uniform(iv2_rng *r) { return ((iv2_rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

uint32_t iv2_rng_below(iv2_rng *r, uint32_t n) {
    uint64_t lim = UINT64_MAX - UINT64_MAX % n;   /* reject the short tail: unbiased */
    uint64_t x;
    do x = iv2_rng_u64(r); while (x >= lim);
    return (uint32_t)(x % n);
}

int iv2_mask_keep(int P, float ratio) { return P - (int)(P * ratio); }

int iv2_mask_n_visible(iv2_mask_type t, int T, int P, float ratio) {
    if (t == IV2_MASK_RANDOM) return 1 + T * P - (int)((float)(T * P) * ratio);
    return 1 + T * iv2_mask_keep(P, ratio);
}

typedef struct { double key; int idx; } keyed;

static int by_key_desc(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? 1 : -1;
    return x->idx - y->idx;
}
static int by_int(const void *a, const void *b) { return *(const int32_t *)a - *(const int32_t *)b; }

/* keep the k largest keys among n, writing base + index into out (unsorted) */
static void top_k(keyed *kv, int n, int k, int32_t base, int32_t *out) {
    qsort(kv, (size_t)n, sizeof *kv, by_key_desc);
    for (int i = 0; i < k; i++) out[i] = base + kv[i].idx;
}

/* k of n uniformly without replacement (partial Fisher-Yates), into out (unsorted) */
static void choose_uniform(int n, int k, iv2_rng *r, int32_t *perm, int32_t *out, int32_t base) {
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = 0; i < k; i++) {
        int j = i + (int)iv2_rng_below(r, (uint32_t)(n - i));
        int32_t t = perm[i]; perm[i] = perm[j]; perm[j] = t;
        out[i] = base + perm[i];
    }
}

int iv2_mask_draw(iv2_mask_type t, const float *attn, int T, int P, float ratio, iv2_rng *r, int32_t *vis) {
    if (T < 1 || P < 1 || !(ratio >= 0 && ratio < 1) || (t == IV2_MASK_ATTENTION && !attn)) return -1;
    int nv = iv2_mask_n_visible(t, T, P, ratio), keep = iv2_mask_keep(P, ratio);
    vis[0] = 0;
    if (t == IV2_MASK_ATTENTION) {
        keyed *kv = malloc(sizeof *kv * (size_t)P);
        if (!kv) return -1;
        for (int f = 0; f < T; f++) {
            for (int p = 0; p < P; p++) {
                float w = attn[(size_t)f * P + p];
                double g = -log(-log(iv2_rng_uniform(r)));
                /* zero, negative or non-finite weights rank below every positive one, in random order */
                kv[p].key = (w > 0 && isfinite(w)) ? log((double)w) + g : -1e300 + g;
                kv[p].idx = p;
            }
            top_k(kv, P, keep, 1 + f * P, vis + 1 + f * keep);
        }
        free(kv);
    } else if (t == IV2_MASK_TUBE) {
        int32_t *perm = malloc(sizeof *perm * (size_t)P);
        if (!perm) return -1;
        choose_uniform(P, keep, r, perm, vis + 1, 1);
        for (int f = 1; f < T; f++)
            for (int i = 0; i < keep; i++) vis[1 + f * keep + i] = vis[1 + i] + f * P;
        free(perm);
    } else {
        int32_t *perm = malloc(sizeof *perm * (size_t)T * P);
        if (!perm) return -1;
        choose_uniform(T * P, nv - 1, r, perm, vis + 1, 1);
        free(perm);
    }
    qsort(vis + 1, (size_t)(nv - 1), sizeof *vis, by_int);
    return nv;
}
