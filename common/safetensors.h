/* safetensors.h: read (mmap, validated like the reference implementation) and write
 * (8-byte-aligned header, __metadata__) safetensors files.
 *
 * Reading validates: file at least 8 bytes; header length <= 100,000,000 and inside the file;
 * header is a JSON object; each entry has a known dtype, a shape of non-negative integers and
 * data_offsets [begin, end] with end - begin == numel * dtype size; sorted by offset the tensors
 * tile the byte buffer with no gap and no overlap, and the last one ends at the file's end;
 * no duplicate names; __metadata__ is a string -> string map. Every error names the file,
 * the tensor and the problem. Tensor data may be unaligned in the map: use iv2_st_read() (which
 * copies and converts) rather than casting st_tensor.data. */
#ifndef IV2_SAFETENSORS_H
#define IV2_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>
#include "dtype.h"

#define IV2_ST_MAX_DIMS 8

typedef struct iv2_st_tensor {
    char *name;
    iv2_dtype dtype;
    int ndim;
    int64_t shape[IV2_ST_MAX_DIMS];
    size_t numel;
    size_t nbytes;
    const void *data;     /* inside the mapping; possibly unaligned */
    int used;             /* set by callers that consume tensors, to report leftovers */
} iv2_st_tensor;

typedef struct iv2_st_file {
    char *path;
    void *map;
    size_t map_size;
    iv2_st_tensor *tensors;   /* sorted by name (iv2_st_find bisects) */
    int n_tensors;
    char **meta_keys, **meta_vals; /* __metadata__ */
    int n_meta;
} iv2_st_file;

int iv2_st_open(iv2_st_file *f, const char *path);
/* same validation on a buffer in memory (the fuzzer's entry); buf must outlive f. */
int iv2_st_open_mem(iv2_st_file *f, const void *buf, size_t size, const char *name);
void iv2_st_close(iv2_st_file *f);
iv2_st_tensor *iv2_st_find(iv2_st_file *f, const char *name);
const char *iv2_st_meta(const iv2_st_file *f, const char *key);
/* copy a tensor into dst converting to dtype dt (n elements must equal numel). */
int iv2_st_read(const iv2_st_file *f, const iv2_st_tensor *t, void *dst, iv2_dtype dt);

/* writer: collect tensors (data pointers must stay valid until iv2_st_write), then write
 * to a temp file, fsync and rename over path. Layout as the reference writer: header padded
 * with spaces to a multiple of 8, tensors ordered widest dtype first then by name (without
 * __metadata__ the bytes equal the reference's; tests/test_safetensors_oracle.c). Bad
 * tensors (duplicate names, > 8 dims, negative dims) are reported by iv2_st_writer_write. */
typedef struct iv2_st_writer {
    struct { char *name; iv2_dtype dtype; int ndim; int64_t shape[IV2_ST_MAX_DIMS]; const void *data; size_t nbytes; } *t;
    int n, cap;
    char **meta_keys, **meta_vals;
    int n_meta;
} iv2_st_writer;

void iv2_st_writer_init(iv2_st_writer *w);
void iv2_st_writer_add(iv2_st_writer *w, const char *name, iv2_dtype dt, int ndim, const int64_t *shape, const void *data);
void iv2_st_writer_meta(iv2_st_writer *w, const char *key, const char *val);
int iv2_st_writer_write(iv2_st_writer *w, const char *path);
void iv2_st_writer_free(iv2_st_writer *w);

#endif
