/* checkpoint.c: atomic training checkpoints (see distill.h). Everything is stored in F32, the
 * CPU trainer's own precision, so a resumed CPU run continues bit for bit. On a low-precision
 * backend (CUDA, bf16) the weights stored are the optimiser's fp32 master copy, and loading
 * restores that copy from them: a GPU run resumes from exactly the state it saved, a CPU run
 * resumes a GPU checkpoint without bf16 rounding, and the GPU takes a CPU checkpoint's fp32
 * weights as its master (its bf16 weights are their rounding). */
#include "distill.h"
#include "err.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t tensor_digest(const char *name, const void *data, size_t nbytes) {
    return iv2_hash_u64(iv2_hash64(name, strlen(name)), iv2_hash64(data, nbytes), nbytes, 0x636b7074);
}

/* host F32 copies of a backend buffer, freed by the caller */
static float *host_copy(iv2_backend *be, const void *buf, size_t n) {
    float *h = iv2_malloc(sizeof(float) * (n ? n : 1));
    be->download(be, h, buf, n);
    return h;
}

/* the optimiser group that updates this parameter buffer, when it keeps an fp32 master copy */
static const iv2_optim_group *master_of(const iv2_optim *opt, const void *params) {
    for (int g = 0; opt && g < opt->n_groups; g++)
        if (opt->g[g].params == params && opt->g[g].master) return &opt->g[g];
    return NULL;
}

/* host F32 copy of the weights in a parameter buffer: the fp32 master copy where there is one */
static float *weights_copy(iv2_backend *be, const void *params, size_t n, const iv2_optim *opt) {
    const iv2_optim_group *g = master_of(opt, params);
    if (!g) return host_copy(be, params, n);
    float *h = iv2_malloc(sizeof(float) * (n ? n : 1));
    be->download_raw(be, h, g->master, sizeof(float) * n);
    return h;
}

static int load_tensor(iv2_st_file *f, const char *name, int ndim, const int64_t *shape, float *dst);

/* a group's fp32 master copy from the checkpoint's F32 weights (the tensors of its table) */
static int load_master(iv2_st_file *f, const iv2_optim_group *G, iv2_backend *be) {
    float *h = iv2_calloc(G->n + 1, sizeof(float));
    for (int i = 0; i < G->n_table; i++) {
        const iv2_dparam *p = &G->table[i];
        if (load_tensor(f, p->name, p->ndim, p->shape, h + p->off)) { free(h); return iv2_err_ctx("master weights"); }
    }
    be->upload_raw(be, G->master, h, sizeof(float) * G->n);
    free(h);
    return 0;
}

static int parse_step(const char *name, int64_t *step) {
    long long s;
    char tail[32];
    if (sscanf(name, "ckpt_%lld.safetensor%31s", &s, tail) == 2 && !strcmp(tail, "s") && s >= 0) { *step = s; return 1; }
    return 0;
}

/* steps of every checkpoint in dir, ascending; malloc'd */
static int list_ckpts(const char *dir, int64_t **steps, int *n) {
    *steps = NULL; *n = 0;
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : iv2_err("%s: cannot list: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t s;
        if (!parse_step(e->d_name, &s)) continue;
        *steps = iv2_realloc(*steps, sizeof **steps * (size_t)(*n + 1));
        int i = (*n)++;
        while (i > 0 && (*steps)[i - 1] > s) { (*steps)[i] = (*steps)[i - 1]; i--; }
        (*steps)[i] = s;
    }
    closedir(d);
    return 0;
}

static void ckpt_path(char *buf, size_t cap, const char *dir, int64_t step) {
    snprintf(buf, cap, "%s/ckpt_%08lld.safetensors", dir, (long long)step);
}

/* The temporary files of checkpoint writes that never finished (a writer killed before its
 * rename: iv2_st_writer_write's PATH.tmp.XXXXXX), each as large as a checkpoint; nothing else
 * would ever remove them. Only one process writes a run's checkpoints, so any found before our
 * own write are stale. */
static void remove_stale_temps(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "ckpt_", 5) || !strstr(e->d_name, ".safetensors.tmp.")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) == 0) iv2_warn("removed %s, the temporary file of an unfinished checkpoint write", path);
    }
    closedir(d);
}

int iv2_ckpt_save(const char *dir, int64_t step, iv2_vit *student, iv2_heads *heads, iv2_optim *opt,
                  const char *cfg_json, const char *data_json, int keep) {
    iv2_backend *be = student->be;
    if (opt) iv2_optim_join(opt);   /* an overlapped step still writes parameters and moments */
    iv2_st_writer w;
    iv2_st_writer_init(&w);
    void *hold = NULL;
    uint64_t digest = 0;
    float *bufs[8] = {0};
    int nb = 0;
    if (iv2_vit_save_add(student, &w, IV2_F32, &hold)) { iv2_st_writer_free(&w); return -1; }
    float *sm = master_of(opt, student->params) ? bufs[nb++] = weights_copy(be, student->params, student->n_elems, opt) : NULL;
    size_t at = 0;
    for (int i = 0; i < student->n_param; i++) {   /* hold is the params back to back, in table order */
        const iv2_vit_param *p = &student->param[i];
        if (sm) memcpy((char *)hold + at, sm + p->offset, p->numel * sizeof(float));   /* fp32 master, not bf16 */
        digest += tensor_digest(p->name, (const char *)hold + at, p->numel * sizeof(float));
        at += p->numel * sizeof(float);
    }
    if (heads) {
        float *hp = bufs[nb++] = weights_copy(be, heads->params, heads->n_params, opt);
        for (int i = 0; i < heads->n_table; i++) {
            const iv2_dparam *p = &heads->table[i];
            iv2_st_writer_add(&w, p->name, IV2_F32, p->ndim, p->shape, hp + p->off);
            digest += tensor_digest(p->name, hp + p->off, p->n * sizeof(float));
        }
    }
    char (*names)[112] = NULL;
    int n_names = 0;
    if (opt) {
        for (int g = 0; g < opt->n_groups; g++) n_names += 2 * opt->g[g].n_table;
        names = iv2_calloc((size_t)n_names + 1, sizeof *names);
        int k = 0;
        for (int g = 0; g < opt->n_groups; g++) {
            const iv2_optim_group *G = &opt->g[g];
            float *m = bufs[nb++] = iv2_malloc(sizeof(float) * G->n), *v = bufs[nb++] = iv2_malloc(sizeof(float) * G->n);
            be->download_raw(be, m, G->m, sizeof(float) * G->n);
            be->download_raw(be, v, G->v, sizeof(float) * G->n);
            for (int i = 0; i < G->n_table; i++) {
                const iv2_dparam *p = &G->table[i];
                const int64_t nel = (int64_t)p->n;   /* moments are stored flat */
                snprintf(names[k], sizeof names[k], "optim.m.%s", p->name);
                iv2_st_writer_add(&w, names[k], IV2_F32, 1, &nel, m + p->off);
                digest += tensor_digest(names[k++], m + p->off, p->n * sizeof(float));
                snprintf(names[k], sizeof names[k], "optim.v.%s", p->name);
                iv2_st_writer_add(&w, names[k], IV2_F32, 1, &nel, v + p->off);
                digest += tensor_digest(names[k++], v + p->off, p->n * sizeof(float));
            }
        }
    }
    char sbuf[32], dbuf[32];
    snprintf(sbuf, sizeof sbuf, "%lld", (long long)step);
    snprintf(dbuf, sizeof dbuf, "%016" PRIx64, digest);
    iv2_st_writer_meta(&w, "iv2.step", sbuf);
    iv2_st_writer_meta(&w, "iv2.digest", dbuf);
    if (cfg_json) iv2_st_writer_meta(&w, "iv2.distill", cfg_json);
    if (data_json) iv2_st_writer_meta(&w, "iv2.data", data_json);
    char path[4096];
    mkdir(dir, 0755);
    remove_stale_temps(dir);
    ckpt_path(path, sizeof path, dir, step);
    int rc = iv2_st_writer_write(&w, path);
    iv2_st_writer_free(&w);
    free(hold);
    free(names);
    for (int i = 0; i < nb; i++) free(bufs[i]);
    if (rc) return iv2_err_ctx("checkpoint");
    int fd = open(dir, O_RDONLY);   /* make the rename itself durable */
    if (fd >= 0) { fsync(fd); close(fd); }
    int64_t *steps;
    int n;
    if (list_ckpts(dir, &steps, &n)) return -1;
    for (int i = 0; i + keep < n; i++) {
        ckpt_path(path, sizeof path, dir, steps[i]);
        unlink(path);
    }
    free(steps);
    return 0;
}

int iv2_ckpt_latest(const char *dir, char *path, size_t cap, int64_t *step) {
    int64_t *steps;
    int n;
    if (list_ckpts(dir, &steps, &n)) return -1;
    if (n == 0) { free(steps); return 1; }
    *step = steps[n - 1];
    ckpt_path(path, cap, dir, *step);
    free(steps);
    return 0;
}

static int load_tensor(iv2_st_file *f, const char *name, int ndim, const int64_t *shape, float *dst) {
    iv2_st_tensor *t = iv2_st_find(f, name);
    if (!t) return iv2_err("tensor '%s' missing", name);
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) return iv2_err("tensor '%s' has another shape than the model's", name);
    t->used = 1;
    return iv2_st_read(f, t, dst, IV2_F32);
}

char *iv2_ckpt_meta(const char *path, const char *key) {
    iv2_st_file f;
    if (iv2_st_open(&f, path)) { iv2_err_clear(); return NULL; }
    const char *v = iv2_st_meta(&f, key);
    char *out = v ? iv2_strdup(v) : NULL;
    iv2_st_close(&f);
    return out;
}

int iv2_ckpt_before(const char *dir, int64_t step, char *path, size_t cap, int64_t *prev) {
    int64_t *steps;
    int n, k = -1;
    if (list_ckpts(dir, &steps, &n)) return -1;
    for (int i = 0; i < n; i++)
        if (steps[i] < step) k = i;
    if (k >= 0) { *prev = steps[k]; ckpt_path(path, cap, dir, *prev); }
    free(steps);
    return k >= 0 ? 0 : 1;
}

int iv2_ckpt_load(const char *path, iv2_vit *student, iv2_heads *heads, iv2_optim *opt, int64_t *step,
                  char **cfg_json) {
    if (opt) iv2_optim_join(opt);   /* nothing of a pending step may land after the load */
    iv2_st_file f;
    if (iv2_st_open(&f, path)) return iv2_err_ctx("corrupt or unreadable checkpoint");
    int rc = -1;
    const char *ss = iv2_st_meta(&f, "iv2.step"), *ds = iv2_st_meta(&f, "iv2.digest");
    if (!ss || !ds) { iv2_err("not an iv2-distill checkpoint (no iv2.step / iv2.digest metadata)"); goto out; }
    /* the digest over every tensor, independent of file order */
    uint64_t want = strtoull(ds, NULL, 16), got = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        iv2_st_tensor *t = &f.tensors[i];
        void *tmp = iv2_malloc(t->nbytes + 1);
        memcpy(tmp, t->data, t->nbytes);
        got += tensor_digest(t->name, tmp, t->nbytes);
        free(tmp);
    }
    if (got != want) { iv2_err("corrupt checkpoint (checksum %016" PRIx64 ", recorded %016" PRIx64 ")", got, want); goto out; }
    if (iv2_vit_load_st(student, &f, 0)) goto out;
    iv2_backend *be = student->be;
    if (heads) {
        float *hp = iv2_calloc(heads->n_params + 1, sizeof(float));
        for (int i = 0; i < heads->n_table; i++) {
            const iv2_dparam *p = &heads->table[i];
            if (load_tensor(&f, p->name, p->ndim, p->shape, hp + p->off)) { free(hp); goto out; }
        }
        be->upload(be, heads->params, hp, heads->n_params);
        free(hp);
    }
    if (opt) {
        for (int g = 0; g < opt->n_groups; g++) {
            const iv2_optim_group *G = &opt->g[g];
            float *m = iv2_calloc(G->n + 1, sizeof(float)), *v = iv2_calloc(G->n + 1, sizeof(float));
            char nm[112];
            int bad = 0;
            for (int i = 0; i < G->n_table && !bad; i++) {
                const iv2_dparam *p = &G->table[i];
                const int64_t nel = (int64_t)p->n;
                snprintf(nm, sizeof nm, "optim.m.%s", p->name);
                bad = load_tensor(&f, nm, 1, &nel, m + p->off);
                snprintf(nm, sizeof nm, "optim.v.%s", p->name);
                if (!bad) bad = load_tensor(&f, nm, 1, &nel, v + p->off);
            }
            if (!bad) {
                be->upload_raw(be, G->m, m, sizeof(float) * G->n);
                be->upload_raw(be, G->v, v, sizeof(float) * G->n);
            }
            free(m); free(v);
            if (bad || (G->master && load_master(&f, G, be))) goto out;
        }
    }
    *step = strtoll(ss, NULL, 10);
    if (cfg_json) {
        const char *cj = iv2_st_meta(&f, "iv2.distill");
        *cfg_json = cj ? iv2_strdup(cj) : NULL;
    }
    rc = 0;
out:
    iv2_st_close(&f);
    if (rc) iv2_err_ctx("%s", path);
    return rc;
}
