/* manifest.h: the JSON Lines manifest (schema: manifests/README.md).
 *
 * One object per line: "video" (string, required; relative paths resolve against the
 * manifest's folder), "start"/"end" (seconds, numbers, optional; 0 <= start < end), "id"
 * (string, optional, unique; defaults to the row number), "source" (string, optional, e.g.
 * "ssv2" which turns flips off). Other fields are kept verbatim (extra_json). Blank lines and
 * lines starting with '#' are skipped: a row's index (its cache key and default id) counts rows
 * only, its line (in messages, path:line) is the file's line number.
 * A UTF-8 BOM and CRLF line ends are accepted. */
#ifndef IV2_MANIFEST_H
#define IV2_MANIFEST_H
#include <stddef.h>
#include <stdint.h>

typedef struct iv2_row {
    int64_t index;        /* 0-based position among the manifest's rows (the cache key) */
    int line;             /* 1-based line number in the file */
    char *video;          /* resolved path (relative ones from the manifest's folder) */
    const char *video_rel; /* the path as the manifest wrote it: the tail of video, not owned */
    char *id;             /* given id, or the row index as text */
    char *source;         /* "" when absent */
    double start, end;    /* seconds; end < 0 means "to the end" */
    int stream;           /* the container's stream index to decode; -1 (absent): the best video stream */
    char *extra_json;     /* other fields as a JSON object text, "{}" when none */
} iv2_row;

typedef struct iv2_manifest {
    char *path;
    iv2_row *rows;
    int64_t n_rows;
    uint8_t sha256[32];   /* of the file's bytes (0 when not computed) */
} iv2_manifest;

/* Load all rows; the first bad line fails with "path:line: reason". */
int iv2_manifest_load(iv2_manifest *m, const char *path);
/* Check mode: report every bad line (one line each, "path:line: reason") to the stream err,
 * return the number of bad lines (0 = valid) or -1 if the file cannot be read. */
int iv2_manifest_check(const char *path, void *err_stream /* FILE* */);
/* Parse one line (the fuzzer's entry). Returns 0, 1 for a skipped line, -1 on error (the
 * reason in iv2_errmsg(), without the "path:line" prefix). On 0, out->id is NULL when the line
 * has no "id" (load fills in the row index), and index/line are left for the caller; on 1 or
 * -1, out holds nothing to free. Free a parsed row with iv2_row_free(). */
int iv2_manifest_parse_line(const char *line, size_t len, const char *base_dir, iv2_row *out);
void iv2_row_free(iv2_row *r);
void iv2_manifest_free(iv2_manifest *m);

#endif
