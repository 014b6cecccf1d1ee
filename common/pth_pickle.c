/* pth_pickle.c: a pickle stack machine for the subset torch.save emits. Nothing is executed:
 * a few globals are understood (OrderedDict, the torch._utils tensor rebuilders, the storage
 * classes), any other becomes an opaque object. See pth_pickle.h. */
#include "pth_pickle.h"
#include "err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pth_unpickler_init(pth_unpickler *u, pth_storage_fn resolve, void *ctx) {
    memset(u, 0, sizeof *u);
    u->resolve = resolve;
    u->ctx = ctx;
}

void pth_unpickler_free(pth_unpickler *u) {
    for (size_t i = 0; i < u->n_all; i++) {
        pv_t *v = u->all[i];
        free(v->s);
        free(v->mod);
        free(v->items);
        free(v->tensor);
        free(v);
    }
    free(u->all);
    free(u->stack);
    free(u->marks);
    free(u->memo);
    memset(u, 0, sizeof *u);
}

/* ------------------------------------------------------------------------------------------ */

static pv_t *new_value(pth_unpickler *u, pv_type type) {
    if (u->n_all >= PTH_MAX_VALUES) { iv2_err("more than %u objects", PTH_MAX_VALUES); return NULL; }
    if (u->n_all == u->cap_all) {
        u->cap_all = u->cap_all ? 2 * u->cap_all : 256;
        u->all = iv2_realloc(u->all, u->cap_all * sizeof *u->all);
    }
    pv_t *v = iv2_calloc(1, sizeof *v);
    v->type = type;
    v->st_entry = -1;
    u->all[u->n_all++] = v;
    return v;
}

static pv_t *new_str(pth_unpickler *u, pv_type type, const uint8_t *p, size_t n) {
    pv_t *v = new_value(u, type);
    if (!v) return NULL;
    v->s = iv2_malloc(n + 1);
    memcpy(v->s, p, n);
    v->s[n] = 0;
    v->slen = n;
    return v;
}

static void add_item(pv_t *c, pv_t *x) {
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 4;
        c->items = iv2_realloc(c->items, c->cap * sizeof *c->items);
    }
    c->items[c->n++] = x;
}

static int push(pth_unpickler *u, pv_t *v) {
    if (!v) return -1;
    if (u->sp >= PTH_MAX_STACK) return iv2_err("stack deeper than %u", PTH_MAX_STACK);
    if (u->sp == u->stack_cap) {
        u->stack_cap = u->stack_cap ? 2 * u->stack_cap : 64;
        u->stack = iv2_realloc(u->stack, u->stack_cap * sizeof *u->stack);
    }
    u->stack[u->sp++] = v;
    return 0;
}

/* the lowest stack slot the current mark frame may touch */
static size_t frame_base(const pth_unpickler *u) { return u->n_marks ? u->marks[u->n_marks - 1] : 0; }

static pv_t *pop(pth_unpickler *u) {
    if (u->sp <= frame_base(u)) { iv2_err("stack underflow"); return NULL; }
    return u->stack[--u->sp];
}

static pv_t *top(pth_unpickler *u) {
    if (u->sp <= frame_base(u)) { iv2_err("stack underflow"); return NULL; }
    return u->stack[u->sp - 1];
}

/* pops the items above the last MARK and the mark itself; returns their first slot */
static int pop_mark(pth_unpickler *u, size_t *first, size_t *count) {
    if (!u->n_marks) return iv2_err("no MARK on the stack");
    size_t m = u->marks[--u->n_marks];
    *first = m;
    *count = u->sp - m;
    u->sp = m;
    return 0;
}

static int memo_put(pth_unpickler *u, uint64_t idx, pv_t *v) {
    if (!v) return -1;
    if (idx >= PTH_MAX_MEMO) return iv2_err("memo index %llu beyond %u", (unsigned long long)idx, PTH_MAX_MEMO);
    if (idx >= u->memo_cap) {
        size_t cap = u->memo_cap ? u->memo_cap : 64;
        while (cap <= idx) cap *= 2;
        u->memo = iv2_realloc(u->memo, cap * sizeof *u->memo);
        memset(u->memo + u->memo_cap, 0, (cap - u->memo_cap) * sizeof *u->memo);
        u->memo_cap = cap;
    }
    if (!u->memo[idx]) u->memo_count++;
    u->memo[idx] = v;
    return 0;
}

static pv_t *memo_get(pth_unpickler *u, uint64_t idx) {
    if (idx >= u->memo_cap || !u->memo[idx]) { iv2_err("memo index %llu was never stored", (unsigned long long)idx); return NULL; }
    return u->memo[idx];
}

static int is_global(const pv_t *g, const char *mod, const char *name) {
    return g->type == PV_GLOBAL && !strcmp(g->mod, mod) && !strcmp(g->s, name);
}

/* ------------------------------------------------------------------------------------------ */
/* torch objects */

static const struct { const char *name; iv2_dtype dt; } storage_types[] = {
    {"FloatStorage", IV2_F32}, {"HalfStorage", IV2_F16}, {"BFloat16Storage", IV2_BF16},
    {"DoubleStorage", IV2_F64}, {"LongStorage", IV2_I64}, {"IntStorage", IV2_I32},
    {"ShortStorage", IV2_I16}, {"CharStorage", IV2_I8}, {"ByteStorage", IV2_U8},
    {"BoolStorage", IV2_BOOL}, {NULL, 0}};

/* BINPERSID: ('storage', torch.<T>Storage, key, location, numel) */
static pv_t *make_storage(pth_unpickler *u, pv_t *pid) {
    if (pid->type != PV_TUPLE || pid->n != 5 || pid->items[0]->type != PV_STR || strcmp(pid->items[0]->s, "storage")) {
        iv2_err("persistent id is not ('storage', type, key, location, numel)");
        return NULL;
    }
    pv_t *ty = pid->items[1], *key = pid->items[2], *numel = pid->items[4];
    if (ty->type != PV_GLOBAL || strcmp(ty->mod, "torch")) { iv2_err("persistent id: storage type is not a torch class"); return NULL; }
    int k;
    for (k = 0; storage_types[k].name && strcmp(storage_types[k].name, ty->s); k++) {}
    if (!storage_types[k].name) { iv2_err("unsupported storage type torch.%s", ty->s); return NULL; }
    if (key->type != PV_STR || key->slen == 0 || strlen(key->s) != key->slen || strchr(key->s, '/')) {
        iv2_err("persistent id: bad storage key"); return NULL;
    }
    if (numel->type != PV_INT || numel->i < 0) { iv2_err("storage '%s': bad element count", key->s); return NULL; }
    uint64_t es = iv2_dtype_size(storage_types[k].dt), nbytes;
    if (__builtin_mul_overflow((uint64_t)numel->i, es, &nbytes)) { iv2_err("storage '%s': size overflows", key->s); return NULL; }
    int entry = -1;
    const void *data = u->resolve(u->ctx, key->s, nbytes, &entry);
    if (!data) return NULL;
    pv_t *v = new_str(u, PV_STORAGE, (const uint8_t *)key->s, key->slen);
    if (!v) return NULL;
    v->st_dtype = storage_types[k].dt;
    v->st_data = data;
    v->st_numel = (uint64_t)numel->i;
    v->st_entry = entry;
    return v;
}

static int int_tuple(const pv_t *t, int64_t *out, int *n, const char *what) {
    if (t->type != PV_TUPLE && t->type != PV_LIST) return iv2_err("tensor %s is not a tuple", what);
    if (t->n > PTH_MAX_DIMS) return iv2_err("tensor has %zu dimensions (max %d)", t->n, PTH_MAX_DIMS);
    for (size_t i = 0; i < t->n; i++) {
        if (t->items[i]->type != PV_INT) return iv2_err("tensor %s[%zu] is not an integer", what, i);
        out[i] = t->items[i]->i;
    }
    *n = (int)t->n;
    return 0;
}

/* _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks[, metadata]) */
static pv_t *make_tensor(pth_unpickler *u, pv_t *args) {
    if (args->type != PV_TUPLE || args->n < 4) { iv2_err("_rebuild_tensor: expected at least 4 arguments"); return NULL; }
    pv_t *st = args->items[0], *off = args->items[1];
    if (st->type != PV_STORAGE) { iv2_err("_rebuild_tensor: first argument is not a storage"); return NULL; }
    if (off->type != PV_INT || off->i < 0) { iv2_err("_rebuild_tensor: bad storage offset"); return NULL; }
    pv_tensor t = {.storage = st, .offset = off->i};
    int ns = 0, nt = 0;
    if (int_tuple(args->items[2], t.shape, &ns, "size") || int_tuple(args->items[3], t.stride, &nt, "stride")) return NULL;
    if (ns != nt) { iv2_err("tensor size has %d dimensions, stride %d", ns, nt); return NULL; }
    t.ndim = ns;
    uint64_t numel = 1, last = (uint64_t)t.offset;
    for (int d = 0; d < ns; d++) {
        if (t.shape[d] < 0 || t.stride[d] < 0) { iv2_err("tensor dimension %d: negative size or stride", d); return NULL; }
        if (__builtin_mul_overflow(numel, (uint64_t)t.shape[d], &numel) || numel > ((uint64_t)1 << 48)) {
            iv2_err("tensor element count overflows"); return NULL;
        }
    }
    if (numel > 0) {
        for (int d = 0; d < ns; d++) {
            uint64_t ext;
            if (__builtin_mul_overflow((uint64_t)(t.shape[d] - 1), (uint64_t)t.stride[d], &ext) ||
                __builtin_add_overflow(last, ext, &last)) { iv2_err("tensor extent overflows"); return NULL; }
        }
        if (last >= st->st_numel) {
            iv2_err("tensor reaches element %llu of storage '%s' which has %llu", (unsigned long long)last, st->s,
                    (unsigned long long)st->st_numel);
            return NULL;
        }
    } else if ((uint64_t)t.offset > st->st_numel) {
        iv2_err("empty tensor offset %lld past storage '%s'", (long long)t.offset, st->s);
        return NULL;
    }
    t.numel = (size_t)numel;
    pv_t *v = new_value(u, PV_TENSOR);
    if (!v) return NULL;
    v->tensor = iv2_malloc(sizeof t);
    *v->tensor = t;
    return v;
}

static pv_t *make_obj(pth_unpickler *u, const pv_t *cls) {
    pv_t *v = new_value(u, PV_OBJ);
    if (!v) return NULL;
    v->mod = iv2_strdup(cls->type == PV_GLOBAL ? cls->mod : "?");
    v->s = iv2_strdup(cls->type == PV_GLOBAL ? cls->s : "?");
    return v;
}

/* REDUCE: callable(*args) for the callables torch.save uses; others give opaque objects */
static pv_t *reduce(pth_unpickler *u, pv_t *fn, pv_t *args, int depth) {
    if (fn->type != PV_GLOBAL) { iv2_err("REDUCE on something that is not a global"); return NULL; }
    if (args->type != PV_TUPLE) { iv2_err("REDUCE arguments are not a tuple"); return NULL; }
    if (is_global(fn, "collections", "OrderedDict") || is_global(fn, "builtins", "dict")) {
        if (args->n == 0) return new_value(u, PV_DICT);
        return make_obj(u, fn);
    }
    if (is_global(fn, "torch._utils", "_rebuild_tensor_v2") || is_global(fn, "torch._utils", "_rebuild_tensor"))
        return make_tensor(u, args);
    if (is_global(fn, "torch._utils", "_rebuild_parameter") || is_global(fn, "torch._utils", "_rebuild_parameter_with_state")) {
        if (args->n < 1 || args->items[0]->type != PV_TENSOR) { iv2_err("_rebuild_parameter: first argument is not a tensor"); return NULL; }
        return args->items[0];
    }
    /* tensor subclasses: _rebuild_from_type_v2(func, new_type, args, state) */
    if ((is_global(fn, "torch._tensor", "_rebuild_from_type_v2") || is_global(fn, "torch._utils", "_rebuild_from_type_v2")) &&
        depth == 0 && args->n >= 3)
        return reduce(u, args->items[0], args->items[2], depth + 1);
    return make_obj(u, fn);
}

/* ------------------------------------------------------------------------------------------ */
/* the machine */

static int64_t rd_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    if (n < 8 && n > 0 && (p[n - 1] & 0x80)) v |= ~(uint64_t)0 << (8 * n); /* sign-extend */
    return (int64_t)v;
}

#define NEED(k) do { if ((k) > n - pos) { iv2_err("truncated: %zu bytes needed, %zu left", (size_t)(k), n - pos); goto fail; } } while (0)
#define CK(x) do { if (!(x)) goto fail; } while (0)

/* names the opcode for errors: printable ones as characters */
static void op_name(uint8_t op, char *buf, size_t cap) {
    if (op >= 0x20 && op < 0x7f) snprintf(buf, cap, "0x%02x '%c'", op, op);
    else snprintf(buf, cap, "0x%02x", op);
}

pv_t *pth_unpickle(pth_unpickler *u, const uint8_t *p, size_t n) {
    size_t pos = 0, at = 0;
    uint8_t op = 0;
    while (pos < n) {
        at = pos;
        op = p[pos++];
        pv_t *a, *b, *c;
        size_t first = 0, cnt = 0;
        uint64_t len;
        switch (op) {
        case 0x80: /* PROTO */
            NEED(1);
            if (p[pos] > 5) { iv2_err("pickle protocol %d", p[pos]); goto fail; }
            pos++;
            break;
        case 0x95: /* FRAME (protocol 4): just a length hint */
            NEED(8); pos += 8; break;
        case '.': /* STOP */
            CK(a = top(u));
            return a;
        case '(': /* MARK */
            if (u->n_marks >= PTH_MAX_STACK) { iv2_err("too many MARKs"); goto fail; }
            if (u->n_marks == u->marks_cap) {
                u->marks_cap = u->marks_cap ? 2 * u->marks_cap : 16;
                u->marks = iv2_realloc(u->marks, u->marks_cap * sizeof *u->marks);
            }
            u->marks[u->n_marks++] = u->sp;
            break;
        case '1': /* POP_MARK */
            CK(!pop_mark(u, &first, &cnt)); break;
        case '0': /* POP */
            CK(pop(u)); break;
        case '2': /* DUP */
            CK(a = top(u)); CK(!push(u, a)); break;
        case 'N': CK(!push(u, new_value(u, PV_NONE))); break;
        case 0x88: case 0x89: /* NEWTRUE, NEWFALSE */
            CK(a = new_value(u, PV_BOOL)); a->i = op == 0x88; CK(!push(u, a)); break;
        case 'J': /* BININT */
            NEED(4); CK(a = new_value(u, PV_INT)); a->i = rd_le(p + pos, 4); pos += 4; CK(!push(u, a)); break;
        case 'K': /* BININT1 */
            NEED(1); CK(a = new_value(u, PV_INT)); a->i = p[pos++]; CK(!push(u, a)); break;
        case 'M': /* BININT2 */
            NEED(2); CK(a = new_value(u, PV_INT)); a->i = p[pos] | p[pos + 1] << 8; pos += 2; CK(!push(u, a)); break;
        case 0x8a: case 0x8b: /* LONG1, LONG4 */
            if (op == 0x8a) { NEED(1); len = p[pos++]; } else { NEED(4); len = (uint32_t)rd_le(p + pos, 4); pos += 4; }
            if (len > 8) { iv2_err("integer of %llu bytes (max 8)", (unsigned long long)len); goto fail; }
            NEED(len);
            CK(a = new_value(u, PV_INT));
            a->i = len ? rd_le(p + pos, (int)len) : 0;
            pos += len;
            CK(!push(u, a));
            break;
        case 'G': { /* BINFLOAT, big-endian */
            NEED(8);
            uint64_t bits = 0;
            for (int i = 0; i < 8; i++) bits = bits << 8 | p[pos + i];
            pos += 8;
            CK(a = new_value(u, PV_FLOAT));
            memcpy(&a->f, &bits, 8);
            CK(!push(u, a));
            break;
        }
        case 'X': case 0x8c: case 0x8d: /* BINUNICODE, SHORT_BINUNICODE, BINUNICODE8 */
        case 'T': case 'U':            /* BINSTRING, SHORT_BINSTRING */
        case 'B': case 'C': case 0x8e: /* BINBYTES, SHORT_BINBYTES, BINBYTES8 */
            if (op == 0x8c || op == 'U' || op == 'C') { NEED(1); len = p[pos++]; }
            else if (op == 0x8d || op == 0x8e) { NEED(8); len = (uint64_t)rd_le(p + pos, 8); pos += 8; }
            else { NEED(4); len = (uint32_t)rd_le(p + pos, 4); pos += 4; }
            NEED(len);
            CK(a = new_str(u, (op == 'B' || op == 'C' || op == 0x8e) ? PV_BYTES : PV_STR, p + pos, len));
            pos += len;
            CK(!push(u, a));
            break;
        case ')': CK(!push(u, new_value(u, PV_TUPLE))); break;
        case ']': CK(!push(u, new_value(u, PV_LIST))); break;
        case '}': CK(!push(u, new_value(u, PV_DICT))); break;
        case 0x8f: CK(!push(u, new_value(u, PV_LIST))); break; /* EMPTY_SET: a list will do */
        case 't': case 'l': case 'd': case 0x91: /* TUPLE, LIST, DICT, FROZENSET */
            CK(!pop_mark(u, &first, &cnt));
            if (op == 'd' && cnt % 2) { iv2_err("DICT with an odd number of items"); goto fail; }
            CK(a = new_value(u, op == 't' ? PV_TUPLE : op == 'd' ? PV_DICT : PV_LIST));
            for (size_t i = 0; i < cnt; i++) add_item(a, u->stack[first + i]);
            CK(!push(u, a));
            break;
        case 0x85: case 0x86: case 0x87: { /* TUPLE1..3 */
            int k = op - 0x84;
            if (u->sp < frame_base(u) + (size_t)k) { iv2_err("stack underflow"); goto fail; }
            CK(a = new_value(u, PV_TUPLE));
            for (int i = 0; i < k; i++) add_item(a, u->stack[u->sp - k + i]);
            u->sp -= k;
            CK(!push(u, a));
            break;
        }
        case 'a': /* APPEND */
            CK(b = pop(u)); CK(a = top(u));
            if (a->type == PV_LIST) add_item(a, b);
            else if (a->type != PV_OBJ) { iv2_err("APPEND to a non-list"); goto fail; }
            break;
        case 'e': case 0x90: /* APPENDS, ADDITEMS */
            CK(!pop_mark(u, &first, &cnt));
            CK(a = top(u));
            if (a->type == PV_LIST) for (size_t i = 0; i < cnt; i++) add_item(a, u->stack[first + i]);
            else if (a->type != PV_OBJ) { iv2_err("APPENDS to a non-list"); goto fail; }
            break;
        case 's': /* SETITEM */
            CK(c = pop(u)); CK(b = pop(u)); CK(a = top(u));
            if (a->type == PV_DICT) { add_item(a, b); add_item(a, c); }
            else if (a->type != PV_OBJ) { iv2_err("SETITEM on a non-dict"); goto fail; }
            break;
        case 'u': /* SETITEMS */
            CK(!pop_mark(u, &first, &cnt));
            if (cnt % 2) { iv2_err("SETITEMS with an odd number of items"); goto fail; }
            CK(a = top(u));
            if (a->type == PV_DICT) for (size_t i = 0; i < cnt; i++) add_item(a, u->stack[first + i]);
            else if (a->type != PV_OBJ) { iv2_err("SETITEMS on a non-dict"); goto fail; }
            break;
        case 'c': { /* GLOBAL "module\nname\n" */
            const uint8_t *nl1 = memchr(p + pos, '\n', n - pos);
            if (!nl1) { iv2_err("truncated GLOBAL"); goto fail; }
            const uint8_t *nl2 = memchr(nl1 + 1, '\n', (size_t)(p + n - nl1 - 1));
            if (!nl2) { iv2_err("truncated GLOBAL"); goto fail; }
            CK(a = new_str(u, PV_GLOBAL, nl1 + 1, (size_t)(nl2 - nl1 - 1)));
            a->mod = iv2_malloc((size_t)(nl1 - (p + pos)) + 1);
            memcpy(a->mod, p + pos, (size_t)(nl1 - (p + pos)));
            a->mod[nl1 - (p + pos)] = 0;
            pos = (size_t)(nl2 + 1 - p);
            CK(!push(u, a));
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            CK(b = pop(u)); CK(a = pop(u));
            if (a->type != PV_STR || b->type != PV_STR) { iv2_err("STACK_GLOBAL needs two strings"); goto fail; }
            CK(c = new_str(u, PV_GLOBAL, (const uint8_t *)b->s, b->slen));
            c->mod = iv2_strdup(a->s);
            CK(!push(u, c));
            break;
        case 'R': /* REDUCE */
            CK(b = pop(u)); CK(a = pop(u));
            CK(!push(u, reduce(u, a, b, 0)));
            break;
        case 0x81: /* NEWOBJ: cls.__new__(cls, *args) */
            CK(b = pop(u)); CK(a = pop(u));
            CK(!push(u, make_obj(u, a)));
            break;
        case 0x92: /* NEWOBJ_EX */
            CK(c = pop(u)); CK(b = pop(u)); CK(a = pop(u));
            CK(!push(u, make_obj(u, a)));
            break;
        case 'b': /* BUILD: object state (a dict's or tensor's attributes) is not needed */
            CK(b = pop(u)); CK(top(u));
            break;
        case 'Q': /* BINPERSID */
            CK(a = pop(u));
            CK(!push(u, make_storage(u, a)));
            break;
        case 'h': NEED(1); CK(a = memo_get(u, p[pos])); pos += 1; CK(!push(u, a)); break;           /* BINGET */
        case 'j': NEED(4); CK(a = memo_get(u, (uint32_t)rd_le(p + pos, 4))); pos += 4; CK(!push(u, a)); break; /* LONG_BINGET */
        case 'q': NEED(1); CK(a = top(u)); CK(!memo_put(u, p[pos], a)); pos += 1; break;           /* BINPUT */
        case 'r': NEED(4); CK(a = top(u)); CK(!memo_put(u, (uint32_t)rd_le(p + pos, 4), a)); pos += 4; break; /* LONG_BINPUT */
        case 0x94: /* MEMOIZE: the slot numbered by how many are in use */
            CK(a = top(u)); CK(!memo_put(u, u->memo_count, a)); break;
        default:
            iv2_err("unsupported opcode");
            goto fail;
        }
    }
    iv2_err("offset %zu: pickle ends without STOP (truncated)", n);
    return NULL;
fail: {
        char buf[32];
        op_name(op, buf, sizeof buf);
        iv2_err_ctx("offset %zu: opcode %s", at, buf);
        return NULL;
    }
}
