/* manifest.c: JSON Lines manifest reader (schema: manifests/README.md). One scanner serves
 * both load (stop at the first bad line) and check (report every bad line). */
#include "manifest.h"
#include "err.h"
#include "sha256.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

static const char *json_kind(const cJSON *v) {
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    return "invalid";
}

/* "scheme://..." is a URL: FFmpeg opens it as is, so it is not resolved */
static int is_url(const char *s) {
    const char *p = s;
    while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '+' || *p == '-' || *p == '.') p++;
    return p > s && p[0] == ':' && p[1] == '/' && p[2] == '/';
}

static char *resolve(const char *video, const char *base_dir) {
    if (video[0] == '/' || is_url(video) || !base_dir || !base_dir[0] || !strcmp(base_dir, "."))
        return iv2_strdup(video);
    size_t a = strlen(base_dir), b = strlen(video);
    char *s = iv2_malloc(a + b + 2);
    memcpy(s, base_dir, a);
    s[a] = '/';
    memcpy(s + a + 1, video, b + 1);
    return s;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* a field that must be a finite number (null counts as absent); 1 when present */
static int get_seconds(const cJSON *v, const char *name, double *out) {
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v)) return iv2_err("field \"%s\" must be a number of seconds, got %s", name, json_kind(v));
    if (!isfinite(v->valuedouble)) return iv2_err("field \"%s\" is not finite", name);
    if (v->valuedouble < 0) return iv2_err("field \"%s\" is negative (%g)", name, v->valuedouble);
    *out = v->valuedouble;
    return 1;
}

static int check_fields(const cJSON *root) {
    int n = cJSON_GetArraySize(root);
    if (n < 2) return 0;
    const char **keys = iv2_malloc((size_t)n * sizeof(char *));
    int k = 0, rc = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, root) keys[k++] = c->string;
    qsort(keys, (size_t)k, sizeof(char *), cmp_str);
    for (int i = 1; i < k && !rc; i++)
        if (!strcmp(keys[i], keys[i - 1])) rc = iv2_err("field \"%.80s\" appears twice", keys[i]);
    free(keys);
    return rc;
}

static int fill_row(const cJSON *root, const char *base_dir, iv2_row *out) {
    if (!cJSON_IsObject(root)) return iv2_err("not a JSON object (got %s)", json_kind(root));
    if (check_fields(root)) return -1;
    const cJSON *video = NULL, *start = NULL, *end = NULL, *id = NULL, *source = NULL, *stream = NULL, *c;
    cJSON *extra = cJSON_CreateObject();
    cJSON_ArrayForEach(c, root) {
        if (!strcmp(c->string, "video")) video = c;
        else if (!strcmp(c->string, "start")) start = c;
        else if (!strcmp(c->string, "end")) end = c;
        else if (!strcmp(c->string, "id")) id = c;
        else if (!strcmp(c->string, "source")) source = c;
        else if (!strcmp(c->string, "stream")) stream = c;
        else cJSON_AddItemToObject(extra, c->string, cJSON_Duplicate(c, 1));
    }
    int rc = 0, has_end;
    if (!video) rc = iv2_err("missing required field \"video\"");
    else if (!cJSON_IsString(video)) rc = iv2_err("field \"video\" must be a string, got %s", json_kind(video));
    else if (!video->valuestring[0]) rc = iv2_err("field \"video\" is empty");
    else if (id && !cJSON_IsString(id)) rc = iv2_err("field \"id\" must be a string, got %s", json_kind(id));
    else if (id && !id->valuestring[0]) rc = iv2_err("field \"id\" is empty");
    else if (source && !cJSON_IsString(source)) rc = iv2_err("field \"source\" must be a string, got %s", json_kind(source));
    else if (stream && !(cJSON_IsNumber(stream) && stream->valuedouble >= 0 && stream->valuedouble <= 65535 &&
                         stream->valuedouble == (int)stream->valuedouble))
        rc = iv2_err("field \"stream\" must be a stream index (a whole number >= 0), got %s",
                     cJSON_IsNumber(stream) ? "another number" : json_kind(stream));
    else if (get_seconds(start, "start", &out->start) < 0) rc = -1;
    else if ((has_end = get_seconds(end, "end", &out->end)) < 0) rc = -1;
    else if (has_end && out->start >= out->end) rc = iv2_err("start %g >= end %g", out->start, out->end);
    if (rc) { cJSON_Delete(extra); return -1; }
    out->video = resolve(video->valuestring, base_dir);
    out->video_rel = out->video + strlen(out->video) - strlen(video->valuestring);   /* its tail */
    out->id = id ? iv2_strdup(id->valuestring) : NULL;
    out->source = iv2_strdup(source ? source->valuestring : "");
    out->stream = stream ? (int)stream->valuedouble : -1;
    char *js = cJSON_PrintUnformatted(extra);
    cJSON_Delete(extra);
    if (!js) iv2_panic("cJSON_PrintUnformatted failed (out of memory)");
    out->extra_json = iv2_strdup(js);
    cJSON_free(js);
    return 0;
}

int iv2_manifest_parse_line(const char *line, size_t len, const char *base_dir, iv2_row *out) {
    memset(out, 0, sizeof *out);
    out->index = -1;
    out->end = -1;
    size_t i = 0;
    while (i < len && is_space(line[i])) i++;
    if (i == len || line[i] == '#') return 1;
    if (memchr(line, 0, len)) return iv2_err("line contains a NUL byte");
    for (size_t k = 0, run = 0; k < len; k++) {   /* an escaped NUL would cut a string (a path) short */
        if (line[k] != '\\') { run = 0; continue; }
        if (run++ % 2 == 0 && k + 5 < len && line[k + 1] == 'u' && !memcmp(line + k + 2, "0000", 4))
            return iv2_err("a string holds \\u0000 (NUL) at column %zu", k + 1);
    }
    const char *stop = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(line, len, &stop, 0);
    if (!root) {
        size_t col = stop && stop >= line && stop <= line + len ? (size_t)(stop - line) + 1 : 1;
        return iv2_err("not valid JSON (at column %zu)", col);
    }
    for (const char *p = stop; p < line + len; p++)
        if (!is_space(*p)) {
            cJSON_Delete(root);
            return iv2_err("unexpected text after the JSON object (at column %zu)", (size_t)(p - line) + 1);
        }
    int rc = fill_row(root, base_dir, out);
    cJSON_Delete(root);
    return rc;
}

void iv2_row_free(iv2_row *r) {
    free(r->video);
    free(r->id);
    free(r->source);
    free(r->extra_json);
    memset(r, 0, sizeof *r);
}

void iv2_manifest_free(iv2_manifest *m) {
    for (int64_t i = 0; i < m->n_rows; i++) iv2_row_free(&m->rows[i]);
    free(m->rows);
    free(m->path);
    memset(m, 0, sizeof *m);
}

/* ---- the set of ids seen so far (open addressing; owns copies of the ids) */
typedef struct { char *id; int line; } id_slot;
typedef struct { id_slot *s; size_t cap, n; } id_set;

static void idset_free(id_set *t) {
    for (size_t i = 0; i < t->cap; i++) free(t->s[i].id);
    free(t->s);
}

/* insert id; returns 0, or the line that already holds it */
static int idset_add(id_set *t, const char *id, int line) {
    if (2 * (t->n + 1) > t->cap) {
        id_set g = {iv2_calloc(t->cap ? 2 * t->cap : 1024, sizeof(id_slot)), t->cap ? 2 * t->cap : 1024, t->n};
        for (size_t i = 0; i < t->cap; i++) {
            if (!t->s[i].id) continue;
            size_t h = iv2_hash64(t->s[i].id, strlen(t->s[i].id)) & (g.cap - 1);
            while (g.s[h].id) h = (h + 1) & (g.cap - 1);
            g.s[h] = t->s[i];
        }
        free(t->s);
        *t = g;
    }
    size_t h = iv2_hash64(id, strlen(id)) & (t->cap - 1);
    for (; t->s[h].id; h = (h + 1) & (t->cap - 1))
        if (!strcmp(t->s[h].id, id)) return t->s[h].line;
    t->s[h].id = iv2_strdup(id);
    t->s[h].line = line;
    t->n++;
    return 0;
}

/* Read path line by line. m != NULL: keep rows and stop at the first error.
 * err != NULL: report each bad line there and go on. Returns the number of bad lines, or -1. */
static int scan(const char *path, iv2_manifest *m, FILE *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return iv2_err("%s: cannot open: %s", path, strerror(errno));
    char *dir = iv2_strdup(path), *slash = strrchr(dir, '/');
    if (slash) slash[slash == dir ? 1 : 0] = 0; /* "/m.jsonl" -> "/" */
    else dir[0] = 0;
    iv2_sha256_ctx hc;
    iv2_sha256_init(&hc);
    id_set ids = {0};
    char *buf = NULL;
    size_t cap = 0;
    ssize_t got;
    int line = 0, nbad = 0, fatal = 0;
    int64_t index = 0, rows_cap = 0;
    while ((got = getline(&buf, &cap, f)) >= 0) {
        line++;
        iv2_sha256_update(&hc, buf, (size_t)got);
        const char *s = buf;
        size_t len = (size_t)got;
        if (line == 1 && len >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3)) { s += 3; len -= 3; } /* UTF-8 BOM */
        iv2_row r;
        int rc = iv2_manifest_parse_line(s, len, dir, &r);
        if (rc == 1) continue;
        if (rc == 0) {
            r.index = index;
            r.line = line;
            int defaulted = !r.id;
            if (defaulted) {
                char tmp[32];
                snprintf(tmp, sizeof tmp, "%lld", (long long)index);
                r.id = iv2_strdup(tmp);
            }
            int first = idset_add(&ids, r.id, line);
            if (first && defaulted)
                rc = iv2_err("duplicate id \"%.200s\" (first on line %d; this row has no \"id\", so its row number is its id)", r.id, first);
            else if (first) rc = iv2_err("duplicate id \"%.200s\" (first on line %d)", r.id, first);
        }
        index++;
        if (rc < 0) {
            iv2_row_free(&r);
            nbad++;
            if (err) fprintf(err, "%s:%d: %s\n", path, line, iv2_errmsg());
            if (m) { iv2_err_ctx("%s:%d", path, line); fatal = 1; break; }
            continue;
        }
        if (!m) { iv2_row_free(&r); continue; }
        if (m->n_rows == rows_cap) {
            rows_cap = rows_cap ? 2 * rows_cap : 256;
            m->rows = iv2_realloc(m->rows, (size_t)rows_cap * sizeof(iv2_row));
        }
        m->rows[m->n_rows++] = r;
    }
    if (!fatal && ferror(f)) { fatal = 1; iv2_err("%s: read error: %s", path, strerror(errno)); }
    if (!fatal && index == 0) {
        nbad++;
        iv2_err("%s: empty manifest: no rows", path);
        if (err) fprintf(err, "%s\n", iv2_errmsg());
        if (m) fatal = 1;
    }
    if (m && !fatal) iv2_sha256_final(&hc, m->sha256);
    free(buf);
    free(dir);
    idset_free(&ids);
    fclose(f);
    return fatal ? -1 : nbad;
}

int iv2_manifest_load(iv2_manifest *m, const char *path) {
    memset(m, 0, sizeof *m);
    m->path = iv2_strdup(path);
    if (scan(path, m, NULL) < 0) {
        iv2_manifest_free(m);
        return -1;
    }
    return 0;
}

int iv2_manifest_check(const char *path, void *err_stream) {
    return scan(path, NULL, err_stream ? (FILE *)err_stream : stderr);
}
