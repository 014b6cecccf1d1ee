#!/bin/sh
# Runs every benchmark (build/bench/bench_* programs and tests/bench/bench_*.sh scripts) and
# prints their figures. BENCH="name ..." runs only these. Output also goes to build/bench-logs/.
cd "$(dirname "$0")/../.." || exit 1
export IV2_ROOT="$(pwd)"
export IV2_SHARED="${IV2_SHARED:-$(cd .. && pwd)/shared}"
mkdir -p build/bench-logs
echo "# iv2 benchmarks on $(hostname), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
for b in build/bench/bench_* tests/bench/bench_*.sh; do
  [ -e "$b" ] || continue
  name=$(basename "$b" .sh)
  if [ -n "$BENCH" ]; then case " $BENCH " in *" $name "*) ;; *) continue;; esac; fi
  echo
  echo "## $name"
  case "$b" in
    *.sh) sh "$b" 2>&1 | tee "build/bench-logs/$name.log" ;;
    *)    "$b" 2>&1 | tee "build/bench-logs/$name.log" ;;
  esac
done
