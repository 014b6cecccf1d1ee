"""best_fwd.py: the fastest Hopper forward configuration (IV2_ATTN_FWD=wg*) of bench_kernels'
forward sweep, for check.sh to run bench_vit with. Prints the name, or nothing when no wg
configuration ran or one gave a wrong output (max |diff| to the default's over 0.02, as
bench_kernels' SWEEP_MAXD). Ranks by the summed time over all attention shapes.
    python3 tests/gpu/best_fwd.py bench_kernels.json"""
import json
import sys


def best(path):
    with open(path) as f:
        shapes = json.load(f)["attention"]
    total = {}
    for s in shapes:
        for name, r in s.get("fwd_sweep", {}).items():
            if not name.startswith("wg"):
                continue
            if r is None or r["max_abs_diff"] > 0.02:
                total[name] = None
            elif total.get(name, 0) is not None:
                total[name] = total.get(name, 0) + r["ms"]
    ok = {n: t for n, t in total.items() if t is not None}
    return min(ok, key=ok.get) if ok and len(ok) == len(total) else ""


if __name__ == "__main__":
    print(best(sys.argv[1]))
