#!/bin/sh
# Builds the libFuzzer targets build/fuzz/fuzz_safetensors, build/fuzz/fuzz_manifest and
# build/fuzz/fuzz_pth with clang -fsanitize=fuzzer,address,undefined (rebuilt only when a
# source changed). FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION lets fuzz_pth past the CRC checks.
# Exit 77 when clang or its libFuzzer runtime (Debian: libclang-rt-14-dev) is missing.
cd "$(dirname "$0")/../.." || exit 1
CLANG=${CLANG:-$(command -v clang || command -v clang-14 || command -v clang-15 || command -v clang-16)}
[ -n "$CLANG" ] || { echo "clang not found"; exit 77; }
mkdir -p build/fuzz
echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }' > build/fuzz/probe.c
"$CLANG" -fsanitize=fuzzer build/fuzz/probe.c -o build/fuzz/probe 2>/dev/null || { echo "clang has no libFuzzer runtime (libclang-rt-dev)"; exit 77; }
SRC="common/err.c common/dtype.c common/sha256.c common/safetensors.c common/manifest.c common/pth.c common/pth_pickle.c"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
FLAGS="-g -O1 -std=c11 -D_GNU_SOURCE -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION $SAN -Icommon $(pkg-config --cflags libcjson 2>/dev/null)"
LIBS="$(pkg-config --libs libcjson 2>/dev/null || echo -lcjson) -lm"
stale() { [ ! -e "$1" ] || [ -n "$(find $2 common/*.h -newer "$1" 2>/dev/null)" ]; }
objs=""
for s in $SRC; do
  o=build/fuzz/$(basename "$s" .c).o
  if stale "$o" "$s"; then "$CLANG" $FLAGS -fsanitize=fuzzer-no-link -c "$s" -o "$o" || exit 1; touch "$o"; fi
  objs="$objs $o"
done
for t in safetensors manifest pth; do
  out=build/fuzz/fuzz_$t
  if stale "$out" "tests/fuzz/fuzz_$t.c $objs"; then
    "$CLANG" $FLAGS -fsanitize=fuzzer tests/fuzz/fuzz_$t.c $objs $LIBS -o "$out.tmp" && mv "$out.tmp" "$out" || exit 1
  fi
done
