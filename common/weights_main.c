/* weights_main.c: iv2-weights, model weight files.
 *   init     deterministic random weights for a preset (+ JSON overrides)
 *   info     list a safetensors file (tensors, dtypes, shapes, parameters, metadata) and, when
 *            a model is named or recorded in the file, check that it loads as that model
 *   convert  an official PyTorch checkpoint (.pth/.bin) to safetensors with our names
 *   plan     the memory plan of a preset (inference, or training with recompute) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "compute.h"
#include "err.h"
#include "log.h"
#include "pth.h"
#include "safetensors.h"
#include "vit.h"

static void usage(FILE *o) {
    fprintf(o,
            "usage: iv2-weights init --preset P [--config JSON] [--seed S] [--dtype f32|bf16|f16] -o OUT.safetensors\n"
            "       iv2-weights info FILE.safetensors [--model PRESET] [--config JSON]\n"
            "       iv2-weights convert IN.pth [IN2.pth...] -o OUT.safetensors --model internvit|videomae|student|raw\n"
            "                           [--dtype keep|f32|bf16|f16] [--check PRESET [--config JSON]]\n"
            "       iv2-weights plan --preset P [--config JSON] [--batch B] [--tokens N] [--dtype f32|bf16]\n"
            "                        [--train [--recompute [N|all]] [--mem GIB]]\n"
            "\n"
            "Presets: internvit-6b internvit-tiny videomae-g videomae-tiny iv2-1b iv2-6b iv2-s iv2-b iv2-l iv2-tiny.\n"
            "--config takes JSON overrides of the preset, e.g. '{\"depth\": 2, \"gelu\": \"tanh\"}'.\n"
            "init writes the official tensor names (docs/models.md) and records the config in the file's\n"
            "metadata (iv2.config), so iv2-extract and iv2-distill need no preset for it.\n"
            "info with --model (or a file carrying iv2.config) loads the file into that model and reports\n"
            "every missing, mis-shaped or unexpected tensor.\n"
            "convert maps names (videomae: strips encoder., drops the decoder; internvit: drops the\n"
            "InternVL-C text tower) and keeps dtypes unless --dtype; --check loads the result as PRESET.\n"
            "Several INs are the shards of one checkpoint (pytorch_model-00001-of-00002.bin ...): one OUT.\n"
            "plan --train: student training memory (weights, grads, AdamW, activations) with N (or all)\n"
            "blocks recomputed in the backward; --mem GIB: the largest batch that fits in GIB.\n");
}

static const char *arg_val(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "iv2-weights: error: %s needs a value\n", argv[*i]);
        exit(2);
    }
    return argv[++*i];
}

/* a numeric option value; "abc", "8x", "2.5" for an integer or a value outside [lo, hi] is an
 * error, not 0 */
static double arg_num(int argc, char **argv, int *i, double lo, double hi, int integer) {
    const char *opt = argv[*i], *v = arg_val(argc, argv, i);
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || !(x >= lo && x <= hi) || (integer && x != (double)(long long)x)) {
        fprintf(stderr, "iv2-weights: error: %s '%s': want a positive %s\n", opt, v, integer ? "integer" : "number");
        exit(2);
    }
    return x;
}

static int make_config(const char *preset, const char *json, iv2_vit_config *c) {
    if (iv2_vit_preset(preset, c)) return -1;
    if (json && iv2_vit_config_json(c, json)) return -1;
    return iv2_vit_config_check(c);
}

static void print_plan(const iv2_vit_config *c, int batch, int tokens, int train) {
    iv2_vit_plan p = iv2_vit_memory_plan(c, sizeof(float), batch, tokens, 0, train);
    char line[256];
    iv2_vit_plan_str(&p, line, sizeof line);
    printf("%s: %s\n", c->name, line);
}

static int cmd_init(int argc, char **argv) {
    const char *preset = NULL, *json = NULL, *out = NULL, *dts = "f32";
    unsigned long long seed = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--preset")) preset = arg_val(argc, argv, &i);
        else if (!strcmp(argv[i], "--config")) json = arg_val(argc, argv, &i);
        else if (!strcmp(argv[i], "--seed")) {
            const char *v = arg_val(argc, argv, &i);
            char *end;
            seed = strtoull(v, &end, 0);
            if (end == v || *end || v[0] == '-') return iv2_err("init: --seed '%s': want a non-negative integer", v);
        }
        else if (!strcmp(argv[i], "--dtype")) dts = arg_val(argc, argv, &i);
        else if (!strcmp(argv[i], "-o") || !strcmp(argv[i], "--out")) out = arg_val(argc, argv, &i);
        else return iv2_err("init: unknown argument '%s'", argv[i]);
    }
    if (!preset || !out) return iv2_err("init: needs --preset and -o");
    iv2_dtype dt;
    if (iv2_dtype_parse(dts, &dt) || (dt != IV2_F32 && dt != IV2_BF16 && dt != IV2_F16))
        return iv2_err("init: --dtype %s (want f32, bf16 or f16)", dts);
    iv2_vit_config c;
    if (make_config(preset, json, &c)) return -1;
    print_plan(&c, 1, iv2_vit_tokens(&c), 0);
    iv2_backend *be = iv2_backend_create("cpu", 0);
    if (!be) return -1;
    iv2_vit *m = iv2_vit_create(be, &c);
    int rc = m ? 0 : -1;
    if (!rc) rc = iv2_vit_init_random(m, seed);
    if (!rc) {
        iv2_st_writer w;
        void *hold = NULL;
        iv2_st_writer_init(&w);
        rc = iv2_vit_save_add(m, &w, dt, &hold);
        char s[32];
        snprintf(s, sizeof s, "%llu", seed);
        iv2_st_writer_meta(&w, "iv2.seed", s);
        if (!rc) rc = iv2_st_writer_write(&w, out);
        iv2_st_writer_free(&w);
        free(hold);
    }
    if (!rc) printf("wrote %s: %s, %d tensors, %zu parameters, seed %llu\n", out, c.name, m->n_param, m->n_elems, seed);
    iv2_vit_free(m);
    iv2_backend_destroy(be);
    return rc;
}

static int check_load(const char *path, const iv2_vit_config *c) {
    iv2_backend *be = iv2_backend_create("cpu", 0);
    if (!be) return -1;
    iv2_vit *m = iv2_vit_create(be, c);
    int rc = m ? iv2_vit_load(m, path) : -1;
    if (!rc) printf("loads as %s (%s): ok\n", c->name, path);
    iv2_vit_free(m);
    iv2_backend_destroy(be);
    return rc;
}

static int cmd_info(int argc, char **argv) {
    const char *path = NULL, *preset = NULL, *json = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--model")) preset = arg_val(argc, argv, &i);
        else if (!strcmp(argv[i], "--config")) json = arg_val(argc, argv, &i);
        else if (argv[i][0] == '-') return iv2_err("info: unknown argument '%s'", argv[i]);
        else path = argv[i];
    }
    if (!path) return iv2_err("info: no file");
    iv2_st_file f;
    if (iv2_st_open(&f, path)) return -1;
    size_t params = 0, bytes = 0;
    printf("%s: %d tensors\n", path, f.n_tensors);
    for (int i = 0; i < f.n_tensors; i++) {
        iv2_st_tensor *t = &f.tensors[i];
        char sh[128];
        int n = snprintf(sh, sizeof sh, "[");
        for (int d = 0; d < t->ndim && n < (int)sizeof sh; d++)
            n += snprintf(sh + n, sizeof sh - n, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        if (n < (int)sizeof sh) snprintf(sh + n, sizeof sh - n, "]");
        printf("  %-56s %-5s %-24s %zu\n", t->name, iv2_dtype_name(t->dtype), sh, t->numel);
        params += t->numel;
        bytes += t->nbytes;
    }
    printf("parameters %zu (%.3f M), %.1f MiB of data\n", params, params / 1e6, bytes / 1048576.0);
    for (int i = 0; i < f.n_meta; i++) printf("metadata %s = %s\n", f.meta_keys[i], f.meta_vals[i]);
    int has_cfg = iv2_st_meta(&f, "iv2.config") != NULL;
    iv2_st_close(&f);
    if (!preset && !has_cfg) return 0;
    iv2_vit_config c;
    if (preset ? make_config(preset, json, &c) : iv2_vit_config_from_file(path, NULL, &c)) return -1;
    return check_load(path, &c);
}

static int cmd_convert(int argc, char **argv) {
    const char *out = NULL, *model = NULL, *dts = "keep", *check = NULL, *json = NULL;
    const char **in = iv2_malloc(sizeof(char *) * (size_t)argc);   /* the inputs: one file or its shards */
    int n_in = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "-o") || !strcmp(argv[i], "--out")) out = arg_val(argc, argv, &i);
        else if (!strcmp(argv[i], "--model")) model = arg_val(argc, argv, &i);
        else if (!strcmp(argv[i], "--dtype")) dts = arg_val(argc, argv, &i);
        else if (!strcmp(argv[i], "--check")) check = arg_val(argc, argv, &i);
        else if (!strcmp(argv[i], "--config")) json = arg_val(argc, argv, &i);
        else if (argv[i][0] == '-') { free(in); return iv2_err("convert: unknown argument '%s'", argv[i]); }
        else in[n_in++] = argv[i];
    }
    if (!n_in || !out || !model) { free(in); return iv2_err("convert: needs IN.pth, -o OUT and --model"); }
    for (int a = 0; a < n_in; a++) {
        int twice = -1;   /* a shard listed twice would "map two tensors to one name" */
        for (int b = 0; b < a && twice < 0; b++) if (iv2_same_file(in[a], in[b])) twice = b;
        if (twice >= 0 || iv2_same_file(out, in[a])) {   /* -o an input: the checkpoint read would be replaced */
            if (twice >= 0) iv2_err("convert: %s is given twice (as %s and %s)", in[a], in[twice], in[a]);
            else iv2_err("convert: -o %s is the input %s; give another output file", out, in[a]);
            free(in);
            return -1;
        }
    }
    iv2_vit_config cc;   /* a --check preset is known before the conversion, not after */
    if (check && make_config(check, json, &cc)) { free(in); return -1; }
    if (json && !check) { free(in); return iv2_err("convert: --config goes with --check"); }
    int odt = IV2_PTH_KEEP;
    if (strcmp(dts, "keep")) {
        iv2_dtype dt;
        if (iv2_dtype_parse(dts, &dt) || (dt != IV2_F32 && dt != IV2_BF16 && dt != IV2_F16)) {
            free(in);
            return iv2_err("convert: --dtype %s (want keep, f32, bf16 or f16)", dts);
        }
        odt = (int)dt;
    }
    iv2_pth_summary sum;
    int crc = n_in == 1 ? iv2_pth_convert(in[0], out, model, odt, &sum) : iv2_pth_convert_shards(in, n_in, out, model, odt, &sum);
    free(in);
    if (crc) return -1;
    printf("wrote %s: %d tensors (%d dropped, %d non-tensor entries skipped), %.1f MiB\n", out, sum.n_written,
           sum.n_dropped, sum.n_skipped, sum.bytes_out / 1048576.0);
    return check ? check_load(out, &cc) : 0;
}

static void human(char *b, size_t cap, size_t x) { snprintf(b, cap, "%.2f GiB", x / 1073741824.0); }

/* the largest batch whose student training (weights, grads, AdamW, activations) fits in mem */
static int largest_batch(const iv2_vit_config *c, size_t esize, int tokens, int R, size_t mem) {
    int lo = 0, hi = 1 << 24;
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        iv2_vit_plan p = iv2_vit_train_plan(c, esize, mid, tokens, R, 0);
        if (p.weights + p.grads + p.adamw + p.activations <= mem) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

static int cmd_plan(int argc, char **argv) {
    const char *preset = NULL, *json = NULL, *dts = "f32";
    int batch = 0, tokens = 0, train = 0, R = 0;
    double mem_gib = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--preset")) preset = arg_val(argc, argv, &i);
        else if (!strcmp(argv[i], "--config")) json = arg_val(argc, argv, &i);
        else if (!strcmp(argv[i], "--batch")) batch = (int)arg_num(argc, argv, &i, 1, 1 << 24, 1);
        else if (!strcmp(argv[i], "--tokens")) tokens = (int)arg_num(argc, argv, &i, 1, 1 << 24, 1);
        else if (!strcmp(argv[i], "--dtype")) dts = arg_val(argc, argv, &i);
        else if (!strcmp(argv[i], "--mem")) mem_gib = arg_num(argc, argv, &i, 0.001, 1 << 20, 0);
        else if (!strcmp(argv[i], "--train")) train = 1;
        else if (!strcmp(argv[i], "--recompute")) {   /* optional value: a block count or "all" (default) */
            R = 1 << 30;
            if (i + 1 < argc && argv[i + 1][0] != '-') {
                const char *v = argv[++i];
                char *end;
                long n = strtol(v, &end, 10);
                if (strcmp(v, "all") && (*end || n < 0)) return iv2_err("plan: --recompute %s (want a block count or all)", v);
                if (strcmp(v, "all")) R = (int)n;
            }
        } else return iv2_err("plan: unknown argument '%s'", argv[i]);
    }
    if (!preset) return iv2_err("plan: --preset NAME is needed (a model preset, e.g. iv2-1b)");
    if (!train && (R || mem_gib > 0)) return iv2_err("plan: --recompute and --mem are for --train");
    iv2_dtype dt;
    if (iv2_dtype_parse(dts, &dt) || (dt != IV2_F32 && dt != IV2_BF16))
        return iv2_err("plan: --dtype %s (want f32 for the CPU or bf16 for CUDA)", dts);
    size_t es = iv2_dtype_size(dt);
    iv2_vit_config c;
    if (make_config(preset, json, &c)) return -1;
    if (batch <= 0) batch = c.arch == IV2_VIT_INTERNVIT ? 8 : 1;
    if (tokens <= 0) tokens = iv2_vit_tokens(&c);
    if (!train) {
        iv2_vit_plan p = iv2_vit_memory_plan(&c, es, batch, tokens, 0, 0);
        char line[256];
        iv2_vit_plan_str(&p, line, sizeof line);
        printf("%s: %s\n", c.name, line);
        return 0;
    }
    if (R > c.depth) R = c.depth;
    iv2_vit_plan p = iv2_vit_train_plan(&c, es, batch, tokens, R, 0);
    iv2_vit_plan p0 = iv2_vit_train_plan(&c, es, batch, tokens, 0, 0), pa = iv2_vit_train_plan(&c, es, batch, tokens, c.depth, 0);
    char line[320], a0[32], aa[32], tot[32];
    iv2_vit_plan_str(&p, line, sizeof line);
    human(a0, sizeof a0, p0.activations); human(aa, sizeof aa, pa.activations);
    human(tot, sizeof tot, p.weights + p.grads + p.adamw + p.activations);
    printf("%s (%s): %s\n", c.name, iv2_dtype_name(dt), line);
    printf("%s: activations %s recomputing none, %s recomputing all %d blocks; total %s (student only, no heads)\n",
           c.name, a0, aa, c.depth, tot);
    if (mem_gib > 0) {
        size_t mem = (size_t)(mem_gib * 1073741824.0);
        printf("%s: largest batch of %d tokens in %.1f GiB: %d with %d blocks recomputed (%d recomputing none, %d all)\n",
               c.name, tokens, mem_gib, largest_batch(&c, es, tokens, R, mem), R, largest_batch(&c, es, tokens, 0, mem),
               largest_batch(&c, es, tokens, c.depth, mem));
    }
    return 0;
}

int main(int argc, char **argv) {
    iv2_omp_wait_default(argv);   /* OMP_WAIT_POLICY=passive unless set (log.h) */
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); return 0; }
    int rc;
    if (!strcmp(argv[1], "init")) rc = cmd_init(argc, argv);
    else if (!strcmp(argv[1], "info")) rc = cmd_info(argc, argv);
    else if (!strcmp(argv[1], "convert")) rc = cmd_convert(argc, argv);
    else if (!strcmp(argv[1], "plan")) rc = cmd_plan(argc, argv);
    else {
        usage(stderr);
        fprintf(stderr, "iv2-weights: error: unknown command '%s' (init, info, convert, plan; --help)\n", argv[1]);
        return 2;
    }
    if (rc) iv2_die("iv2-weights");
    return 0;
}
