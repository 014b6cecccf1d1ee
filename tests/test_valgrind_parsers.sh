#!/bin/sh
# test_valgrind_parsers: the parser tests and iv2-manifest on bad input under valgrind
# (memcheck, full leak check): any invalid access or leak fails. Skipped when valgrind is absent.
cd "$(dirname "$0")/.." || exit 1
command -v valgrind >/dev/null 2>&1 || { echo "valgrind not installed"; exit 77; }
T=$(mktemp -d /tmp/iv2_test_vg_XXXXXX) || exit 1
trap 'rm -rf "$T"' EXIT
VG="valgrind -q --leak-check=full --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible --error-exitcode=99"
fail=0
run() {  # run CMD... under valgrind; exit codes other than 99 (a valgrind finding) are the command's own
  $VG "$@" >"$T/out.txt" 2>&1
  rc=$?
  if [ $rc -eq 99 ] || grep -q '^==[0-9]*== ' "$T/out.txt"; then
    echo "valgrind: $*"; grep '^==' "$T/out.txt" | head -30; fail=1
  fi
  return $rc
}
# Built here without -march=native: valgrind does not know every instruction (AVX-512) the
# default build may use.
SRC="common/err.c common/dtype.c common/sha256.c common/safetensors.c common/manifest.c"
CC=${CC:-cc}
CF="-O1 -g -std=c11 -D_GNU_SOURCE -Icommon -Itests $(pkg-config --cflags libcjson 2>/dev/null)"
LIBS="$(pkg-config --libs libcjson 2>/dev/null || echo -lcjson) -lm"
objs=""
for s in $SRC; do
  $CC $CF -c "$s" -o "$T/$(basename "$s" .c).o" || { echo "cannot build $s"; exit 1; }
  objs="$objs $T/$(basename "$s" .c).o"
done
for t in test_safetensors test_manifest test_sha256; do
  $CC $CF tests/$t.c $objs $LIBS -o "$T/$t" || { echo "cannot build $t"; fail=1; continue; }
  run "$T/$t" || { echo "$t failed under valgrind"; tail -5 "$T/out.txt"; fail=1; }
done
$CC $CF manifests/manifest_main.c $objs $LIBS -o "$T/iv2-manifest" || { echo "cannot build iv2-manifest"; exit 1; }
B="$T/iv2-manifest"
if true; then
  printf '\357\273\277{"video":"a"}\r\nnot json\n{"video":"b","start":3,"end":1}\n{"video":"c","id":"0"}\n{"video":"d","x":[1,{"y":2}]}\n' > "$T/bad.jsonl"
  run $B check "$T/bad.jsonl" manifests/examples/basic.jsonl "$T/missing.jsonl"
  printf 'label,youtube_id,time_start,time_end,split\na,b,1,2,t\n"x,y\na,b,1,2,t\na,c,x,2,t\n' > "$T/k.csv"
  run $B import --format kinetics "$T/k.csv" -o "$T/o.jsonl"
  run $B import --format kinetics "$T/k.csv" --keep-going -o "$T/o.jsonl"
  printf 'videoid,contentUrl,duration,page_dir,name\n1,u,PT1S,d,"a ""b"""\n2,u,P,d,n\n' > "$T/w.csv"
  run $B import --format webvid "$T/w.csv" --keep-going
  printf 'k a.mp4 -1 -1 -1 0\nk b.mp4 10 5 1 0\nshort\n' > "$T/i.txt"
  run $B import --format internvideo2 "$T/i.txt"
fi
exit $fail
