/* loss.c: the recipe's loss (engine_for_pretraining.py): per term the mean over (layer, sample,
 * visible token) of 2 - 2cos = |u - v|^2 of unit vectors, channel-summed; total = the
 * alpha-weighted sum. The heads compute the rows; this file holds the reduction and the guard. */
#include "distill.h"
#include "err.h"
#include <math.h>

float iv2_loss_scale(float alpha, int layers, int64_t rows) {
    return layers > 0 && rows > 0 ? (float)((double)alpha / ((double)layers * (double)rows)) : 0.0f;
}

void iv2_loss_total(iv2_loss *l, const iv2_distill_config *c) {
    l->total = (c->n_clip ? c->alpha_clip * l->clip : 0) + (c->use_final ? c->alpha_final * l->final : 0) +
               (c->n_mae ? c->alpha_mae * l->mae : 0);
}

int iv2_loss_check(const iv2_loss *l, int64_t step) {
    if (!isfinite(l->total) || !isfinite(l->clip) || !isfinite(l->final) || !isfinite(l->mae))
        return iv2_err("step %lld: loss is not finite (clip %g, final %g, mae %g); stopping, the last good checkpoint is kept",
                       (long long)step, l->clip, l->final, l->mae);
    return 0;
}
