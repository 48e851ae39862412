"""The one table of (op, backend, algorithm) -> implementation.

Tests, benchmarks and reports iterate over this registry, so a kernel is
tested and benchmarked by being registered here.  Backend modules in
:mod:`fastconv.backends` register themselves when first needed; they import
their heavy dependencies (Numba, CuPy) only inside the implementation
functions, so building the registry needs nothing but NumPy.

Calling conventions (arrays are the backend's native kind, 4-D, already
checked; ``p`` is the ``*Params`` record from :mod:`fastconv.arguments`):

* ``conv2d``, ``conv_transpose2d``: ``fn(x, weight, bias_or_None, p) -> y``
* ``max_pool2d``, ``adaptive_max_pool2d``: ``fn(x, p) -> y`` or ``(y, indices)``
  when ``p.return_indices``
* ``avg_pool2d``, ``adaptive_avg_pool2d``: ``fn(x, p) -> y``
"""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field
from typing import Callable, Optional

__all__ = ["OPS", "Backend", "Implementation", "BackendUnavailableError", "register_backend",
           "register", "register_chooser", "get_backend", "all_backends", "implementations",
           "lookup", "choose_algorithm", "backends"]

OPS = ("conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
       "adaptive_max_pool2d")

#: Backend modules, imported (cheaply) the first time the registry is read.
BACKEND_MODULES = (
    "fastconv.wrappers.numpy_backend",
    "fastconv.dense",
    "fastconv.wrappers.numba_backend",
    "fastconv.wrappers.numba_cuda_backend",
    "fastconv.wrappers.cupy_backend",
)


#: The order backends are listed in (reports, tables), whatever order they were imported in.
BACKEND_ORDER = ("numpy", "numba", "numba-cuda", "cupy")


def _backend_rank(name: str):
    return (BACKEND_ORDER.index(name) if name in BACKEND_ORDER else len(BACKEND_ORDER), name)


class BackendUnavailableError(RuntimeError):
    """A backend or algorithm was asked for that cannot run here or for this case."""


@dataclass
class Backend:
    """A family of implementations sharing one device and array kind.

    ``device`` is "cpu" or "cuda"; ``native`` is the array kind the
    implementations take ("numpy", "cupy" or "numba").  ``probe`` returns
    None when the backend can run here, otherwise the reason it cannot; it is
    called once and cached.
    """
    name: str
    device: str
    native: str
    description: str
    probe: Callable[[], Optional[str]]
    dtypes: tuple[str, ...] = ("float32", "float64")
    _reason: object = field(default=None, repr=False)
    _probed: bool = field(default=False, repr=False)

    def unavailable_reason(self) -> Optional[str]:
        if not self._probed:
            try:
                self._reason = self.probe()
            except Exception as exc:  # a probe must never take the caller down
                self._reason = f"{type(exc).__name__}: {exc}"
            self._probed = True
        return self._reason

    @property
    def available(self) -> bool:
        return self.unavailable_reason() is None

    def reset(self):
        """Forget the cached probe (tests that change the environment use this)."""
        self._probed = False
        self._reason = None


@dataclass(frozen=True)
class Implementation:
    """One registered kernel: what it computes and whether it can run a case.

    ``supports(params)`` returns None if the implementation can run that
    case, otherwise a reason string.
    """
    op: str
    backend: str
    algorithm: str
    fn: Callable
    description: str
    supports: Optional[Callable] = None

    def unsupported_reason(self, params) -> Optional[str]:
        return self.supports(params) if self.supports is not None else None

    @property
    def key(self) -> str:
        return f"{self.op}/{self.backend}/{self.algorithm}"


_lock = threading.RLock()
_backends: dict[str, Backend] = {}
_impls: dict[tuple[str, str, str], Implementation] = {}
_choosers: dict[tuple[str, str], Callable] = {}
_loaded = False


def register_backend(backend: Backend) -> Backend:
    with _lock:
        _backends[backend.name] = backend
    return backend


def register(op: str, backend: str, algorithm: str, description: str,
             supports: Optional[Callable] = None):
    """Decorator registering ``fn`` as ``(op, backend, algorithm)``."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; ops are {OPS}")
    if algorithm == "auto":
        raise ValueError("'auto' is chosen by register_chooser, not registered")

    def deco(fn):
        with _lock:
            _impls[(op, backend, algorithm)] = Implementation(op, backend, algorithm, fn,
                                                              description, supports)
        return fn
    return deco


def register_chooser(op: str, backend: str):
    """Decorator registering ``fn(params) -> algorithm`` as the "auto" rule."""
    def deco(fn):
        with _lock:
            _choosers[(op, backend)] = fn
        return fn
    return deco


def _load():
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        for mod in BACKEND_MODULES:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as exc:
                if exc.name != mod:  # a real import error inside the module
                    raise
        _loaded = True


def get_backend(name: str) -> Backend:
    _load()
    if not isinstance(name, str) or name not in _backends:
        raise ValueError(f"unknown backend {name!r}; backends are "
                         f"{sorted(_backends)} (or 'auto')")
    return _backends[name]


def has_backend(name: str) -> bool:
    _load()
    return name in _backends


def all_backends() -> list[Backend]:
    _load()
    return sorted(_backends.values(), key=lambda b: _backend_rank(b.name))


#: (number of registrations, implementations sorted by backend rank): every op
#: call resolves through :func:`implementations`, and sorting each time cost
#: about 40 us of a 200 us call on small images.  Registrations only add.
_SORTED: tuple = (-1, [])


def _sorted_impls() -> list:
    global _SORTED
    count, items = _SORTED
    if count != len(_impls):
        items = sorted(_impls.items(), key=lambda kv: _backend_rank(kv[0][1]))  # stable sort
        _SORTED = (len(_impls), items)
    return items


def implementations(op: Optional[str] = None, backend: Optional[str] = None,
                    available_only: bool = False) -> list[Implementation]:
    """Registered implementations, optionally filtered, in registration order."""
    _load()
    out = []
    for (o, b, _a), impl in _sorted_impls():
        if (op is None or o == op) and (backend is None or b == backend):
            if available_only and not _backends[b].available:
                continue
            out.append(impl)
    return out


def algorithms(op: str, backend: str) -> list[str]:
    return [i.algorithm for i in implementations(op, backend)]


def lookup(op: str, backend: str, algorithm: str) -> Implementation:
    """The implementation, or a ValueError naming what is registered."""
    _load()
    be = get_backend(backend)
    if not isinstance(algorithm, str):
        raise TypeError(f"{op}: algorithm must be a string, got {algorithm!r}")
    impl = _impls.get((op, be.name, algorithm))
    if impl is None:
        known = algorithms(op, be.name)
        raise ValueError(f"{op}: backend {be.name!r} has no algorithm {algorithm!r}; it has "
                         f"{known or 'none for this op'} (or 'auto')")
    return impl


def choose_algorithm(op: str, backend: str, params) -> Implementation:
    """Apply the backend's "auto" rule, falling back to the first that supports the case."""
    _load()
    candidates = implementations(op, backend)
    if not candidates:
        raise BackendUnavailableError(f"{op}: backend {backend!r} implements no algorithm "
                                      f"for this op")
    chooser = _choosers.get((op, backend))
    if chooser is not None:
        impl = _impls.get((op, backend, chooser(params)))
        if impl is not None and impl.unsupported_reason(params) is None:
            return impl
    reasons = []
    for impl in candidates:
        reason = impl.unsupported_reason(params)
        if reason is None:
            return impl
        reasons.append(f"{impl.algorithm}: {reason}")
    raise BackendUnavailableError(f"{op}: no algorithm of backend {backend!r} can run this "
                                  f"case ({'; '.join(reasons)})")


def backends() -> list[dict]:
    """Each backend with whether it is available here and, if not, why.

    Returns a list of dicts ``{"name", "device", "available", "reason",
    "description", "ops"}`` where ``ops`` maps each op to its algorithms.
    """
    rows = []
    for be in all_backends():
        reason = be.unavailable_reason()
        ops = {op: algorithms(op, be.name) for op in OPS if algorithms(op, be.name)}
        rows.append({"name": be.name, "device": be.device, "available": reason is None,
                     "reason": reason, "description": be.description, "dtypes": be.dtypes,
                     "ops": ops})
    return rows
