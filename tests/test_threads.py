"""Thread safety of every CPU path.

* Steady state: several Python threads call each CPU implementation at once,
  on different inputs, and every result is bitwise identical to the serial
  result of the same call.
* First use: in a fresh interpreter, the first calls of every CPU
  implementation happen concurrently in several threads: registry loading,
  backend probes, lazy kernel-module imports, Numba dispatcher creation and
  compilation (or cache loading), per-thread workspaces.  Results must be
  bitwise identical to the same calls made serially afterwards and to the
  parent process's results.  ``FASTCONV_SLOW_TESTS=1`` repeats this with an
  empty Numba cache directory, so that compilation itself is concurrent.
"""
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading

import numpy as np
import pytest

import fastconv.dense  # noqa: F401  (registers the dense baseline)
from fastconv import fuzz, registry

THREADS = 4
ROUNDS = 3

#: One moderately sized case per op (large enough that parallel regions overlap).
CASES = {
    "conv2d": fuzz.Case(op="conv2d", input_shape=(2, 6, 24, 20), weight_shape=(8, 3, 3, 3),
                        bias=True, kwargs={"padding": 1, "groups": 2}, values="special"),
    "conv_transpose2d": fuzz.Case(op="conv_transpose2d", input_shape=(2, 4, 12, 10),
                                  weight_shape=(4, 3, 4, 4), bias=True,
                                  kwargs={"stride": 2, "padding": 1}, values="normal"),
    "max_pool2d": fuzz.Case(op="max_pool2d", input_shape=(2, 5, 24, 21), args=(3,),
                            kwargs={"stride": 2, "padding": 1, "ceil_mode": True,
                                    "return_indices": True}, values="special"),
    "avg_pool2d": fuzz.Case(op="avg_pool2d", input_shape=(2, 5, 24, 21), args=(3,),
                            kwargs={"stride": 2, "padding": 1, "ceil_mode": True,
                                    "count_include_pad": False}, values="normal"),
    "adaptive_avg_pool2d": fuzz.Case(op="adaptive_avg_pool2d", input_shape=(2, 5, 23, 19),
                                     args=((5, 7),), values="normal"),
    "adaptive_max_pool2d": fuzz.Case(op="adaptive_max_pool2d", input_shape=(2, 5, 23, 19),
                                     args=((5, 7),), kwargs={"return_indices": True},
                                     values="special"),
}


def _cpu_impls():
    out = []
    for impl in registry.implementations():
        be = registry.get_backend(impl.backend)
        if be.device != "cpu":
            continue
        reason = be.unavailable_reason()
        marks = [pytest.mark.skip(reason=f"backend {be.name}: {reason}")] if reason else []
        out.append(pytest.param(impl, id=impl.key, marks=marks))
    return out


def _bits(result):
    outs = result if isinstance(result, tuple) else (result,)
    return tuple(np.ascontiguousarray(o).tobytes() for o in outs)


def _supported(impl, case):
    try:
        reason = impl.unsupported_reason(fuzz.parse_case(case))
    except Exception as exc:  # noqa: BLE001
        reason = str(exc)
    if reason is not None:
        pytest.skip(f"{impl.key} does not run the thread case: {reason}")


@pytest.mark.parametrize("impl", _cpu_impls())
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_concurrent_calls_match_serial_bitwise(impl):
    case = CASES[impl.op]
    _supported(impl, case)
    inputs = []
    for k in range(THREADS * 2):
        for dtype in ("float32", "float64"):
            c = fuzz.replace(case, dtype=dtype, data_seed=100 + k,
                             layout=fuzz.LAYOUTS[k % 5])  # C, F, strided, negative, transposed
            inputs.append((c, fuzz.make_arrays(c)))
    if impl.algorithm == "dense":
        inputs = inputs[:4]  # the dense baseline rebuilds its matrix for every new weight
    serial = [_bits(fuzz.call(c, impl.backend, impl.algorithm, a, impl)) for c, a in inputs]

    errors = []
    barrier = threading.Barrier(THREADS)

    def worker(t):
        try:
            barrier.wait()
            order = np.random.default_rng(t).permutation(len(inputs))
            for _ in range(ROUNDS):
                for i in order:
                    c, a = inputs[i]
                    got = _bits(fuzz.call(c, impl.backend, impl.algorithm, a, impl))
                    if got != serial[i]:
                        errors.append(f"thread {t}: input {i} ({c.dtype}, {c.layout}) differs "
                                      f"from the serial result")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"thread {t}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), f"{impl.key}: a thread hangs"
    assert not errors, f"{impl.key}: " + "; ".join(errors[:5])


CHILD = textwrap.dedent("""
    import json, sys, threading, warnings
    warnings.simplefilter("ignore", RuntimeWarning)
    import numpy as np
    import fastconv, fastconv.registry as registry
    assert not registry._loaded, "the registry was loaded before the threads started"
    from fastconv import fuzz   # imports api/registry modules, does not load the backends
    import tests_threads_cases as cases_mod
    CASES = cases_mod.CASES
    THREADS = int(sys.argv[1])
    barrier = threading.Barrier(THREADS)
    results, errors = {}, []

    def worker(t):
        try:
            barrier.wait()
            import fastconv.dense   # concurrent first registration of the dense baseline
            impls = [i for i in registry.implementations()
                     if registry.get_backend(i.backend).device == "cpu"
                     and registry.get_backend(i.backend).available]
            order = np.random.default_rng(t).permutation(len(impls))
            for k in order:
                impl = impls[k]
                case = CASES[impl.op]
                if impl.unsupported_reason(fuzz.parse_case(case)) is not None:
                    continue
                for dtype in ("float32", "float64"):
                    c = fuzz.replace(case, dtype=dtype)
                    out = fuzz.call(c, impl.backend, impl.algorithm, fuzz.make_arrays(c), impl)
                    outs = out if isinstance(out, tuple) else (out,)
                    results.setdefault((impl.key, dtype), []).append(
                        [np.ascontiguousarray(o).tobytes().hex() for o in outs])
        except BaseException as exc:
            import traceback
            errors.append(f"thread {t}: {traceback.format_exc()}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for t in threads: t.start()
    for t in threads: t.join()
    # the same calls, serially, after everything is loaded
    serial = {}
    for impl in registry.implementations():
        if registry.get_backend(impl.backend).device != "cpu" or \\
                not registry.get_backend(impl.backend).available:
            continue
        case = CASES[impl.op]
        if impl.unsupported_reason(fuzz.parse_case(case)) is not None:
            continue
        for dtype in ("float32", "float64"):
            c = fuzz.replace(case, dtype=dtype)
            out = fuzz.call(c, impl.backend, impl.algorithm, fuzz.make_arrays(c), impl)
            outs = out if isinstance(out, tuple) else (out,)
            serial["|".join((impl.key, dtype))] = [np.ascontiguousarray(o).tobytes().hex()
                                                  for o in outs]
    for (key, dtype), runs in results.items():
        for r in runs:
            if r != serial["|".join((key, dtype))]:
                errors.append(f"{key} {dtype}: a concurrent first call differs from serial")
        if len(runs) != THREADS:
            errors.append(f"{key} {dtype}: {len(runs)} of {THREADS} threads returned")
    json.dump({"errors": errors, "serial": serial}, sys.stdout)
""")


def _first_use_in_fresh_process(tmp_path, env_extra):
    (tmp_path / "tests_threads_cases.py").write_text(
        "from fastconv import fuzz\n"
        "CASES = " + "{" + ", ".join(f"{k!r}: fuzz.{c!r}" for k, c in CASES.items()) + "}\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH",
                                                                                   ""))
    env.update(env_extra)
    run = subprocess.run([sys.executable, "-c", CHILD, str(THREADS)], capture_output=True,
                         text=True, timeout=1200, env=env, cwd=tmp_path)
    assert run.returncode == 0, f"child exit {run.returncode}\n{run.stderr[-4000:]}"
    report = json.loads(run.stdout)
    assert not report["errors"], "\n".join(report["errors"][:5])
    # and the child's results equal this process's (same arrays, same kernels)
    import warnings
    checked = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for key, hexes in report["serial"].items():
            impl_key, dtype = key.split("|")
            op, backend, algorithm = impl_key.split("/")
            impl = registry.lookup(op, backend, algorithm)
            c = fuzz.replace(CASES[op], dtype=dtype)
            out = fuzz.call(c, backend, algorithm, fuzz.make_arrays(c), impl)
            assert [b.hex() for b in _bits(out)] == hexes, f"{key}: differs across processes"
            checked += 1
    assert checked >= 2 * len(CASES), f"only {checked} implementation/dtype pairs ran"


def test_first_use_is_concurrent_safe_in_a_fresh_process(tmp_path):
    _first_use_in_fresh_process(tmp_path, {})


@pytest.mark.skipif(not os.environ.get("FASTCONV_SLOW_TESTS"),
                    reason="set FASTCONV_SLOW_TESTS=1: compiles every kernel from scratch")
def test_first_use_with_empty_numba_cache(tmp_path):
    with tempfile.TemporaryDirectory() as cache:
        _first_use_in_fresh_process(tmp_path, {"NUMBA_CACHE_DIR": cache})
