"""Compile every numba-cuda kernel to PTX and report registers, shared memory and spills.

No GPU is needed: ``numba.cuda.compile_ptx`` (NVVM) emits PTX for each
kernel with float32 and float64 signatures (the very signatures the backend
launches: C-contiguous arrays, int64 scalars), ``ptxas -arch=sm_XX -v``
assembles it and reports resources.  Checks: no spills, no local-memory
stack frame (a ``cuda.local.array`` that was not
promoted to registers), and no ``.f64`` instruction
in a float32 kernel (an accidental promotion such as ``x * 0.1``).

Usage::

    python tools/ptx_report.py [--arch 80 90] [--json out.json]

Kernels whose compilation needs the current device (those calling
``@cuda.jit(device=True)`` functions, in numba-cuda 0.30) are compiled with a
stand-in device object reporting the target compute capability.  Must not
run under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass

ARCHES = (80, 90)
DTYPES = ("float32", "float64")


@dataclass
class KernelReport:
    kernel: str
    dtype: str
    arch: int
    registers: int
    shared_static_bytes: int
    stack_frame_bytes: int
    spill_stores_bytes: int
    spill_loads_bytes: int
    f64_instructions: int
    ptx_lines: int

    @property
    def ok(self) -> bool:
        return (self.spill_stores_bytes == 0 and self.spill_loads_bytes == 0
                and self.stack_frame_bytes == 0  # local arrays left in local memory
                and (self.dtype != "float32" or self.f64_instructions == 0))


def toolchain_missing():
    """None if compile_ptx and ptxas can run here, else the reason."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return "NUMBA_ENABLE_CUDASIM=1: the simulator has no compile_ptx"
    if shutil.which("ptxas") is None and not os.path.exists("/usr/local/cuda/bin/ptxas"):
        return "ptxas not found (install the CUDA toolkit or put ptxas on PATH)"
    try:
        from numba import cuda  # noqa: F401
        from numba.cuda.cudadrv import nvvm
        nvvm.NVVM()
    except Exception as exc:  # noqa: BLE001
        return f"numba-cuda / NVVM unavailable: {type(exc).__name__}: {exc}"
    try:
        from numba.cuda.cudadrv import nvrtc
        nvrtc._get_nvrtc_version()
    except Exception as exc:  # noqa: BLE001
        return f"NVRTC unavailable: {type(exc).__name__}: {exc}"
    return None


def _ptxas():
    return shutil.which("ptxas") or "/usr/local/cuda/bin/ptxas"


class _FakeDevice:
    def __init__(self, cc):
        self.compute_capability = cc
        self.id = 0
        self.name = b"fake"


@contextlib.contextmanager
def _fake_current_device(cc):
    """numba-cuda asks the driver for the current device when linking device functions."""
    from numba.cuda import dispatcher
    saved = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: _FakeDevice(cc)
    try:
        yield
    finally:
        dispatcher.get_current_device = saved


def kernel_specs(dtype: str):
    """(name, python function, signature) for every kernel the backend launches."""
    from numba import types

    from fastconv.kernels import cuda_conv, cuda_layout, cuda_pool
    from fastconv.wrappers.numba_cuda_backend import GPU_TILES as t

    T = types.float32 if dtype == "float32" else types.float64
    a4 = types.Array(T, 4, "C")
    a3 = types.Array(T, 3, "C")
    a2 = types.Array(T, 2, "C")
    a1 = types.Array(T, 1, "C")
    i4 = types.Array(types.int64, 4, "C")
    i = types.int64
    b = types.boolean
    specs = []
    for mode_name, mode in cuda_conv.PAD_MODES.items():
        k = cuda_conv.conv2d_direct_kernel(dtype, mode, *t.direct)
        specs.append((f"conv2d_direct[{mode_name}]", k.py_func,
                      (a4, a4, a1, a4, b) + (i,) * 19))
        k = cuda_conv.im2col_kernel(dtype, mode)
        specs.append((f"im2col[{mode_name}]", k.py_func, (a4, a2) + (i,) * 14))
    # depthwise (one output channel per group): OCB shrinks to 1
    tx, ty, ry, ocb = t.direct
    k = cuda_conv.conv2d_direct_kernel(dtype, 0, tx, ty, ry, 1)
    specs.append(("conv2d_direct[zeros,ocb=1]", k.py_func, (a4, a4, a1, a4, b) + (i,) * 19))
    # small output maps (e.g. 7x7): TX=8, RY=2
    k = cuda_conv.conv2d_direct_kernel(dtype, 0, 8, ty, 2, ocb)
    specs.append(("conv2d_direct[zeros,8x8]", k.py_func, (a4, a4, a1, a4, b) + (i,) * 19))
    k = cuda_conv.conv_transpose2d_gather_kernel(dtype, t.transpose[0], t.transpose[1], 1)
    specs.append(("conv_transpose2d_gather[ocb=1]", k.py_func,
                  (a4, a4, a1, a4, b) + (i,) * 17))
    k = cuda_conv.conv_gemm_kernel(dtype, *t.gemm)
    specs.append(("conv_gemm", k.py_func, (a2, a2, a1, a3, b) + (i,) * 6))
    k = cuda_conv.conv_transpose2d_gather_kernel(dtype, *t.transpose)
    specs.append(("conv_transpose2d_gather", k.py_func, (a4, a4, a1, a4, b) + (i,) * 17))
    for with_idx in (False, True):
        k = cuda_pool.max_pool2d_kernel(dtype, with_idx)
        specs.append((f"max_pool2d[idx={with_idx}]", k.py_func, (a4, a4, i4) + (i,) * 12))
        k = cuda_pool.adaptive_max_pool2d_kernel(dtype, with_idx)
        specs.append((f"adaptive_max_pool2d[idx={with_idx}]", k.py_func,
                      (a4, a4, i4) + (i,) * 4))
    k = cuda_pool.avg_pool2d_kernel(dtype)
    specs.append(("avg_pool2d", k.py_func, (a4, a4) + (i,) * 10 + (b, i)))
    k = cuda_pool.adaptive_avg_pool2d_kernel(dtype)
    specs.append(("adaptive_avg_pool2d", k.py_func, (a4, a4) + (i,) * 4))
    # layout copies: strided ("A") source, C-contiguous destination
    specs.append(("copy4d", cuda_layout.copy4d.py_func,
                  (types.Array(T, 4, "A"), a4)))
    specs.append(("copy1d", cuda_layout.copy1d.py_func,
                  (types.Array(T, 1, "A"), a1)))
    return specs


_F64 = re.compile(r"^\s*[a-z][\w.]*\.f64\b", re.M)      # an instruction operating on f64
_CVT64 = re.compile(r"^\s*cvt\.[\w.]*f64", re.M)         # conversions to/from f64


def count_f64(ptx: str) -> int:
    """Instructions that compute in or convert to/from float64 (declarations excluded)."""
    body = "\n".join(line for line in ptx.splitlines()
                     if not line.lstrip().startswith((".reg", "//", ".param", ".local")))
    return len(set(m.start() for m in _F64.finditer(body)) |
               set(m.start() for m in _CVT64.finditer(body)))


def ptxas_info(ptx: str, arch: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        proc = subprocess.run([_ptxas(), f"-arch=sm_{arch}", "-v", path, "-o",
                               os.path.join(tmp, "k.cubin")],
                              capture_output=True, text=True, timeout=120)
    if proc.returncode:
        raise RuntimeError(f"ptxas failed: {proc.stderr.strip()}")
    text = proc.stdout + proc.stderr

    def num(pattern, default=0):
        m = re.search(pattern, text)
        return int(m.group(1)) if m else default

    return {"registers": num(r"Used (\d+) registers"),
            "shared_static_bytes": num(r"(\d+) bytes smem"),
            "stack_frame_bytes": num(r"(\d+) bytes stack frame"),
            "spill_stores_bytes": num(r"(\d+) bytes spill stores"),
            "spill_loads_bytes": num(r"(\d+) bytes spill loads")}


def compile_all(arches=ARCHES, dtypes=DTYPES):
    from numba import cuda
    reports = []
    for arch in arches:
        cc = (arch // 10, arch % 10)
        for dtype in dtypes:
            for name, fn, sig in kernel_specs(dtype):
                with _fake_current_device(cc):
                    ptx, _ = cuda.compile_ptx(fn, sig, cc=cc)
                info = ptxas_info(ptx, arch)
                reports.append(KernelReport(kernel=name, dtype=dtype, arch=arch,
                                            f64_instructions=count_f64(ptx),
                                            ptx_lines=ptx.count("\n"), **info))
    return reports


def table(reports) -> str:
    head = ("| kernel | dtype | sm | regs | smem static B | stack B | spill st/ld B | "
            ".f64 instr | ok |")
    lines = [head, "|" + "---|" * 9]
    for r in reports:
        lines.append(f"| {r.kernel} | {r.dtype} | {r.arch} | {r.registers} | "
                     f"{r.shared_static_bytes} | {r.stack_frame_bytes} | "
                     f"{r.spill_stores_bytes}/{r.spill_loads_bytes} | {r.f64_instructions} | "
                     f"{'yes' if r.ok else 'NO'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, nargs="+", default=list(ARCHES))
    ap.add_argument("--json", help="write the reports as JSON here")
    args = ap.parse_args(argv)
    why = toolchain_missing()
    if why:
        print(f"cannot compile: {why}", file=sys.stderr)
        return 2
    reports = compile_all(args.arch)
    print(table(reports))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) | {"ok": r.ok} for r in reports], f, indent=1)
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
