/* decode.h: video clip sampling with FFmpeg, the exact pixels the teachers and the student see.
 *
 * One manifest row in, num_frames (16) frames of size x size (224) RGB24 out, sampled and
 * augmented as the InternVideo2 stage-1 recipe does (docs/decoding.md):
 *   - frames: the [start, end) span is cut into num_frames equal segments, one frame each;
 *     a random frame inside the segment for training views, the segment middle for
 *     deterministic views. A span shorter than num_frames repeats frames.
 *   - frame indices count decoded pictures in presentation order in the chosen stream, taken
 *     from a packet-scan index built at open (never the container's frame count), so variable
 *     frame rate is exact.
 *   - crop: GroupMultiScaleCrop (scales 1, .875, .75, .66 of the short side, max distortion 1,
 *     13 fixed offsets), the same for all frames; optional horizontal flip (never for rows whose
 *     source is "ssv2"); bilinear resize to size x size.
 * Everything random is drawn from (seed, row, view) alone, so a view is reproducible.
 *
 * Thread safety: every call works on its own FFmpeg contexts; many decodes may run at once on
 * worker threads. An iv2_video handle is used by one thread at a time.
 * Errors follow common/err.h: -1 (or NULL) with a message naming the file and the reason. */
#ifndef IV2_DECODE_H
#define IV2_DECODE_H
#include <stdint.h>

#define IV2_MAX_CLIP_FRAMES 64

typedef struct iv2_sample_opts {
    int num_frames;        /* frames per clip (16), at most IV2_MAX_CLIP_FRAMES */
    int size;              /* output side (224) */
    int threads;           /* libavcodec decoder threads per file (1; 0 = FFmpeg's auto) */
    double time_limit;     /* seconds for open + index, and again for each sample/frame call; 0 = none (60) */
    int deterministic;     /* 1: segment-middle frames, centre crop of the short side, no flip (0) */
    int flip;              /* 1: random horizontal flip p=0.5 in training views (1); ssv2 rows never */
    int stream;            /* video stream index, -1 = FFmpeg's best video stream (-1) */
} iv2_sample_opts;

/* What a sampled view is, for the cache to record. */
typedef struct iv2_clip_record {
    int num_frames;
    int64_t frame[IV2_MAX_CLIP_FRAMES]; /* frame index in the stream, presentation order, 0-based */
    double pts[IV2_MAX_CLIP_FRAMES];    /* presentation time of that frame, seconds (stream time) */
    int64_t span_first, span_frames;    /* frames of the [start, end) span: first index and count */
    int stream;                         /* stream index in the container */
    int src_w, src_h;                   /* decoded frame size */
    int crop_x, crop_y, crop_w, crop_h; /* crop box in source pixels (before the flip) */
    int flip;                           /* 1 = flipped horizontally (after the resize) */
    int size;                           /* output side */
    int deterministic;                  /* 1 = deterministic view */
    int stand_ins;                      /* frames that could not be decoded (a damaged file), whose slot
                                           holds the next decodable frame (the last one at the tail);
                                           not stored in the cache, reported by iv2-extract */
} iv2_clip_record;

/* Seeds are whole numbers in [0, IV2_SEED_MAX]: the cache's JSON metadata records the seed as a
 * number, exact in JSON's doubles only up to 2^53 (a larger seed could resume a cache sampled
 * with another). iv2_parse_seed: the decimal text s of option `flag` into *out, or -1 with a
 * message naming both. */
#define IV2_SEED_MAX 9007199254740992ULL   /* 2^53 */
int iv2_parse_seed(const char *flag, const char *s, uint64_t *out);

/* Defaults: 16 frames, 224, 1 thread, 60 s, training view, flip allowed, best stream. */
void iv2_sample_opts_default(iv2_sample_opts *o);

/* Sample one view of one row: rgb receives [num_frames][size][size][3] uint8; rec (may be NULL)
 * the record. start/end in seconds of stream time measured from the stream's first frame;
 * end < 0 = to the end. source "ssv2" disables flips. view numbers the views of one row.
 * Opens, indexes and closes the file; use iv2_video_* below to draw several views per open. */
int iv2_sample_clip(const char *path, double start, double end, const char *source, uint64_t seed, int64_t row,
                    int view, const iv2_sample_opts *o, uint8_t *rgb, iv2_clip_record *rec);

/* ---- an opened, indexed video (one stream) ---- */
typedef struct iv2_video iv2_video;

typedef struct iv2_video_info {
    int stream;            /* chosen stream index */
    int width, height;     /* coded picture size (frames may differ; each is converted as decoded) */
    int64_t n_frames;      /* frames in the packet-scan index */
    int64_t n_keyframes;
    double duration;       /* seconds from the first frame's pts to the last frame's end */
    double first_pts;      /* seconds, stream time of frame 0 */
    const char *codec;     /* decoder name, e.g. "h264" */
    int64_t n_seeks;       /* seeks so far on this handle (statistics, for tests and benchmarks) */
    int64_t n_decoded;     /* frames decoded so far on this handle */
} iv2_video_info;

/* Open path, choose the stream (o->stream or best), scan all packets into the index.
 * o may be NULL (defaults). NULL on error. */
iv2_video *iv2_video_open(const char *path, const iv2_sample_opts *o);
void iv2_video_close(iv2_video *v);
void iv2_video_get_info(const iv2_video *v, iv2_video_info *info);
/* pts (seconds, stream time) of frame i of the index, i in [0, n_frames); NAN when out of range. */
double iv2_video_frame_pts(const iv2_video *v, int64_t i);

/* Like iv2_sample_clip on an opened video. o may be NULL (the options given to iv2_video_open);
 * its stream and threads are fixed at open, the rest applies per call. */
int iv2_video_sample(iv2_video *v, double start, double end, const char *source, uint64_t seed, int64_t row,
                     int view, const iv2_sample_opts *o, uint8_t *rgb, iv2_clip_record *rec);

/* Frame `index` (presentation order, 0-based) at native resolution, no crop: *rgb receives a
 * malloc'd [h][w][3] buffer the caller frees. pts (seconds) may be NULL. */
int iv2_video_decode_frame(iv2_video *v, int64_t index, uint8_t **rgb, int *w, int *h, double *pts);
/* The same on a path: stream -1 = best video stream. o may be NULL. */
int iv2_decode_frame(const char *path, int stream, int64_t index, const iv2_sample_opts *o, uint8_t **rgb, int *w,
                     int *h, double *pts);

/* ---- the pure parts, exposed for tests and for recomputing a record ---- */

/* Frame indices (relative to the span, in [0, n)) of num_frames TSN segments over n frames. */
void iv2_sample_indices(int64_t n, int num_frames, int deterministic, uint64_t seed, int64_t row, int view,
                        int64_t *out);
/* Crop box and flip for a src_w x src_h frame (GroupMultiScaleCrop, or centre square when
 * deterministic). flip_allowed = o->flip and source not "ssv2". */
void iv2_sample_crop(int src_w, int src_h, int size, int deterministic, int flip_allowed, uint64_t seed, int64_t row,
                     int view, int *x, int *y, int *w, int *h, int *flip);
/* Bilinear resize of an RGB24 box (x, y, w, h inside an sw-wide image) to dw x dh, flipping when
 * asked: PIL's BILINEAR (half-pixel centres; the filter widens with the downscale factor, so it
 * antialiases), checked against PIL's output (docs/decoding.md). */
void iv2_resize_bilinear(const uint8_t *src, int sw, int sh, int x, int y, int w, int h, uint8_t *dst, int dw, int dh,
                         int flip);
/* The same with a source row stride in bytes. */
void iv2_resize_bilinear_stride(const uint8_t *src, int sstride, int sw, int sh, int x, int y, int w, int h,
                                uint8_t *dst, int dw, int dh, int flip);

/* `iv2-extract decode ...`: write one row's sampled frames or one native frame (see --help).
 * argv[0] is "decode". Returns the process exit status: 0, or 1 after printing the error. */
int iv2_decode_cli(int argc, char **argv);

#endif
