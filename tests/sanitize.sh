#!/bin/sh
# The CPU test suite under the sanitizers, built apart so the normal build in build/ and bin/ is
# left alone (the tracked working tree is copied there):
#   make sanitize             AddressSanitizer + UndefinedBehaviorSanitizer, in build/san/, the
#                             whole suite (about 25 minutes on 2 cores). The emulated CUDA kernels
#                             (tests/emu) too: an index past a buffer in a kernel is an ASan report
#                             on the host. Leak checking is off (the valgrind tests check leaks).
#   make sanitize SAN=thread  ThreadSanitizer, in build/tsan/, the tests that run threads (the
#                             extract pipeline's workers, devices and writer; the distill loader's
#                             prefetch and build threads; the CPU streams), OMP_NUM_THREADS=1 and
#                             tests/tsan.supp (FFmpeg's own threads); about 5 minutes.
# Any report fails its test (-fno-sanitize-recover; TSan exits 66). ASAN_OPTIONS, UBSAN_OPTIONS,
# TSAN_OPTIONS from the environment are kept; TESTS="name ..." runs only those, as in tests/run.sh.
# Found on the first runs (2026-11-27): a signed int overflow in the memory plan's largest-batch
# search; qsort, bsearch and fwrite given NULL with a count of 0; the distill loader's prefetch
# thread outliving iv2_trainer_run and writing into a trainer its caller had moved.
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
SAN=${SAN:-address}
case $SAN in
  address) DIR=build/san FLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
           LINK="-fsanitize=address,undefined" ;;
  thread)  DIR=build/tsan FLAGS="-O1 -g -fsanitize=thread" LINK="-fsanitize=thread"
           export OMP_NUM_THREADS=1 TSAN_OPTIONS="${TSAN_OPTIONS:-suppressions=$ROOT/tests/tsan.supp}"
           THREADED="test_cache test_cli test_distill_slots test_distill_train test_extract test_extract_batch"
           TESTS=${TESTS:-"$THREADED test_extract_targets test_extract_teachers"} ;;
  *) echo "SAN=$SAN: address or thread"; exit 2 ;;
esac
export TESTS
mkdir -p $DIR
# the sources as they are now (tracked files, and untracked ones git does not ignore)
git ls-files -z --cached --others --exclude-standard | (cd $DIR && xargs -0 -I{} sh -c '
  d=$(dirname "{}"); mkdir -p "$d"; cmp -s "'"$ROOT"'/{}" "{}" 2>/dev/null || cp -p "'"$ROOT"'/{}" "{}"') || exit 1
cd $DIR || exit 1
rm -f build/tests/test_*_emu   # their flags are not in their dependencies: always built with these
export IV2_SHARED="${IV2_SHARED:-$(cd "$ROOT/.." && pwd)/shared}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}" UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
export TEST_TIMEOUT="${TEST_TIMEOUT:-1800}"
LDFLAGS="$LINK" exec make test OPT="$FLAGS" EMU_OPT="$FLAGS"
