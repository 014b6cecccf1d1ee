#!/bin/sh
# test_pth under valgrind (memcheck, leaks included): the .pth reader must stay clean on the
# good fixtures, every truncation, the bad files and the pickle fuzz of tests/test_pth.c.
# Built here without -march=native (valgrind does not know every AVX-512 instruction) from
# just the sources the reader needs. Skips (77) when valgrind is absent.
cd "$(dirname "$0")/.." || exit 1
command -v valgrind >/dev/null 2>&1 || { echo "skipped: valgrind not installed"; exit 77; }
out=build/valgrind
mkdir -p "$out" || exit 1
flags="-std=c11 -D_GNU_SOURCE -O1 -g -Icommon -Itests"
# the reader's own sources first; if their dependencies grew, every library source of common/
cc $flags $(pkg-config --cflags libcjson) tests/test_pth.c common/pth.c common/pth_pickle.c \
   common/safetensors.c common/sha256.c common/err.c common/dtype.c -o "$out/test_pth" -pthread $(pkg-config --libs libcjson) -lm 2>/dev/null ||
cc $flags -fopenmp -pthread $(pkg-config --cflags lmdb libcjson openblas) tests/test_pth.c \
   $(ls common/*.c | grep -v '_main\.c$') -o "$out/test_pth" $(pkg-config --libs lmdb libcjson openblas) -lm || exit 1
IV2_ROOT="$(pwd)" valgrind -q --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite,indirect \
    --show-leak-kinds=definite,indirect "$out/test_pth"
