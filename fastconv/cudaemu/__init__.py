"""Run CUDA C kernels on the CPU, for tests of the very same ``.cu`` sources.

No package executes CUDA C on a CPU here (see ``shared/docs/gpu-testing.md``),
so this small emulator compiles a ``.cu`` source with g++ after
``cuda_emu.h`` (which maps ``__global__``, ``threadIdx``, ``__shared__``,
``__syncthreads()``... onto plain C++) and runs the kernels from Python with
the call shape of CuPy::

    mod = cudaemu.RawModule(code=src, options=("-std=c++17",),
                            name_expressions=["conv2d_direct<float, 0>"])
    kern = mod.get_function("conv2d_direct<float, 0>")
    kern((gx, gy, gz), (bx, by, bz), (x, w, y, np.int32(n)), shared_mem=0)

Arrays are C-contiguous NumPy arrays (passed as pointers); scalars are packed
exactly as ``cupy.RawKernel`` packs them (NumPy scalars by their dtype, Python
``int`` as int64, ``float`` as float64, ``bool`` as bool), and every argument
is checked against the kernel's parameter list: a wrong scalar width, which a
GPU would silently misread, raises ``TypeError`` here.

Templates are instantiated by name expressions as in CuPy: one ``extern "C"``
trampoline per name expression.  Builds go to a cache folder keyed by a hash
of the source, the headers and the flags (``FASTCONV_CUDAEMU_CACHE``, default
``~/.cache/fastconv/cudaemu``).

Threads of a block run as fibers (fast, deterministic) or, in sanitizer
builds, as OS threads: ``FASTCONV_CUDAEMU_SANITIZE=thread`` builds with
ThreadSanitizer (a missing ``__syncthreads`` is reported as a data race),
``=address`` with AddressSanitizer + UBSan (out-of-bounds global/shared
accesses).  The sanitizer runtime must be loaded before Python starts, so
sanitized runs happen in a child process: :func:`run_sanitized`.
``FASTCONV_CUDAEMU_THREADS=1`` uses OS threads without a sanitizer.

Limits: no warp intrinsics, no dynamic (``extern``) shared memory, no
atomics' memory model, no fp16, no timing; g++ accepts code NVRTC rejects,
so the NVRTC compile check stays necessary.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

import numpy as np

__all__ = ["RawModule", "RawKernel", "EmulationError", "available", "unavailable_reason",
           "sanitizer_mode", "run_sanitized", "sanitizer_findings", "HEADER_DIR"]

HEADER_DIR = os.path.dirname(os.path.abspath(__file__))
_HEADER = os.path.join(HEADER_DIR, "cuda_emu.h")
_RUNTIME = os.path.join(HEADER_DIR, "cuda_emu_runtime.h")
CXX = os.environ.get("CXX", "g++")
#: g++ -O1: the optimisation level the brief asks for (fast builds, still inlined loops).
BASE_FLAGS = ("-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", "-w")
SANITIZER_FLAGS = {
    None: (),
    "thread": ("-fsanitize=thread", "-g"),
    "address": ("-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"),
}
SANITIZER_LIBS = {"thread": "libtsan.so", "address": "libasan.so"}
_PARAM_KINDS = {1: "pointer", 2: "floating", 3: "integer"}
_MAX_PARAMS = 64


class EmulationError(RuntimeError):
    """The emulated launch failed (bad launch shape, divergent barrier, build error)."""


def unavailable_reason() -> str | None:
    """None when a C++20 compiler is present, else why the emulator cannot run."""
    if shutil.which(CXX) is None:
        return f"the CUDA emulator needs a C++20 compiler ({CXX!r} not found)"
    return None


def available() -> bool:
    return unavailable_reason() is None


def sanitizer_mode() -> str | None:
    """``FASTCONV_CUDAEMU_SANITIZE``: None, "thread" or "address"."""
    mode = os.environ.get("FASTCONV_CUDAEMU_SANITIZE") or None
    if mode not in SANITIZER_FLAGS:
        raise ValueError(f"FASTCONV_CUDAEMU_SANITIZE must be 'thread' or 'address', "
                         f"got {mode!r}")
    return mode


def _threads_mode(sanitize) -> bool:
    return sanitize is not None or os.environ.get("FASTCONV_CUDAEMU_THREADS") == "1"


def _cache_dir() -> str:
    root = os.environ.get("FASTCONV_CUDAEMU_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "fastconv", "cudaemu")
    os.makedirs(root, exist_ok=True)
    return root


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


_build_lock = threading.Lock()


def _build(source: str, flags: tuple, tag: str, link=()) -> str:
    """Compile ``source`` to a cached shared library; returns its path."""
    key = _digest(source, flags, link, _read(_HEADER), _read(_RUNTIME), CXX)
    out = os.path.join(_cache_dir(), f"{tag}-{key}.so")
    if os.path.exists(out):
        return out
    with _build_lock:
        if os.path.exists(out):
            return out
        fd, src_path = tempfile.mkstemp(suffix=".cpp", prefix=f"{tag}-", dir=_cache_dir())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(source)
        tmp_out = src_path[:-4] + ".so"
        cmd = [CXX, *flags, "-I", HEADER_DIR, src_path, *link, "-o", tmp_out]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise EmulationError(f"g++ failed to build the emulated module ({' '.join(cmd)}):\n"
                                 f"{proc.stderr[-6000:]}")
        os.replace(tmp_out, out)  # atomic: concurrent builders never see half a file
        os.unlink(src_path)
    return out


_runtimes: dict = {}


def _runtime(sanitize):
    """The launch runtime library of this build flavour (built once, loaded globally)."""
    threads = _threads_mode(sanitize)
    key = (sanitize, threads)
    if key not in _runtimes:
        flags = BASE_FLAGS + SANITIZER_FLAGS[sanitize] + (f"-DCUDA_EMU_THREADS={int(threads)}",)
        path = _build('#include "cuda_emu_runtime.h"\n', flags, "cudaemu-runtime")
        lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        lib.cuda_emu_last_error.restype = ctypes.c_char_p
        _runtimes[key] = (path, lib)
    return _runtimes[key]


def _trampolines(names) -> str:
    """One extern "C" launcher and one parameter describer per name expression."""
    out = ["\n// ---- emulator trampolines, one per name expression ----"]
    for i, name in enumerate(names):
        out.append(
            f'extern "C" int fcemu_launch_{i}(const unsigned* g, const unsigned* b, '
            f'void** a) {{ return cuda_emu::launch(&{name}, g, b, a); }}\n'
            f'extern "C" int fcemu_describe_{i}(long long* s, int* k) '
            f'{{ return cuda_emu::describe(&{name}, s, k); }}')
    return "\n".join(out) + "\n"


class RawModule:
    """CPU stand-in for ``cupy.RawModule(code=..., options=..., name_expressions=...)``.

    ``-D`` options are passed to g++; other NVRTC options are accepted and
    ignored.  ``sanitize`` defaults to ``FASTCONV_CUDAEMU_SANITIZE``.
    """

    def __init__(self, code: str, options=(), name_expressions=(), sanitize="env"):
        why = unavailable_reason()
        if why is not None:
            raise EmulationError(why)
        if sanitize == "env":
            sanitize = sanitizer_mode()
        self.sanitize = sanitize
        self.name_expressions = list(name_expressions)
        defines = tuple(o for o in options if o.startswith("-D"))
        runtime_path, self._runtime = _runtime(sanitize)
        threads = _threads_mode(sanitize)
        flags = (BASE_FLAGS + SANITIZER_FLAGS[sanitize] + defines
                 + (f"-DCUDA_EMU_THREADS={int(threads)}", "-include", _HEADER))
        source = ('#line 1 "kernel.cu"\n' + code + _trampolines(self.name_expressions))
        path = _build(source, flags, "cudaemu-module",
                      link=(runtime_path, f"-Wl,-rpath,{os.path.dirname(runtime_path)}"))
        self._lib = ctypes.CDLL(path)
        self._kernels = {}

    def get_function(self, name: str) -> "RawKernel":
        if name not in self._kernels:
            try:
                i = self.name_expressions.index(name)
            except ValueError:
                raise KeyError(f"{name!r} is not one of this module's name expressions "
                               f"{self.name_expressions}") from None
            self._kernels[name] = RawKernel(self, name, i)
        return self._kernels[name]


class RawKernel:
    """CPU stand-in for ``cupy.RawKernel``: ``kernel(grid, block, args, shared_mem=0)``."""

    def __init__(self, module: RawModule, name: str, index: int):
        self.module, self.name = module, name
        self._launch = getattr(module._lib, f"fcemu_launch_{index}")
        self._launch.restype = ctypes.c_int
        describe = getattr(module._lib, f"fcemu_describe_{index}")
        sizes = (ctypes.c_longlong * _MAX_PARAMS)()
        kinds = (ctypes.c_int * _MAX_PARAMS)()
        n = describe(sizes, kinds)
        self.params = [(int(sizes[i]), _PARAM_KINDS[kinds[i]]) for i in range(n)]

    def _pack(self, i, arg, size, kind):
        where = f"{self.name}: argument {i}"
        if isinstance(arg, np.ndarray):
            if kind != "pointer":
                raise TypeError(f"{where} is an array but the kernel takes a {size}-byte "
                                f"{kind} value")
            if not arg.flags.c_contiguous:
                raise ValueError(f"{where}: arrays passed to a kernel must be C-contiguous")
            return ctypes.c_void_p(arg.ctypes.data)
        if isinstance(arg, (bool, np.bool_)):
            value = np.bool_(arg)
        elif isinstance(arg, np.generic):
            value = arg
        elif isinstance(arg, int):
            value = np.int64(arg)       # as cupy.RawKernel packs a Python int
        elif isinstance(arg, float):
            value = np.float64(arg)     # as cupy.RawKernel packs a Python float
        else:
            raise TypeError(f"{where}: cannot pass {type(arg).__name__} to a kernel")
        vkind = "floating" if value.dtype.kind == "f" else "integer"
        if kind == "pointer" or vkind != kind or value.dtype.itemsize != size:
            raise TypeError(f"{where} is {value.dtype.name}, but the kernel parameter is a "
                            f"{size}-byte {kind} value: on a GPU it would be misread")
        return ctypes.create_string_buffer(value.tobytes(), size)

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        if shared_mem:
            raise EmulationError("dynamic shared memory is not emulated (shared_mem must be 0)")
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments, "
                            f"got {len(args)}")
        packed = [self._pack(i, a, s, k) for i, (a, (s, k)) in
                  enumerate(zip(args, self.params))]
        ptrs = (ctypes.c_void_p * max(1, len(packed)))(
            *[ctypes.cast(ctypes.byref(p) if isinstance(p, ctypes.c_void_p) else p,
                          ctypes.c_void_p) for p in packed])
        g = (ctypes.c_uint * 3)(*[int(v) for v in grid])
        b = (ctypes.c_uint * 3)(*[int(v) for v in block])
        keep = (args, packed)  # noqa: F841  (arrays and buffers alive during the launch)
        if self._launch(g, b, ptrs) != 0:
            msg = self.module._runtime.cuda_emu_last_error().decode()
            raise EmulationError(f"{self.name}: {msg}")


# --------------------------------------------------------------------------
# sanitizer runs (child process: the sanitizer runtime must be loaded first)
# --------------------------------------------------------------------------
_FINDING = re.compile(r"WARNING: ThreadSanitizer|ERROR: AddressSanitizer|runtime error:|"
                      r"ERROR: LeakSanitizer|SUMMARY: UndefinedBehaviorSanitizer")


def sanitizer_findings(text: str) -> list[str]:
    """Lines of sanitizer output that report a problem."""
    return [line for line in text.splitlines() if _FINDING.search(line)]


def run_sanitized(code: str, sanitizer: str, timeout: float = 600, env=None):
    """Run Python ``code`` in a child with the sanitizer runtime preloaded.

    Emulated modules built in the child use ``-fsanitize=<sanitizer>`` and OS
    threads.  Returns ``(returncode, output, findings)``.
    """
    if sanitizer not in SANITIZER_LIBS:
        raise ValueError(f"sanitizer must be one of {sorted(SANITIZER_LIBS)}, got {sanitizer!r}")
    lib = subprocess.run([CXX, f"-print-file-name={SANITIZER_LIBS[sanitizer]}"],
                         capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(lib) or not os.path.exists(lib):
        raise EmulationError(f"{SANITIZER_LIBS[sanitizer]} not found by {CXX}")
    child = dict(os.environ if env is None else env)
    child.update({
        "LD_PRELOAD": lib,
        "FASTCONV_CUDAEMU_SANITIZE": sanitizer,
        # Python itself is not instrumented and keeps memory until exit
        "ASAN_OPTIONS": "detect_leaks=0:allocator_may_return_null=1",
        "UBSAN_OPTIONS": "print_stacktrace=1",
        "TSAN_OPTIONS": "second_deadlock_stack=1",
    })
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=child, timeout=timeout)
    output = proc.stdout + proc.stderr
    return proc.returncode, output, sanitizer_findings(output)
