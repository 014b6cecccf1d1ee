/* mock_nccl.c: NCCL and CUDA streams/events over MPI on host memory, so that distill/dist.c's
 * NCCL path (compiled with IV2_CUDA, IV2_NCCL, IV2_MPI against the headers beside this file)
 * runs on the CPU backend in tests/test_distill_nccl_mock.c.
 *
 * The CPU backend's work is finished when its call returns, so an event recorded on the main
 * stream is complete at once. What the mock chooses is WHEN an all-reduce queued on the side
 * stream runs (IV2_NCCL_MOCK):
 *   eager     at the ncclAllReduce call: the earliest CUDA allows once the side stream waited on
 *             the main stream's `ready` event (gradients written after the launch are lost);
 *   deferred  when the main stream waits on an event recorded on the side stream after it (or a
 *             sync): the latest CUDA allows (gradients read before that wait are not averaged).
 * It also checks what real hardware would not report: every element of the student's and the
 * heads' gradient buffers reduced exactly once between two waits of the main stream on the side
 * stream (one step), each all-reduce ordered after a wait on a main-stream event, nothing left
 * queued at the end, no reduced bucket written after its all-reduce ran (in eager mode: launched
 * too early), the same unique id on every rank. One line of counts per rank goes to
 * stderr at ncclCommDestroy ("nccl-mock: rank=..."), which the test reads.
 *
 * iv2_dist_setup is wrapped (link with -Wl,--wrap=iv2_dist_setup): the CPU backend is called
 * "cuda" for that call only, the one place dist.c tests the name, so it takes the NCCL branch;
 * the wrapper also learns the gradient buffers the coverage check needs. */
#include "nccl.h"
#include "cuda_runtime.h"
#include "compute.h"
#include "distill.h"
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct { const void *send; void *recv; size_t n; ncclRedOp_t op; } mock_op;

struct mock_cuda_stream {
    int is_main, ordered;   /* ordered: waited on a main-stream event since its last all-reduce */
    mock_op *q;
    size_t issued, ran, cap;
};
struct mock_cuda_event { cudaStream_t s; size_t pos; };
struct mock_nccl_comm { int rank, world; };

#define MAX_STREAMS 8
static struct {
    int deferred;
    struct mock_cuda_stream main;
    cudaStream_t streams[MAX_STREAMS];
    int n_streams;
    float *sg, *hg;   /* the student's and the heads' gradients (host f32 on the CPU backend) */
    size_t sn, hn;
    unsigned char *cover;   /* per element: all-reduces of it this step */
    struct { const float *p; size_t n; uint64_t h; } *done;   /* ranges reduced this step, their result's hash */
    size_t n_done, cap_done;
    long long calls, elems, steps, bad_steps, unordered, pending, bad_args, id_bad, modified;
} M = {.main = {.is_main = 1}};

/* ---- the wrapper around dist.c's setup ---- */

int __real_iv2_dist_setup(iv2_trainer *t);
int __wrap_iv2_dist_setup(iv2_trainer *t) {
    const char *mode = getenv("IV2_NCCL_MOCK");
    M.deferred = mode && !strcmp(mode, "deferred");
    M.sg = t->student->grads; M.sn = t->student->n_elems;
    M.hg = t->heads->grads; M.hn = t->heads->n_params;
    free(M.cover);
    M.cover = calloc(M.sn + M.hn, 1);
    const char *name = t->be->name;
    t->be->name = "cuda";   /* dist.c's only test of the backend's name: take the NCCL branch */
    int rc = __real_iv2_dist_setup(t);
    t->be->name = name;
    return rc;
}

void *iv2_cuda_stream(iv2_backend *be) { (void)be; return &M.main; }

/* ---- the reduction ---- */

static uint64_t hash_floats(const float *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n * sizeof(float); i++) { h ^= b[i]; h *= 0x100000001b3ULL; }
    return h;
}

static void run_op(const mock_op *o) {
    int world;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    const size_t maxc = (size_t)1 << 30;
    float *r = o->recv;
    for (size_t i = 0; i < o->n; i += maxc) {
        int k = (int)(o->n - i < maxc ? o->n - i : maxc);
        MPI_Allreduce(o->send == o->recv ? MPI_IN_PLACE : (const float *)o->send + i, r + i, k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
    if (o->op == ncclAvg)
        for (size_t i = 0; i < o->n; i++) r[i] *= 1.0f / (float)world;
    if (M.n_done == M.cap_done) {
        M.cap_done = M.cap_done ? 2 * M.cap_done : 64;
        M.done = realloc(M.done, sizeof *M.done * M.cap_done);
    }
    M.done[M.n_done].p = r; M.done[M.n_done].n = o->n; M.done[M.n_done++].h = hash_floats(r, o->n);
}

/* run the ops of s issued before position upto */
static void run_until(cudaStream_t s, size_t upto) {
    for (; s->ran < upto; s->ran++) run_op(&s->q[s->ran % s->cap]);
}

/* mark [buf, buf + n) in the coverage map; a range outside both gradient buffers is a bad argument */
static void cover(const float *buf, size_t n) {
    size_t off;
    if (M.sg && buf >= M.sg && buf + n <= M.sg + M.sn) off = (size_t)(buf - M.sg);
    else if (M.hg && buf >= M.hg && buf + n <= M.hg + M.hn) off = M.sn + (size_t)(buf - M.hg);
    else { M.bad_args++; return; }
    for (size_t i = 0; i < n; i++) if (M.cover[off + i] < 255) M.cover[off + i]++;
}

/* the main stream waited for the side stream: the gradients it reads now must all be averaged,
 * and none written after its all-reduce ran (in eager mode: a bucket launched too early) */
static void step_end(void) {
    for (size_t i = 0; i < M.n_done; i++)
        if (hash_floats(M.done[i].p, M.done[i].n) != M.done[i].h && M.modified++ == 0)
            fprintf(stderr, "nccl-mock: step %lld: %zu reduced elements written after their all-reduce ran\n", M.steps, M.done[i].n);
    M.n_done = 0;
    int bad = 0;
    for (size_t i = 0; i < M.sn + M.hn; i++) { bad |= M.cover[i] != 1; M.cover[i] = 0; }
    M.steps++;
    M.bad_steps += bad;
}

ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t s) {
    if (!comm || !s || datatype != ncclFloat32 || (op != ncclSum && op != ncclAvg) || sendbuff != recvbuff) {
        M.bad_args++;   /* the CPU backend's buffers are f32; dist.c reduces in place */
        return ncclInvalidArgument;
    }
    M.calls++;
    M.elems += (long long)count;
    cover(recvbuff, count);
    if (!s->is_main && !s->ordered) M.unordered++;
    s->ordered = 0;
    mock_op o = {sendbuff, recvbuff, count, op};
    if (!M.deferred || s->is_main) { run_op(&o); return ncclSuccess; }
    if (s->issued - s->ran == s->cap) {   /* grow the ring, oldest first */
        size_t cap = s->cap ? 2 * s->cap : 64;
        mock_op *q = malloc(sizeof *q * cap);
        for (size_t i = s->ran; i < s->issued; i++) q[i % cap] = s->q[i % s->cap];
        free(s->q);
        s->q = q; s->cap = cap;
    }
    s->q[s->issued++ % s->cap] = o;
    return ncclSuccess;
}

/* ---- NCCL ---- */

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    memset(id, 0, sizeof *id);
    snprintf(id->internal, sizeof id->internal, "mock-nccl-%d", (int)getpid());
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    int r, w;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &w);
    char id0[NCCL_UNIQUE_ID_BYTES];   /* rank 0's id, sent by the mock itself: did dist.c broadcast it? */
    memcpy(id0, id.internal, sizeof id0);
    MPI_Bcast(id0, sizeof id0, MPI_BYTE, 0, MPI_COMM_WORLD);
    M.id_bad += memcmp(id0, id.internal, sizeof id0) != 0 || !id0[0];
    if (nranks != w || rank != r) return ncclInvalidArgument;
    *comm = calloc(1, sizeof **comm);
    (*comm)->rank = rank; (*comm)->world = nranks;
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    for (int i = 0; i < M.n_streams; i++) {   /* queued work never waited for: run it, count it */
        M.pending += (long long)(M.streams[i]->issued - M.streams[i]->ran);
        run_until(M.streams[i], M.streams[i]->issued);
    }
    fprintf(stderr, "nccl-mock: rank=%d mode=%s calls=%lld elements=%lld steps=%lld per_step=%zu bad_steps=%lld "
            "unordered=%lld pending=%lld bad_args=%lld id_bad=%lld modified=%lld\n", comm->rank, M.deferred ? "deferred" : "eager",
            M.calls, M.elems, M.steps, M.sn + M.hn, M.bad_steps, M.unordered, M.pending, M.bad_args, M.id_bad, M.modified);
    free(comm);
    free(M.cover);
    M.cover = NULL;
    free(M.done);
    M.done = NULL; M.n_done = M.cap_done = 0;
    return ncclSuccess;
}

const char *ncclGetErrorString(ncclResult_t r) { return r == ncclSuccess ? "no error" : "mock nccl error"; }

/* ---- CUDA streams and events ---- */

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) {
    (void)flags;
    if (M.n_streams == MAX_STREAMS) return cudaErrorInvalidValue;
    *s = calloc(1, sizeof **s);
    M.streams[M.n_streams++] = *s;
    return cudaSuccess;
}

/* priorities order nothing here: every stream's work runs when the mock decides */
cudaError_t cudaStreamCreateWithPriority(cudaStream_t *s, unsigned int flags, int priority) {
    (void)priority;
    return cudaStreamCreateWithFlags(s, flags);
}

cudaError_t cudaDeviceGetStreamPriorityRange(int *least, int *greatest) {
    *least = 0;
    *greatest = -5;
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (!s || s->is_main) return cudaErrorInvalidResourceHandle;
    M.pending += (long long)(s->issued - s->ran);   /* CUDA finishes it; the test wants none left */
    run_until(s, s->issued);
    for (int i = 0; i < M.n_streams; i++)
        if (M.streams[i] == s) M.streams[i] = M.streams[--M.n_streams];
    free(s->q);
    free(s);
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    run_until(s, s->issued);
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags) {
    (void)flags;
    *e = calloc(1, sizeof **e);
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e) { free(e); return cudaSuccess; }

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    if (!e || !s) return cudaErrorInvalidResourceHandle;
    e->s = s;
    e->pos = s->issued;
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags) {
    (void)flags;
    if (!s || !e) return cudaErrorInvalidResourceHandle;
    if (!e->s || e->s == s) return cudaSuccess;   /* never recorded, or the same stream: nothing to wait for */
    if (e->s->is_main) { s->ordered = 1; return cudaSuccess; }   /* main's work so far is done (CPU backend) */
    if (s->is_main) {
        run_until(e->s, e->pos);
        step_end();
    }
    return cudaSuccess;
}
