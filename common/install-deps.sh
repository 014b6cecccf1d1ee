#!/bin/sh
# Installs the Debian packages iv2 needs when any is missing. Idempotent and quiet when
# everything is there. Called by every make target; safe to run by hand.
#   IV2_NO_INSTALL=1   only report what is missing (exit 1 if anything is).
set -e
# pkg-config module -> Debian package providing it; plus command-line tools the tests use.
need=""
check_pc() { pkg-config --exists "$1" 2>/dev/null || need="$need $2"; }
check_cmd() { command -v "$1" >/dev/null 2>&1 || need="$need $2"; }
check_cmd pkg-config pkg-config
check_cmd cc gcc
check_cmd make make
if command -v pkg-config >/dev/null 2>&1; then
  check_pc libavformat libavformat-dev
  check_pc libavcodec libavcodec-dev
  check_pc libswscale libswscale-dev
  check_pc libavutil libavutil-dev
  check_pc lmdb liblmdb-dev
  check_pc libcjson libcjson-dev
  check_pc openblas libopenblas-dev
  check_pc ompi-c libopenmpi-dev   # data-parallel iv2-distill (optional at build time: MPI=0)
else
  need="$need libavformat-dev libavcodec-dev libswscale-dev libavutil-dev liblmdb-dev libcjson-dev libopenblas-dev"
fi
check_cmd ffmpeg ffmpeg          # the demo corpus and the decoder oracle in tests
check_cmd ffprobe ffmpeg
check_cmd valgrind valgrind      # leak checks in the suite
check_cmd mdb_stat lmdb-utils    # cache inspection in tests
check_cmd clang clang            # the fuzzers (libFuzzer) in tests/fuzz
check_cmd mpirun openmpi-bin     # tests/test_distill_mpi.c (two ranks on the CPU)
[ -e /usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a ] || \
  ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || need="$need libclang-rt-14-dev"
[ -z "$need" ] && exit 0
# de-duplicate
need=$(echo $need | tr ' ' '\n' | sort -u | tr '\n' ' ')
if [ "${IV2_NO_INSTALL:-0}" = 1 ]; then echo "iv2: missing packages: $need" >&2; exit 1; fi
SUDO=""; [ "$(id -u)" != 0 ] && SUDO=sudo
echo "iv2: installing missing packages:$need" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null 2>&1 || true
$SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null 2>&1 || \
  $SUDO apt-get install -y --no-install-recommends $need
