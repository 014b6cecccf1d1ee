/* ffcompat.h: the few FFmpeg API differences between Debian's 5.1 and newer releases.
 * Everything version-dependent in extract/ goes through these macros. */
#ifndef IV2_FFCOMPAT_H
#define IV2_FFCOMPAT_H
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/frame.h>
#include <libavutil/version.h>

/* key-frame flag: AVFrame.key_frame until lavu 58.29.100, then AV_FRAME_FLAG_KEY. */
#if LIBAVUTIL_VERSION_INT >= AV_VERSION_INT(58, 29, 100)
#define IV2_FRAME_IS_KEY(f) (((f)->flags & AV_FRAME_FLAG_KEY) != 0)
#else
#define IV2_FRAME_IS_KEY(f) ((f)->key_frame != 0)
#endif

/* frame duration: AVFrame.duration from lavu 57.30.100, pkt_duration before. */
#if LIBAVUTIL_VERSION_INT >= AV_VERSION_INT(57, 30, 100)
#define IV2_FRAME_DURATION(f) ((f)->duration)
#else
#define IV2_FRAME_DURATION(f) ((f)->pkt_duration)
#endif

/* avcodec_find_decoder returns const AVCodec * from lavc 59 on; 5.1 is 59, older is not supported. */
#if LIBAVCODEC_VERSION_MAJOR < 59
#error "iv2 needs FFmpeg 5.0 or newer (libavcodec 59)"
#endif

#endif
