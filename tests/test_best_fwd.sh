#!/bin/sh
# test_best_fwd: tests/gpu/best_fwd.py (which Hopper forward the GPU check runs bench_vit with)
# on hand-written bench_kernels JSON: the wg configuration with the least time summed over the
# shapes wins (not the one fastest on one shape); none when any wg configuration was wrong
# (max |diff| over 0.02) or none ran; the mma.sync configurations never count.
cd "$(dirname "$0")/.." || exit 1
command -v python3 >/dev/null 2>&1 || { echo "skipped: no python3"; exit 77; }
T=$(mktemp -d /tmp/iv2_test_best_fwd_XXXXXX) || exit 1
trap 'rm -rf "$T"' EXIT
fail=0
r() { printf '{"ms": %s, "tflops": 1, "differ": 5, "max_abs_diff": %s}' "$1" "$2"; }
# expect NAME JSON_SWEEP_1 JSON_SWEEP_2
expect() {
  want=$1
  printf '{"gemm": [], "attention": [{"what": "a", "fwd_sweep": {%s}}, {"what": "b", "fwd_sweep": {%s}}]}\n' \
    "$2" "$3" > "$T/k.json"
  got=$(python3 tests/gpu/best_fwd.py "$T/k.json")
  [ "$got" = "$want" ] || { echo "FAIL: want '$want', got '$got' from $(cat "$T/k.json")"; fail=1; }
}
expect wg128p "\"4x2\": $(r 0.1 0), \"wg64\": $(r 1.0 0.01), \"wg128p\": $(r 1.2 0.01)" \
              "\"4x2\": $(r 0.1 0), \"wg64\": $(r 1.0 0.01), \"wg128p\": $(r 0.5 0.01)"
expect wg64 "\"wg64\": $(r 1.0 0), \"wg128\": $(r 0.9 0)" "\"wg64\": $(r 1.0 0), \"wg128\": $(r 1.2 0)"
expect "" "\"wg64\": $(r 1.0 0), \"wg128\": $(r 0.5 0.5)" "\"wg64\": $(r 1.0 0), \"wg128\": $(r 0.5 0)"
expect "" "\"wg64\": null, \"wg128\": null" "\"wg64\": null, \"wg128\": null"
expect "" "\"4x2\": $(r 0.1 0), \"auto\": $(r 0.1 0)" "\"4x2\": $(r 0.1 0)"
expect "" "\"wg64\": $(r 1.0 0)" "\"wg64\": null"
[ $fail -eq 0 ] && echo "best_fwd.py: 6 cases ok"
exit $fail
