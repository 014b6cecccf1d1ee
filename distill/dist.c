/* dist.c: data parallelism for iv2-distill: ranks from MPI, the agreement checks at start-up,
 * and the gradient all-reduce (MPI on the CPU, NCCL on CUDA), bucketed and overlapped with the
 * student's backward through its per-block hook (iv2_vit.grads_ready).
 *
 * Buckets: the heads' gradients are final before the student's backward starts, so they go
 * first; then, walking the student's blocks from the last to the first, a bucket is started each
 * time at least bucket_bytes of gradients (at the end of the buffer) are final, and the rest
 * when the embedding is done. On the CPU each bucket is an MPI_Iallreduce (sum, in place), the
 * average taken once all are done; on CUDA an ncclAllReduce (ncclAvg) on a stream of its own that
 * waits on an event of the backend's stream, and the backend's stream waits for that stream
 * before the optimiser runs. */
#include "dist.h"
#include "distill.h"
#include "cache.h"
#include "err.h"
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef IV2_MPI
#include <mpi.h>
#endif
#if defined(IV2_CUDA) && defined(IV2_NCCL) && defined(IV2_MPI)   /* NCCL's handshake goes over MPI */
#include <cuda_runtime.h>
#include <nccl.h>
void *iv2_cuda_stream(iv2_backend *be);   /* kernels/cuda_backend.cu: the backend's cudaStream_t */
#define USE_NCCL 1
#endif

#define MAX_REQ 4096

static struct {
    int rank, world, local_rank, mpi;   /* mpi: MPI_Init was called here */
    /* the reducer of the current step */
    iv2_trainer *t;
    size_t pending_hi;                  /* student grads [pending_hi, n) are handed to a bucket */
    size_t bucket;                      /* elements per bucket */
    int nccl, failed;
    int64_t buckets;                    /* student buckets started, all steps (IV2_DIST_DEBUG) */
#ifdef IV2_MPI
    MPI_Request req[MAX_REQ];
    int nreq;
#endif
#ifdef USE_NCCL
    ncclComm_t comm;
    cudaStream_t side, main;
    cudaEvent_t ready, done;
#endif
} D = {.rank = 0, .world = 1};

static int env_int(const char *name, int dflt) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : dflt;
}

/* the launcher's world size from its environment, 1 when not launched by one */
static int launcher_world(void) {
    int w = env_int("OMPI_COMM_WORLD_SIZE", 0);
    if (w < 1) w = env_int("PMI_SIZE", 0);
    if (w < 1) w = env_int("PMIX_SIZE", 0);
    if (w < 1 && getenv("PMIX_RANK")) w = 2;       /* pmix without a size variable: MPI_Init tells */
    if (w < 1) w = env_int("SLURM_STEP_NUM_TASKS", 1);   /* srun's step, not the whole allocation */
    return w < 1 ? 1 : w;
}

int iv2_dist_init(int *argc, char ***argv) {
    int w = launcher_world();
    D.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", env_int("MPI_LOCALRANKID", env_int("SLURM_LOCALID", 0)));
    if (w <= 1) return 0;
#ifdef IV2_MPI
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return iv2_err("MPI_Init failed (launched with %d ranks)", w);
    D.mpi = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &D.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &D.world);
    if (D.rank != 0) iv2_set_quiet(1);   /* progress and info lines from rank 0 only */
    return 0;
#else
    (void)argc; (void)argv;
    return iv2_err("launched as %d ranks, but this iv2-distill was built without MPI (install libopenmpi-dev and rebuild)", w);
#endif
}

void iv2_dist_finalize(void) {
    iv2_dist_teardown();
#ifdef IV2_MPI
    if (D.mpi) MPI_Finalize();
#endif
    D.mpi = 0;
}

void iv2_dist_abort(int code) {
#ifdef IV2_MPI
    if (D.mpi && D.world > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
    (void)code;
}

void iv2_dist_die(const char *tool) {
    if (D.world > 1) {
        fprintf(stderr, "%s: error (rank %d of %d): %s\n", tool, D.rank, D.world, iv2_errmsg());
        fflush(stderr);
        iv2_dist_abort(1);
    }
    iv2_die(tool);
}

int iv2_dist_rank(void) { return D.rank; }
int iv2_dist_world(void) { return D.world; }
int iv2_dist_local_rank(void) { return D.local_rank; }

int iv2_dist_pick_threads(int threads) {
    int local = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", env_int("MPI_LOCALNRANKS", env_int("SLURM_STEP_TASKS_PER_NODE", 1)));
    if (D.world == 1 || threads > 0 || local <= 1 || getenv("OMP_NUM_THREADS")) return threads;
    int t = omp_get_num_procs() / local;
    return t < 1 ? 1 : t;
}

void iv2_dist_pick_device(char *device, size_t cap) {
    if (D.world > 1 && !strcmp(device, "cuda")) snprintf(device, cap, "cuda:%d", D.local_rank);
}

int iv2_dist_local_batch(int global_batch) { return global_batch / D.world; }

int iv2_dist_check_batch(int global_batch) {
    if (global_batch % D.world)
        return iv2_err("batch %d (the global batch) is not a multiple of the %d ranks", global_batch, D.world);
    return 0;
}

int iv2_dist_agree(int rc, const char *what) {
    if (D.world == 1) return rc ? -1 : 0;
#ifdef IV2_MPI
    int bad = rc != 0, any = 0;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (any && !bad) return iv2_err("%s failed on another rank (see its message)", what);
    return any ? -1 : 0;
#else
    (void)what;
    return rc ? -1 : 0;
#endif
}

int iv2_dist_max_int(int v) {
    if (D.world == 1) return v;
#ifdef IV2_MPI
    int m = v;
    MPI_Allreduce(&v, &m, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return m;
#else
    return v;
#endif
}

int iv2_dist_bcast_rc(int rc, const char *what) {
    if (D.world == 1) return rc;
#ifdef IV2_MPI
    int r0 = rc;
    MPI_Bcast(&r0, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (r0 && D.rank != 0) return iv2_err("%s failed on rank 0 (see its message)", what);
    return r0 ? -1 : 0;
#else
    (void)what;
    return rc;
#endif
}

/* ---- start-up checks ---- */

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 0x100000001b3ULL; }
    return h;
}

/* checksum of a backend buffer of n elements, downloaded as f32 in chunks */
static uint64_t buffer_sum(iv2_backend *be, const void *buf, size_t n, uint64_t h) {
    size_t chunk = (size_t)1 << 20;
    float *tmp = iv2_malloc(sizeof(float) * (n < chunk ? n : chunk));
    for (size_t i = 0; i < n; i += chunk) {
        size_t k = n - i < chunk ? n - i : chunk;
        be->download(be, tmp, IV2_AT(be, buf, i), k);
        h = (h ^ iv2_hash64(tmp, k * sizeof(float))) * 0x100000001b3ULL;
    }
    free(tmp);
    return h;
}

/* every rank's h equals rank 0's, or a clean error on every rank naming what differs */
static int same_everywhere(uint64_t h, const char *what) {
#ifdef IV2_MPI
    uint64_t h0 = h;
    MPI_Bcast(&h0, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    int differ = h0 != h, first = -1, r = differ ? D.rank : D.world;
    MPI_Allreduce(&r, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first < D.world)
        return iv2_err("rank %d: %s differs from rank 0's (the same seed, config and cache on every rank?)", first, what);
    return 0;
#else
    (void)h; (void)what;
    return 0;
#endif
}

static uint64_t config_sum(const iv2_trainer *t) {
    iv2_distill_config c = t->cfg;   /* what may differ per rank: the device (local GPU), threads */
    memset(c.device, 0, sizeof c.device);
    c.threads = 0;
    char *js = iv2_distill_config_to_json(&c);
    uint64_t h = fnv(0xcbf29ce484222325ULL, js, strlen(js));
    free(js);
    return h;
}

static uint64_t cache_sum(iv2_trainer *t) {
    const iv2_loader *L = &t->L;
    int64_t f[] = {L->set ? L->set->n_views : 0, L->n_train, L->n_videos, L->n_eval, L->nv, L->clip_dim, L->mae_dim,
                   L->final_dim, L->frames, L->size};
    uint64_t h = fnv(0xcbf29ce484222325ULL, f, sizeof f);
    if (L->set && L->set->n_views > 0) {   /* the frames of the first and last views */
        size_t fb = (size_t)L->frames * L->size * L->size * 3;
        uint8_t *buf = iv2_malloc(fb);
        int64_t views[2] = {0, L->set->n_views - 1};
        for (int i = 0; i < 2; i++) {
            iv2_cache_view v;
            if (iv2_cache_set_read_view(L->set, views[i], &v, buf) == 0) h = fnv(h, buf, fb);
            else { iv2_err_clear(); h = fnv(h, "?", 1); }
        }
        free(buf);
    }
    return h;
}

static uint64_t weights_sum(iv2_trainer *t) {
    uint64_t w = buffer_sum(t->be, t->student->params, t->student->n_elems, 0xcbf29ce484222325ULL);
    w = buffer_sum(t->be, t->heads->params, t->heads->n_params, w);
    return fnv(w, &t->step, sizeof t->step);
}

int iv2_dist_check_weights(iv2_trainer *t) {
    if (D.world == 1) return 0;
    if (same_everywhere(weights_sum(t), "the weights")) return iv2_err_ctx("step %lld: the ranks drifted apart", (long long)t->step);
    return 0;
}

int iv2_dist_setup(iv2_trainer *t) {
    if (D.world == 1) return 0;
    iv2_backend *be = t->be;
    if (same_everywhere(config_sum(t), "the run config") || same_everywhere(cache_sum(t), "the cache (views, targets, frames)"))
        return -1;
    if (same_everywhere(weights_sum(t), "the initial weights and step (seed or checkpoint)")) return -1;
    size_t mb = iv2_dist_bucket_bytes();
    D.bucket = mb / be->esize;
    if (D.bucket < 1) D.bucket = 1;
    int rc = 0;
    if (!strcmp(be->name, "cuda")) {
#ifdef USE_NCCL
        ncclUniqueId id;
        if (D.rank == 0 && ncclGetUniqueId(&id) != ncclSuccess) rc = iv2_err("ncclGetUniqueId failed");
        if (iv2_dist_bcast_rc(rc, "ncclGetUniqueId")) return -1;
        MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
        ncclResult_t r = ncclCommInitRank(&D.comm, D.world, id, D.rank);
        if (r != ncclSuccess) rc = iv2_err("rank %d: ncclCommInitRank: %s", D.rank, ncclGetErrorString(r));
        /* at the compute stream's priority (the backend's highest): the all-reduce is not starved
         * by the backward's blocks; the optimiser's side stream is the one that yields */
        int least = 0, greatest = 0;
        cudaDeviceGetStreamPriorityRange(&least, &greatest);
        if (r == ncclSuccess &&
            (cudaStreamCreateWithPriority(&D.side, cudaStreamNonBlocking, greatest) != cudaSuccess ||
             cudaEventCreateWithFlags(&D.ready, cudaEventDisableTiming) != cudaSuccess ||
             cudaEventCreateWithFlags(&D.done, cudaEventDisableTiming) != cudaSuccess))
            rc = iv2_err("rank %d: cannot create the NCCL stream and events", D.rank);
        D.main = (cudaStream_t)iv2_cuda_stream(be);
        D.nccl = rc == 0;
#else
        rc = iv2_err("training on CUDA over %d ranks needs NCCL: build with CUDA=1 where nccl.h is found", D.world);
#endif
    } else if (be->dtype != IV2_F32) {
        rc = iv2_err("backend %s: MPI gradient reduce handles f32 buffers only", be->name);
    }
    return iv2_dist_agree(rc, "gradient reducer setup");
}

void iv2_dist_teardown(void) {
    if (D.world > 1 && D.buckets && getenv("IV2_DIST_DEBUG"))
        fprintf(stderr, "iv2-distill: rank %d: %lld student gradient buckets of <= %zu elements\n", D.rank,
                (long long)D.buckets, D.bucket);
    D.buckets = 0;
#ifdef USE_NCCL
    if (D.nccl) {
        ncclCommDestroy(D.comm);
        cudaStreamDestroy(D.side);
        cudaEventDestroy(D.ready);
        cudaEventDestroy(D.done);
        D.nccl = 0;
    }
#endif
}

size_t iv2_dist_bucket_bytes(void) {
    const char *v = getenv("IV2_DIST_BUCKET_MB");   /* fractions allowed (tests use small buckets) */
    double mb = v && *v ? atof(v) : 25.0;
    size_t n = (size_t)(mb * 1048576.0);
    return n < 4 ? 4 : n;
}

/* ---- gradient buckets ---- */

/* start the average of n elements at buf */
static void launch(void *buf, size_t n) {
    if (!n || D.failed) return;
#ifdef USE_NCCL
    if (D.nccl) {
        iv2_backend *be = D.t->be;
        ncclDataType_t dt = be->dtype == IV2_BF16 ? ncclBfloat16 : be->dtype == IV2_F16 ? ncclFloat16 : ncclFloat32;
        cudaEventRecord(D.ready, D.main);        /* this bucket's gradients are queued before here */
        cudaStreamWaitEvent(D.side, D.ready, 0);
        if (ncclAllReduce(buf, buf, n, dt, ncclAvg, D.comm, D.side) != ncclSuccess) D.failed = 1;
        return;
    }
#endif
#ifdef IV2_MPI
    const size_t maxc = (size_t)1 << 30;   /* MPI counts are int */
    for (size_t i = 0; i < n; i += maxc) {
        if (D.nreq == MAX_REQ) { MPI_Waitall(D.nreq, D.req, MPI_STATUSES_IGNORE); D.nreq = 0; }
        int k = (int)(n - i < maxc ? n - i : maxc);
        if (MPI_Iallreduce(MPI_IN_PLACE, (float *)buf + i, k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &D.req[D.nreq++]) != MPI_SUCCESS)
            D.failed = 1;
    }
    int done;   /* let MPI progress what is in flight while the backward goes on */
    MPI_Testall(D.nreq, D.req, &done, MPI_STATUSES_IGNORE);
    if (done) D.nreq = 0;
#else
    (void)buf;
#endif
}

/* the student's hook: grads[from, n) are final */
static void student_ready(void *ctx, size_t from) {
    (void)ctx;
    iv2_vit *s = D.t->student;
#ifdef IV2_MPI
    int done;   /* progress the buckets in flight (MPI moves non-blocking collectives inside its calls) */
    if (D.nreq && MPI_Testall(D.nreq, D.req, &done, MPI_STATUSES_IGNORE) == MPI_SUCCESS && done) D.nreq = 0;
#endif
    if (from >= D.pending_hi) return;
    if (from == 0 || D.pending_hi - from >= D.bucket) {
        D.buckets++;
        launch(IV2_AT(D.t->be, s->grads, from), D.pending_hi - from);
        D.pending_hi = from;
    }
}

int iv2_dist_grads_begin(iv2_trainer *t) {
    if (D.world == 1) return 0;
    D.t = t;
    D.failed = 0;
    D.pending_hi = t->student->n_elems;
    t->student->grads_ready = student_ready;
    t->student->grads_ready_ctx = NULL;
    launch(t->heads->grads, t->heads->n_params);
    return 0;
}

int iv2_dist_grads_end(iv2_trainer *t) {
    if (D.world == 1) return 0;
    iv2_vit *s = t->student;
    if (D.t != t) return iv2_err("gradient reduce: end without begin");
    if (D.pending_hi > 0) { launch(s->grads, D.pending_hi); D.pending_hi = 0; }   /* no hook call reached 0 */
    s->grads_ready = NULL;
    D.t = NULL;
#ifdef USE_NCCL
    if (D.nccl) {
        cudaEventRecord(D.done, D.side);
        cudaStreamWaitEvent(D.main, D.done, 0);   /* the optimiser (on the main stream) sees the averages */
    }
#endif
#ifdef IV2_MPI
    if (!D.nccl) {
        MPI_Waitall(D.nreq, D.req, MPI_STATUSES_IGNORE);
        D.nreq = 0;
        float inv = 1.0f / (float)D.world;   /* CPU buffers are host f32 */
        float *g = s->grads, *h = t->heads->grads;
        for (size_t i = 0; i < s->n_elems; i++) g[i] *= inv;
        for (size_t i = 0; i < t->heads->n_params; i++) h[i] *= inv;
    }
    /* the loss terms (each rank's are means over its equal share of the rows) and the failures */
    double l[5] = {t->loss.clip, t->loss.final, t->loss.mae, t->loss.total, D.failed};
    MPI_Allreduce(MPI_IN_PLACE, l, 5, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    t->loss.clip = l[0] / D.world; t->loss.final = l[1] / D.world;
    t->loss.mae = l[2] / D.world; t->loss.total = l[3] / D.world;
    if (l[4] > 0) return iv2_err("gradient all-reduce over %d ranks failed on %g of them", D.world, l[4]);
#endif
    return 0;
}
