#!/bin/sh
# The distill tests under valgrind (memcheck, definite and indirect leaks are errors): units,
# heads, finite differences, the PyTorch golden, the trainer end to end (loader thread,
# checkpoints, resume, every bad input), the data path's batches and slots and the loss plot
# (metrics parsing, PNG). Built here
# without -march=native (valgrind does not know every AVX-512 instruction) with OpenMP on one
# thread. Skips (77) when valgrind is absent.
cd "$(dirname "$0")/.." || exit 1
command -v valgrind >/dev/null 2>&1 || { echo "skipped: valgrind not installed"; exit 77; }
out=build/valgrind-distill
mkdir -p "$out/obj" || exit 1
PKG="lmdb libcjson openblas"
CF="-std=c11 -D_GNU_SOURCE -O1 -g -fopenmp -pthread -Icommon -Idistill -Itests $(pkg-config --cflags $PKG)"
srcs=$(ls common/*.c distill/*.c | grep -v '_main\.c$')
# compile (2 at a time) only what changed
for s in $srcs; do
  o="$out/obj/$(echo "$s" | tr / _ | sed 's/\.c$/.o/')"
  if [ ! -f "$o" ] || [ "$s" -nt "$o" ] || [ -n "$(find common distill -name '*.h' -newer "$o" | head -1)" ]; then
    echo "cc $s -> $o"
  fi
done | sed 's/^cc \(.*\) -> \(.*\)$/\1 \2/' | xargs -r -n 2 -P 2 sh -c "cc $CF -c \$0 -o \$1" || exit 1
rm -f "$out/libd.a" && ar rcs "$out/libd.a" "$out"/obj/*.o || exit 1
rc=0
for t in test_distill_units test_distill_heads test_distill_fd test_distill_golden test_distill_train test_distill_slots test_distill_plot; do
  cc $CF "tests/$t.c" "$out/libd.a" -o "$out/$t" $(pkg-config --libs $PKG) -lm || exit 1
  IV2_VALGRIND=1 IV2_QUIET=1 OMP_NUM_THREADS=1 OPENBLAS_CORETYPE=Prescott valgrind -q --error-exitcode=9 --leak-check=full \
      --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect "$out/$t" >"$out/$t.log" 2>&1
  r=$?
  if [ $r -ne 0 ]; then echo "$t under valgrind: exit $r"; tail -n 30 "$out/$t.log"; rc=1; fi
done
exit $rc
