/* dist.h: data-parallel training of iv2-distill over MPI (CPU) and NCCL (CUDA).
 *
 * One rank per process (one per GPU), launched by mpirun or Slurm's srun; a plain single
 * process needs no MPI runtime (MPI_Init only runs when the launcher's environment says so).
 * The model: every rank holds the whole student + heads, starts from the same seeded init
 * (checked by a checksum), takes its slice of every GLOBAL batch (config `batch` stays global:
 * the same seeded epoch permutation on every rank, rank r takes samples [r*B/W, (r+1)*B/W) of
 * each batch, masks and drop path drawn from the global sample index), and after the backward
 * the gradients are averaged over the ranks, bucketed and overlapped with the backward (a bucket
 * starts as soon as the student blocks behind it have their gradients). Loss terms are averaged
 * too, so every rank logs, clips and steps the same; only rank 0 writes files.
 *
 * Process-wide state (like MPI itself): without iv2_dist_init the process is rank 0 of 1 and
 * every call here is a no-op. */
#ifndef IV2_DIST_H
#define IV2_DIST_H
#include <stddef.h>
#include <stdint.h>

struct iv2_trainer;

/* Start MPI when launched by mpirun / srun (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_SIZE or
 * SLURM_STEP_NUM_TASKS > 1 in the environment: srun's step, not the allocation); otherwise rank 0
 * of 1. An error when the launcher asks
 * for several ranks and this build has no MPI (make with ompi-c installed). */
int iv2_dist_init(int *argc, char ***argv);
void iv2_dist_finalize(void);
/* Stop every rank (MPI_Abort) after a failure on one of them, so no rank waits forever in a
 * collective; returns normally (does nothing) with a single rank. */
void iv2_dist_abort(int code);
/* iv2_die with several ranks: print "tool: error (rank r): message" and MPI_Abort, so the
 * other ranks stop too; plain iv2_die with one rank. */
void iv2_dist_die(const char *tool) __attribute__((noreturn));
int iv2_dist_rank(void);
int iv2_dist_world(void);
int iv2_dist_local_rank(void);   /* rank on this node (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID) */
/* "cuda" -> "cuda:<local rank>" when there are several ranks (one GPU per rank); others unchanged */
void iv2_dist_pick_device(char *device, size_t cap);
/* threads = 0 ("all cores") with several ranks on this node and no OMP_NUM_THREADS: the node's
 * cores divided among its ranks; otherwise threads unchanged */
int iv2_dist_pick_threads(int threads);
/* samples per rank of a global batch (the caller checks divisibility with iv2_dist_check_batch) */
int iv2_dist_local_batch(int global_batch);
int iv2_dist_check_batch(int global_batch);

/* 0 when every rank passed rc == 0; -1 on every rank otherwise (with a message on the ranks
 * that did not fail themselves). */
int iv2_dist_agree(int rc, const char *what);
/* the largest v over the ranks (v itself with one rank, no communication): a stop signal that
 * reached some ranks only, so that all stop at the same step */
int iv2_dist_max_int(int v);
/* rank 0's rc on every rank (for work only rank 0 does: checkpoints) */
int iv2_dist_bcast_rc(int rc, const char *what);

/* After iv2_trainer_open on every rank: the ranks agree that they opened, have the same run
 * config (device and threads aside) and the same cache (views, targets, dims), the same initial
 * (or resumed) weights and step; then the gradient reducer is set up (NCCL communicator on
 * CUDA). Clean error naming what differs. */
int iv2_dist_setup(struct iv2_trainer *t);
void iv2_dist_teardown(void);
/* the weights (student + heads) and step are the same on every rank (called before each
 * checkpoint: a drift would be a bug or a faulty node, never silently saved) */
int iv2_dist_check_weights(struct iv2_trainer *t);
/* Around the student backward: begin (heads' gradients are final) registers the student's
 * per-block gradient hook and starts the heads' bucket; end waits for every bucket (gradients
 * averaged) and averages the loss terms into t->loss. No-ops with one rank. */
int iv2_dist_grads_begin(struct iv2_trainer *t);
int iv2_dist_grads_end(struct iv2_trainer *t);
/* bucket size in bytes (env IV2_DIST_BUCKET_MB, default 25 like torch DDP) */
size_t iv2_dist_bucket_bytes(void);

#endif
