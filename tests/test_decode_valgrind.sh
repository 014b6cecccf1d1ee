#!/bin/sh
# test_decode_valgrind: the decoder's success and bad-input paths under valgrind (memcheck, full
# leak check): any invalid access or leak fails. Skipped when valgrind or ffmpeg is absent.
cd "$(dirname "$0")/.." || exit 1
command -v valgrind >/dev/null 2>&1 || { echo "valgrind not installed"; exit 77; }
command -v ffmpeg >/dev/null 2>&1 || { echo "ffmpeg CLI not installed"; exit 77; }
T=$(mktemp -d /tmp/iv2_test_decode_vg_XXXXXX) || exit 1
trap 'rm -rf "$T"' EXIT
# Built here without -march=native: valgrind does not know every instruction (AVX-512) the
# default build may use.
CC=${CC:-cc}
FF="libavformat libavcodec libswscale libavutil"
CF="-O1 -g -std=c11 -D_GNU_SOURCE -pthread -Icommon -Iextract $(pkg-config --cflags $FF)"
$CC $CF tests/valgrind_decode.c extract/decode.c extract/decode_sample.c extract/decode_cli.c common/err.c common/log.c \
  -o "$T/vg" $(pkg-config --libs $FF) -lm || { echo "cannot build"; exit 1; }
ff() { ffmpeg -nostdin -v error "$@" || { echo "ffmpeg failed: $*"; exit 1; }; }
ff -f lavfi -i testsrc2=size=64x48:rate=25 -t 2 -c:v libx264 -bf 2 -g 12 -pix_fmt yuv420p -y "$T/good.mp4"
ff -i "$T/good.mp4" -c copy -movflags +faststart -y "$T/fast.mp4"
n=$(wc -c < "$T/good.mp4")
head -c $((n * 6 / 10)) "$T/good.mp4" > "$T/trunc.mp4"
head -c $((n / 2)) "$T/fast.mp4" > "$T/trunc_fast.mp4"
echo "not a video" > "$T/notes.mp4"
ff -f lavfi -i sine=d=0.2 -y "$T/audio.wav"
ff -f lavfi -i testsrc2=size=64x48:rate=25 -t 0.2 -c:v mjpeg -bsf:v noise=amount=1 -y "$T/noise.avi"
IV2_QUIET=1 valgrind -q --leak-check=full --show-leak-kinds=definite,indirect,possible \
  --errors-for-leak-kinds=definite,indirect,possible --error-exitcode=99 "$T/vg" "$T" > "$T/out.txt" 2>&1
rc=$?
if [ $rc -ne 0 ] || grep -q '^==[0-9]*== ' "$T/out.txt"; then
  grep -v '^$' "$T/out.txt" | head -40
  echo "failed under valgrind (exit $rc)"
  exit 1
fi
echo "valgrind clean"
