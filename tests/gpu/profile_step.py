#!/usr/bin/env python3
"""profile_step.py: where one student train step spends its GPU time, kernel by kernel, from the
CSV that Nsight Compute writes for `bench_vit --profile-step` (tests/gpu/check.sh runs both):

    ncu --metrics gpu__time_duration.sum --csv --log-file F build/gpu/bench_vit --profile-step
    python3 tests/gpu/profile_step.py F [--bench-json bench_vit.json] [--txt out.txt] [--top 20]

The program launches 3 identical train steps last and nothing after them. The step is the longest
tail of the kernel sequence (name, grid, block) that repeats right before itself, cut to its
shortest period (with 4 identical steps that tail is two of them), so the set-up kernels drop out
without a profiler API in the program. Kernels are grouped by function name
(return type, namespaces, template arguments and parameters dropped); every cuBLAS/cuBLASLt kernel
(gemm, nvjet, xmma, cutlass, splitKreduce, ...) goes into one "cuBLAS GEMM" row, broken down by
kernel and grid below the table. Stdout: the table; --txt: the table and the step's timeline.

Reads both CSV layouts of ncu (--page details, the default: one row per kernel and metric, with
"Metric Unit" and "Metric Value" columns; --page raw: one row per kernel, the units in the second
row), with or without the "Grid Size"/"Block Size" columns (older versions), ==PROF==/==WARNING==
lines anywhere, units nsecond/usecond/msecond/second (ns/us/ms/s), numbers with thousands commas
("1,234.5"). A lone comma without a point reads as a decimal comma ("117,34"). Lines that are
not kernel rows and kernels without a duration (a file cut short) are left out with a warning.
Exit 0; 77 when ncu was refused the GPU counters (ERR_NVGPUCTRPERM); 1 when no kernel was read.
Stdlib only.
"""
import csv, json, re, sys

TIME_METRICS = ("gpu__time_duration.sum", "gpu__time_duration", "Duration")
NS_PER = {"nsecond": 1, "ns": 1, "nanosecond": 1, "usecond": 1e3, "us": 1e3, "\u00b5s": 1e3, "\u03bcs": 1e3,
          "microsecond": 1e3, "msecond": 1e6, "ms": 1e6, "millisecond": 1e6, "second": 1e9, "s": 1e9}
GEMM = re.compile(r"gemm|gemv|nvjet|cublas|cutlass|xmma|splitk", re.I)
GEMM_ID = re.compile(r"gemm|gemv|nvjet|xmma|splitk", re.I)   # the part of a GEMM kernel's name that says which
# classes for the one-line split (our kernel names, kernels/*.cu)
CLASSES = (("attention", re.compile(r"flash|attn|probs_mean")), ("norms", re.compile(r"norm")))
MIN_STEP = 8  # a repeated tail shorter than this is two equal kernels in a row, not a step


def die(msg, rc=1):
    print("profile_step: " + msg)
    sys.exit(rc)


def number(s, where):
    """ncu's number text -> float; thousands commas dropped, a lone comma read as a decimal one"""
    t = s.strip().replace("\u202f", "").replace("\u00a0", "").replace(" ", "")
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d*)?([eE][-+]?\d+)?", t):
        t = t.replace(",", "")
    elif t.count(",") == 1 and "." not in t:
        t = t.replace(",", ".")
    try:
        return float(t)
    except ValueError:
        raise ValueError(f"{where}: value {s!r} is not a number")


def to_ns(value, unit, where):
    u = unit.strip()
    if u not in NS_PER:
        raise ValueError(f"{where}: unknown time unit {unit!r}")
    return number(value, where) * NS_PER[u]


def demangle(n):
    """_Z<len><name>... or _ZN<len><name>...E: the function's own (last) name, enough to group by"""
    m = re.match(r"_Z(N)?[KVL]*", n)
    i, names = m.end(), []
    while i < len(n) and n[i].isdigit():
        j = i
        while j < len(n) and n[j].isdigit():
            j += 1
        k = int(n[i:j])
        names.append(n[j:j + k])
        i = j + k
        if not m.group(1):
            break
    return names[-1] if names else n


def short_name(name):
    """'void ns::flash_fwd2_kernel<88, 4, 2>(bf16 *, ...)' -> 'flash_fwd2_kernel'"""
    n = name.strip()
    if n.startswith("_Z"):
        return demangle(n)
    n = n.replace("(anonymous namespace)::", "")
    out, depth = [], 0
    for c in n:
        if c == "<":
            depth += 1
        elif c == ">":
            depth = max(depth - 1, 0)
        elif c == "(" and depth == 0:
            break
        elif depth == 0:
            out.append(c)
    words = "".join(out).split()
    return words[-1].split("::")[-1] if words else name


def gemm_label(name):
    """the identifier that names a cuBLAS kernel (also inside cutlass::Kernel2<...>)"""
    if name.startswith("_Z"):
        return demangle(name)
    return next((w for w in re.findall(r"[A-Za-z_]\w*", name) if GEMM_ID.search(w)), short_name(name))


def read_kernels(path):
    """[(name, grid, block, ns)] in launch order, and the ==ERROR== lines"""
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    except OSError as e:
        die(f"{path}: {e.strerror}")
    errors = [l for l in lines if l.startswith("==ERROR==")]
    body = [(i + 1, l) for i, l in enumerate(lines) if l.strip() and not l.startswith("==")]
    head = next((k for k, (_, l) in enumerate(body) if re.match(r'"?ID"?,', l)), None)
    if head is None:
        return [], errors
    rows = list(csv.reader([l for _, l in body[head:]]))
    rowno = [n for n, _ in body[head:]]
    col = {c.strip(): i for i, c in enumerate(rows[0])}
    if "Kernel Name" not in col and "Function Name" in col:
        col["Kernel Name"] = col["Function Name"]
    if "Kernel Name" not in col or "ID" not in col:
        die(f"{path}:{rowno[0]}: no 'ID'/'Kernel Name' column in the CSV header")
    get = lambda r, c: r[col[c]] if c in col and col[c] < len(r) else ""
    kern = {}   # (process, id) -> [name, grid, block, ns or None]
    raw = next((m for m in TIME_METRICS if m in col), None)
    units, stray = None, []
    for r, n in zip(rows[1:], rowno[1:]):
        where = f"{path}:{n}"
        r += [""] * (len(rows[0]) - len(r))   # a short row reads as empty fields (a missing duration is named)
        if raw and not get(r, "ID").strip():    # --page raw: the units row
            units = r
            continue
        if not re.fullmatch(r"\d+", get(r, "ID").strip()):   # not a kernel row (program output?)
            stray.append(n)
            continue
        key = (get(r, "Process ID"), int(get(r, "ID")))
        k = kern.setdefault(key, [get(r, "Kernel Name"), get(r, "Grid Size"), get(r, "Block Size"), None, 99])
        if raw:
            if units is None:
                die(f"{where}: --page raw CSV without its units row")
            rank, value, unit = TIME_METRICS.index(raw), get(r, raw), get(units, raw)
        else:
            m = get(r, "Metric Name").strip()
            if m not in TIME_METRICS:
                continue
            rank, value, unit = TIME_METRICS.index(m), get(r, "Metric Value"), get(r, "Metric Unit")
        if rank < k[4] and value.strip().lower() not in ("n/a", ""):
            k[3], k[4] = to_ns(value, unit, where), rank
    if stray:
        errors.append(f"WARNING: {path}: {len(stray)} lines are not kernel rows (first: line {stray[0]}); left out")
    missing = [key for key, k in kern.items() if k[3] is None]
    if missing:   # a file cut short (ncu killed): keep what has a duration, say what was dropped
        errors.append(f"WARNING: {path}: {len(missing)} kernels without a duration left out "
                      f"(first: ID {missing[0][1]}, {kern[missing[0]][0][:60]})")
    keys = sorted((key for key in kern if kern[key][3] is not None), key=lambda x: (x[0], x[1]))
    return [tuple(kern[key][:4]) for key in keys], errors


def step_length(keys):
    """the step: the longest K with keys[-K:] == keys[-2K:-K], cut to the shortest period of that
    tail (4 equal steps make K two steps; a period under MIN_STEP is not a step), and how often
    the step repeats at the end"""
    n = len(keys)
    for K in range(n // 2, 0, -1):
        if keys[n - K:] == keys[n - 2 * K:n - K]:
            tail = keys[n - K:]
            K = next(q for q in range(1, K + 1)
                     if K % q == 0 and (q >= MIN_STEP or q == K) and tail == tail[K - q:] * (K // q))
            reps = 2
            while (reps + 1) * K <= n and keys[n - (reps + 1) * K:n - reps * K] == keys[n - K:]:
                reps += 1
            return K, reps
    return 0, 0


def bench_step_ms(path):
    """the depth-2 student step bench_vit timed (bench_vit.json, 'iv2-1b-train', ms_timed[0])"""
    try:
        m = next(m for m in json.load(open(path))["models"] if m["model"] == "iv2-1b-train")
        return float(m["ms_timed"][0])
    except Exception:
        return None


def report(kernels, errors, bench_ms, top, timeline):
    out = []
    p = out.append
    keys = [(n, g, b) for n, g, b, _ in kernels]
    K, reps = step_length(keys)
    if K >= MIN_STEP:
        step = kernels[-K:]
        p(f"-- one train step: {K} kernels (the last {K} of {len(kernels)} profiled; "
          f"the same {K} repeat {reps}x at the end)")
    else:
        step = kernels
        p(f"-- WARNING: no repeated step found at the end of the run; all {len(kernels)} kernels "
          f"(set-up and every step) below")
    total = sum(k[3] for k in step)
    line = f"   kernel time {total / 1e6:.3f} ms"
    if bench_ms and K >= MIN_STEP:
        line += (f" = {100 * total / 1e6 / bench_ms:.1f}% of the {bench_ms:.3f} ms bench_vit timed for the "
                 f"depth-2 step (the rest: launch gaps, syncs; ncu runs kernels one at a time)")
    p(line)
    groups, classes = {}, {}
    for n, g, b, ns in step:
        gemm = bool(GEMM.search(n))
        label = "cuBLAS GEMM" if gemm else short_name(n)
        cls = "cuBLAS GEMM" if gemm else next((c for c, r in CLASSES if r.search(label)), "other")
        e = groups.setdefault(label, [0, 0.0])
        e[0] += 1
        e[1] += ns
        classes[cls] = classes.get(cls, 0.0) + ns
    pct = lambda ns: 100 * ns / total if total else 0.0
    p("   by class: " + "  ".join(f"{c} {pct(ns):.1f}%" for c, ns in sorted(classes.items(), key=lambda x: -x[1])))
    p(f"{'#':>3}  {'kernel':34s} {'calls':>6} {'total ms':>9} {'share':>7} {'mean us':>9}")
    ranked = sorted(groups.items(), key=lambda x: -x[1][1])
    for i, (label, (calls, ns)) in enumerate(ranked[:top]):
        p(f"{i + 1:3d}  {label:34s} {calls:6d} {ns / 1e6:9.3f} {pct(ns):6.1f}% {ns / calls / 1e3:9.1f}")
    if len(ranked) > top:
        rest = ranked[top:]
        ns = sum(e[1] for _, e in rest)
        p(f"     {f'({len(rest)} more kernels)':34s} {sum(e[0] for _, e in rest):6d} {ns / 1e6:9.3f} {pct(ns):6.1f}%")
    shapes = {}
    for n, g, b, ns in step:
        if GEMM.search(n):
            e = shapes.setdefault((gemm_label(n), g, b), [0, 0.0])
            e[0] += 1
            e[1] += ns
    if shapes:
        have_grid = any(g for _, g, _ in shapes)
        p(f"-- cuBLAS GEMM by kernel{' and grid' if have_grid else ' (this CSV has no grid sizes)'}")
        p(f"{'calls':>6} {'total ms':>9} {'share':>7} {'mean us':>9}  {'grid':16s} {'block':14s} kernel")
        for (label, g, b), (calls, ns) in sorted(shapes.items(), key=lambda x: -x[1][1])[:top]:
            p(f"{calls:6d} {ns / 1e6:9.3f} {pct(ns):6.1f}% {ns / calls / 1e3:9.1f}  {g or '-':16s} {b or '-':14s} {label}")
    if errors:   # before the timeline, so they reach the summary too (the first 5)
        p("-- ncu errors and warnings")
        out.extend(errors[:5] + ([f"({len(errors) - 5} more)"] if len(errors) > 5 else []))
    summary = list(out)
    if timeline:
        p("-- timeline of the step (launch order)")
        p(f"{'#':>4} {'us':>9}  {'grid':16s} {'block':14s} kernel")
        for i, (n, g, b, ns) in enumerate(step):
            p(f"{i:4d} {ns / 1e3:9.1f}  {g or '-':16s} {b or '-':14s} "
              f"{gemm_label(n) if GEMM.search(n) else short_name(n)}")
    return summary, out


def main(argv):
    args, opt, i = [], {"--bench-json": None, "--txt": None, "--top": "20"}, 0
    while i < len(argv):
        if argv[i] in opt and i + 1 < len(argv):
            opt[argv[i]] = argv[i + 1]
            i += 2
        elif argv[i].startswith("-"):
            die(f"unknown option {argv[i]}\n" + __doc__.split("\n\n")[1], 2)
        else:
            args.append(argv[i])
            i += 1
    if len(args) != 1:
        die("usage: profile_step.py NCU.csv [--bench-json bench_vit.json] [--txt out.txt] [--top 20]", 2)
    try:
        kernels, errors = read_kernels(args[0])
    except ValueError as e:
        die(str(e))
    if not kernels:
        for l in errors:
            print(l)
        if any("ERR_NVGPUCTRPERM" in l for l in errors):
            die(f"{args[0]}: ncu was refused the GPU performance counters (ERR_NVGPUCTRPERM); "
                "run as root or with NVreg_RestrictProfilingToAdminUsers=0", 77)
        die(f"{args[0]}: no kernel with a duration in this file")
    bench_ms = bench_step_ms(opt["--bench-json"]) if opt["--bench-json"] else None
    summary, full = report(kernels, errors, bench_ms, int(opt["--top"]), opt["--txt"] is not None)
    print("\n".join(summary))
    if opt["--txt"]:
        with open(opt["--txt"], "w") as f:
            f.write("\n".join(full) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
