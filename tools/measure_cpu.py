"""Ad-hoc side-by-side timing of the "numba" CPU backend against PyTorch (and OpenCV).

Not the benchmark suite (that lives under bench/): a quick check of the
ratios asked for in the numba backend's issue, measured in one process,
interleaved (fastconv, torch, fastconv, torch, ...) so the shared machine's
noise hits both alike; medians reported.  Every fastconv result is checked
against torch once before timing.

    python tools/measure_cpu.py [--group conv|dw|filter|pool|convt|all] [--reps 7]
        [--algorithms] [--threads 2] [--cpu-time] [--before-after]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time


def _threads_from_argv(default=2):
    """--threads, read before NumPy loads OpenBLAS (its pool size is fixed at load)."""
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return str(default)


for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _threads_from_argv())

import numpy as np  # noqa: E402

import fastconv as fc  # noqa: E402

# (name, N, C_in, C_out, H, W, k, stride, pad, groups)
CONV_LAYERS = [
    ("LeNet-5 C1", 256, 1, 6, 32, 32, 5, 1, 0, 1),
    ("LeNet-5 C3", 256, 6, 16, 14, 14, 5, 1, 0, 1),
    ("AlexNet conv1", 8, 3, 64, 224, 224, 11, 4, 2, 1),
    ("VGG-16 conv1_2", 1, 64, 64, 224, 224, 3, 1, 1, 1),
    ("VGG-16 conv3_2", 1, 256, 256, 56, 56, 3, 1, 1, 1),
    ("ResNet-50 1x1 256->64", 8, 256, 64, 56, 56, 1, 1, 0, 1),
    ("ResNet-50 3x3 64", 8, 64, 64, 56, 56, 3, 1, 1, 1),
    ("ResNet-50 3x3 s2", 8, 128, 128, 56, 56, 3, 2, 1, 1),
    ("ResNet-50 1x1 1024->256", 8, 1024, 256, 14, 14, 1, 1, 0, 1),
    ("ResNet-50 3x3 512", 8, 512, 512, 7, 7, 3, 1, 1, 1),
]
DW_LAYERS = [("MobileNet depthwise", 16, 32, 32, 112, 112, 3, 1, 1, 32)]
FILTERS = [(1024, 3), (1024, 5), (4096, 3), (4096, 5)]
# (name, N, C_in, C_out, H, W, k, stride, pad)
CONVT = [("convT 64->32 k4 s2 p1", 16, 64, 32, 28, 28, 4, 2, 1),
         ("convT 256->128 k2 s2", 16, 256, 128, 14, 14, 2, 2, 0)]
POOLS = [("max k2 s2", "max", dict(kernel_size=2, stride=2)),
         ("max k3 s2 p1", "max", dict(kernel_size=3, stride=2, padding=1)),
         ("avg k2 s2", "avg", dict(kernel_size=2, stride=2)),
         ("adaptive avg 7x7", "aavg", dict(output_size=7)),
         ("adaptive max 7x7", "amax", dict(output_size=7))]


def timeit(fn, reps):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


CLOCK = time.perf_counter


def side_by_side(fns, reps):
    """Median seconds of each callable, calls interleaved round by round."""
    for f in fns:
        f()  # warm-up (compilation, workspaces)
    times = [[] for _ in fns]
    for _ in range(reps):
        for i, f in enumerate(fns):
            t0 = CLOCK()
            f()
            times[i].append(CLOCK() - t0)
    return [float(np.median(t)) for t in times]


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def row(cells, widths):
    return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"


def conv_group(layers, reps, algorithms, torch, rng):
    import torch.nn.functional as F
    print("| layer | algorithm | fastconv ms | torch ms | ratio | GFLOP/s |")
    print("|---|---|---|---|---|---|")
    ratios = []
    for name, n, ci, co, h, w, k, s, pad, g in layers:
        x = rng.standard_normal((n, ci, h, w)).astype(np.float32)
        wt = rng.standard_normal((co, ci // g, k, k)).astype(np.float32)
        xt, wtt = torch.from_numpy(x), torch.from_numpy(wt)
        kw = dict(stride=s, padding=pad, groups=g)
        p, _ = fc.plan("conv2d", x, wt, None, backend="numba", **kw)
        algs = ["auto"] + (list(fc.registry.algorithms("conv2d", "numba")) if algorithms else [])
        ref = F.conv2d(xt, wtt, None, **kw).numpy()
        for alg in algs:
            out = fc.conv2d(x, wt, backend="numba", algorithm=alg, **kw)
            err = rel_err(out, ref)
            assert err < 1e-4, (name, alg, err)
            tf, tt = side_by_side([lambda: fc.conv2d(x, wt, backend="numba", algorithm=alg, **kw),
                                   lambda: F.conv2d(xt, wtt, None, **kw)], reps)
            label = alg if alg != "auto" else "auto=" + fc.registry.choose_algorithm(
                "conv2d", "numba", p).algorithm
            print(f"| {name} | {label} | {tf*1e3:.2f} | {tt*1e3:.2f} | {tf/tt:.2f} | "
                  f"{p.flops/tf/1e9:.0f} |", flush=True)
            if alg == "auto":
                ratios.append(tf / tt)
    print(f"geomean ratio (auto): {math.exp(np.mean(np.log(ratios))):.2f}, "
          f"max {max(ratios):.2f}\n")


def filter_group(reps, torch, rng):
    import torch.nn.functional as F
    try:
        import cv2
    except ImportError:
        cv2 = None
    print("| image filter | fastconv ms | torch ms | OpenCV ms | fc/cv2 | torch/fc |")
    print("|---|---|---|---|---|---|")
    for size, k in FILTERS:
        x = rng.standard_normal((1, 1, size, size)).astype(np.float32)
        wt = rng.standard_normal((1, 1, k, k)).astype(np.float32)
        xt, wtt = torch.from_numpy(x), torch.from_numpy(wt)
        ref = F.conv2d(xt, wtt, padding="same").numpy()
        assert rel_err(fc.conv2d(x, wt, padding="same", backend="numba"), ref) < 1e-5
        fns = [lambda: fc.conv2d(x, wt, padding="same", backend="numba"),
               lambda: F.conv2d(xt, wtt, padding="same")]
        if cv2 is not None:
            img, ker = x[0, 0], wt[0, 0]
            fns.append(lambda: cv2.filter2D(img, -1, ker, borderType=cv2.BORDER_CONSTANT))
        ts = side_by_side(fns, reps if size < 4096 else max(3, reps // 2))
        tcv = ts[2] if cv2 is not None else float("nan")
        print(f"| {size}^2 {k}x{k} | {ts[0]*1e3:.2f} | {ts[1]*1e3:.2f} | {tcv*1e3:.2f} | "
              f"{ts[0]/tcv:.2f} | {ts[1]/ts[0]:.1f} |", flush=True)
    print()


def convt_group(reps, algorithms, torch, rng, before_after=False):
    import torch.nn.functional as F
    print("| transposed conv | algorithm | fastconv ms | torch ms | ratio | GFLOP/s |")
    print("|---|---|---|---|---|---|")
    for name, n, ci, co, h, w, k, s, pad in CONVT:
        x = rng.standard_normal((n, ci, h, w)).astype(np.float32)
        wt = rng.standard_normal((ci, co, k, k)).astype(np.float32)
        xt, wtt = torch.from_numpy(x), torch.from_numpy(wt)
        kw = dict(stride=s, padding=pad)
        p, _ = fc.plan("conv_transpose2d", x, wt, None, backend="numba", **kw)
        ref = F.conv_transpose2d(xt, wtt, None, **kw).numpy()
        algs = ["auto"] + (list(fc.registry.algorithms("conv_transpose2d", "numba"))
                           if algorithms else [])
        for alg in algs:
            assert rel_err(fc.conv_transpose2d(x, wt, backend="numba", algorithm=alg, **kw),
                           ref) < 1e-4
            fns = [lambda: fc.conv_transpose2d(x, wt, backend="numba", algorithm=alg, **kw),
                   lambda: F.conv_transpose2d(xt, wtt, None, **kw)]
            if before_after and alg == "auto":
                fns.append(lambda: _gemm_col2im_v4(x, wt, kw))
                assert rel_err(fns[2](), ref) < 1e-4
            times = side_by_side(fns, reps)
            tf, tt = times[:2]
            print(f"| {name} | {alg} | {tf*1e3:.2f} | {tt*1e3:.2f} | {tf/tt:.2f} | "
                  f"{p.flops/tf/1e9:.0f} |", flush=True)
            if len(times) == 3:
                tb = times[2]
                print(f"| {name} | gemm, col2im v4 (before) | {tb*1e3:.2f} | {tt*1e3:.2f} | "
                      f"{tb/tt:.2f} | {p.flops/tb/1e9:.0f} |", flush=True)
    print()


def _gemm_col2im_v4(x, wt, kw):
    """The "gemm" transposed convolution with the stride-phase col2im switched off."""
    from fastconv.wrappers import numba_backend as nb
    saved = nb._use_phase_col2im
    nb._use_phase_col2im = lambda p, itemsize: False
    try:
        return fc.conv_transpose2d(x, wt, backend="numba", algorithm="gemm", **kw)
    finally:
        nb._use_phase_col2im = saved


def _pool_v1(kind, x, kw, idx):
    """The same pooling call through kernel version 1 (row-wise tap loops), for --before-after."""
    from fastconv import reference
    from fastconv.wrappers import numba_backend as nb
    k = nb._pool()
    op = {"max": "max_pool2d", "avg": "avg_pool2d", "amax": "adaptive_max_pool2d"}[kind]
    args = (kw["output_size"],) if kind == "amax" else ()
    extra = {} if kind == "amax" else kw
    if kind in ("max", "amax"):
        extra = dict(extra, return_indices=idx)
    p, _ = fc.plan(op, x, *args, backend="numba", **extra)
    out = np.empty(p.output_shape, x.dtype)
    ind = np.empty(p.output_shape if idx else (1, 1, 1, 1), np.int64)
    if kind == "max":
        k.max_pool2d_rows(x, out, ind, idx, *p.kernel, *p.stride, *p.padding, *p.dilation)
    elif kind == "amax":
        k.adaptive_max_pool2d_planes(x, out, ind, idx)
    else:
        div = np.ascontiguousarray(reference.avg_divisors(p), dtype=x.dtype)
        k.avg_pool2d_rows(x, out, div, *p.kernel, *p.stride, *p.padding)
    return (out, ind) if idx else out


def pool_group(reps, torch, rng, before_after=False):
    import torch.nn.functional as F
    x = rng.standard_normal((8, 64, 112, 112)).astype(np.float32)
    xt = torch.from_numpy(x)
    print("| pool 8x64x112x112 | fastconv ms | torch ms | ratio | fastconv GB/s | torch GB/s |")
    print("|---|---|---|---|---|---|")
    for name, kind, kw in POOLS:
        for idx in ([False, True] if kind in ("max", "amax") else [False]):
            if kind == "max":
                f1 = lambda: fc.max_pool2d(x, return_indices=idx, backend="numba", **kw)
                f2 = lambda: F.max_pool2d(xt, return_indices=idx, **kw)
            elif kind == "avg":
                f1 = lambda: fc.avg_pool2d(x, backend="numba", **kw)
                f2 = lambda: F.avg_pool2d(xt, **kw)
            elif kind == "amax":
                f1 = lambda: fc.adaptive_max_pool2d(x, kw["output_size"], return_indices=idx,
                                                    backend="numba")
                f2 = lambda: F.adaptive_max_pool2d(xt, kw["output_size"], return_indices=idx)
            else:
                f1 = lambda: fc.adaptive_avg_pool2d(x, kw["output_size"], backend="numba")
                f2 = lambda: F.adaptive_avg_pool2d(xt, kw["output_size"])
            a, b = f1(), f2()
            a0 = a[0] if isinstance(a, tuple) else a
            b0 = b[0].numpy() if isinstance(b, tuple) else b.numpy()
            assert rel_err(a0, b0) < 1e-5
            if idx:
                assert np.array_equal(a[1], b[1].numpy())
            nbytes = x.nbytes + a0.nbytes + (a0.size * 8 if idx else 0)
            fns = [f1, f2]
            if before_after and kind != "aavg":
                fns.append(lambda: _pool_v1(kind, x, kw, idx))
                c = fns[2]()
                c0 = c[0] if idx else c
                assert (rel_err(c0, a0) < 1e-5 if kind == "avg"
                        else np.array_equal(c0, a0, equal_nan=True))
            times = side_by_side(fns, reps)
            tf, tt = times[:2]
            label = name + (" +indices" if idx else "")
            print(f"| {label} | {tf*1e3:.2f} | {tt*1e3:.2f} | {tf/tt:.2f} | "
                  f"{nbytes/tf/1e9:.1f} | {nbytes/tt/1e9:.1f} |", flush=True)
            if len(times) == 3:
                tb = times[2]
                print(f"| {label}, kernel v1 (before) | {tb*1e3:.2f} | {tt*1e3:.2f} | "
                      f"{tb/tt:.2f} | {nbytes/tb/1e9:.1f} | {nbytes/tt/1e9:.1f} |", flush=True)
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", default="all", choices=["conv", "dw", "filter", "pool", "convt",
                                                       "all"])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--algorithms", action="store_true", help="also time every algorithm")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with the process CPU clock (robust on an overloaded machine; "
                         "meaningful with --threads 1, where it equals the work done)")
    ap.add_argument("--before-after", action="store_true",
                    help="convt: also time the GEMM path with its pre-v8 col2im; pool: also "
                         "time pooling kernel version 1; interleaved")
    args = ap.parse_args()
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    import numba
    import torch
    torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, numba {numba.__version__}, threads {args.threads}, "
          f"float32, medians of {args.reps}, "
          f"{'process CPU time' if args.cpu_time else 'wall time'}\n")
    g = args.group
    if g in ("conv", "all"):
        conv_group(CONV_LAYERS, args.reps, args.algorithms, torch, rng)
    if g in ("dw", "all"):
        conv_group(DW_LAYERS, args.reps, args.algorithms, torch, rng)
    if g in ("filter", "all"):
        filter_group(args.reps, torch, rng)
    if g in ("pool", "all"):
        pool_group(args.reps, torch, rng, args.before_after)
    if g in ("convt", "all"):
        convt_group(args.reps, args.algorithms, torch, rng, args.before_after)


if __name__ == "__main__":
    main()
