/* err.h: the one error convention of iv2.
 *
 * A function that can fail returns 0 (or a valid pointer) on success and -1 (or NULL) on
 * failure, after recording the reason with iv2_err(). Each caller on the way up may add
 * context in front with iv2_err_ctx() ("manifest.jsonl:12", "tensor 'blocks.3.attn.qkv.weight'"),
 * so the message that reaches main reads "file:row: what: reason". main prints it once with
 * iv2_die() and exits non-zero. Messages live in a thread-local buffer, so worker threads
 * report independently. */
#ifndef IV2_ERR_H
#define IV2_ERR_H
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define IV2_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define IV2_PRINTF(a, b)
#endif

int iv2_err(const char *fmt, ...) IV2_PRINTF(1, 2);      /* set the reason; returns -1 */
int iv2_err_ctx(const char *fmt, ...) IV2_PRINTF(1, 2);  /* prefix "ctx: "; returns -1 */
const char *iv2_errmsg(void);                            /* "" when none */
void iv2_err_clear(void);
/* print "tool: error: <message>" to stderr and exit(1). */
void iv2_die(const char *tool) __attribute__((noreturn));
/* for impossible states and allocation failure: print and abort. */
void iv2_panic(const char *fmt, ...) IV2_PRINTF(1, 2) __attribute__((noreturn));

/* allocation that cannot fail silently (aborts with the size on OOM). */
void *iv2_malloc(size_t n);
void *iv2_calloc(size_t n, size_t size);
void *iv2_realloc(void *p, size_t n);
char *iv2_strdup(const char *s);
/* 1 when paths a and b name the same existing file or folder (through links, ./ and the like) */
int iv2_same_file(const char *a, const char *b);

/* lines on stderr: iv2_info's are silenced by IV2_QUIET=1 in the environment (or iv2_set_quiet);
 * warnings ("warning: ...") always print. Progress lines (log.h) read IV2_QUIET only. */
void iv2_info(const char *fmt, ...) IV2_PRINTF(1, 2);
void iv2_warn(const char *fmt, ...) IV2_PRINTF(1, 2);
void iv2_set_quiet(int quiet);

/* checksum of cache values (64-bit FNV-1a over 8-byte words, tail bytewise). */
uint64_t iv2_hash64(const void *data, size_t n);

#endif
