#!/bin/sh
# test_decode_cli: `iv2-extract decode` against the ffmpeg CLI: a native frame (raw and PPM) is
# byte-identical to ffmpeg's decode of the same index, --info counts the frames ffprobe counts,
# a sampled view writes num_frames PPMs and a JSON record, bad input exits non-zero naming the file.
cd "$(dirname "$0")/.." || exit 1
B=bin/iv2-extract
[ -x "$B" ] || { echo "bin/iv2-extract not built"; exit 77; }
command -v ffmpeg >/dev/null 2>&1 || { echo "ffmpeg CLI not installed"; exit 77; }
T=$(mktemp -d /tmp/iv2_test_decode_cli_XXXXXX) || exit 1
trap 'rm -rf "$T"' EXIT
fail=0
no() { echo "FAIL: $*"; fail=1; }
ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=96x64:rate=25 -t 2 -c:v libx264 -bf 2 -g 12 -pix_fmt yuv420p -y "$T/v.mp4" || exit 1
for k in 0 13 49; do
  $B decode "$T/v.mp4" --frame $k --format raw --out "$T/f" > "$T/rec.json" || no "decode --frame $k"
  ffmpeg -nostdin -v error -i "$T/v.mp4" -map 0:0 -vf "select=eq(n\,$k)" -vsync 0 -frames:v 1 -pix_fmt rgb24 -f rawvideo -y "$T/ref.rgb"
  cmp -s "$T/f.rgb" "$T/ref.rgb" || no "frame $k differs from ffmpeg"
  $B decode "$T/v.mp4" --frame $k --out - 2>/dev/null | cmp -s - "$T/ref.rgb" || no "frame $k to stdout differs"
done
$B decode "$T/v.mp4" --frame 13 --out "$T/p" > /dev/null || no "ppm"
ffmpeg -nostdin -v error -i "$T/v.mp4" -map 0:0 -vf "select=eq(n\,13)" -vsync 0 -frames:v 1 -pix_fmt rgb24 -f image2 -c:v ppm -y "$T/ref.ppm"
cmp -s "$T/p.ppm" "$T/ref.ppm" || no "PPM differs from ffmpeg's"
n=$(ffprobe -v error -select_streams v:0 -count_packets -show_entries stream=nb_read_packets -of csv=p=0 "$T/v.mp4")
$B decode "$T/v.mp4" --info | grep -q "\"frames\":$n," || no "--info frame count (ffprobe: $n)"
$B decode "$T/v.mp4" --seed 3 --row 7 --view 1 --frames 8 --size 32 --out "$T/s" > "$T/s.json" || no "sample"
[ "$(ls "$T"/s_*.ppm | wc -l)" -eq 8 ] || no "8 PPM files"
grep -q '"crop":\[' "$T/s.json" || no "record JSON"
$B decode "$T/v.mp4" --seed 3 --row 7 --view 1 --frames 8 --size 32 --out "$T/s2" > "$T/s2.json"
cmp -s "$T/s.json" "$T/s2.json" && cmp -s "$T/s_03.ppm" "$T/s2_03.ppm" || no "same seed, row, view: same view"
$B decode "$T/missing.mp4" 2> "$T/err.txt" && no "missing file accepted"
grep -q "missing.mp4: no such file" "$T/err.txt" || no "missing file message: $(cat "$T/err.txt")"
$B decode "$T/v.mp4" --frame 9999 2> "$T/err.txt" && no "frame 9999 accepted"
grep -q "outside the video" "$T/err.txt" || no "frame range message: $(cat "$T/err.txt")"
$B decode --help | grep -q "usage: iv2-extract decode" || no "--help"
# a long path (3 KB, legal below PATH_MAX) is written whole into the JSON, "quote" escaped
L="$T/q\"uote"
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14; do L="$L/$(printf '%0200d' $i)"; done
mkdir -p "$L" && cp "$T/v.mp4" "$L/v.mp4"
$B decode "$L/v.mp4" --info > "$T/long.json" || no "long path"
grep -qF "\"video\":\"$(printf '%s' "$L" | sed 's/"/\\"/g')/v.mp4\"," "$T/long.json" || no "long path cut in the JSON"
[ $fail -eq 0 ] && echo "ok"
exit $fail
