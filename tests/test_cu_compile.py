"""Every kernels/*.cu file and every specialization the cupy backend launches compiles
with NVRTC (the compiler CuPy uses) for sm_80 and sm_90, and ptxas reports no spills.

CuPy's own compile path needs a device, so NVRTC is called directly through
``cupy_backends.cuda.libs.nvrtc`` with CuPy-like options
(``-arch=compute_XX -std=c++17``); the PTX then goes through
``ptxas -arch=sm_XX -v``.  The registers, shared memory, stack and spills of
every kernel are printed (run with ``-s`` to see the table) and checked:
no spills, no local stack, static shared memory within the 48 KB a block may
declare, and registers within what the launch bounds allow.  The GEMM
specializations with vector loads must really contain vector loads.
"""
import glob
import os
import re
import shutil
import subprocess
import time

import pytest

from fastconv.wrappers import cupy_backend as cb

nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc",
                            reason="NVRTC bindings (cupy) not installed")
PTXAS = shutil.which("ptxas") or ("/usr/local/cuda/bin/ptxas"
                                  if os.path.exists("/usr/local/cuda/bin/ptxas") else None)
ARCHS = (80, 90)
DTYPES = ("float32", "float64")
STATIC_SMEM_LIMIT = 48 * 1024
REGISTER_FILE = 64 * 1024
THREADS = {"conv2d_direct": 128, "conv2d_im2col": 256, "conv2d_gemm": 256,
           "conv2d_implicit_gemm": 256, "conv_transpose2d_gather": 256, "max_pool2d": 256,
           "avg_pool2d": 256, "adaptive_avg_pool2d": 256, "adaptive_max_pool2d": 256}


def _nvrtc_compile(filename, dtype, arch):
    """PTX of ``filename`` with every specialization for ``dtype``; {name: lowered}."""
    try:
        nvrtc.getVersion()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"libnvrtc cannot be loaded: {exc}")
    names = cb.specializations(filename, dtype)
    prog = nvrtc.createProgram(cb.kernel_source(filename), filename, [], [])
    try:
        for name in names:
            nvrtc.addNameExpression(prog, name)
        options = [f"-arch=compute_{arch}", *cb.NVRTC_OPTIONS]
        try:
            nvrtc.compileProgram(prog, options)
        except nvrtc.NVRTCError as exc:
            raise AssertionError(f"NVRTC rejected {filename} ({dtype}, {options}):\n"
                                 f"{nvrtc.getProgramLog(prog)}") from exc
        ptx = nvrtc.getPTX(prog)
        lowered = {name: nvrtc.getLoweredName(prog, name) for name in names}
    finally:
        nvrtc.destroyProgram(prog)
    return (ptx.decode() if isinstance(ptx, bytes) else ptx), lowered


_PTXAS_ENTRY = re.compile(r"Compiling entry function '(\S+)' for 'sm_(\d+)'")
_PTXAS_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                          r"(\d+) bytes spill loads")
_PTXAS_USE = re.compile(r"Used (\d+) registers.*?(?:, (\d+) bytes smem)?$")


def _ptxas(ptx, arch, tmp_path):
    """{mangled name: {registers, smem, stack, spill_stores, spill_loads}} from ptxas -v."""
    src = tmp_path / f"k_sm{arch}.ptx"
    src.write_text(ptx)
    proc = subprocess.run([PTXAS, f"-arch=sm_{arch}", "-v", str(src), "-o", os.devnull],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    info, current = {}, None
    for line in proc.stderr.splitlines():
        m = _PTXAS_ENTRY.search(line)
        if m:
            current = m.group(1)
            info[current] = {}
            continue
        m = _PTXAS_SPILL.search(line)
        if m and current:
            info[current].update(stack=int(m.group(1)), spill_stores=int(m.group(2)),
                                 spill_loads=int(m.group(3)))
        m = _PTXAS_USE.search(line)
        if m and current:
            info[current].update(registers=int(m.group(1)), smem=int(m.group(2) or 0))
    return info


def test_every_cu_file_is_compiled_by_the_backend():
    from fastconv.kernels import SOURCE_DIR
    on_disk = sorted(os.path.basename(p) for p in glob.glob(os.path.join(SOURCE_DIR, "*.cu")))
    assert on_disk, "no .cu files found"
    assert sorted(cb.SOURCES) == on_disk


@pytest.mark.skipif(PTXAS is None, reason="ptxas (CUDA toolkit) not installed")
@pytest.mark.parametrize("arch", ARCHS, ids=[f"sm_{a}" for a in ARCHS])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("filename", cb.SOURCES)
def test_nvrtc_compiles_and_ptxas_reports_no_spills(filename, dtype, arch, tmp_path):
    t0 = time.perf_counter()
    ptx, lowered = _nvrtc_compile(filename, dtype, arch)
    info = _ptxas(ptx, arch, tmp_path)
    print(f"\n{filename} {dtype} sm_{arch}: NVRTC+ptxas {time.perf_counter() - t0:.1f} s")
    print(f"  {'kernel':<58} {'regs':>4} {'smem':>6} {'stack':>5} {'spill st/ld':>11}")
    problems = []
    for name, mangled in lowered.items():
        assert mangled in info, f"{name} ({mangled}) missing from the ptxas output"
        k = info[mangled]
        print(f"  {name:<58} {k['registers']:>4} {k['smem']:>6} {k['stack']:>5} "
              f"{k['spill_stores']:>5}/{k['spill_loads']:<5}")
        threads = THREADS[name.split("<")[0]]
        if k["spill_stores"] or k["spill_loads"]:
            problems.append(f"{name}: spills {k['spill_stores']}/{k['spill_loads']} bytes")
        if k["stack"]:
            problems.append(f"{name}: {k['stack']} bytes of local stack")
        if k["smem"] > STATIC_SMEM_LIMIT:
            problems.append(f"{name}: {k['smem']} bytes of static shared memory")
        if k["registers"] * threads > REGISTER_FILE:
            problems.append(f"{name}: {k['registers']} registers x {threads} threads")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("dtype", DTYPES)
def test_vectorized_gemm_specializations_emit_vector_loads(dtype):
    ptx, lowered = _nvrtc_compile("conv2d.cu", dtype, 90)
    vec = cb._VEC[dtype]
    suffix = {"float32": "f32", "float64": "f64"}[dtype]
    bodies = {}
    for chunk in ptx.split(".entry ")[1:]:
        bodies[chunk.split("(", 1)[0].strip()] = chunk
    t = cb._CTYPE[dtype]
    wide = bodies[lowered[cb.gemm_name(t, vec, vec)]]
    narrow = bodies[lowered[cb.gemm_name(t, 1, 1)]]
    pattern = re.compile(rf"ld\.global(?:\.nc)?\.v{vec}\.(?:{suffix}|b{suffix[1:]}|u{suffix[1:]})")
    assert pattern.search(wide), f"no v{vec} global loads in {cb.gemm_name(t, vec, vec)}"
    assert not pattern.search(narrow)
