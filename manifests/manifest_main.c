/* iv2-manifest: check manifests and import the lists people already have into the
 * JSON Lines schema of manifests/README.md. */
#include "err.h"
#include "manifest.h"
#include "sha256.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(FILE *o) {
    fprintf(o,
        "usage: iv2-manifest check FILE...\n"
        "       iv2-manifest import --format internvideo2|kinetics|webvid IN [--root DIR] [-o OUT]\n"
        "                           [--source NAME] [--label-dirs] [--keep-going]\n"
        "\n"
        "check   report every bad line of each manifest as FILE:LINE: reason; exit 1 if any.\n"
        "import  convert a list to a JSON Lines manifest (stdout, or OUT written atomically).\n"
        "  internvideo2  space-separated 'source path total_time start_time end_time target'\n"
        "                (-1 times = the whole video), as read by InternVideo2's mae_multi.py\n"
        "  kinetics      CSV with header label,youtube_id,time_start,time_end,split[,is_cc];\n"
        "                clips named <youtube_id>_<start:06d>_<end:06d>.mp4 (already trimmed)\n"
        "  webvid        CSV with header videoid,contentUrl,duration,page_dir,name[,...];\n"
        "                videos at <page_dir>/<videoid>.mp4, ISO-8601 durations (PT00H00M12S)\n"
        "  --root DIR      prefix of the video paths (default none: relative to the manifest's folder)\n"
        "  --source NAME   \"source\" of every row (kinetics: default \"kinetics\"; webvid: \"webvid\";\n"
        "                  internvideo2: the list's own source column)\n"
        "  --label-dirs    kinetics: clips sit in one folder per label (<root>/<label>/<clip>.mp4)\n"
        "  --keep-going    write the good rows even when some input lines are bad (still exit 1)\n");
}

/* ------------------------------------------------------------ check */

static int cmd_check(int argc, char **argv) {
    if (argc < 1) { usage(stderr); fprintf(stderr, "iv2-manifest: check: which manifest?\n"); return 2; }
    int bad = 0;
    for (int i = 0; i < argc; i++) {
        int n = iv2_manifest_check(argv[i], stderr);
        if (n < 0) { fprintf(stderr, "iv2-manifest: error: %s\n", iv2_errmsg()); bad = 1; continue; }
        if (n > 0) { fprintf(stderr, "%s: %d bad line%s\n", argv[i], n, n == 1 ? "" : "s"); bad = 1; continue; }
        iv2_manifest m;
        if (iv2_manifest_load(&m, argv[i])) { fprintf(stderr, "iv2-manifest: error: %s\n", iv2_errmsg()); bad = 1; continue; }
        char hex[65];
        iv2_sha256_hex(m.sha256, hex);
        printf("%s: ok, %lld row%s, sha256 %s\n", argv[i], (long long)m.n_rows, m.n_rows == 1 ? "" : "s", hex);
        iv2_manifest_free(&m);
    }
    return bad;
}

/* ------------------------------------------------------------ input helpers */

/* split a CSV line (RFC 4180 quoting, no newlines inside fields) into at most max fields,
 * unquoted in place; returns the field count or -1 with iv2_err */
static int csv_split(char *s, char **fld, int max) {
    int n = 0;
    char *p = s;
    for (;;) {
        if (n == max) return iv2_err("more than %d columns", max);
        while (*p == ' ') p++;   /* "a, b": the spaces around a field are not part of it */
        char *out = p;
        fld[n++] = out;
        if (*p == '"') {
            p++;
            for (;;) {
                if (!*p) return iv2_err("column %d: unterminated quote", n);
                if (*p == '"' && p[1] == '"') { *out++ = '"'; p += 2; }
                else if (*p == '"') { p++; break; }
                else *out++ = *p++;
            }
            while (*p == ' ') p++;
            if (*p && *p != ',') return iv2_err("column %d: text after the closing quote", n);
        } else {
            while (*p && *p != ',') *out++ = *p++;
            while (out > fld[n - 1] && out[-1] == ' ') out--;
        }
        if (!*p) { *out = 0; return n; }
        *out = 0;
        p++;
    }
}

static int parse_double(const char *s, const char *what, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    while (*end == ' ' || *end == '\t') end++;
    if (!*s || *end || errno == ERANGE || !isfinite(v)) return iv2_err("%s \"%.40s\" is not a number", what, s);
    *out = v;
    return 0;
}

static int parse_long(const char *s, const char *what, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    while (*end == ' ' || *end == '\t') end++;
    if (!*s || *end || errno == ERANGE) return iv2_err("%s \"%.40s\" is not an integer", what, s);
    *out = v;
    return 0;
}

/* ISO-8601 duration P[nD][T[nH][nM][n[.f]S]] -> seconds */
static int parse_iso_duration(const char *s, double *out) {
    const char *p = s;
    double total = 0;
    int any = 0, in_t = 0;
    if (*p++ != 'P') goto bad;
    while (*p) {
        if (*p == 'T') { if (in_t) goto bad; in_t = 1; p++; continue; }
        char *end;
        if (!(*p >= '0' && *p <= '9')) goto bad;
        const char *q = p;   /* decimal digits and one '.' only: strtod would also take 0x10 and 1e2 */
        while ((*q >= '0' && *q <= '9') || *q == '.') q++;
        double v = strtod(p, &end);
        if (end != q || memchr(p, '.', (size_t)(q - p)) != memrchr(p, '.', (size_t)(q - p))) goto bad;
        char u = *end;
        if (u == 'D' && !in_t) total += v * 86400;
        else if (u == 'H' && in_t) total += v * 3600;
        else if (u == 'M' && in_t) total += v * 60;
        else if (u == 'S' && in_t) total += v;
        else goto bad;
        if (u != 'S' && memchr(p, '.', (size_t)(end - p))) goto bad; /* only seconds may be fractional */
        any = 1;
        p = end + 1;
    }
    if (!any || !isfinite(total)) goto bad;
    *out = total;
    return 0;
bad:
    return iv2_err("duration \"%.40s\" is not an ISO-8601 duration like PT00H00M12S", s);
}

static char *join_path(const char *root, const char *a, const char *b) {
    size_t n = (root ? strlen(root) : 0) + strlen(a) + (b ? strlen(b) : 0) + 3;
    char *s = iv2_malloc(n);
    snprintf(s, n, "%s%s%s%s%s", root ? root : "", root && *root && root[strlen(root) - 1] != '/' ? "/" : "", a,
             b ? "/" : "", b ? b : "");
    return s;
}

static int is_abs_or_url(const char *p) { return p[0] == '/' || strstr(p, "://") != NULL; }

/* ------------------------------------------------------------ import */

typedef struct {
    const char *format, *in, *root, *out, *source;
    int label_dirs, keep_going;
    int col[8];        /* CSV column of each needed field, from the header */
    int ncols;
} importer;

enum { K_LABEL, K_YTID, K_START, K_END, K_SPLIT };
enum { W_ID, W_URL, W_DUR, W_DIR, W_NAME };

static int read_header(importer *im, char *line, const char *const *names, int n, int required_mask) {
    char *fld[64];
    int nf = csv_split(line, fld, 64);
    if (nf < 0) return -1;
    for (int k = 0; k < n; k++) im->col[k] = -1;
    for (int i = 0; i < nf; i++)
        for (int k = 0; k < n; k++)
            if (!strcmp(fld[i], names[k])) im->col[k] = i;
    for (int k = 0; k < n; k++)
        if (im->col[k] < 0 && (required_mask >> k & 1)) return iv2_err("header has no column \"%s\" (is this a %s CSV?)", names[k], im->format);
    im->ncols = nf;
    return 0;
}

static const char *const KIN_COLS[] = {"label", "youtube_id", "time_start", "time_end", "split"};
static const char *const WEB_COLS[] = {"videoid", "contentUrl", "duration", "page_dir", "name"};

/* one input line -> one manifest row (a cJSON object); NULL with iv2_err when bad */
static cJSON *import_internvideo2(importer *im, char *line) {
    char *f[8], *save = NULL;
    int n = 0;
    for (char *t = strtok_r(line, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (n == 6) { iv2_err("more than 6 fields (source path total_time start_time end_time target)"); return NULL; }
        f[n++] = t;
    }
    if (n < 6) { iv2_err("%d fields, expected 6: source path total_time start_time end_time target", n); return NULL; }
    double total = 0, start = 0, end = 0;
    long long target = 0;
    if (parse_double(f[2], "total_time", &total) || parse_double(f[3], "start_time", &start) ||
        parse_double(f[4], "end_time", &end) || parse_long(f[5], "target", &target)) return NULL;
    int segment = total != -1 && start != -1 && end != -1; /* mae_multi.py: -1 = whole video */
    if (segment) {
        if (start < 0 || end < 0) { iv2_err("negative time (start %g, end %g)", start, end); return NULL; }
        if (start >= end) { iv2_err("start_time %g >= end_time %g", start, end); return NULL; }
    }
    if (total != -1 && total <= 0) { iv2_err("total_time %g is not positive", total); return NULL; }
    if (segment && end > total + 1e-3) { iv2_err("end_time %g is past total_time %g", end, total); return NULL; }
    cJSON *o = cJSON_CreateObject();
    char *v = is_abs_or_url(f[1]) || !im->root ? iv2_strdup(f[1]) : join_path(im->root, f[1], NULL);
    cJSON_AddStringToObject(o, "video", v);
    free(v);
    cJSON_AddStringToObject(o, "source", im->source ? im->source : f[0]);
    if (segment) { cJSON_AddNumberToObject(o, "start", start); cJSON_AddNumberToObject(o, "end", end); }
    if (total != -1) cJSON_AddNumberToObject(o, "duration", total);
    cJSON_AddNumberToObject(o, "label", (double)target);
    return o;
}

static const char *field(importer *im, char **f, int nf, int k) {
    int c = im->col[k];
    return c >= 0 && c < nf ? f[c] : NULL;
}

static cJSON *import_kinetics(importer *im, char *line) {
    char *f[64];
    int nf = csv_split(line, f, 64);
    if (nf < 0) return NULL;
    if (nf != im->ncols) { iv2_err("%d columns, the header has %d", nf, im->ncols); return NULL; }
    const char *label = field(im, f, nf, K_LABEL), *id = field(im, f, nf, K_YTID), *split = field(im, f, nf, K_SPLIT);
    double s = 0, e = 0;
    if (!id[0]) { iv2_err("empty youtube_id"); return NULL; }
    if (strchr(id, '/') || !strcmp(id, "..") || !strcmp(id, ".")) { iv2_err("youtube_id \"%.40s\" is not a file name", id); return NULL; }
    if (parse_double(field(im, f, nf, K_START), "time_start", &s) || parse_double(field(im, f, nf, K_END), "time_end", &e)) return NULL;
    if (s < 0 || e < 0) { iv2_err("negative time (time_start %g, time_end %g)", s, e); return NULL; }
    if (s >= e) { iv2_err("time_start %g >= time_end %g", s, e); return NULL; }
    if (e > 999999) { iv2_err("time_end %g is past 999999 s (clip names use %%06d)", e); return NULL; }
    if (s != floor(s) || e != floor(e)) { iv2_err("times %g, %g are not whole seconds (clip names use %%06d)", s, e); return NULL; }
    if (im->label_dirs && (!label || !label[0])) { iv2_err("--label-dirs but the row has no label"); return NULL; }
    char clip[256];
    snprintf(clip, sizeof clip, "%.200s_%06d_%06d", id, (int)s, (int)e);
    char file[272];
    snprintf(file, sizeof file, "%s.mp4", clip);
    char *v = im->label_dirs ? join_path(im->root, label, file) : join_path(im->root, file, NULL);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "video", v);
    free(v);
    cJSON_AddStringToObject(o, "id", clip);
    cJSON_AddStringToObject(o, "source", im->source ? im->source : "kinetics");
    if (label) cJSON_AddStringToObject(o, "label", label);
    if (split) cJSON_AddStringToObject(o, "split", split);
    cJSON_AddNumberToObject(o, "time_start", s);
    cJSON_AddNumberToObject(o, "time_end", e);
    return o;
}

static cJSON *import_webvid(importer *im, char *line) {
    char *f[64];
    int nf = csv_split(line, f, 64);
    if (nf < 0) return NULL;
    if (nf != im->ncols) { iv2_err("%d columns, the header has %d", nf, im->ncols); return NULL; }
    const char *id = field(im, f, nf, W_ID), *url = field(im, f, nf, W_URL), *dir = field(im, f, nf, W_DIR),
               *name = field(im, f, nf, W_NAME);
    double dur = 0;
    if (!id[0]) { iv2_err("empty videoid"); return NULL; }
    if (strchr(id, '/')) { iv2_err("videoid \"%.40s\" contains '/'", id); return NULL; }
    if (!dir[0]) { iv2_err("empty page_dir"); return NULL; }
    if (parse_iso_duration(field(im, f, nf, W_DUR), &dur)) return NULL;
    if (dur <= 0) { iv2_err("duration is zero"); return NULL; }
    char file[256];
    snprintf(file, sizeof file, "%.240s.mp4", id);
    char *v = join_path(im->root, dir, file);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "video", v);
    free(v);
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "source", im->source ? im->source : "webvid");
    cJSON_AddNumberToObject(o, "duration", dur);
    if (url) cJSON_AddStringToObject(o, "url", url);
    if (name) cJSON_AddStringToObject(o, "caption", name);
    return o;
}

typedef struct { char *id; int line, row; } seen_id;   /* row: its index in the rows written */
static int cmp_seen(const void *a, const void *b) {
    const seen_id *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : x->line - y->line;
}

static int cmd_import(int argc, char **argv) {
    importer im = {0};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--format") && i + 1 < argc) im.format = argv[++i];
        else if (!strcmp(a, "--root") && i + 1 < argc) im.root = argv[++i];
        else if (!strcmp(a, "-o") && i + 1 < argc) im.out = argv[++i];
        else if (!strcmp(a, "--source") && i + 1 < argc) {
            im.source = argv[++i];
            if (!*im.source) { fprintf(stderr, "iv2-manifest: --source: an empty name\n"); return 2; }
        }
        else if (!strcmp(a, "--label-dirs")) im.label_dirs = 1;
        else if (!strcmp(a, "--keep-going")) im.keep_going = 1;
        else if (a[0] == '-' && a[1]) { fprintf(stderr, "iv2-manifest: unknown or incomplete option %s\n", a); usage(stderr); return 2; }
        else if (!im.in) im.in = a;
        else { fprintf(stderr, "iv2-manifest: more than one input (%s)\n", a); return 2; }
    }
    if (!im.format || !im.in) {
        usage(stderr);
        fprintf(stderr, "iv2-manifest: import needs %s\n", !im.format ? "--format" : "an input list (IN, or - for stdin)");
        return 2;
    }
    cJSON *(*conv)(importer *, char *) = NULL;
    if (!strcmp(im.format, "internvideo2")) conv = import_internvideo2;
    else if (!strcmp(im.format, "kinetics")) conv = import_kinetics;
    else if (!strcmp(im.format, "webvid")) conv = import_webvid;
    else { fprintf(stderr, "iv2-manifest: unknown --format %s (internvideo2, kinetics, webvid)\n", im.format); return 2; }

    FILE *in = !strcmp(im.in, "-") ? stdin : fopen(im.in, "rb");
    if (!in) { iv2_err("%s: cannot open: %s", im.in, strerror(errno)); iv2_die("iv2-manifest"); }
    char *buf = NULL, **rows = NULL;
    size_t cap = 0;
    ssize_t got;
    int line = 0, nbad = 0, nrows = 0, rows_cap = 0, have_header = conv == import_internvideo2, bad_header = 0;
    seen_id *ids = NULL;
    int nids = 0;
    while ((got = getline(&buf, &cap, in)) >= 0) {
        line++;
        char *s = buf;
        if (line == 1 && got >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3)) s += 3;
        size_t len = strlen(s);
        if (len != (size_t)(got - (s - buf))) { fprintf(stderr, "%s:%d: line contains a NUL byte\n", im.in, line); nbad++; continue; }
        while (len && (s[len - 1] == '\n' || s[len - 1] == '\r')) s[--len] = 0;
        char *t = s;
        while (*t == ' ' || *t == '\t') t++;
        if (!*t || *t == '#') continue;
        if (!have_header) {
            int rc = conv == import_kinetics ? read_header(&im, s, KIN_COLS, 5, 1 << K_YTID | 1 << K_START | 1 << K_END)
                                             : read_header(&im, s, WEB_COLS, 5, 1 << W_ID | 1 << W_DUR | 1 << W_DIR);
            /* fatal even with --keep-going: no row of the file can be read (and -o must stay as it was) */
            if (rc) { fprintf(stderr, "%s:%d: %s\n", im.in, line, iv2_errmsg()); nbad++; bad_header = 1; break; }
            have_header = 1;
            continue;
        }
        cJSON *o = conv(&im, s);
        if (!o) { fprintf(stderr, "%s:%d: %s\n", im.in, line, iv2_errmsg()); nbad++; continue; }
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
        if (cJSON_IsString(id)) {
            ids = iv2_realloc(ids, (size_t)(nids + 1) * sizeof *ids);
            ids[nids].id = iv2_strdup(id->valuestring);
            ids[nids].row = nrows;
            ids[nids++].line = line;
        }
        char *js = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!js) iv2_panic("cJSON_PrintUnformatted failed (out of memory)");
        if (nrows == rows_cap) { rows_cap = rows_cap ? 2 * rows_cap : 256; rows = iv2_realloc(rows, (size_t)rows_cap * sizeof(char *)); }
        rows[nrows++] = js;
    }
    if (ferror(in)) { fprintf(stderr, "%s: read error\n", im.in); nbad++; }
    if (in != stdin) fclose(in);
    free(buf);
    /* a repeated id: the first row keeps it, the others are bad lines (not written, --keep-going
     * included: the output must pass check) */
    if (nids) qsort(ids, (size_t)nids, sizeof *ids, cmp_seen);   /* qsort takes no NULL, even of 0 */
    for (int i = 1, first = 0; i < nids; i++) {
        if (strcmp(ids[i].id, ids[first].id)) { first = i; continue; }
        fprintf(stderr, "%s:%d: duplicate id \"%.200s\" (first on line %d)\n", im.in, ids[i].line, ids[i].id, ids[first].line);
        cJSON_free(rows[ids[i].row]);
        rows[ids[i].row] = NULL;
        nbad++;
    }
    for (int i = 0; i < nids; i++) free(ids[i].id);
    free(ids);
    if (nrows == 0 && nbad == 0) { fprintf(stderr, "%s: no rows\n", im.in); nbad++; }

    int rc = 0, nwritten = 0;
    if (bad_header) {
        fprintf(stderr, "iv2-manifest: %s: no header this format knows, nothing written\n", im.in);
        rc = 1;
    } else if (nbad && !im.keep_going) {
        fprintf(stderr, "iv2-manifest: %d bad line%s in %s, nothing written (--keep-going writes the good rows)\n", nbad, nbad == 1 ? "" : "s", im.in);
        rc = 1;
    } else {
        FILE *o = stdout;
        char *tmp = NULL;
        struct stat ost;   /* a device or pipe there (/dev/null): the rename would replace it with a file */
        if (im.out && stat(im.out, &ost) == 0 && !S_ISREG(ost.st_mode)) {
            iv2_err("-o %s exists and is not a regular file (write to standard output instead)", im.out);
            iv2_die("iv2-manifest");
        }
        if (im.out) {
            size_t n = strlen(im.out) + 16;
            tmp = iv2_malloc(n);
            snprintf(tmp, n, "%s.tmp.%d", im.out, (int)getpid());
            o = fopen(tmp, "wb");
            if (!o) { iv2_err("%s: cannot create: %s", tmp, strerror(errno)); free(tmp); iv2_die("iv2-manifest"); }
        }
        for (int i = 0; i < nrows; i++)
            if (rows[i]) { fputs(rows[i], o); fputc('\n', o); nwritten++; }
        if (im.out) {
            int bad = fflush(o) != 0 || fsync(fileno(o)) != 0;
            bad |= fclose(o) != 0;
            if (bad || rename(tmp, im.out) != 0) {
                unlink(tmp);
                iv2_err("%s: cannot write: %s", im.out, strerror(errno));
                free(tmp);
                iv2_die("iv2-manifest");
            }
            free(tmp);
        } else if (fflush(o) != 0 || ferror(o)) {   /* a full disk under a redirect must not look like success */
            iv2_err("standard output: cannot write: %s", strerror(errno));
            iv2_die("iv2-manifest");
        }
        if (nbad) {
            fprintf(stderr, "iv2-manifest: %d bad line%s skipped, %d row%s written\n", nbad, nbad == 1 ? "" : "s", nwritten,
                    nwritten == 1 ? "" : "s");
            rc = 1;
        } else iv2_info("iv2-manifest: %d row%s imported from %s", nwritten, nwritten == 1 ? "" : "s", im.in);
    }
    for (int i = 0; i < nrows; i++) if (rows[i]) cJSON_free(rows[i]);
    free(rows);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) { usage(argc < 2 ? stderr : stdout); return argc < 2 ? 2 : 0; }
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); return 0; }
    if (!strcmp(argv[1], "check")) return cmd_check(argc - 2, argv + 2);
    if (!strcmp(argv[1], "import")) return cmd_import(argc - 2, argv + 2);
    fprintf(stderr, "iv2-manifest: unknown command %s\n", argv[1]);
    usage(stderr);
    return 2;
}
