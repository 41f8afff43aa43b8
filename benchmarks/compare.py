#!/usr/bin/env python3
"""Side-by-side performance of nflow and the PyTorch reference flows, with the GEMM roofline.

One command (from the repository root) builds nflow's comparison benchmarks (Release, -O2
-march=native), runs them, runs the PyTorch reference scripts when PyTorch is installed (also with
jemalloc when it is available), and prints a markdown report:

    python3 benchmarks/compare.py

Per model (NICE, RealNVP, Glow, MAF, CNF, and the neural spline flows NSF and NSF-AR, whose PyTorch
reference is benchmarks/torch_nsf.py), d in {2, 16, 64} (H = 64, 128, 256) and scalar type:
log_prob latency of one point, throughput at batches of 256 and 65,536, sampling throughput, one
training step at batch 256, at 1 and 2 threads; speed-up nflow/PyTorch; each figure as a fraction
of the roofline (the model's FLOPs per sample at the build's measured GEMM rate: Eigen's, or the
BLAS library's with --blas) and of
the machine's FMA peak (benchmarks/core/peak_benchmark.cpp, measured in the same run).
`--blas` builds nflow with its OpenBLAS backend (NFLOW_USE_BLAS); `--isa avx2` keeps both sides
on AVX2 on a machine that has AVX-512 (nflow -mno-avx512f, OpenBLAS's Haswell kernels, PyTorch's
AVX2 kernels), the machine class of docs/performance.md's figures.
Raw results stay in <build>/compare/ (nflow_*.json, torch*.jsonl, meta.json);
`--from-json` rebuilds the report from them without running anything. Standard library only.
"""
import argparse
import datetime
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = ["NICE", "RealNVP", "Glow", "MAF", "CNF", "NSF", "NSF-AR"]
# The spline flows: their PyTorch reference is benchmarks/torch_nsf.py, which registers them into
# the shared scripts and runs them.
SPLINE_MODELS = {"NSF", "NSF-AR"}
# The spline flows' arithmetic beyond their dense layers, per transformed feature and pass: an
# estimate, added to the roofline's FLOPs (the roofline then counts it at the GEMM rate, which it
# cannot reach: exp, log and gathers are slower). Unbounded spline with K = 8 bins, an exp, log or
# log1p counted as 10 FLOPs (a vectorised polynomial), every other operation as 1:
#   transcendental: 2K exp (the softmaxes of widths and heights), 2(K - 1) for the softplus of the
#                   K - 1 interior derivatives (exp and log1p), 1 log (the log-slope): 31 × 10 = 310
#   arithmetic:     2·3K (softmax sums and divisions, the minimum-size affine map), 2K (cumsums),
#                   2(K - 1) (softplus shift and minimum), K - 1 (bin comparisons), about 30 (the
#                   rational-quadratic map and its slope): 48 + 16 + 14 + 7 + 30 = 115
SPLINE_FLOPS_PER_FEATURE = 425
# Spline evaluations per sample: NSF's 8 couplings transform d/2 features each (d - d//2 and d//2
# alternately); NSF-AR's 5 layers transform d features, and its sampling runs each layer d times
# (as PyTorch does and as the MAF roofline counts its dense products).
SPLINE_FEATURES = {"NSF": lambda op, d: 4 * d,
                   "NSF-AR": lambda op, d: 5 * d * (d if op == "sample" else 1)}
HIDDEN = {2: 64, 16: 128, 64: 256}
LARGE = 65536
DEFAULT_FLAGS = "-O2 -DNDEBUG -march=native"
TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
# PyTorch models each nflow model is compared with, per op: (PyTorch model name, row label).
# The autograd-trace CNF cannot be trained (its trace is detached), hence closed form for training.
CNF_REFS = {"log_prob": [("CNF", "CNF (PyTorch: autograd trace)"), ("CNF-closed", "CNF (PyTorch: closed-form trace)")],
            "sample": [("CNF", "CNF")],
            "train_step": [("CNF-closed", "CNF (PyTorch: closed-form trace)")]}
TORCH_SOURCES = [("torch", "torch.jsonl", "PyTorch"), ("torch+jemalloc", "torch_jemalloc.jsonl", "PyTorch+jemalloc")]
NAME_RE = re.compile(r"^(?P<roof>Roofline/)?(?P<model>[\w-]+)/(?P<op>\w+)/(?P<dtype>float\d+)/d:(?P<d>\d+)/H:(?P<H>\d+)"
                     r"(?:/batch:(?P<batch>\d+)/threads:(?P<threads>\d+))?")


def log(msg):
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


def csv(s, conv=str):
    return [conv(x) for x in s.split(",") if x.strip()]


# ----------------------------------------------------------------------------- formatting
def fmt_rate(x):
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}" if x >= 10 else f"{x:.2f}"


def fmt_time(s):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            v = s / scale
            return f"{v:.0f} {unit}" if v >= 100 else f"{v:.1f} {unit}" if v >= 10 else f"{v:.2f} {unit}"
    return f"{s * 1e9:.0f} ns"


def fmt_ratio(r):
    return f"{r:.0f}×" if r >= 10 else f"{r:.1f}×" if r >= 1 else f"{r:.2f}×"


def fmt_pct(f):
    return f"{100 * f:.0f} %" if f >= 0.1 else f"{100 * f:.1f} %"


# ----------------------------------------------------------------------------- loading results
def category(op, batch):
    """Which table column a measurement belongs to: '1', '256' (or smaller), 'L' (large)."""
    if op == "train_step":
        return "train"
    return "1" if batch == 1 else "256" if batch <= 256 else "L"


def put(index, key, rec):
    """Keep one record per cell: batch 256 over smaller ones, the largest large batch."""
    old = index.get(key)
    if old is None or (key[-1] == "256" and rec["batch"] == 256) or (key[-1] == "L" and rec["batch"] > old["batch"]):
        index[key] = rec


def spline_flops(model, op, d):
    """The spline arithmetic of one sample of a spline flow (estimate above; 0 for other models);
    a training step counts three times the forward's, as the dense products do."""
    features = SPLINE_FEATURES.get(model)
    return 0.0 if features is None else SPLINE_FLOPS_PER_FEATURE * features(op, d) * (3.0 if op == "train_step" else 1.0)


def load_nflow(paths, context):
    """Google Benchmark JSON -> ({(model, op, dtype, d, threads, cat): rec}, {(model, op, dtype, d): roofline})."""
    runs, medians = {}, {}
    for p in paths:
        doc = json.load(open(p))
        context.update(doc.get("context", {}))
        for b in doc.get("benchmarks", []):
            if b.get("error_occurred"):
                continue
            context.setdefault("repetitions", b.get("repetitions", 1))
            base = b.get("run_name") or re.sub(r"_(mean|median|stddev|cv)$", "", b["name"])
            if b.get("run_type") == "aggregate":
                if b.get("aggregate_name") == "median":
                    medians[base] = b
            else:
                runs.setdefault(base, []).append(b)
    index, roof = {}, {}
    for base in sorted(set(runs) | set(medians)):
        m = NAME_RE.match(base)
        if not m:
            continue
        b = medians.get(base) or sorted(runs[base], key=lambda r: r["real_time"])[len(runs[base]) // 2]
        model, op, dtype, d, H = m["model"], m["op"], m["dtype"], int(m["d"]), int(m["H"])
        flops, gemm = b.get("flops_per_sample"), b.get("gemm_flops_per_second")
        if m["roof"]:
            flops = (flops or 0.0) + spline_flops(model, op, d) if model in SPLINE_FEATURES else flops
            rate = gemm / flops if flops and gemm else b.get("items_per_second")
            if rate:
                roof[(model, op, dtype, d)] = {"H": H, "flops": flops, "gemm": gemm, "rate": rate}
        elif m["batch"]:
            batch, threads = int(m["batch"]), int(m["threads"])
            sec = b["real_time"] * TIME_UNITS.get(b.get("time_unit", "ns"), 1e-9)
            # rate from wall time: items_per_second is CPU-time based unless the benchmark uses real time
            rec = {"batch": batch, "sec": sec, "rate": batch / sec, "flops": flops, "H": H}
            put(index, (model, op, dtype, d, threads, category(op, batch)), rec)
    return index, roof


def load_torch(path):
    index, meta = {}, {}
    if not path.exists():
        return index, meta
    for line in open(path):
        if not line.strip():
            continue
        r = json.loads(line)
        meta.setdefault("torch", r.get("torch"))
        if r.get("blas"):
            meta["blas"] = r["blas"]
        rec = {"batch": r["batch"], "sec": r["median_s"], "rate": r["batch"] / r["median_s"], "H": r["H"]}
        put(index, (r["model"], r["op"], r["dtype"], r["d"], r["threads"], category(r["op"], r["batch"])), rec)
    return index, meta


# ----------------------------------------------------------------------------- running
def run(cmd, env=None, check=True):
    log(" ".join(str(c) for c in cmd))
    r = subprocess.run([str(c) for c in cmd], env=env, stdout=sys.stderr)
    if check and r.returncode != 0:
        sys.exit(f"[compare] failed ({r.returncode}): {' '.join(str(c) for c in cmd)}")
    return r.returncode


def build(a):
    run(["cmake", "-S", REPO, "-B", a.build, "-DCMAKE_BUILD_TYPE=Release",
         f"-DCMAKE_CXX_FLAGS_RELEASE={a.cxx_flags}", "-DNFLOW_BUILD_TESTS=OFF",
         f"-DNFLOW_USE_BLAS={'ON' if a.blas else 'OFF'}"])
    run(["cmake", "--build", a.build, "--target", "compare_benchmarks", "peak_benchmark", "-j", os.cpu_count() or 1])


def isa_env(a, torch=False):
    """Environment that keeps a run on the --isa instruction set: OpenBLAS's kernels (nflow with
    --blas, and PyTorch's BLAS) and PyTorch's own kernels."""
    if a.isa != "avx2":
        return {}
    env = {"OPENBLAS_CORETYPE": "Haswell"}
    if torch:
        env["ATEN_CPU_CAPABILITY"] = "avx2"
    return env


def run_peak(a, out_dir):
    """The machine's FMA peak, one thread (peak_benchmark, median of 5): {dtype: FLOP/s}."""
    exe = a.build / "benchmarks" / "peak_benchmark"
    if not exe.exists():
        log(f"missing {exe}: no FMA peak column")
        return {}
    out = out_dir / "peak.json"
    run([exe, "--benchmark_repetitions=5", "--benchmark_report_aggregates_only=true",
         f"--benchmark_out={out}", "--benchmark_out_format=json"], check=False)
    peak = {}
    try:
        for b in json.load(open(out)).get("benchmarks", []):
            if b.get("aggregate_name") == "median" and "GFLOP/s" in b:
                peak[b["run_name"].split("/")[-1]] = b["GFLOP/s"] * 1e9
    except (OSError, ValueError):
        pass
    return peak


def nflow_filter(a):
    alt = lambda xs: "(" + "|".join(str(x) for x in xs) + ")"  # noqa: E731
    core = f"{alt(a.models)}/{alt(a.ops)}/{alt(a.dtypes)}/d:{alt(a.dims)}/H:[0-9]+"
    return f"^{core}/batch:[0-9]+/threads:{alt(a.threads)}(/|$)|^Roofline/{core}(/|$)"


def run_nflow(a, out_dir):
    for model in a.models:
        exe = a.build / "benchmarks" / f"compare_{model.lower().replace('-', '_')}"
        if not exe.exists():
            log(f"missing {exe}: nflow {model} skipped")
            continue
        run([exe, "--benchmark_format=console", f"--benchmark_out={out_dir / f'nflow_{model.lower()}.json'}",
             "--benchmark_out_format=json", f"--benchmark_repetitions={a.repetitions}",
             "--benchmark_report_aggregates_only=true", f"--benchmark_min_time={a.min_time}",
             f"--benchmark_filter={nflow_filter(a)}"], env=dict(os.environ, **isa_env(a)), check=False)


def find_jemalloc():
    for pat in ("/usr/lib/*/libjemalloc.so.2", "/usr/lib*/libjemalloc.so.2", "/usr/local/lib/libjemalloc.so.2"):
        hits = sorted(glob.glob(pat))
        if hits:
            return hits[0]
    return None


def torch_info(a):
    """(PyTorch version, BLAS and jemalloc to use, None) or (None, why the PyTorch columns are skipped)."""
    if a.no_torch:
        return None, "PyTorch columns skipped (--no-torch)"
    if not (Path(a.torch_bench_dir) / "bench_torch.py").exists():
        return None, f"PyTorch reference scripts not found in {a.torch_bench_dir}: PyTorch columns skipped"
    try:
        r = subprocess.run([a.python, "-c", "import torch; print(torch.__version__)"],
                           capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        r = None
    if r is None or r.returncode != 0:
        return None, "PyTorch not installed: PyTorch columns skipped"
    blas = "openblas" if glob.glob("/usr/lib/*/openblas-openmp") else "reference"
    if blas == "reference":
        log("warning: libopenblas0-openmp not installed: PyTorch uses the reference BLAS and its batches are slow")
    return {"version": r.stdout.strip(), "blas": blas, "python": a.python,
            "jemalloc": None if a.no_jemalloc else find_jemalloc()}, None


def run_torch(a, info, out_dir):
    bench = Path(a.torch_bench_dir)
    ops = set(a.ops)
    models = [m for n in a.models for m in ([n, "CNF-closed"] if n == "CNF" and "log_prob" in ops else [n])]
    train_models = [("CNF-closed" if n == "CNF" else n) for n in a.models]
    dims = ",".join(map(str, a.dims))
    budget = a.torch_budget if a.torch_budget is not None else (1.0 if a.quick else None)
    variants = [(TORCH_SOURCES[0][1], {})]
    if info["jemalloc"]:
        variants.append((TORCH_SOURCES[1][1], {"LD_PRELOAD": info["jemalloc"],
                                               "MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"}))
    def groups(names):
        """(command prefix of a shared script, models): the spline flows through torch_nsf.py."""
        spline = [n for n in names if n in SPLINE_MODELS]
        shared = [n for n in names if n not in SPLINE_MODELS]
        wrapper = [a.python, REPO / "benchmarks" / "torch_nsf.py", "--bench-dir", bench]
        return [(lambda s: [a.python, bench / s], shared), (lambda s: [*wrapper, s], spline)]

    for fname, extra in variants:
        out = out_dir / fname
        for dtype in a.dtypes:
            for t in a.threads:
                env = dict(os.environ, OMP_NUM_THREADS=str(t), **isa_env(a, torch=True), **extra)
                common = ["--threads", t, "--dtype", dtype, "--dims", dims, "--out", out]
                if ops & {"log_prob", "sample"}:
                    for script, names in groups(models):
                        if not names:
                            continue
                        cmd = [*script("bench_torch.py"), *common, "--models", ",".join(names),
                               "--batches", a.torch_batches, "--sample", int("sample" in ops), "--blas", info["blas"]]
                        cmd += ["--budget", budget] if budget is not None else []
                        cmd += ["--max-wait", a.torch_max_wait] if a.torch_max_wait is not None else []
                        run(cmd, env=env, check=False)
                if "train_step" in ops:
                    for script, names in groups(train_models):
                        if names:
                            run([*script("bench_train.py"), *common, "--models", ",".join(names),
                                 "--steps", 10 if a.quick else 30], env=env, check=False)


def cmake_cache(build_dir):
    vals = {}
    try:
        for line in open(build_dir / "CMakeCache.txt"):
            m = re.match(r"^(CMAKE_CXX_FLAGS_RELEASE|CMAKE_CXX_COMPILER|CMAKE_BUILD_TYPE|NFLOW_USE_BLAS):\w+=(.*)$", line)
            if m:
                vals[m[1]] = m[2]
    except OSError:
        pass
    return vals


def machine_meta(a, info, why):
    cpu = "unknown CPU"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cache = cmake_cache(a.build)
    compiler = cache.get("CMAKE_CXX_COMPILER", "")
    if compiler and shutil.which(compiler):
        r = subprocess.run([compiler, "--version"], capture_output=True, text=True)
        compiler = (r.stdout.splitlines() or [compiler])[0]
    return {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "cpu": cpu, "cores": os.cpu_count(),
            "build_type": cache.get("CMAKE_BUILD_TYPE", "?"), "flags": cache.get("CMAKE_CXX_FLAGS_RELEASE", "? (no CMakeCache.txt)"),
            "compiler": compiler, "repetitions": a.repetitions, "min_time": a.min_time, "torch": info,
            "torch_skipped": why, "isa": a.isa,
            "blas": cache.get("NFLOW_USE_BLAS", "OFF").upper() in ("ON", "1", "TRUE", "YES")}


def compile_times(a):
    """Wall seconds of `<c++> -std=c++20 -O2 -c` of benchmarks/compile_time/realnvp16.cpp (a 16-layer
    Real NVP), with the umbrella header and with only the headers it needs, its log_prob alone and
    with train::fit too (NFLOW_PROBE_FIT), and that last one as a program linking nflow::instances
    compiles it (NFLOW_PRECOMPILED_INSTANCES)."""
    compiler = cmake_cache(a.build).get("CMAKE_CXX_COMPILER") or "g++"
    src = REPO / "benchmarks" / "compile_time" / "realnvp16.cpp"
    out = {}
    for label, extra in (("nflow.hpp", []), ("narrow includes", ["-DNFLOW_NARROW_INCLUDES"]),
                         ("nflow.hpp + fit", ["-DNFLOW_PROBE_FIT"]),
                         ("narrow includes + fit", ["-DNFLOW_NARROW_INCLUDES", "-DNFLOW_PROBE_FIT"]),
                         # A program linking nflow::instances (the coupling's hooks compiled there).
                         ("narrow includes + fit, nflow::instances",
                          ["-DNFLOW_NARROW_INCLUDES", "-DNFLOW_PROBE_FIT", "-DNFLOW_PRECOMPILED_INSTANCES"])):
        cmd = [compiler, "-std=c++20", "-O2", "-DNDEBUG", f"-I{REPO / 'include'}", "-I/usr/include/eigen3",
               *extra, "-c", str(src), "-o", os.devnull]
        t0 = datetime.datetime.now()
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            log(f"compile-time probe failed: {r.stderr[:500]}")
            return {}
        out[label] = (datetime.datetime.now() - t0).total_seconds()
    out["compiler"] = compiler
    return out


# ----------------------------------------------------------------------------- report
class Report:
    def __init__(self, a, meta, nflow, roof, torch):
        self.a, self.meta, self.nflow, self.roof = a, meta, nflow, roof
        self.torch = [(label, idx) for (_, _, label), idx in zip(TORCH_SOURCES, torch) if idx]
        self.lines = []

    def out(self, s=""):
        self.lines.append(s)

    def header(self):
        m, t = self.meta, self.meta.get("torch")
        self.out("# nflow vs PyTorch reference flows\n")
        self.out(f"- date: {m.get('date', '?')}; machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores")
        self.out(f"- nflow: {m.get('build_type', 'Release')} build, flags `{m.get('flags', '?')}`"
                 + (f", {m['compiler']}" if m.get("compiler") else "")
                 + f"; Google Benchmark median of {m.get('repetitions', '?')} repetition(s), min time {m.get('min_time', '?')} s"
                 + ("; dense products of ≥ 16 columns in OpenBLAS (NFLOW_USE_BLAS)" if m.get("blas") else "; Eigen's products (no BLAS backend)")
                 + ("; AVX2 on both sides (nflow -mno-avx512f, OPENBLAS_CORETYPE=Haswell, PyTorch ATEN_CPU_CAPABILITY=avx2)"
                    if m.get("isa") == "avx2" else ""))
        peak = m.get("peak") or {}
        if peak:
            self.out("- FMA peak, one thread (benchmarks/core/peak_benchmark.cpp, median of 5): "
                     + ", ".join(f"{dt} {v / 1e9:.0f} GFLOP/s" for dt, v in sorted(peak.items())))
        if t:
            jem = f"second column with jemalloc ({t['jemalloc']})" if t.get("jemalloc") else "no jemalloc column"
            py = f" ({t['python']})" if t.get("python") else ""
            self.out(f"- PyTorch {t.get('version')}{py}, BLAS: {t.get('blas')}; {jem}")
        else:
            self.out("- " + m.get("torch_skipped", "PyTorch not installed: PyTorch columns skipped"))
        ct = m.get("compile_time")
        if ct:
            self.out(f"- compile time of a TU with a 16-layer Real NVP (`{ct.get('compiler')} -O2 -c "
                     f"benchmarks/compile_time/realnvp16.cpp`): {ct.get('nflow.hpp', 0):.1f} s with nflow.hpp, "
                     f"{ct.get('narrow includes', 0):.1f} s with only the headers it needs"
                     + (f"; with train::fit too (-DNFLOW_PROBE_FIT): {ct['nflow.hpp + fit']:.1f} s and "
                        f"{ct.get('narrow includes + fit', 0):.1f} s" if "nflow.hpp + fit" in ct else "")
                     + (f"; the last as a program linking nflow::instances: "
                        f"{ct['narrow includes + fit, nflow::instances']:.1f} s"
                        if "narrow includes + fit, nflow::instances" in ct else ""))
        self.out("- rates in samples/s; PyTorch cells show nflow's speed-up in brackets (nflow rate / PyTorch rate); "
                 "% roof = nflow rate / (threads × roofline rate at the measured 1-thread GEMM rate); "
                 "% peak = nflow rate × the roofline's FLOPs per sample / (threads × FMA peak); "
                 f"[B=n]: batch size when not the nominal one; — : not measured\n")

    def peak(self, dtype):
        return (self.meta.get("peak") or {}).get(dtype)

    def rows(self, op, dtype, cat):
        """(label, nflow model, PyTorch model, d, H) for every row with at least one figure."""
        out = []
        for model in self.a.models:
            refs = CNF_REFS[op] if model == "CNF" else [(model, model)]
            for d in self.a.dims:
                for tmodel, label in refs:
                    keys = [(model, op, dtype, d, t, cat) for t in self.a.threads]
                    tkeys = [(tmodel, op, dtype, d, t, cat) for t in self.a.threads]
                    if any(k in self.nflow for k in keys) or any(k in idx for _, idx in self.torch for k in tkeys):
                        out.append((label, model, tmodel, d, HIDDEN.get(d, "?")))
        return out

    def value(self, rec, cat, nominal):
        s = fmt_time(rec["sec"]) if cat in ("1", "train") else fmt_rate(rec["rate"])
        return s + (f" [B={rec['batch']}]" if rec["batch"] != nominal else "")

    def table(self, title, op, dtype, cat, nominal):
        rows = self.rows(op, dtype, cat)
        if not rows:
            return
        hdr = ["model", "d", "H"]
        for t in self.a.threads:
            hdr += [f"nflow t={t}", f"% roof t={t}"] + ([f"% peak t={t}"] if self.peak(dtype) else []) \
                + [f"{label} t={t}" for label, _ in self.torch]
        self.out(f"### {title}\n")
        self.out("| " + " | ".join(hdr) + " |")
        self.out("|" + "---|" * len(hdr))
        for label, model, tmodel, d, H in rows:
            cells = [label, str(d), str(H)]
            for t in self.a.threads:
                n = self.nflow.get((model, op, dtype, d, t, cat))
                r = self.roof.get((model, op, dtype, d))
                cells.append(self.value(n, cat, nominal) if n else "—")
                cells.append(fmt_pct(n["rate"] / (t * r["rate"])) if n and r else "—")
                if self.peak(dtype):
                    cells.append(fmt_pct(n["rate"] * r["flops"] / (t * self.peak(dtype))) if n and r and r.get("flops") else "—")
                for _, idx in self.torch:
                    p = idx.get((tmodel, op, dtype, d, t, cat))
                    cells.append(self.value(p, cat, nominal) + (f" ({fmt_ratio(n['rate'] / p['rate'])})" if n else "")
                                 if p else "—")
            self.out("| " + " | ".join(cells) + " |")
        self.out()

    def roofline_table(self):
        keys = sorted(self.roof, key=lambda k: (MODELS.index(k[0]) if k[0] in MODELS else 99, k[3], k[2], k[1]))
        keys = [k for k in keys if k[0] in self.a.models and k[2] in self.a.dtypes and k[3] in self.a.dims]
        if not keys:
            return
        gemm = "the BLAS library's, NFLOW_USE_BLAS" if self.meta.get("blas") else "Eigen's"
        self.out(f"## Roofline: the models' dense-layer products at this build's GEMM rate ({gemm}; 1 thread, tiles of 256)\n")
        if any(k[0] in SPLINE_FEATURES for k in keys):
            self.out("Spline flows: the FLOPs add an estimate of the spline arithmetic (benchmarks/compare.py, "
                     "SPLINE_FLOPS_PER_FEATURE), counted at the same rate.\n")
        self.out("| model | d | H | dtype | op | FLOPs/sample | GEMM GFLOP/s | GEMM % of FMA peak | roofline samples/s | roofline time/sample |")
        self.out("|---|---|---|---|---|---|---|---|---|---|")
        for k in keys:
            r = self.roof[k]
            flops = fmt_rate(r["flops"]) if r.get("flops") else "—"
            gemm = f"{r['gemm'] / 1e9:.1f}" if r.get("gemm") else "—"
            frac = fmt_pct(r["gemm"] / self.peak(k[2])) if r.get("gemm") and self.peak(k[2]) else "—"
            self.out(f"| {k[0]} | {k[3]} | {r['H']} | {k[2]} | {k[1]} | {flops} | {gemm} | {frac} | "
                     f"{fmt_rate(r['rate'])} | {fmt_time(1 / r['rate'])} |")
        self.out()

    def render(self):
        self.header()
        ops = self.a.ops
        for dtype in self.a.dtypes:
            self.out(f"## {dtype}\n")
            mark = len(self.lines)
            if "log_prob" in ops:
                self.table(f"log_prob, one point: latency ({dtype})", "log_prob", dtype, "1", 1)
                self.table(f"log_prob, batch 256: samples/s ({dtype})", "log_prob", dtype, "256", 256)
                self.table(f"log_prob, large batch (65,536 unless noted): samples/s ({dtype})", "log_prob", dtype, "L", LARGE)
            if "sample" in ops:
                self.table(f"sample, large batch (65,536 unless noted): samples/s ({dtype})", "sample", dtype, "L", LARGE)
            if "train_step" in ops:
                self.table(f"one training step (forward, backward, Adam), batch 256: time per step ({dtype})",
                           "train_step", dtype, "train", 256)
            if len(self.lines) == mark:  # no figures for this scalar type
                del self.lines[mark - 1:]
        self.roofline_table()
        return "\n".join(self.lines)


# ----------------------------------------------------------------------------- main
def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", type=Path, default=REPO / "build" / "bench", help="build directory (default build/bench)")
    ap.add_argument("--no-build", action="store_true", help="use the binaries already in --build")
    ap.add_argument("--cxx-flags", default=DEFAULT_FLAGS, help=f"CMAKE_CXX_FLAGS_RELEASE (default '{DEFAULT_FLAGS}')")
    ap.add_argument("--blas", action="store_true", help="build nflow with its BLAS backend (-DNFLOW_USE_BLAS=ON, OpenBLAS)")
    ap.add_argument("--isa", choices=["native", "avx2"], default="native",
                    help="avx2: keep both sides on AVX2 on an AVX-512 machine (adds -mno-avx512f to --cxx-flags)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--dims", default="2,16,64")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--ops", default="log_prob,sample,train_step")
    ap.add_argument("--repetitions", type=int, default=None, help="Google Benchmark repetitions (default 3; --quick 1)")
    ap.add_argument("--min-time", type=float, default=None, help="Google Benchmark min time, s (default 0.2; --quick 0.05)")
    ap.add_argument("--quick", action="store_true", help="short runs (nflow: 1 repetition, 0.05 s; PyTorch: budget 1 s, 10 steps)")
    ap.add_argument("--python", default="/usr/bin/python3", help="Python that runs the PyTorch side")
    ap.add_argument("--torch-bench-dir", default=os.environ.get("NFLOW_TORCH_BENCH", str(REPO.parent / "shared" / "bench")))
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns")
    ap.add_argument("--torch-only", action="store_true",
                    help="run only the PyTorch side for the given --models/--dims/--dtypes/--threads, appending to the "
                         "raw files already in <build>/compare (to complete a stopped run), then render the report")
    ap.add_argument("--no-compile-time", action="store_true", help="skip timing the compile-time probe")
    ap.add_argument("--no-jemalloc", action="store_true", help="skip the PyTorch+jemalloc column")
    ap.add_argument("--torch-batches", default="1,256,L", help="bench_torch.py --batches (L = large)")
    ap.add_argument("--torch-budget", type=float, default=None, help="bench_torch.py --budget, s per measurement")
    ap.add_argument("--torch-max-wait", type=float, default=None, help="bench_torch.py --max-wait (quiet-machine wait), s")
    ap.add_argument("--out", type=Path, default=None, help="markdown report (default <build>/compare.md)")
    ap.add_argument("--from-json", nargs="?", const="", default=None, metavar="DIR",
                    help="only rebuild the report from DIR (default <build>/compare)")
    a = ap.parse_args()
    a.models, a.dims, a.dtypes = csv(a.models), csv(a.dims, int), csv(a.dtypes)
    a.threads, a.ops = csv(a.threads, int), csv(a.ops)
    a.repetitions = a.repetitions or (1 if a.quick else 3)
    a.min_time = a.min_time or (0.05 if a.quick else 0.2)
    a.build = a.build.resolve()
    if a.isa == "avx2" and "-mno-avx512f" not in a.cxx_flags:
        a.cxx_flags += " -mno-avx512f"
    return a


def main():
    a = parse_args()
    data_dir = Path(a.from_json).resolve() if a.from_json else a.build / "compare"
    if a.torch_only and a.from_json is None:
        info, why = torch_info(a)
        if why:
            sys.exit(f"[compare] --torch-only: {why}")
        run_torch(a, info, data_dir)
        a.from_json = str(data_dir)
    if a.from_json is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        for old in list(data_dir.glob("nflow_*.json")) + list(data_dir.glob("torch*.jsonl")):
            old.unlink()  # the PyTorch scripts append; one report = one run
        if not a.no_build:
            build(a)
        info, why = torch_info(a)
        if why:
            log(f"{why} (python: {a.python})")
        meta = machine_meta(a, info, why)
        if not a.no_compile_time:
            log("timing the compile-time probe (benchmarks/compile_time/realnvp16.cpp)")
            meta["compile_time"] = compile_times(a)
        meta["peak"] = run_peak(a, data_dir)
        (data_dir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        run_nflow(a, data_dir)
        if info:
            run_torch(a, info, data_dir)
    elif (data_dir / "meta.json").exists():
        meta = json.loads((data_dir / "meta.json").read_text())
    else:
        meta = {}
    context = {}
    nflow, roof = load_nflow(sorted(data_dir.glob("nflow_*.json")), context)
    torch = [load_torch(data_dir / fname) for _, fname, _ in TORCH_SOURCES]
    if not meta:  # --from-json without meta.json: what the records say
        meta = {"date": context.get("date", "?")[:16].replace("T", " "), "cores": context.get("num_cpus", "?"),
                "repetitions": context.get("repetitions", "?")}
        if torch[0][1]:
            meta["torch"] = {"version": torch[0][1].get("torch"), "blas": torch[0][1].get("blas"),
                             "jemalloc": "LD_PRELOAD" if torch[1][0] else None}
    report = Report(a, meta, nflow, roof, [idx for idx, _ in torch]).render()
    print(report)
    out = a.out or a.build / "compare.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report + "\n")
    log(f"report written to {out}; raw results in {data_dir}")


if __name__ == "__main__":
    main()
