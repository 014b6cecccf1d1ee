/* pairing.c: the default teacher-block <-> student-block pairing, taken from the cache.
 *
 * The recipe aligns the teachers' last blocks with the student's last blocks. Rather than
 * hard-coding block numbers that only fit one student and one cache, a pairing the config
 * leaves out is derived: the cache's clip_b* targets in ascending
 * block order go to the student's last K blocks in ascending order, likewise mae_b*. On a
 * recipe cache and the 1B student that gives 42..47 -> 34..39 and 36..39 -> 36..39, the
 * recipe; on a tiny-teacher cache and iv2-tiny it gives 0..5 -> 0..5 and 0..3 -> 2..5. */
#include "distill.h"
#include "err.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* block number of "<prefix><digits>", else -1 */
static int block_of(const char *name, const char *prefix) {
    size_t n = strlen(prefix);
    if (strncmp(name, prefix, n) || !name[n]) return -1;
    char *end;
    long b = strtol(name + n, &end, 10);
    return *end || b < 0 || b > 100000 ? -1 : (int)b;
}

static int pair_one(const char *const *names, int n, const char *prefix, int depth, const char *key, int *count,
                    int *teacher, int *student) {
    int k = 0, blocks[IV2_DISTILL_MAX_LAYERS];
    for (int i = 0; i < n; i++) {
        int b = block_of(names[i], prefix);
        if (b < 0) continue;
        if (k == IV2_DISTILL_MAX_LAYERS)
            return iv2_err("the cache has more than %d %s* targets; name the ones to train on in \"%s\"",
                           IV2_DISTILL_MAX_LAYERS, prefix, key);
        int j = k++;   /* insertion sort: ascending block */
        while (j > 0 && blocks[j - 1] > b) { blocks[j] = blocks[j - 1]; j--; }
        blocks[j] = b;
    }
    if (k > depth)
        return iv2_err("the cache has %d %s* targets but the student has %d blocks: no default pairing; "
                       "set \"%s\" in the run config", k, prefix, depth, key);
    for (int i = 0; i < k; i++) { teacher[i] = blocks[i]; student[i] = depth - k + i; }
    *count = k;
    return 0;
}

int iv2_distill_pair_layers(iv2_distill_config *c, const char *const *names, int n, int student_depth) {
    if ((c->layers_auto & IV2_PAIR_CLIP) &&
        pair_one(names, n, "clip_b", student_depth, "clip_layers", &c->n_clip, c->clip_teacher, c->clip_student))
        return -1;
    if ((c->layers_auto & IV2_PAIR_MAE) &&
        pair_one(names, n, "mae_b", student_depth, "mae_layers", &c->n_mae, c->mae_teacher, c->mae_student))
        return -1;
    if (c->n_clip + c->n_mae == 0 && !c->use_final)
        return iv2_err("no targets: the cache has no clip_b*/mae_b* targets the config pairs and use_final is off");
    return 0;
}

static size_t put_pairs(char *buf, size_t cap, size_t at, const char *prefix, int n, const int *t, const int *s, int autop) {
    for (int i = 0; i < n && at < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%s%d->%d", at ? " " : "", prefix, t[i], s[i]);
    if (at < cap && n == 0) at += (size_t)snprintf(buf + at, cap - at, "%s(no %s* targets)", at ? " " : "", prefix);
    if (at < cap && autop) at += (size_t)snprintf(buf + at, cap - at, " (from the cache)");
    return at;
}

void iv2_distill_pairing_str(const iv2_distill_config *c, char *buf, size_t cap) {
    if (!cap) return;
    buf[0] = 0;
    size_t at = put_pairs(buf, cap, 0, "clip_b", c->n_clip, c->clip_teacher, c->clip_student, c->layers_auto & IV2_PAIR_CLIP);
    if (at < cap) at += (size_t)snprintf(buf + at, cap - at, ";");
    put_pairs(buf, cap, at, "mae_b", c->n_mae, c->mae_teacher, c->mae_student, c->layers_auto & IV2_PAIR_MAE);
}
