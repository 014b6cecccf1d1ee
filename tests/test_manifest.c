/* test_manifest: the JSON Lines manifest reader: schema, path resolution, BOM, CRLF, long
 * lines, and every kind of bad line (load stops at the first, check reports them all). */
#include "err.h"
#include "manifest.h"
#include "sha256.h"
#include "testutil.h"
#include <cjson/cJSON.h>
#include <sys/stat.h>

static char dir[64];

static const char *put(const char *name, const char *text, size_t n) {
    static char buf[8][256];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 256, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    fwrite(text, 1, n, f);
    fclose(f);
    return p;
}
#define PUT(name, lit) put(name, lit, sizeof(lit) - 1)

/* load must fail with "path:line: ...want..." */
static void expect_bad(const char *name, const char *text, size_t n, int line, const char *want) {
    const char *p = put(name, text, n);
    iv2_manifest m;
    iv2_err_clear();
    int rc = iv2_manifest_load(&m, p);
    CHECK(rc == -1, "%s: loaded, expected '%s'", name, want);
    if (rc == 0) { iv2_manifest_free(&m); return; }
    char pre[300];
    if (line) snprintf(pre, sizeof pre, "%s:%d: ", p, line);
    else snprintf(pre, sizeof pre, "%s: ", p);
    const char *msg = iv2_errmsg();
    CHECK(!strncmp(msg, pre, strlen(pre)), "%s: message '%s' does not start with '%s'", name, msg, pre);
    CHECK(strstr(msg, want) != NULL, "%s: message '%s' lacks '%s'", name, msg, want);
    CHECK(strlen(msg) < 400, "%s: message of %zu bytes", name, strlen(msg));
}
#define BAD(name, lit, line, want) expect_bad(name, lit, sizeof(lit) - 1, line, want)

static void test_valid(void) {
    static const char text[] =
        "# a comment line\n"
        "{\"video\": \"clips/a.mp4\"}\n"
        "\n"
        "{\"video\": \"/abs/b.mp4\", \"start\": 1.5, \"end\": 9, \"id\": \"k400/b\", \"source\": \"ssv2\", "
        "\"label\": \"abseiling\", \"meta\": {\"fps\": 30, \"tags\": [1, 2]}}\n"
        "   {\"video\": \"https://host/c.mp4\", \"start\": 0, \"end\": null, \"caption\": \"caf\\u00e9 \\\"x\\\"\"}   \n"
        "{\"video\": \"../up/d.mp4\", \"start\": 2}";  /* no final newline */
    char sub[128];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    mkdir(sub, 0755);
    const char *p = put("sub/m.jsonl", text, sizeof text - 1);
    iv2_manifest m;
    CHECK(iv2_manifest_load(&m, p) == 0, "load: %s", iv2_errmsg());
    CHECK(m.n_rows == 4, "n_rows %lld", (long long)m.n_rows);
    if (m.n_rows != 4) { iv2_manifest_free(&m); return; }
    char want[256];
    snprintf(want, sizeof want, "%s/sub/clips/a.mp4", dir);
    CHECK(!strcmp(m.rows[0].video, want), "relative path resolved to '%s', want '%s'", m.rows[0].video, want);
    CHECK(m.rows[0].index == 0 && m.rows[0].line == 2, "row 0 index %lld line %d", (long long)m.rows[0].index, m.rows[0].line);
    CHECK(!strcmp(m.rows[0].id, "0") && !strcmp(m.rows[0].source, "") && m.rows[0].start == 0 && m.rows[0].end < 0, "row 0 defaults");
    CHECK(!strcmp(m.rows[0].extra_json, "{}"), "row 0 extra '%s'", m.rows[0].extra_json);
    CHECK(!strcmp(m.rows[1].video, "/abs/b.mp4"), "absolute path '%s'", m.rows[1].video);
    CHECK(m.rows[1].line == 4 && m.rows[1].index == 1, "row 1 line %d", m.rows[1].line);
    CHECK(m.rows[1].start == 1.5 && m.rows[1].end == 9, "row 1 times");
    CHECK(!strcmp(m.rows[1].id, "k400/b") && !strcmp(m.rows[1].source, "ssv2"), "row 1 id/source");
    cJSON *x = cJSON_Parse(m.rows[1].extra_json);
    CHECK(x && cJSON_GetArraySize(x) == 2, "row 1 extra '%s'", m.rows[1].extra_json);
    if (x) {
        CHECK(!strcmp(cJSON_GetObjectItemCaseSensitive(x, "label")->valuestring, "abseiling"), "label kept");
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(x, "meta");
        CHECK(meta && cJSON_GetObjectItemCaseSensitive(meta, "fps")->valuedouble == 30 &&
              cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(meta, "tags")) == 2, "nested extra kept");
        CHECK(!cJSON_GetObjectItemCaseSensitive(x, "video") && !cJSON_GetObjectItemCaseSensitive(x, "id"), "known fields not in extra");
    }
    cJSON_Delete(x);
    CHECK(!strcmp(m.rows[2].video, "https://host/c.mp4"), "URL left as is: '%s'", m.rows[2].video);
    CHECK(m.rows[2].end < 0, "end null = to the end");
    x = cJSON_Parse(m.rows[2].extra_json);
    CHECK(x && !strcmp(cJSON_GetObjectItemCaseSensitive(x, "caption")->valuestring, "caf\xc3\xa9 \"x\""), "escaped caption");
    cJSON_Delete(x);
    snprintf(want, sizeof want, "%s/sub/../up/d.mp4", dir);
    CHECK(!strcmp(m.rows[3].video, want) && m.rows[3].start == 2 && m.rows[3].line == 6, "last line without newline");
    uint8_t d[32];
    iv2_sha256(text, sizeof text - 1, d);
    CHECK(!memcmp(d, m.sha256, 32), "sha256 of the file bytes");
    iv2_manifest_free(&m);

    /* CRLF line ends and a UTF-8 BOM give the same rows */
    p = PUT("crlf.jsonl", "\xEF\xBB\xBF{\"video\":\"a.mp4\",\"id\":\"x\"}\r\n# c\r\n\r\n{\"video\":\"b.mp4\",\"end\":3}\r\n");
    CHECK(iv2_manifest_load(&m, p) == 0, "crlf+bom: %s", iv2_errmsg());
    CHECK(m.n_rows == 2, "crlf rows %lld", (long long)m.n_rows);
    if (m.n_rows == 2) {
        snprintf(want, sizeof want, "%s/a.mp4", dir);
        CHECK(!strcmp(m.rows[0].video, want) && !strcmp(m.rows[0].id, "x"), "crlf row 0 '%s' '%s'", m.rows[0].video, m.rows[0].id);
        CHECK(!strcmp(m.rows[1].id, "1") && m.rows[1].end == 3 && m.rows[1].line == 4, "crlf row 1");
        CHECK(!strchr(m.rows[1].video, '\r'), "CR left in the path");
    }
    iv2_manifest_free(&m);

    /* a manifest named without a folder resolves against "." (kept relative) */
    iv2_row r;
    {   /* an escaped backslash, then "u0000" as text: a path of that name, not a NUL */
        const char *l = "{\"video\":\"a\\\\u0000b.mp4\"}";
        CHECK(iv2_manifest_parse_line(l, strlen(l), "", &r) == 0 && !strcmp(r.video, "a\\u0000b.mp4"),
              "a backslash and u0000 as text: %s", iv2_errmsg());
        iv2_row_free(&r);
    }
    CHECK(iv2_manifest_parse_line("{\"video\":\"v.mp4\"}", 17, "", &r) == 0 && !strcmp(r.video, "v.mp4") && r.id == NULL, "no base dir");
    iv2_row_free(&r);
    CHECK(iv2_manifest_parse_line("{\"video\":\"v.mp4\",\"stream\":2}", 28, "", &r) == 0 && r.stream == 2 &&
          !strcmp(r.extra_json, "{}"), "stream 2 (%d)", r.stream);
    iv2_row_free(&r);
    CHECK(iv2_manifest_parse_line("{\"video\":\"v.mp4\"}", 17, "", &r) == 0 && r.stream == -1, "no stream: the best (%d)", r.stream);
    iv2_row_free(&r);
    /* only "scheme://" makes a URL: a relative name with a colon is still resolved */
    CHECK(iv2_manifest_parse_line("{\"video\":\"a:b.mp4\"}", 19, "d", &r) == 0 && !strcmp(r.video, "d/a:b.mp4"),
          "a colon without // resolved: '%s'", r.video);
    iv2_row_free(&r);
    CHECK(iv2_manifest_parse_line("  # x", 5, "d", &r) == 1, "comment skipped");
    CHECK(iv2_manifest_parse_line(" \t\r", 3, "d", &r) == 1, "blank skipped");

    /* a 1 MB line: a valid one loads whole, a broken one fails with a short message */
    size_t n = 1 << 20;
    char *big = malloc(n + 64);
    int k = snprintf(big, n + 64, "{\"video\":\"v.mp4\",\"caption\":\"");
    memset(big + k, 'a', n - k - 3);
    memcpy(big + n - 3, "\"}\n", 3);
    p = put("big.jsonl", big, n);
    CHECK(iv2_manifest_load(&m, p) == 0, "1 MB line: %s", iv2_errmsg());
    CHECK(m.n_rows == 1 && strlen(m.rows[0].extra_json) > n - 40, "1 MB extra kept");
    iv2_manifest_free(&m);
    big[n - 3] = ',';
    expect_bad("bigbad.jsonl", big, n, 1, "not valid JSON");
    memset(big, '[', n);
    expect_bad("deep.jsonl", big, n, 1, "not valid JSON");   /* nesting far beyond cJSON's limit */
    free(big);
}

static void test_bad(void) {
    BAD("notjson.jsonl", "{\"video\":\"a\"}\n{video: a}\n", 2, "not valid JSON (at column ");
    BAD("novideo.jsonl", "\n{\"start\": 1}\n", 2, "missing required field \"video\"");
    BAD("videonum.jsonl", "{\"video\": 3}\n", 1, "field \"video\" must be a string, got a number");
    BAD("streamneg.jsonl", "{\"video\": \"a\", \"stream\": -1}\n", 1, "field \"stream\" must be a stream index");
    BAD("streamfrac.jsonl", "{\"video\": \"a\", \"stream\": 1.5}\n", 1, "field \"stream\" must be a stream index");
    BAD("streamstr.jsonl", "{\"video\": \"a\", \"stream\": \"1\"}\n", 1, "field \"stream\" must be a stream index (a whole number >= 0), got a string");
    BAD("videoempty.jsonl", "{\"video\": \"\"}\n", 1, "field \"video\" is empty");
    BAD("startstr.jsonl", "{\"video\": \"a\", \"start\": \"1.5\"}\n", 1, "field \"start\" must be a number of seconds, got a string");
    BAD("endbool.jsonl", "{\"video\": \"a\", \"end\": true}\n", 1, "field \"end\" must be a number of seconds, got a boolean");
    BAD("idempty.jsonl", "{\"video\": \"a\", \"id\": \"\"}\n", 1, "field \"id\" is empty");
    BAD("idnum.jsonl", "{\"video\": \"a\", \"id\": 12}\n", 1, "field \"id\" must be a string, got a number");
    BAD("srcarr.jsonl", "{\"video\": \"a\", \"source\": []}\n", 1, "field \"source\" must be a string, got an array");
    BAD("array.jsonl", "[{\"video\": \"a\"}]\n", 1, "not a JSON object (got an array)");
    BAD("string.jsonl", "\"a.mp4\"\n", 1, "not a JSON object (got a string)");
    BAD("order.jsonl", "{\"video\": \"a\", \"start\": 5, \"end\": 2}\n", 1, "start 5 >= end 2");
    BAD("equal.jsonl", "{\"video\": \"a\", \"start\": 3, \"end\": 3}\n", 1, "start 3 >= end 3");
    BAD("endzero.jsonl", "{\"video\": \"a\", \"end\": 0}\n", 1, "start 0 >= end 0");
    BAD("negstart.jsonl", "{\"video\": \"a\", \"start\": -1}\n", 1, "field \"start\" is negative (-1)");
    BAD("negend.jsonl", "{\"video\": \"a\", \"end\": -0.5}\n", 1, "field \"end\" is negative (-0.5)");
    BAD("inf.jsonl", "{\"video\": \"a\", \"end\": 1e999}\n", 1, "field \"end\" is not finite");
    BAD("dupid.jsonl", "{\"video\": \"a\", \"id\": \"x\"}\n# c\n{\"video\": \"b\", \"id\": \"x\"}\n", 3, "duplicate id \"x\" (first on line 1)");
    BAD("dupdefault.jsonl", "{\"video\": \"a\"}\n{\"video\": \"b\", \"id\": \"0\"}\n", 2, "duplicate id \"0\" (first on line 1)");
    BAD("dupdefault2.jsonl", "{\"video\": \"a\", \"id\": \"1\"}\n{\"video\": \"b\"}\n", 2, "this row has no \"id\", so its row number is its id");
    BAD("dupfield.jsonl", "{\"video\": \"a\", \"video\": \"b\"}\n", 1, "field \"video\" appears twice");
    BAD("trailing.jsonl", "{\"video\": \"a\"} {\"video\": \"b\"}\n", 1, "unexpected text after the JSON object (at column 16)");
    BAD("nul.jsonl", "{\"video\": \"a\0b\"}\n", 1, "NUL byte");
    BAD("nulesc.jsonl", "{\"video\": \"v.mp4\"}\n{\"video\": \"a\\u0000b.mp4\"}\n", 2, "a string holds \\u0000 (NUL) at column 13");
    BAD("empty.jsonl", "", 0, "empty manifest: no rows");
    BAD("comments.jsonl", "# only\n\n  \r\n", 0, "empty manifest: no rows");
    BAD("bomonly.jsonl", "\xEF\xBB\xBF", 0, "empty manifest");
    BAD("crlfbad.jsonl", "{\"video\":\"a\"}\r\n{\"video\":1}\r\n", 2, "must be a string");
    iv2_manifest m;
    CHECK(iv2_manifest_load(&m, "/nonexistent/m.jsonl") == -1 && strstr(iv2_errmsg(), "/nonexistent/m.jsonl: cannot open"),
          "missing file: %s", iv2_errmsg());
}

/* check mode reports every bad line, one output line each, and counts them */
static void test_check(void) {
    const char *p = PUT("many.jsonl",
        "{\"video\":\"ok.mp4\",\"id\":\"a\"}\n"   /* 1 ok */
        "nope\n"                                  /* 2 */
        "{\"video\":\"x\",\"start\":4,\"end\":1}\n" /* 3 */
        "# fine\n"                                /* 4 */
        "{\"id\":\"b\"}\n"                        /* 5 */
        "{\"video\":\"y\",\"id\":\"a\"}\n"        /* 6 duplicate */
        "{\"video\":\"z\"}\n");                   /* 7 ok */
    char out[128];
    snprintf(out, sizeof out, "%s/check.txt", dir);
    FILE *o = fopen(out, "w");
    int n = iv2_manifest_check(p, o);
    fclose(o);
    CHECK(n == 4, "check found %d bad lines, want 4", n);
    o = fopen(out, "r");
    char line[512];
    int got = 0, want_lines[4] = {2, 3, 5, 6};
    while (fgets(line, sizeof line, o)) {
        char pre[300];
        snprintf(pre, sizeof pre, "%s:%d: ", p, got < 4 ? want_lines[got] : -1);
        CHECK(!strncmp(line, pre, strlen(pre)), "check line '%s' should start with '%s'", line, pre);
        got++;
    }
    fclose(o);
    CHECK(got == 4, "check printed %d lines", got);
    o = fopen(out, "w");
    CHECK(iv2_manifest_check(PUT("good.jsonl", "{\"video\":\"a\"}\n"), o) == 0, "good file");
    CHECK(iv2_manifest_check(PUT("e.jsonl", ""), o) == 1, "empty file counts as bad");
    /* a bad line still holds its row number: line 2's default id is "1", as load gives once line 1 is fixed */
    CHECK(iv2_manifest_check(PUT("rownum.jsonl", "nope\n{\"video\":\"b\"}\n{\"video\":\"c\",\"id\":\"1\"}\n"), o) == 2,
          "the duplicate of a default id after a bad line");
    CHECK(iv2_manifest_check("/nonexistent/x.jsonl", o) == -1, "missing file");
    fclose(o);
}

/* enough rows to grow the id set several times; a duplicate far from its first use */
static void test_many(void) {
    size_t cap = 5000 * 48, n = 0;
    char *text = malloc(cap);
    for (int i = 0; i < 5000; i++) n += (size_t)snprintf(text + n, cap - n, "{\"video\":\"v%d.mp4\",\"id\":\"r%d\"}\n", i, i);
    const char *p = put("many_rows.jsonl", text, n);
    iv2_manifest m;
    CHECK(iv2_manifest_load(&m, p) == 0, "5000 rows: %s", iv2_errmsg());
    CHECK(m.n_rows == 5000 && !strcmp(m.rows[4999].id, "r4999") && m.rows[4999].index == 4999 && m.rows[4999].line == 5000, "5000 rows");
    iv2_manifest_free(&m);
    n += (size_t)snprintf(text + n, cap - n, "{\"video\":\"again.mp4\",\"id\":\"r7\"}\n");
    expect_bad("many_dup.jsonl", text, n, 5001, "duplicate id \"r7\" (first on line 8)");
    free(text);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/iv2_test_mf_XXXXXX");
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    test_valid();
    test_bad();
    test_check();
    test_many();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return test_done();
}
