#!/bin/sh
# test_vit_valgrind: the model tests (loading with bad files, parity with the forward and backward) and
# iv2-weights on bad input under valgrind memcheck: any invalid access, use of uninitialised
# memory or definite/indirect leak fails. (OpenMP's thread pool is "possibly lost" by design.)
# Skipped when valgrind is absent or cannot run the -march=native build.
cd "$(dirname "$0")/.." || exit 1
command -v valgrind >/dev/null 2>&1 || { echo "skipped: valgrind not installed"; exit 77; }
T=$(mktemp -d /tmp/iv2_test_vitvg_XXXXXX) || exit 1
trap 'rm -rf "$T"' EXIT
VG="valgrind -q --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect --error-exitcode=99"
# Built here without -march=native (valgrind does not know every AVX-512 instruction).
CC=${CC:-cc}
CF="-O1 -g -std=c11 -D_GNU_SOURCE -fopenmp -pthread -Icommon -Itests $(pkg-config --cflags libcjson openblas 2>/dev/null)"
LIBS="$(pkg-config --libs libcjson openblas 2>/dev/null) -lm"
SRC="err dtype log sha256 safetensors backend compute_cpu compute_cpu_attn vit vit_config vit_weights pth pth_pickle"
objs=""
for s in $SRC; do
  [ -f common/$s.c ] || continue
  $CC $CF -c common/$s.c -o "$T/$s.o" || { echo "cannot build common/$s.c"; exit 1; }
  objs="$objs $T/$s.o"
done
for t in test_vit_load test_vit_parity; do
  $CC $CF tests/$t.c $objs $LIBS -o "$T/$t" || { echo "cannot build $t"; exit 1; }
done
$CC $CF common/weights_main.c $objs $LIBS -o "$T/iv2-weights" || { echo "cannot build iv2-weights"; exit 1; }
export IV2_ROOT="$(pwd)" IV2_VIT_NO_SLICES=1 OMP_NUM_THREADS=2
fail=0
run() {
  $VG "$@" >"$T/out.txt" 2>&1
  rc=$?
  if grep -q "unhandled instruction\|Unrecognised instruction" "$T/out.txt"; then
    echo "skipped: valgrind cannot run this build's instructions"; exit 77
  fi
  if [ $rc -eq 99 ] || grep -q '^==[0-9]*== [A-Z]' "$T/out.txt"; then
    echo "valgrind: $*"; grep '^==' "$T/out.txt" | head -30; fail=1
  fi
  return $rc
}
run "$T/test_vit_load" || { [ $fail -eq 1 ] || { echo "test_vit_load failed"; tail -5 "$T/out.txt"; fail=1; }; }

run "$T/test_vit_parity" || { [ $fail -eq 1 ] || { echo "test_vit_parity failed"; fail=1; }; }
printf 'garbage!' > "$T/g.safetensors"
run "$T/iv2-weights" info "$T/g.safetensors"
run "$T/iv2-weights" info tests/goldens/student_w.safetensors --model iv2-tiny
run "$T/iv2-weights" init --preset iv2-tiny --config '{"depth": 1, "heads": 5}' -o "$T/x.safetensors"
[ $fail -eq 0 ] && echo "ok"
exit $fail
