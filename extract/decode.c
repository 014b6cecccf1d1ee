/* decode.c: open a video, index its packets, seek and decode exact frames, convert to RGB24.
 * The design (after torchcodec's exact mode, engineering_anchors.md §3) is in docs/decoding.md. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

#include "decode.h"
#include "err.h"
#include "ffcompat.h"
#include "log.h"

#define MAX_INDEX_FRAMES (64 * 1024 * 1024) /* packets per stream; bounds the index memory */
#define RGB_ALIGN 64

struct iv2_video {
    char *path;
    iv2_sample_opts o;
    AVFormatContext *fmt;
    AVCodecContext *dec;
    AVStream *st;
    int stream;
    AVPacket *pkt;
    AVFrame *frame, *prev;  /* newest decoded frame and the one before it */
    int have_frame, have_prev;
    int64_t frame_idx, prev_idx;

    /* index, sorted by pts */
    int64_t n;
    int64_t *pts;           /* stream time base */
    int64_t *dts;           /* per frame: its packet's dts (AV_NOPTS_VALUE when unknown) */
    int64_t *key_of;        /* per frame: index of the keyframe at or before it, -1 = none */
    int64_t n_key;
    int64_t start_ts;       /* smallest dts/pts seen: where "seek to start" goes */
    int count_mode;         /* some packets lack pts: frames are numbered by counting from the seek */
    int64_t next_count;
    double tb;              /* seconds per time-base unit */

    /* decoder position */
    int positioned;         /* 0: the next read needs a seek */
    int64_t reach;          /* frames up to this index need no seek: last output or seek keyframe */
    int demux_eof, dec_eof;
    int pending;            /* v->pkt holds a packet of our stream read after a seek, not yet sent */
    /* frames nobody asked for are not decoded when no other frame refers to them
     * (skip_frame = AVDISCARD_NONREF per packet); want holds the pts asked for */
    int64_t want[IV2_MAX_CLIP_FRAMES];
    int n_want;
    uint8_t *skipped;       /* bitmap over frames: sent while not wanted since the last seek */
    int skipped_dirty;
    int64_t n_seeks, n_decoded, n_errors;

    /* deadline (iv2_now seconds, 0 = none) for the interrupt callback and decode loop */
    double deadline;

    /* RGB conversion */
    struct SwsContext *sws;
    int sws_w, sws_h, sws_fmt, sws_cs, sws_range;
    uint8_t *rgb;           /* native RGB of the last converted frame, stride rgb_stride */
    int rgb_w, rgb_h, rgb_stride;
    size_t rgb_cap;
};

static void ff_log_init(void) {
    const char *l = getenv("IV2_AV_LOG");
    av_log_set_level(l ? atoi(l) : AV_LOG_QUIET); /* decoder chatter off; our errors say what failed */
}

static int interrupt_cb(void *opaque) {
    iv2_video *v = opaque;
    return v->deadline > 0 && iv2_now() > v->deadline;
}

static int timed_out(iv2_video *v) {
    if (v->deadline > 0 && iv2_now() > v->deadline)
        return iv2_err("%s: time limit of %g s exceeded", v->path, v->o.time_limit);
    return 0;
}

static int av_fail(iv2_video *v, const char *what, int ret) {
    if (v->deadline > 0 && iv2_now() > v->deadline)
        return iv2_err("%s: time limit of %g s exceeded (%s)", v->path, v->o.time_limit, what);
    char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
    av_strerror(ret, buf, sizeof buf);
    return iv2_err("%s: %s: %s", v->path, what, buf);
}

int iv2_parse_seed(const char *flag, const char *s, uint64_t *out) {
    const char *d = s;
    while (*d >= '0' && *d <= '9') d++;
    errno = 0;
    unsigned long long v = d > s && !*d ? strtoull(s, NULL, 10) : 0;   /* digits only: no sign, no space */
    if (d == s || *d || errno || v > IV2_SEED_MAX)
        return iv2_err("%s %s: want a whole number from 0 to 2^53 = %llu (the cache's metadata keeps the seed as a "
                       "JSON number)", flag, s, IV2_SEED_MAX);
    *out = v;
    return 0;
}

void iv2_sample_opts_default(iv2_sample_opts *o) {
    memset(o, 0, sizeof *o);
    o->num_frames = 16;
    o->size = 224;
    o->threads = 1;
    o->time_limit = 60;
    o->deterministic = 0;
    o->flip = 1;
    o->stream = -1;
}

static int check_opts(const iv2_sample_opts *o) {
    if (o->num_frames < 1 || o->num_frames > IV2_MAX_CLIP_FRAMES)
        return iv2_err("num_frames %d outside [1, %d]", o->num_frames, IV2_MAX_CLIP_FRAMES);
    if (o->size < 1 || o->size > 8192) return iv2_err("size %d outside [1, 8192]", o->size);
    if (o->threads < 0 || o->threads > 64) return iv2_err("threads %d outside [0, 64]", o->threads);
    if (!(o->time_limit >= 0)) return iv2_err("time limit %g s is negative", o->time_limit);
    return 0;
}

/* ---- the packet-scan index ---- */

typedef struct pkt_entry { int64_t pts, dts; int key; } pkt_entry;

static int cmp_entry(const void *a, const void *b) {
    const pkt_entry *x = a, *y = b;
    if (x->pts != y->pts) return x->pts < y->pts ? -1 : 1;
    return x->dts < y->dts ? -1 : x->dts > y->dts;
}

static int build_index(iv2_video *v) {
    size_t cap = 1024, n = 0;
    pkt_entry *e = iv2_malloc(cap * sizeof *e);
    int ret, no_pts = 0;
    while ((ret = av_read_frame(v->fmt, v->pkt)) >= 0) {
        if (v->pkt->stream_index == v->stream && !(v->pkt->flags & AV_PKT_FLAG_DISCARD)) {
            if (n == cap) {
                if (cap >= MAX_INDEX_FRAMES) {
                    av_packet_unref(v->pkt);
                    free(e);
                    return iv2_err("%s: more than %d frames in stream %d", v->path, MAX_INDEX_FRAMES, v->stream);
                }
                cap *= 2;
                e = iv2_realloc(e, cap * sizeof *e);
            }
            e[n].pts = v->pkt->pts;
            e[n].dts = v->pkt->dts;
            e[n].key = (v->pkt->flags & AV_PKT_FLAG_KEY) != 0;
            if (e[n].pts == AV_NOPTS_VALUE) no_pts++;
            n++;
        }
        av_packet_unref(v->pkt);
        if (timed_out(v)) { free(e); return -1; }
    }
    /* a read error before EOF is a truncated or damaged file: the index ends there */
    if (ret != AVERROR_EOF && timed_out(v)) { free(e); return -1; }
    if (n == 0) { free(e); return iv2_err("%s: stream %d has no frames (no packets)", v->path, v->stream); }
    if (no_pts) {
        /* containers without pts on every packet (raw streams, AVI): decode order stands for
         * presentation order (true for closed GOPs), and decoded frames are numbered by counting
         * from the keyframe sought, because their timestamps are guesses */
        v->count_mode = 1;
        for (size_t i = 0; i < n; i++)
            if (e[i].pts == AV_NOPTS_VALUE) e[i].pts = e[i].dts != AV_NOPTS_VALUE ? e[i].dts : (int64_t)i;
    }
    qsort(e, n, sizeof *e, cmp_entry);
    v->n = (int64_t)n;
    v->pts = iv2_malloc(n * sizeof(int64_t));
    v->dts = iv2_malloc(n * sizeof(int64_t));
    v->skipped = iv2_calloc((n + 7) / 8, 1);
    v->key_of = iv2_malloc(n * sizeof(int64_t));
    v->start_ts = INT64_MAX;
    int64_t last_key = -1;
    for (size_t i = 0; i < n; i++) {
        v->pts[i] = e[i].pts;
        v->dts[i] = e[i].dts;
        int64_t first = e[i].dts != AV_NOPTS_VALUE && e[i].dts < e[i].pts ? e[i].dts : e[i].pts;
        if (first < v->start_ts) v->start_ts = first;
        if (e[i].key) last_key = (int64_t)i, v->n_key++;
        /* in count mode a keyframe's place in decode order need not be its place in presentation
         * order (B-frames in AVI), so such files are only ever sought to their start */
        v->key_of[i] = v->count_mode ? -1 : last_key;
    }
    free(e);
    return 0;
}

/* ---- open / close ---- */

static int open_decoder(iv2_video *v) {
    const AVCodec *codec = avcodec_find_decoder(v->st->codecpar->codec_id);
    if (!codec)
        return iv2_err("%s: no decoder for codec '%s' in stream %d", v->path, avcodec_get_name(v->st->codecpar->codec_id),
                       v->stream);
    v->dec = avcodec_alloc_context3(codec);
    if (!v->dec) iv2_panic("avcodec_alloc_context3 failed");
    int ret = avcodec_parameters_to_context(v->dec, v->st->codecpar);
    if (ret < 0) return av_fail(v, "codec parameters", ret);
    v->dec->thread_count = v->o.threads;
    v->dec->thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE;
    v->dec->pkt_timebase = v->st->time_base;
    if ((ret = avcodec_open2(v->dec, codec, NULL)) < 0) return av_fail(v, "cannot open decoder", ret);
    return 0;
}

/* the container format the first bytes suggest, NULL when none (tells "truncated" from "not a video") */
static const char *probe_format(const char *path) {
    uint8_t buf[4096 + AVPROBE_PADDING_SIZE] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t n = fread(buf, 1, 4096, f);
    fclose(f);
    AVProbeData pd = {.filename = path, .buf = buf, .buf_size = (int)n};
    int score = 0;
    const AVInputFormat *fmt = av_probe_input_format2(&pd, 1, &score);
    return fmt && score > AVPROBE_SCORE_EXTENSION ? fmt->name : NULL;
}

iv2_video *iv2_video_open(const char *path, const iv2_sample_opts *o) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, ff_log_init);
    iv2_sample_opts def;
    if (!o) iv2_sample_opts_default(&def), o = &def;
    if (check_opts(o) < 0) { iv2_err_ctx("%s", path); return NULL; }
    struct stat st;   /* a local path that is not a regular file: a pipe's open or read would block
                       * where the time limit cannot reach it (URLs do not stat, and go on) */
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        iv2_err("%s: not a regular file (%s)", path, S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a pipe" :
                S_ISSOCK(st.st_mode) ? "a socket" : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : "not a file");
        return NULL;
    }
    iv2_video *v = iv2_calloc(1, sizeof *v);
    v->path = iv2_strdup(path);
    v->o = *o;
    v->deadline = o->time_limit > 0 ? iv2_now() + o->time_limit : 0;
    v->pkt = av_packet_alloc();
    v->frame = av_frame_alloc();
    v->prev = av_frame_alloc();
    v->fmt = avformat_alloc_context();
    if (!v->pkt || !v->frame || !v->prev || !v->fmt) iv2_panic("FFmpeg allocation failed");
    v->fmt->interrupt_callback.callback = interrupt_cb;
    v->fmt->interrupt_callback.opaque = v;
    int ret = avformat_open_input(&v->fmt, path, NULL, NULL);
    if (ret < 0) {
        v->fmt = NULL; /* freed by avformat_open_input on failure */
        if (ret == AVERROR(ENOENT)) iv2_err("%s: no such file", path);
        else if (ret == AVERROR_INVALIDDATA) {
            const char *fmt = probe_format(path);
            struct stat st;
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0) iv2_err("%s: empty file (0 bytes)", path);
            else if (fmt) iv2_err("%s: damaged or truncated file (%s container unreadable)", path, fmt);
            else iv2_err("%s: not a video (no known container format)", path);
        }
        else av_fail(v, "cannot open", ret);
        goto fail;
    }
    if ((ret = avformat_find_stream_info(v->fmt, NULL)) < 0) { av_fail(v, "cannot read stream info", ret); goto fail; }
    if (o->stream >= 0) {
        if (o->stream >= (int)v->fmt->nb_streams) {
            iv2_err("%s: no stream %d (the file has %u)", path, o->stream, v->fmt->nb_streams);
            goto fail;
        }
        if (v->fmt->streams[o->stream]->codecpar->codec_type != AVMEDIA_TYPE_VIDEO) {
            const char *type = av_get_media_type_string(v->fmt->streams[o->stream]->codecpar->codec_type);
            iv2_err("%s: stream %d is not a video stream (%s)", path, o->stream, type ? type : "unknown type");
            goto fail;
        }
        v->stream = o->stream;
    } else {
        v->stream = av_find_best_stream(v->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
        if (v->stream < 0) { iv2_err("%s: no video stream", path); goto fail; }
    }
    v->st = v->fmt->streams[v->stream];
    if (v->st->disposition & AV_DISPOSITION_ATTACHED_PIC) {
        iv2_err("%s: stream %d is a cover picture, not a video", path, v->stream);
        goto fail;
    }
    for (unsigned i = 0; i < v->fmt->nb_streams; i++)
        if ((int)i != v->stream) v->fmt->streams[i]->discard = AVDISCARD_ALL;
    v->tb = av_q2d(v->st->time_base);
    if (open_decoder(v) < 0) goto fail;
    if (build_index(v) < 0) goto fail;
    v->positioned = 0; /* the scan left the demuxer at the end */
    return v;
fail:
    iv2_video_close(v);
    return NULL;
}

void iv2_video_close(iv2_video *v) {
    if (!v) return;
    avcodec_free_context(&v->dec);
    avformat_close_input(&v->fmt);
    av_packet_free(&v->pkt);
    av_frame_free(&v->frame);
    av_frame_free(&v->prev);
    sws_freeContext(v->sws);
    free(v->rgb);
    free(v->pts);
    free(v->dts);
    free(v->skipped);
    free(v->key_of);
    free(v->path);
    free(v);
}

void iv2_video_get_info(const iv2_video *v, iv2_video_info *info) {
    memset(info, 0, sizeof *info);
    info->stream = v->stream;
    info->width = v->st->codecpar->width;
    info->height = v->st->codecpar->height;
    info->n_frames = v->n;
    info->n_keyframes = v->n_key;
    info->first_pts = v->pts[0] * v->tb;
    /* end of the last frame: its pts plus the typical frame step */
    double step = v->n > 1 ? (v->pts[v->n - 1] - v->pts[0]) * v->tb / (double)(v->n - 1) : 0;
    info->duration = (v->pts[v->n - 1] - v->pts[0]) * v->tb + step;
    info->codec = v->dec->codec->name;
    info->n_seeks = v->n_seeks;
    info->n_decoded = v->n_decoded;
}

double iv2_video_frame_pts(const iv2_video *v, int64_t i) {
    if (i < 0 || i >= v->n) return NAN;
    return v->pts[i] * v->tb;
}

/* ---- seeking and decoding ---- */

/* index of a decoded frame from its timestamp (the first index with pts >= ts) */
static int64_t frame_index_of(iv2_video *v, const AVFrame *f, int64_t after) {
    int64_t ts = f->best_effort_timestamp;
    if (ts == AV_NOPTS_VALUE) ts = f->pts;
    if (ts == AV_NOPTS_VALUE) return after + 1 < v->n ? after + 1 : v->n - 1;
    if (ts < v->pts[0]) return -1; /* pre-roll the container asked to discard */
    int64_t lo = 0, hi = v->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (v->pts[mid] < ts) lo = mid + 1;
        else hi = mid;
    }
    if (lo >= v->n) lo = v->n - 1;
    /* equal timestamps (damaged files): step past the ones already output */
    if (lo <= after && after + 1 < v->n && v->pts[after + 1] == ts) lo = after + 1;
    return lo;
}

static int try_seek(iv2_video *v, int64_t ts) {
    int ret = avformat_seek_file(v->fmt, v->stream, INT64_MIN, ts, ts, 0);
    if (ret < 0) ret = av_seek_frame(v->fmt, v->stream, ts, AVSEEK_FLAG_BACKWARD);
    return ret;
}

/* read up to the first packet of our stream into v->pkt: 0 got one, 1 end of file, -1 time out.
 * Packets flagged AV_PKT_FLAG_DISCARD count: before an MP4 edit list's start (a clip cut with
 * `ffmpeg -ss T -c copy`) they hold the keyframe the first shown frames are predicted from; the
 * decoder needs them and drops their pictures (so does frame_index_of). */
static int peek_packet(iv2_video *v) {
    for (;;) {
        if (av_read_frame(v->fmt, v->pkt) < 0) return timed_out(v) < 0 ? -1 : 1;
        if (v->pkt->stream_index == v->stream) return 0;
        av_packet_unref(v->pkt);
    }
}

/* Seek so that decoding restarts at keyframe k (k = -1: the start of the stream).
 * Demuxers disagree on what a seek timestamp means (MP4 and Matroska resolve it against
 * presentation times, MPEG-TS against decode times), so the first packet after the seek is
 * checked: it must be a keyframe at or before frame k. Candidates: k's pts, k's dts, then the
 * keyframes before it, then the start. The packet read stays pending for the decoder. */
static int seek_to_key(iv2_video *v, int64_t k) {
    if (v->pending) av_packet_unref(v->pkt), v->pending = 0;
    avcodec_flush_buffers(v->dec);
    v->n_seeks++;
    v->positioned = 1;
    v->demux_eof = v->dec_eof = 0;
    v->have_frame = v->have_prev = 0;
    v->next_count = 0;
    v->reach = -1;
    if (v->skipped_dirty) memset(v->skipped, 0, (size_t)(v->n + 7) / 8), v->skipped_dirty = 0;
    int64_t key = k;
    for (int tries = 0; key >= 0 && tries < 4; tries++, key = key > 0 ? v->key_of[key - 1] : -1) {
        int64_t ts[2] = {v->pts[key], v->dts[key]};
        for (int c = 0; c < 2; c++) {
            if (c == 1 && (ts[1] == AV_NOPTS_VALUE || ts[1] == ts[0])) break;
            if (try_seek(v, ts[c]) < 0) continue;
            int r = peek_packet(v);
            if (r < 0) return -1;
            if (r == 0 && (v->pkt->flags & AV_PKT_FLAG_KEY) && v->pkt->pts != AV_NOPTS_VALUE &&
                v->pkt->pts <= v->pts[key]) {
                v->pending = 1;
                /* frames from the keyframe landed on are reachable without another seek */
                int64_t lo = 0, hi = key;
                while (lo < hi) {
                    int64_t mid = lo + (hi - lo) / 2;
                    if (v->pts[mid] < v->pkt->pts) lo = mid + 1;
                    else hi = mid;
                }
                v->reach = v->key_of[lo];
                return 0;
            }
            if (r == 0) av_packet_unref(v->pkt);
        }
    }
    int ret = try_seek(v, v->start_ts);
    if (ret < 0) return av_fail(v, "seek to the start failed", ret);
    int r = peek_packet(v);
    if (r < 0) return -1;
    v->pending = r == 0;
    return 0;
}

static int64_t index_of_pts(const iv2_video *v, int64_t ts) {
    int64_t lo = 0, hi = v->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (v->pts[mid] < ts) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* decode the packet fully when its frame is wanted, else only if other frames refer to it */
static void set_skip(iv2_video *v, const AVPacket *pkt) {
    int want = 1;
    if (!v->count_mode && v->n_want > 0 && pkt->pts != AV_NOPTS_VALUE) {
        want = 0;
        for (int i = 0; i < v->n_want && !want; i++) want = v->want[i] == pkt->pts;
    }
    v->dec->skip_frame = want ? AVDISCARD_DEFAULT : AVDISCARD_NONREF;
    if (!want) {
        int64_t i = index_of_pts(v, pkt->pts);
        if (i < v->n && v->pts[i] == pkt->pts) v->skipped[i >> 3] |= (uint8_t)(1 << (i & 7)), v->skipped_dirty = 1;
    }
}

static int was_skipped(const iv2_video *v, int64_t i) { return (v->skipped[i >> 3] >> (i & 7)) & 1; }

/* the next decoded frame into v->frame (the previous one kept in v->prev): 0 ok, 1 end of stream */
static int decode_next(iv2_video *v) {
    if (v->have_frame) {
        AVFrame *t = v->prev;
        v->prev = v->frame, v->frame = t;
        v->prev_idx = v->frame_idx;
        v->have_prev = 1, v->have_frame = 0;
    }
    av_frame_unref(v->frame);
    for (;;) {
        if (timed_out(v)) return -1;
        int ret = avcodec_receive_frame(v->dec, v->frame);
        if (ret >= 0) {
            v->n_decoded++;
            if (v->count_mode) v->frame_idx = v->next_count < v->n ? v->next_count++ : v->n - 1;
            else v->frame_idx = frame_index_of(v, v->frame, v->have_prev ? v->prev_idx : -1);
            if (v->frame_idx < 0) { av_frame_unref(v->frame); continue; }
            v->have_frame = 1;
            if (v->frame_idx > v->reach) v->reach = v->frame_idx;
            return 0;
        }
        if (ret == AVERROR_EOF) { v->dec_eof = 1; return 1; }
        if (ret != AVERROR(EAGAIN)) {
            /* a damaged frame (frame threads report it here) is skipped like a damaged packet */
            if (ret == AVERROR(ENOMEM) || ++v->n_errors > 100000) return av_fail(v, "decode failed", ret);
            continue;
        }
        if (v->demux_eof) return 1; /* drained */
        for (;;) { /* one packet of our stream */
            if (v->pending) ret = 0, v->pending = 0;
            else ret = av_read_frame(v->fmt, v->pkt);
            if (ret < 0) {
                if (timed_out(v)) return -1;
                v->demux_eof = 1;
                avcodec_send_packet(v->dec, NULL); /* flush: the decoder returns what it holds */
                break;
            }
            if (v->pkt->stream_index == v->stream) {
                set_skip(v, v->pkt);
                ret = avcodec_send_packet(v->dec, v->pkt);
                av_packet_unref(v->pkt);
                /* a damaged packet is skipped, as the ffmpeg CLI does; EAGAIN cannot happen after an
                 * EAGAIN from receive */
                (void)ret;
                break;
            }
            av_packet_unref(v->pkt);
        }
    }
}

/* decode frame t (sorted index) into v->frame or v->prev; returns the AVFrame, NULL on error */
static const AVFrame *get_frame(iv2_video *v, int64_t t) {
    if (v->have_frame && v->frame_idx == t) return v->frame;
    for (int attempt = 0; attempt < 2; attempt++) {
        int64_t k = attempt == 0 ? v->key_of[t] : -1;
        /* no new seek while the target's keyframe is already behind us (same group of pictures) */
        int need_seek = !v->positioned || (v->have_frame && v->frame_idx > t) || k > v->reach ||
                        (v->dec_eof && !(v->have_frame && v->frame_idx >= t)) || was_skipped(v, t);
        if (attempt > 0) need_seek = 1;
        if (need_seek && seek_to_key(v, k) < 0) return NULL;
        int first = 1, r;
        while ((r = decode_next(v)) == 0) {
            if (v->frame_idx >= t) {
                if (first && v->frame_idx > t && need_seek && k >= 0) break; /* the seek overshot: retry from the start */
                return v->frame;
            }
            first = 0;
        }
        if (r < 0) return NULL;
        if (r == 0) continue; /* overshoot */
        /* end of stream before frame t: the last decodable frame stands in for frames lost at the tail */
        if (v->have_prev) {
            AVFrame *tmp = v->frame;
            v->frame = v->prev, v->prev = tmp;
            v->frame_idx = v->prev_idx;
            v->have_frame = 1, v->have_prev = 0;
            return v->frame;
        }
        if (attempt == 0 && k >= 0) continue;
        iv2_err("%s: no decodable frames (stream %d, wanted frame %lld of %lld)", v->path, v->stream, (long long)t,
                (long long)v->n);
        return NULL;
    }
    iv2_err("%s: cannot reach frame %lld of stream %d by seeking", v->path, (long long)t, v->stream);
    return NULL;
}

/* convert a decoded frame to packed RGB24 in v->rgb, with the frame's own colour space and range */
static int frame_to_rgb(iv2_video *v, const AVFrame *f) {
    int w = f->width, h = f->height, fmt = f->format;
    if (w <= 0 || h <= 0 || fmt < 0) return iv2_err("%s: decoded frame has no picture", v->path);
    int cs = f->colorspace, range = f->color_range == AVCOL_RANGE_JPEG;
    if (!v->sws || w != v->sws_w || h != v->sws_h || fmt != v->sws_fmt || cs != v->sws_cs || range != v->sws_range) {
        /* bicubic, as the ffmpeg CLI's automatic conversion: it only affects chroma upsampling */
        v->sws = sws_getCachedContext(v->sws, w, h, fmt, w, h, AV_PIX_FMT_RGB24, SWS_BICUBIC, NULL, NULL, NULL);
        if (!v->sws)
            return iv2_err("%s: cannot convert pixel format %s to RGB", v->path, av_get_pix_fmt_name(fmt));
        /* the YUV matrix and range only for YUV sources: on high-bit-depth planar RGB (gbrp10,
         * gbrp16) they moved values by up to 9 from the ffmpeg CLI's */
        if (!(av_pix_fmt_desc_get(fmt)->flags & AV_PIX_FMT_FLAG_RGB)) {
            const int *coef = sws_getCoefficients(cs);
            sws_setColorspaceDetails(v->sws, coef, range, sws_getCoefficients(SWS_CS_DEFAULT), 1, 0, 1 << 16, 1 << 16);
        }
        v->sws_w = w, v->sws_h = h, v->sws_fmt = fmt, v->sws_cs = cs, v->sws_range = range;
    }
    int stride = (w * 3 + RGB_ALIGN - 1) / RGB_ALIGN * RGB_ALIGN;
    size_t need = (size_t)stride * h + RGB_ALIGN;
    if (need > v->rgb_cap) {
        free(v->rgb);
        if (posix_memalign((void **)&v->rgb, RGB_ALIGN, need)) iv2_panic("out of memory (%zu bytes)", need);
        v->rgb_cap = need;
    }
    uint8_t *dst[4] = {v->rgb, NULL, NULL, NULL};
    int dst_stride[4] = {stride, 0, 0, 0};
    if (sws_scale(v->sws, (const uint8_t *const *)f->data, f->linesize, 0, h, dst, dst_stride) != h)
        return iv2_err("%s: colour conversion failed", v->path);
    v->rgb_w = w, v->rgb_h = h, v->rgb_stride = stride;
    return 0;
}

int iv2_video_decode_frame(iv2_video *v, int64_t index, uint8_t **rgb, int *w, int *h, double *pts) {
    *rgb = NULL;
    if (index < 0 || index >= v->n)
        return iv2_err("%s: frame %lld outside the video (stream %d has %lld frames)", v->path, (long long)index,
                       v->stream, (long long)v->n);
    if (v->o.time_limit > 0) v->deadline = iv2_now() + v->o.time_limit;
    v->want[0] = v->pts[index], v->n_want = 1;
    const AVFrame *f = get_frame(v, index);
    v->n_want = 0;
    if (!f || frame_to_rgb(v, f) < 0) return -1;
    *w = v->rgb_w, *h = v->rgb_h;
    *rgb = iv2_malloc((size_t)v->rgb_w * v->rgb_h * 3);
    for (int y = 0; y < v->rgb_h; y++)
        memcpy(*rgb + (size_t)y * v->rgb_w * 3, v->rgb + (size_t)y * v->rgb_stride, (size_t)v->rgb_w * 3);
    if (pts) *pts = v->pts[index] * v->tb;
    return 0;
}

int iv2_decode_frame(const char *path, int stream, int64_t index, const iv2_sample_opts *o, uint8_t **rgb, int *w,
                     int *h, double *pts) {
    iv2_sample_opts oo;
    if (o) oo = *o;
    else iv2_sample_opts_default(&oo);
    oo.stream = stream;
    *rgb = NULL;
    iv2_video *v = iv2_video_open(path, &oo);
    if (!v) return -1;
    int ret = iv2_video_decode_frame(v, index, rgb, w, h, pts);
    iv2_video_close(v);
    return ret;
}

/* ---- clip sampling ---- */

/* frames whose time (from frame 0) lies in [start, end): first index and count */
static int span_frames(iv2_video *v, double start, double end, int64_t *first, int64_t *count) {
    iv2_video_info info;
    iv2_video_get_info(v, &info);
    if (!(start >= 0)) return iv2_err("%s: span start %g is negative", v->path, start);
    if (end >= 0 && !(end > start)) return iv2_err("%s: empty span [%g, %g)", v->path, start, end);
    double last = (v->pts[v->n - 1] - v->pts[0]) * v->tb;
    if (start >= info.duration && start > last) { /* (a one-frame video has duration 0) */
        char e[32] = "end";   /* an open end (-1) reads as such */
        if (end >= 0) snprintf(e, sizeof e, "%g", end);
        return iv2_err("%s: span [%g, %s) starts after the end of the video (%.3f s, %lld frames)", v->path, start, e,
                       info.duration, (long long)v->n);
    }
    int64_t a = 0, b = v->n;
    /* with a small tolerance so that a span given in rounded seconds keeps its boundary frame */
    const double eps = 1e-6;
    while (a < v->n && (v->pts[a] - v->pts[0]) * v->tb < start - eps) a++;
    if (end >= 0) {
        b = a;
        while (b < v->n && (v->pts[b] - v->pts[0]) * v->tb < end - eps) b++;
    }
    if (b == a) { /* a span shorter than a frame: the frame showing at start */
        a = a > 0 && (a == v->n || (v->pts[a] - v->pts[0]) * v->tb > start + eps) ? a - 1 : a;
        b = a + 1;
    }
    *first = a, *count = b - a;
    return 0;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int iv2_video_sample(iv2_video *v, double start, double end, const char *source, uint64_t seed, int64_t row,
                     int view, const iv2_sample_opts *o, uint8_t *rgb, iv2_clip_record *rec) {
    if (!o) o = &v->o;
    if (check_opts(o) < 0) return iv2_err_ctx("%s", v->path);
    if (o->time_limit > 0) v->deadline = iv2_now() + o->time_limit;
    int nf = o->num_frames, size = o->size;
    iv2_clip_record r;
    memset(&r, 0, sizeof r);
    if (span_frames(v, start, end, &r.span_first, &r.span_frames) < 0) return -1;
    r.num_frames = nf, r.size = size, r.stream = v->stream, r.deterministic = o->deterministic;
    iv2_sample_indices(r.span_frames, nf, o->deterministic, seed, row, view, r.frame);
    for (int i = 0; i < nf; i++) {
        r.frame[i] += r.span_first;
        r.pts[i] = v->pts[r.frame[i]] * v->tb;
    }
    /* decode in ascending order (the segments already are; sort anyway) */
    int64_t order[IV2_MAX_CLIP_FRAMES][2];
    for (int i = 0; i < nf; i++) order[i][0] = r.frame[i], order[i][1] = i;
    qsort(order, nf, sizeof order[0], cmp_i64);
    int flip_ok = o->flip && !(source && strcmp(source, "ssv2") == 0);
    v->n_want = nf;
    for (int i = 0; i < nf; i++) v->want[i] = v->pts[r.frame[i]];
    int have_crop = 0;
    size_t plane = (size_t)size * size * 3;
    for (int j = 0; j < nf; j++) {
        int slot = (int)order[j][1];
        if (j > 0 && order[j][0] == order[j - 1][0]) { /* repeated frame: copy */
            memcpy(rgb + slot * plane, rgb + order[j - 1][1] * plane, plane);
            if (v->frame_idx != order[j][0]) r.stand_ins++;
            continue;
        }
        const AVFrame *f = get_frame(v, order[j][0]);
        if (!f || frame_to_rgb(v, f) < 0) { v->n_want = 0; return -1; }
        if (v->frame_idx != order[j][0]) r.stand_ins++;   /* repeats of it count too, below */
        if (!have_crop) { /* the crop is drawn from the first frame's size, then fixed for the clip */
            r.src_w = v->rgb_w, r.src_h = v->rgb_h;
            iv2_sample_crop(r.src_w, r.src_h, size, o->deterministic, flip_ok, seed, row, view, &r.crop_x, &r.crop_y,
                            &r.crop_w, &r.crop_h, &r.flip);
            have_crop = 1;
        }
        /* a frame of another size (resolution change mid-stream) keeps the box; parts outside it are black */
        iv2_resize_bilinear_stride(v->rgb, v->rgb_stride, v->rgb_w, v->rgb_h, r.crop_x, r.crop_y, r.crop_w,
                                   r.crop_h, rgb + slot * plane, size, size, r.flip);
    }
    v->n_want = 0;
    if (rec) *rec = r;
    return 0;
}

int iv2_sample_clip(const char *path, double start, double end, const char *source, uint64_t seed, int64_t row,
                    int view, const iv2_sample_opts *o, uint8_t *rgb, iv2_clip_record *rec) {
    iv2_video *v = iv2_video_open(path, o);
    if (!v) return -1;
    int ret = iv2_video_sample(v, start, end, source, seed, row, view, o, rgb, rec);
    iv2_video_close(v);
    return ret;
}
