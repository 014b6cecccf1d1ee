/* pth.h: read official PyTorch checkpoints (.pth / .bin written by torch.save >= 1.6) and
 * convert them to safetensors, with no Python.
 *
 * The format: an uncompressed ZIP (stored entries, ZIP64 when large) whose entries live under
 * one top folder (usually "archive/", may be any name): "<top>/data.pkl" is a pickle (protocol 2)
 * of the saved object, "<top>/data/<key>" are the raw little-endian storages it references
 * through persistent ids ('storage', torch.FloatStorage, key, location, numel). Tensors are
 * rebuilt by torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...).
 *
 * The pickle is interpreted by a small machine (pth_pickle.c) that knows only the opcodes
 * torch.save emits and never executes anything: globals it does not know become opaque
 * objects, which are skipped unless a tensor is expected there (a state-dict entry built by
 * any other torch.* function, e.g. a quantized tensor, is an error). Everything read from the file
 * is bounds-checked (entry offsets and sizes, tensor extents against their storage, CRC-32
 * of the pickle at open and of each storage the first time one of its tensors is read);
 * stack, memo and object count are bounded and nothing recurses on file data.
 * The legacy non-zip format (torch < 1.6) is refused with a clear error. */
#ifndef IV2_PTH_H
#define IV2_PTH_H
#include <stddef.h>
#include <stdint.h>
#include "dtype.h"

#define IV2_PTH_MAX_DIMS 8

/* one tensor of the state dict, as stored (possibly a strided view into a shared storage) */
typedef struct iv2_pth_tensor {
    char *name;                 /* key in the state dict (after unwrapping module/model/state_dict) */
    iv2_dtype dtype;
    int ndim;
    int64_t shape[IV2_PTH_MAX_DIMS];
    int64_t stride[IV2_PTH_MAX_DIMS]; /* in elements */
    int64_t offset;             /* storage offset, in elements */
    size_t numel;
    const void *storage;        /* start of the storage bytes inside the mapping (maybe unaligned) */
    size_t storage_numel;
    const char *storage_key;    /* "0", "1", ...: tensors with the same key share memory */
    int contiguous;             /* row-major with no gaps: data is storage + offset*elsize */
    int entry;                  /* internal: zip entry of the storage */
} iv2_pth_tensor;

typedef struct iv2_pth_file {
    char *path;
    void *map;                  /* the whole file, read-only mmap (or the caller's buffer) */
    size_t map_size;
    int owns_map;
    iv2_pth_tensor *tensors;    /* in file order */
    int n_tensors;
    int n_skipped;              /* state-dict entries that are not tensors (ints, dicts, ...) */
    char *wrapper;              /* "module" / "model" / "state_dict" when unwrapped, else NULL */
    void *priv;                 /* parser arena (names and storage keys point into it) */
} iv2_pth_file;

/* open and parse: maps the file, reads the zip directory and the pickle, finds the state
 * dict (the top-level dict, or the dict under "module", "model" or "state_dict", looked for
 * in that order, up to two levels deep) and checks every tensor's extent against its storage.
 * On failure f is left closed. */
int iv2_pth_open(iv2_pth_file *f, const char *path);
/* same on a buffer in memory (fuzzer's entry point); buf must outlive f. */
int iv2_pth_open_mem(iv2_pth_file *f, const void *buf, size_t size, const char *name);
void iv2_pth_close(iv2_pth_file *f);
iv2_pth_tensor *iv2_pth_find(iv2_pth_file *f, const char *name);
/* check the CRC-32 of t's storage (once per storage; later calls are free). */
int iv2_pth_verify(iv2_pth_file *f, const iv2_pth_tensor *t);
/* copy tensor t (after iv2_pth_verify) into dst as a contiguous row-major array of dtype dt
 * (numel elements; conversion through dtype.h). */
int iv2_pth_read(iv2_pth_file *f, const iv2_pth_tensor *t, void *dst, iv2_dtype dt);

/* name mapping of iv2_pth_convert. Returns 1 and writes the output name to out (cap bytes)
 * when the tensor is kept, 0 when dropped, -1 for an unknown model (error set).
 *   "videomae"  : strips "encoder."; drops decoder.*, encoder_to_decoder.*, mask_token
 *   "internvit" : drops the InternVL-C text tower (transformer.*, text_projection, logit_scale,
 *                 and other language-side keys), keeps the vision tower and clip_projector.*
 *                 verbatim (original InternVL names or HF names, as in the file)
 *   "student"   : keeps all
 *   "raw"       : keeps all, verbatim */
int iv2_pth_map_name(const char *model, const char *name, char *out, size_t cap);

typedef struct iv2_pth_summary {
    int n_written;     /* tensors written */
    int n_dropped;     /* tensors dropped by the name mapping */
    int n_skipped;     /* non-tensor entries of the state dict */
    uint64_t bytes_in; /* tensor bytes as stored (written tensors only) */
    uint64_t bytes_out;/* tensor bytes written */
} iv2_pth_summary;

/* IV2_PTH_KEEP as out_dtype keeps each tensor's dtype; IV2_F32 / IV2_BF16 / IV2_F16 convert
 * the floating-point tensors (integer tensors are always kept as they are). */
#define IV2_PTH_KEEP (-1)

/* Convert in_path (.pth/.bin) to safetensors at out_path (written atomically), mapping names
 * for `model` ("internvit" | "videomae" | "student" | "raw"). The output gets __metadata__
 * {"format":"pt","source":<basename of in_path>,"model":<model>}. Prints a summary with
 * iv2_info; sum (may be NULL) receives it. Non-contiguous views are materialised contiguous;
 * converted data larger than 1 GiB (IV2_PTH_STAGE_RAM_MAX bytes if set) is staged in an
 * unlinked scratch file next to out_path rather than in RAM; contiguous tensors kept in their
 * dtype are written straight from the mapped input. Fails (and writes nothing) if no tensor is left after mapping or two
 * tensors map to the same name. */
int iv2_pth_convert(const char *in_path, const char *out_path, const char *model,
                    int out_dtype, iv2_pth_summary *sum);
/* the same for a checkpoint split in shards (HF pytorch_model-0000k-of-0000n.bin): the tensors
 * of all n_in files go into one output; a name found in two shards is an error. */
int iv2_pth_convert_shards(const char *const *in_paths, int n_in, const char *out_path, const char *model,
                           int out_dtype, iv2_pth_summary *sum);

#endif
