/* pth_pickle.h: internal to pth.c. The pickle machine for torch.save's data.pkl.
 *
 * Values live in an arena owned by the unpickler (freed at once by pth_unpickler_free), so
 * shared and even cyclic references made through the memo cost nothing to free and nothing
 * walks them recursively. Limits: PTH_MAX_VALUES values, PTH_MAX_STACK stack slots,
 * PTH_MAX_MEMO memo slots; exceeding any is an error, never a crash. */
#ifndef IV2_PTH_PICKLE_H
#define IV2_PTH_PICKLE_H
#include <stddef.h>
#include <stdint.h>
#include "dtype.h"

#define PTH_MAX_VALUES (1u << 22)
#define PTH_MAX_STACK (1u << 20)
#define PTH_MAX_MEMO (1u << 22)
#define PTH_MAX_DIMS 8

typedef enum {
    PV_NONE, PV_BOOL, PV_INT, PV_FLOAT, PV_STR, PV_BYTES, PV_TUPLE, PV_LIST, PV_DICT,
    PV_GLOBAL,  /* mod + s: a class or function named by GLOBAL / STACK_GLOBAL */
    PV_STORAGE, /* s = key; st_* fields */
    PV_TENSOR,  /* tensor */
    PV_OBJ      /* anything else built by REDUCE / NEWOBJ: opaque, mod + s name its class */
} pv_type;

struct pv_t;
typedef struct pv_tensor {
    struct pv_t *storage;
    int64_t offset;
    int ndim;
    int64_t shape[PTH_MAX_DIMS], stride[PTH_MAX_DIMS];
    size_t numel;
} pv_tensor;

typedef struct pv_t {
    pv_type type;
    int64_t i;                  /* INT, BOOL */
    double f;                   /* FLOAT */
    char *s;                    /* STR / BYTES data (NUL-terminated), GLOBAL/OBJ name, STORAGE key */
    size_t slen;
    char *mod;                  /* GLOBAL / OBJ module */
    struct pv_t **items;        /* TUPLE, LIST; DICT as key, value, key, value, ... */
    size_t n, cap;
    pv_tensor *tensor;
    iv2_dtype st_dtype;         /* STORAGE */
    const void *st_data;
    uint64_t st_numel;
    int st_entry;
} pv_t;

/* maps a storage key to its bytes (at least nbytes); sets *entry; NULL with error set */
typedef const void *(*pth_storage_fn)(void *ctx, const char *key, uint64_t nbytes, int *entry);

typedef struct pth_unpickler {
    pth_storage_fn resolve;
    void *ctx;
    pv_t **all;
    size_t n_all, cap_all;
    pv_t **stack;
    size_t sp, stack_cap;
    size_t *marks;
    size_t n_marks, marks_cap;
    pv_t **memo;
    size_t memo_cap, memo_count;
} pth_unpickler;

void pth_unpickler_init(pth_unpickler *u, pth_storage_fn resolve, void *ctx);
/* runs the pickle; returns the object at STOP (owned by u) or NULL with the error set,
 * naming the offset and opcode */
pv_t *pth_unpickle(pth_unpickler *u, const uint8_t *p, size_t n);
void pth_unpickler_free(pth_unpickler *u);

#endif
