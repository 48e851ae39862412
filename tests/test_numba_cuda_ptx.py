"""Every numba-cuda kernel compiles to PTX for sm_80 and sm_90 (float32 and float64)
and ptxas reports no spills, no local-memory stack frame, and no float64
instruction in a float32 kernel.  Needs NVVM, NVRTC and ptxas, not a GPU; skips
with the reason when one is missing.  ``pytest -s`` prints the resource table;
``FASTCONV_PTX_REPORT=path.md`` also writes it to a file.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "tools"))
import ptx_report  # noqa: E402

_reason = ptx_report.toolchain_missing()
pytestmark = pytest.mark.skipif(_reason is not None, reason=f"PTX check skipped: {_reason}")


@pytest.fixture(scope="module")
def reports():
    return ptx_report.compile_all(ptx_report.ARCHES, ptx_report.DTYPES)


def test_every_kernel_compiles_for_sm80_and_sm90(reports):
    table = ptx_report.table(reports)
    print("\n" + table)
    path = os.environ.get("FASTCONV_PTX_REPORT")
    if path:
        with open(path, "w") as f:
            f.write("# numba-cuda kernels: ptxas -v resources\n\n" + table + "\n")
    names = {name for name, _, _ in ptx_report.kernel_specs("float32")}
    for arch in ptx_report.ARCHES:
        for dtype in ptx_report.DTYPES:
            got = {r.kernel for r in reports if r.arch == arch and r.dtype == dtype}
            assert got == names, f"sm_{arch} {dtype}: missing {names - got}"


def test_no_spills_or_local_memory(reports):
    bad = [f"{r.kernel} {r.dtype} sm_{r.arch}: stack {r.stack_frame_bytes} B, spills "
           f"{r.spill_stores_bytes}/{r.spill_loads_bytes} B"
           for r in reports if r.spill_stores_bytes or r.spill_loads_bytes
           or r.stack_frame_bytes]
    assert not bad, "\n".join(bad)


def test_no_float64_in_float32_kernels(reports):
    bad = [f"{r.kernel} sm_{r.arch}: {r.f64_instructions} f64 instructions"
           for r in reports if r.dtype == "float32" and r.f64_instructions]
    assert not bad, "\n".join(bad)
    # the detector itself: float64 kernels do show f64 arithmetic
    assert all(r.f64_instructions > 0 for r in reports
               if r.dtype == "float64" and not r.kernel.startswith("copy")), \
        "f64 detector found nothing in float64 kernels: the check would be vacuous"


def test_registers_within_hardware_limit(reports):
    assert all(0 < r.registers <= 255 for r in reports)
    # static shared memory stays within the 48 KiB a block gets without opt-in
    assert all(r.shared_static_bytes <= 48 * 1024 for r in reports)


def test_f64_detector_on_a_promoting_kernel():
    """A float32 kernel with ``x * 0.1`` (a float64 literal) must be flagged."""
    from numba import cuda, types

    def promote(x):
        i = cuda.grid(1)
        if i < x.shape[0]:
            x[i] = x[i] * 0.1

    ptx, _ = cuda.compile_ptx(promote, (types.Array(types.float32, 1, "C"),), cc=(9, 0))
    assert ptx_report.count_f64(ptx) > 0
