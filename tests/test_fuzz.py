"""Bounded differential fuzzing: every registered implementation against the reference.

Hypothesis draws valid configurations over the whole contract
(``fastconv.fuzz.cases``) and compares each available implementation with
the float64 NumPy reference; invalid configurations
(``fastconv.fuzz.invalid_cases``) must raise the contract's error, naming the
argument, identically on every registered backend.

Budget (2 busy cores): ``FASTCONV_FUZZ_EXAMPLES`` valid examples per CPU
implementation and op (default 50), small sizes.  GPU backends get
``FASTCONV_FUZZ_GPU_EXAMPLES`` (default 3, tiny shapes) unless a real GPU is
present, since they run under simulators here.  Read-only inputs compile an
extra Numba specialization per kernel, so the CI draw leaves them out and
:func:`test_readonly_inputs` covers them once per implementation.  The long
run is ``python -m fastconv.fuzz --minutes N``.
"""
import os
import subprocess
import sys
import zlib
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

import fastconv as fc  # noqa: E402
import fastconv.dense  # noqa: E402,F401  (registers the dense baseline)
from fastconv import fuzz, registry  # noqa: E402

from conftest import implementation_params  # noqa: E402

# NaN/Inf inputs are drawn on purpose: their arithmetic warnings are expected
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

EXAMPLES = int(os.environ.get("FASTCONV_FUZZ_EXAMPLES", "50"))
GPU_EXAMPLES = int(os.environ.get("FASTCONV_FUZZ_GPU_EXAMPLES", "3"))
CI_LAYOUTS = tuple(lay for lay in fuzz.LAYOUTS if lay != "readonly")


def _settings(n):
    return settings(max_examples=n, deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much,
                                           HealthCheck.function_scoped_fixture])


def _fuzz_params(op):
    """Every registered implementation of ``op`` except the oracle itself."""
    return [p for p in implementation_params(op) if p.values[0].key != f"{op}/numpy/direct"]


def _run(impl, case):
    try:
        fuzz.check(case, impl)
    except fuzz.Unsupported:
        pass  # the implementation declines this case (supports rule, dtype, known issue)


def _budget(impl):
    """(examples, size, batch) for this implementation's device."""
    if registry.get_backend(impl.backend).device == "cuda" and not fuzz.native_gpu():
        return GPU_EXAMPLES, 5, 1
    return EXAMPLES, 9, 3


def _fuzz_test(op):
    @pytest.mark.parametrize("impl", _fuzz_params(op))
    def test(impl):
        n, size, batch = _budget(impl)

        @_settings(n)
        @given(case=fuzz.cases(op, size=size, max_batch=batch, layouts=CI_LAYOUTS))
        def run(case):
            _run(impl, case)
        run()
    test.__name__ = f"test_fuzz_{op}"
    test.__doc__ = f"{op}: random valid configurations, every implementation vs the reference."
    return test


test_fuzz_conv2d = _fuzz_test("conv2d")
test_fuzz_conv_transpose2d = _fuzz_test("conv_transpose2d")
test_fuzz_max_pool2d = _fuzz_test("max_pool2d")
test_fuzz_avg_pool2d = _fuzz_test("avg_pool2d")
test_fuzz_adaptive_avg_pool2d = _fuzz_test("adaptive_avg_pool2d")
test_fuzz_adaptive_max_pool2d = _fuzz_test("adaptive_max_pool2d")


@pytest.mark.parametrize("op", registry.OPS)
def test_fuzz_invalid_arguments_same_error_on_every_backend(op):
    """Broken configurations raise the contract's TypeError/ValueError naming the argument,
    with the same type and message on every registered backend, available or not
    (arguments are checked before a backend is resolved)."""
    backends = [be.name for be in registry.all_backends()]

    @_settings(max(10, EXAMPLES))
    @given(inv=fuzz.invalid_cases(op))
    def run(inv):
        seen = {be: fuzz.check_invalid(inv, be) for be in backends}
        first = seen[backends[0]]
        for be, exc in seen.items():
            assert type(exc) is type(first) and str(exc) == str(first), (
                f"{inv.what}: {be} raised {type(exc).__name__}({exc}) but {backends[0]} "
                f"raised {type(first).__name__}({first})")
    run()


@pytest.mark.parametrize("impl", [p for op in registry.OPS for p in _fuzz_params(op)])
@pytest.mark.parametrize("values", fuzz.VALUES)
def test_readonly_inputs(impl, values):
    """Read-only input and weight (np.broadcast_to results, read-only memmaps)."""
    if registry.get_backend(impl.backend).device == "cuda" and not fuzz.native_gpu() \
            and values != "normal":
        pytest.skip("GPU backend under a simulator: one value family is enough")
    src = fuzz.RandomSource(zlib.crc32(f"{impl.key}/{values}".encode()))
    for _ in range(3):
        case = fuzz.draw_case(src, impl.op, size=6, max_batch=2, layouts=("readonly",))
        case = replace(case, values=values, dtype="float32")
        _run(impl, case)


def test_generator_covers_the_contract():
    """The drawn configurations reach every padding form, mode, layout, value family,
    the pooling flags, unbatched inputs and empty batches."""
    seen = set()
    src = fuzz.RandomSource(12345)
    for _ in range(3000):
        case = fuzz.draw_case(src)
        kw = case.kwargs
        seen.add(("op", case.op))
        seen.add(("layout", case.layout))
        seen.add(("values", case.values))
        seen.add(("dtype", case.dtype))
        seen.add(("rank", len(case.input_shape)))
        if len(case.input_shape) == 4 and case.input_shape[0] == 0:
            seen.add("empty batch")
        if case.op == "conv2d":
            pad = kw.get("padding", 0)
            seen.add(("padding", pad if isinstance(pad, str) else type(pad).__name__))
            seen.add(("mode", kw.get("padding_mode", "zeros")))
            if kw.get("groups", 1) > 1:
                seen.add("groups")
            if kw.get("dilation", 1) != 1:
                seen.add("dilation")
            if case.bias:
                seen.add("bias")
        for flag in ("ceil_mode", "return_indices", "count_include_pad", "divisor_override",
                     "output_padding"):
            if flag in kw:
                seen.add(flag)
        if case.op.startswith("adaptive") and isinstance(case.args[0], tuple) \
                and None in case.args[0]:
            seen.add("adaptive None")
    want = ({("op", op) for op in registry.OPS} | {("layout", lay) for lay in fuzz.LAYOUTS}
            | {("values", v) for v in fuzz.VALUES} | {("dtype", d) for d in fuzz.DTYPES}
            | {("rank", 3), ("rank", 4), "empty batch", "groups", "dilation", "bias",
               "ceil_mode", "return_indices", "count_include_pad", "divisor_override",
               "output_padding", "adaptive None"}
            | {("padding", p) for p in ("int", "tuple", "same", "valid")}
            | {("mode", m) for m in ("zeros", "reflect", "replicate", "circular")})
    assert want <= seen, f"never drawn: {sorted(map(str, want - seen))}"


def test_layouts_hold_the_same_values():
    """Every layout is a different memory arrangement of the same values."""
    case = fuzz.case_from_seed(7, op="conv2d")
    base = fuzz.make_arrays(replace(case, layout="C"))[0]
    for layout in fuzz.LAYOUTS:
        x = fuzz.make_arrays(replace(case, layout=layout))[0]
        np.testing.assert_array_equal(x, base)
    assert not fuzz.make_arrays(replace(case, layout="strided"))[0].flags.contiguous
    x = fuzz.make_arrays(replace(case, layout="negative"))[0]
    assert min(x.strides) < 0
    assert fuzz.make_arrays(replace(case, layout="F"))[0].flags.f_contiguous


def test_check_catches_a_wrong_implementation():
    """The checker itself fails on a wrong answer, a wrong index and a modified input."""
    case = fuzz.Case(op="max_pool2d", input_shape=(1, 2, 6, 6), args=(2,),
                     kwargs={"return_indices": True}, values="normal", data_seed=3)

    def shifted(x, p):  # max pool that returns the window's last element's index
        y, i = fc.max_pool2d(x, 2, return_indices=True, backend="numpy")
        return y, i + 1

    def scribbler(x, p):
        out = fc.max_pool2d(x.copy(), 2, return_indices=True, backend="numpy")
        x[...] = 0
        return out

    for fn, words in ((shifted, "indices"), (scribbler, "input modified")):
        impl = registry.Implementation("max_pool2d", "numpy", "direct", fn, "test")
        with pytest.raises(AssertionError, match=words):
            fuzz.check(case, impl)


def test_dense_baseline_keeps_non_finite_values_local():
    """Once a reported bug: a dense product spreads 0 * Inf = NaN over the whole image."""
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 0, 0] = np.inf
    w = np.ones((1, 1, 2, 2), np.float32)
    ref = fc.conv2d(x, w, backend="numpy")
    out = fc.conv2d(x, w, backend="numpy", algorithm="dense")
    assert np.isinf(ref[0, 0, 0, 0]) and np.isfinite(ref[0, 0, 1:, 1:]).all()
    np.testing.assert_array_equal(out, ref)


def test_long_run_script_prints_counts_and_replays(tmp_path):
    """``python -m fastconv.fuzz`` runs, counts cases, and ``--replay`` reruns one."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    run = subprocess.run([sys.executable, "-m", "fastconv.fuzz", "--cases", "40",
                          "--backend", "numpy", "--seed", "11"], capture_output=True,
                         text=True, timeout=300, env=env)
    assert "40 cases" in run.stdout, run.stdout + run.stderr
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " 0 wrong" in run.stdout
    seed = fuzz._case_seed(11, 0)
    rep = subprocess.run([sys.executable, "-m", "fastconv.fuzz", "--replay", str(seed),
                          "--backend", "numpy"], capture_output=True, text=True, timeout=300,
                         env=env)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert repr(fuzz.case_from_seed(seed)) in rep.stdout or "InvalidCase" in rep.stdout


def test_import_fastconv_does_not_import_hypothesis():
    code = ("import sys, fastconv, fastconv.fuzz; fastconv.backends(); "
            "assert 'hypothesis' not in sys.modules, 'hypothesis imported'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr


def test_fuzz_gpu_backends_under_simulators():
    """The GPU backends, run on this machine's simulators (numba-cuda: NUMBA_ENABLE_CUDASIM;
    cupy: the CUDA C emulator, FASTCONV_CUPY_EMULATE), get a few cases of every op in a
    child process (both switches must be set before the backends are imported)."""
    if fuzz.native_gpu():
        pytest.skip("a real GPU is present: the GPU backends are fuzzed natively above")
    env = dict(os.environ, FASTCONV_CUPY_EMULATE="1", NUMBA_ENABLE_CUDASIM="1",
               PYTHONWARNINGS="ignore")
    cases = 2 * len(registry.OPS) if EXAMPLES < 100 else 10 * len(registry.OPS)
    run = subprocess.run([sys.executable, "-m", "fastconv.fuzz", "--cases", str(cases),
                          "--cycle-ops", "--size", "5", "--invalid-share", "0",
                          "--backend", "cupy", "--backend", "numba-cuda"],
                         capture_output=True, text=True, timeout=900, env=env)
    out = run.stdout + run.stderr
    if "no available implementation selected" in out:
        pytest.skip("no GPU backend can run under a simulator here: " + out[-500:])
    assert run.returncode == 0, out[-4000:]
    assert f"{cases} cases" in out and " 0 wrong" in out, out[-4000:]
