#!/bin/sh
# test_manifest_import: iv2-manifest import (InternVideo2 list, Kinetics CSV, WebVid CSV) gives
# the committed expected manifests, which pass `check`; bad input lines are all reported with
# their line numbers, exit 1 and write nothing; `check` lists every bad line of a manifest.
cd "$(dirname "$0")/.." || exit 1
B=bin/iv2-manifest
[ -x "$B" ] || { echo "$B not built (make)"; exit 1; }
T=$(mktemp -d /tmp/iv2_test_import_XXXXXX) || exit 1
trap 'rm -rf "$T"' EXIT
export IV2_QUIET=1
fail=0
no() { echo "FAIL: $*"; fail=1; }
E=manifests/examples D=tests/data/manifest_import

# good lists -> the expected manifests, byte for byte; the outputs pass check
$B import --format internvideo2 $E/internvideo2_train.txt --root /data -o "$T/iv2.jsonl" || no "internvideo2 import"
cmp -s "$T/iv2.jsonl" $D/internvideo2.jsonl || no "internvideo2 output differs: $(diff "$T/iv2.jsonl" $D/internvideo2.jsonl | head -5)"
$B import --format kinetics $E/kinetics_train.csv --root k400/train --label-dirs --source k400 -o "$T/k.jsonl" || no "kinetics import"
cmp -s "$T/k.jsonl" $D/kinetics.jsonl || no "kinetics output differs: $(diff "$T/k.jsonl" $D/kinetics.jsonl | head -5)"
$B import --format webvid $E/webvid_results.csv --root webvid/videos > "$T/w.jsonl" || no "webvid import"
cmp -s "$T/w.jsonl" $D/webvid.jsonl || no "webvid output differs: $(diff "$T/w.jsonl" $D/webvid.jsonl | head -5)"
for f in "$T/iv2.jsonl" "$T/k.jsonl" "$T/w.jsonl" $E/basic.jsonl; do
  $B check "$f" >/dev/null || no "check $f"
done
ls "$T" | grep -q tmp && no "temporary file left behind"
# a flat Kinetics layout, CRLF line ends and a BOM
printf '\357\273\277label,youtube_id,time_start,time_end,split\r\nabseiling,abc,1,11.0,val\r\n' > "$T/k2.csv"
$B import --format kinetics "$T/k2.csv" > "$T/k2.jsonl" || no "kinetics flat import"
grep -qxF '{"video":"abc_000001_000011.mp4","id":"abc_000001_000011","source":"kinetics","label":"abseiling","split":"val","time_start":1,"time_end":11}' "$T/k2.jsonl" || no "kinetics flat: $(cat "$T/k2.jsonl")"

# expect_errors IN FORMAT LINE:REASON...: every bad line reported, exit 1, no output file
expect_errors() {
  in=$1 fmt=$2; shift 2
  $B import --format "$fmt" "$in" -o "$T/out.jsonl" 2>"$T/err.txt"
  rc=$?
  [ $rc -eq 1 ] || no "$fmt: exit $rc for bad input, want 1"
  [ -e "$T/out.jsonl" ] && no "$fmt: output written despite bad lines"
  for want in "$@"; do
    grep -qF "$in:$want" "$T/err.txt" || no "$fmt: no '$in:$want' in: $(cat "$T/err.txt")"
  done
  n=$(grep -c "^$in:[0-9]*: " "$T/err.txt")
  [ "$n" -eq $# ] || no "$fmt: $n errors reported, want $#: $(cat "$T/err.txt")"
  rm -f "$T/out.jsonl"
}

cat > "$T/iv2.txt" <<'X'
k400 ok.mp4 -1 -1 -1 0
k400 a.mp4 -1 -1 -1
k400 a.mp4 x -1 -1 0
anet b.mp4 100 50 40 1
anet b.mp4 100 -2 40 1
k400 a.mp4 -1 -1 -1 zero
a b 1 0 1 2 extra
X
expect_errors "$T/iv2.txt" internvideo2 "2: 5 fields, expected 6" "3: total_time \"x\" is not a number" \
  "4: start_time 50 >= end_time 40" "5: negative time" "6: target \"zero\" is not an integer" "7: more than 6 fields"

cat > "$T/k.csv" <<'X'
label,youtube_id,time_start,time_end,split
abseiling,ok1,0,10,train
abseiling,short,0,10
abseiling,badnum,abc,10,train
abseiling,order,20,10,train
abseiling,frac,1.5,11.5,train
abseiling,ok1,0,10,train
"unterminated,q,0,10,train
abseiling,,0,10,train
X
expect_errors "$T/k.csv" kinetics "3: 4 columns, the header has 5" "4: time_start \"abc\" is not a number" \
  "5: time_start 20 >= time_end 10" "6: times 1.5, 11.5 are not whole seconds" "8: column 1: unterminated quote" \
  "9: empty youtube_id" "7: duplicate id \"ok1_000000_000010\" (first on line 2)"
printf 'foo,bar\nx,y\n' > "$T/nohdr.csv"
expect_errors "$T/nohdr.csv" kinetics "1: header has no column \"youtube_id\""

cat > "$T/w.csv" <<'X'
videoid,contentUrl,duration,page_dir,name
1,http://x/1.mp4,PT00H00M12S,d,"ok"
2,http://x/2.mp4,12s,d,bad duration
3,http://x/3.mp4,PT,d,empty duration
4,http://x/4.mp4,P1H,d,hours outside T
,http://x/5.mp4,PT5S,d,no id
1,http://x/1.mp4,PT00H00M12S,d,dup
6,http://x/6.mp4,PT0S,d,zero
X
expect_errors "$T/w.csv" webvid "3: duration \"12s\" is not an ISO-8601 duration" "4: duration \"PT\"" \
  "5: duration \"P1H\"" "6: empty videoid" "8: duration is zero" "7: duplicate id \"1\" (first on line 2)"

# --keep-going writes the good rows (not the second row of a repeated id) and still exits 1;
# its output passes check
$B import --format webvid "$T/w.csv" --keep-going -o "$T/kg.jsonl" 2>/dev/null && no "--keep-going exit 0"
[ "$(wc -l < "$T/kg.jsonl")" -eq 1 ] || no "--keep-going rows: $(cat "$T/kg.jsonl")"
$B check "$T/kg.jsonl" >/dev/null 2>&1 || no "--keep-going output fails check: $($B check "$T/kg.jsonl" 2>&1)"
# a header no importer knows: nothing written even with --keep-going (-o stays as it was)
printf 'label;youtube_id;time_start;time_end\nx;a;1;11\n' > "$T/semi.csv"
printf '{"video":"keep.mp4"}\n' > "$T/precious.jsonl"
$B import --format kinetics "$T/semi.csv" --keep-going -o "$T/precious.jsonl" 2>/dev/null && no "bad header: exit 0"
grep -q keep.mp4 "$T/precious.jsonl" || no "bad header with --keep-going replaced the output: $(cat "$T/precious.jsonl")"
# standard output that cannot be written (a full disk): an error, not "imported"
if [ -w /dev/full ] && [ -c /dev/full ]; then
  $B import --format webvid $E/webvid_results.csv > /dev/full 2>/dev/null && no "a failed write to stdout exited 0"
fi
# -o naming a device or pipe is refused (its rename would replace /dev/null itself, as root)
mkfifo "$T/pipe.jsonl" && { $B import --format webvid $E/webvid_results.csv -o "$T/pipe.jsonl" 2>/dev/null && no "-o a pipe accepted"
  [ -p "$T/pipe.jsonl" ] || no "-o replaced a pipe"; }
# spaces after the commas (header and rows) are not part of the fields; a youtube_id that is not
# a file name, an end past the %06d clip names, ISO durations strtod would take (hex, exponent), an
# empty --source: refused
printf 'label, youtube_id, time_start, time_end, split\nx, abc, 1, 11, train\n' > "$T/sp.csv"
$B import --format kinetics "$T/sp.csv" > "$T/sp.jsonl" 2>/dev/null || no "spaces after commas refused"
grep -qF '"video":"abc_000001_000011.mp4"' "$T/sp.jsonl" && grep -qF '"split":"train"' "$T/sp.jsonl" || no "spaces kept: $(cat "$T/sp.jsonl")"
printf 'label,youtube_id,time_start,time_end,split\nx,../a,1,11,t\nx,b,1,1000000,t\n' > "$T/kb.csv"
expect_errors "$T/kb.csv" kinetics "2: youtube_id \"../a\" is not a file name" "3: time_end 1e+06 is past 999999 s"
printf 'videoid,contentUrl,duration,page_dir,name\n1,u,PT0x10S,d,n\n2,u,PT1e2S,d,n\n3,u,PT1.2.3S,d,n\n' > "$T/wb.csv"
expect_errors "$T/wb.csv" webvid "2: duration \"PT0x10S\"" "3: duration \"PT1e2S\"" "4: duration \"PT1.2.3S\""
$B import --format webvid $E/webvid_results.csv --source "" >/dev/null 2>&1 && no "an empty --source accepted"
# an InternVideo2 segment past the video's total_time
printf 'k400 a.mp4 30 40 50 2\n' > "$T/past.txt"
$B import --format internvideo2 "$T/past.txt" 2>"$T/err.txt" >/dev/null && no "a span past total_time accepted"
grep -q "end_time 50 is past total_time 30" "$T/err.txt" || no "span past total_time: $(cat "$T/err.txt")"

# check reports every bad line of a manifest at once
printf '{"video":"a"}\nnot json\n{"video":"b","start":3,"end":1}\n{"start":1}\n{"video":"c","id":"0"}\n' > "$T/bad.jsonl"
$B check "$T/bad.jsonl" 2>"$T/err.txt" >/dev/null && no "check exit 0 on a bad manifest"
for want in "2: not valid JSON" "3: start 3 >= end 1" "4: missing required field \"video\"" "5: duplicate id \"0\" (first on line 1)"; do
  grep -qF "$T/bad.jsonl:$want" "$T/err.txt" || no "check: no '$want' in: $(cat "$T/err.txt")"
done
grep -qF "4 bad lines" "$T/err.txt" || no "check summary: $(cat "$T/err.txt")"
: > "$T/empty.jsonl"
$B check "$T/empty.jsonl" 2>/dev/null && no "check passes an empty manifest"
$B --help | grep -q "import --format" || no "--help"
$B import --format nope x 2>/dev/null; [ $? -eq 2 ] || no "unknown format should exit 2"
exit $fail
