#!/bin/sh
# The whole CPU test suite under AddressSanitizer and UndefinedBehaviorSanitizer (`make sanitize`):
# the tracked working tree is copied to build/san/ and built there with
# -fsanitize=address,undefined (any report fails its test: -fno-sanitize-recover), so the normal
# build in build/ and bin/ is left alone. The emulated CUDA kernels (tests/emu) too: an index past
# a buffer in a kernel is an ASan report on the host. About 25 minutes on 2 cores; not part of `make test`.
# Leak checking is off here (the valgrind tests check leaks); ASAN_OPTIONS / UBSAN_OPTIONS from the
# environment are kept. TESTS="name ..." runs only those, as in tests/run.sh.
# Found on its first run (2026-11-27): signed int overflow in the memory plan's largest-batch search,
# qsort/bsearch/fwrite on NULL with a count of 0 (resumes with nothing done, imports with no id).
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
SAN="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
mkdir -p build/san
# the sources as they are now (tracked files, and untracked ones git does not ignore)
git ls-files -z --cached --others --exclude-standard | (cd build/san && xargs -0 -I{} sh -c '
  d=$(dirname "{}"); mkdir -p "$d"; cmp -s "'"$ROOT"'/{}" "{}" 2>/dev/null || cp -p "'"$ROOT"'/{}" "{}"') || exit 1
cd build/san || exit 1
rm -f build/tests/test_*_emu   # their flags are not in their dependencies: always built with these
export IV2_SHARED="${IV2_SHARED:-$(cd "$ROOT/.." && pwd)/shared}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}" UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
export TEST_TIMEOUT="${TEST_TIMEOUT:-1800}"
LDFLAGS="-fsanitize=address,undefined" exec make test OPT="$SAN" EMU_OPT="$SAN"
