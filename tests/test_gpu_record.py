"""The GPU session's record (fastconv.perf.gpu_record) and its script (tools/gpu_run.sh),
checked on the CPU with synthetic JUnit XML and benchmark files in the real formats.

No GPU figure is produced here: every time below is made up by the test.
"""
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from fastconv.perf import gpu_record as gr
from fastconv.perf import records, runners, timing
from fastconv.perf.suite import cases

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "gpu_run.sh")


def _gpu_visible() -> bool:
    if os.path.exists("/dev/nvidia0"):
        return True
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    res = subprocess.run([smi, "-L"], capture_output=True, text=True)
    return res.returncode == 0 and "GPU " in res.stdout


# --------------------------------------------------------------------------
# git-compatible tree hash and the source identity
# --------------------------------------------------------------------------
def _git(*args, cwd):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_tree_hash_equals_git(tmp_path):
    repo = tmp_path / "repo"
    (repo / "kernels" / "sub").mkdir(parents=True)
    (repo / "kernels" / "a.cu").write_text("__global__ void k() {}\n")
    (repo / "kernels" / "a.cuh").write_text("// header\n")   # sorts after 'a.cu'
    (repo / "kernels" / "sub" / "x.py").write_text("x = 1\n")
    (repo / "kernels" / "sub-file").write_text("dash sorts before slash\n")
    run = repo / "kernels" / "run.sh"
    run.write_text("#!/bin/sh\n")
    run.chmod(0o755)
    _git("init", "-q", cwd=repo)
    _git("add", "kernels", cwd=repo)
    _git("commit", "-q", "-m", "t", cwd=repo)
    want = _git("rev-parse", "HEAD:kernels", cwd=repo)
    # build outputs present on a device copy are not part of the commit
    (repo / "kernels" / "__pycache__").mkdir()
    (repo / "kernels" / "__pycache__" / "a.cpython-312.pyc").write_bytes(b"\0")
    (repo / "kernels" / "sub" / "k.nbi").write_bytes(b"\0")
    assert gr.git_tree_hash(str(repo / "kernels")) == want
    (repo / "kernels" / "a.cu").write_text("__global__ void k() { }\n")
    assert gr.git_tree_hash(str(repo / "kernels")) != want


def test_source_identity_from_environment_without_git(tmp_path):
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "k.cu").write_text("// k\n")
    tree = gr.git_tree_hash(str(tmp_path / "kernels"))
    env = {"FASTCONV_COMMIT": "c" * 40, "FASTCONV_KERNELS_TREE": tree}
    got = gr.source_identity(str(tmp_path), env)
    assert got["commit"] == "c" * 40 and got["source"] == "environment"
    assert got["kernels_tree"] == tree and got["kernels_match"] is True
    got = gr.source_identity(str(tmp_path), dict(env, FASTCONV_KERNELS_TREE="f" * 40))
    assert got["kernels_match"] is False
    got = gr.source_identity(str(tmp_path), {})
    assert got["commit"] is None and got["kernels_match"] is None
    assert got["source"].startswith("unavailable")


# --------------------------------------------------------------------------
# JUnit XML (pytest --junitxml, xunit2)
# --------------------------------------------------------------------------
JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">
<testsuite name="pytest" errors="1" failures="2" skipped="2" tests="8" time="12.5"
 timestamp="2026-11-22T15:00:00" hostname="gpu">
<testcase classname="tests.test_backends" name="test_conv2d_matches_reference[bias-a-conv2d/cupy/direct]" time="0.1" />
<testcase classname="tests.test_backends" name="test_conv2d_matches_reference[bias-b-conv2d/cupy/direct]" time="0.1">
<failure message="AssertionError: conv2d/cupy/direct rel error 3e-2 &gt; 1e-5">def test...
E   AssertionError</failure></testcase>
<testcase classname="tests.test_backends" name="test_max_pool2d_exact[x-max_pool2d/numba-cuda/direct]" time="0.2">
<skipped type="pytest.skip" message="max_pool2d/numba-cuda/direct does not run this case">skip</skipped></testcase>
<testcase classname="tests.gpu_sim.test_numba_cuda_kernels" name="test_gpu_tiles_conv2d[float32-direct]" time="1.0" />
<testcase classname="tests.gpu_sim.test_numba_cuda_kernels" name="test_grid_stride" time="1.0">
<error message="failed on setup with &quot;CudaAPIError: 700&quot;">setup trace</error></testcase>
<testcase classname="tests.test_api.TestErrors" name="test_bad[cupy]" time="0.0">
<failure message="ValueError not raised">trace</failure></testcase>
<testcase classname="tests.test_api.TestErrors" name="test_ok" time="0.0">
<skipped type="pytest.skip" message="no">skip</skipped></testcase>
<testcase classname="tests.test_api" name="test_plain" time="0.0" />
<testcase time="0.000" />
</testsuite></testsuites>
"""


def test_parse_junit_counts_per_file_and_failures(tmp_path):
    p = tmp_path / "junit-gpu.xml"
    p.write_text(JUNIT)
    got = gr.parse_junit(str(p))
    assert got["files"] == {
        "tests/test_backends.py": dict(passed=1, failed=1, errors=0, skipped=1),
        "tests/gpu_sim/test_numba_cuda_kernels.py": dict(passed=1, failed=0, errors=1,
                                                         skipped=0),
        "tests/test_api.py": dict(passed=1, failed=1, errors=0, skipped=1),
    }
    t = got["totals"]
    assert (t["passed"], t["failed"], t["errors"], t["skipped"]) == (3, 2, 1, 2)
    assert t["interrupted"] == 1 and t["time_s"] == 12.5   # the nameless case SIGINT leaves
    names = [f["test"] for f in got["failures"]]
    assert names == [
        "tests/test_backends.py::test_conv2d_matches_reference[bias-b-conv2d/cupy/direct]",
        "tests/gpu_sim/test_numba_cuda_kernels.py::test_grid_stride",
        "tests/test_api.py::test_bad[cupy]"]
    assert got["failures"][0]["message"] == ("AssertionError: conv2d/cupy/direct rel error "
                                             "3e-2 > 1e-5")
    assert got["failures"][1]["kind"] == "error" and "CudaAPIError" in got["failures"][1]["message"]


def test_parse_junit_uses_file_attribute(tmp_path):
    p = tmp_path / "j.xml"
    p.write_text('<testsuite name="pytest" time="1"><testcase classname="x.y" name="t" '
                 'file="tests/deep/test_z.py" /></testsuite>')
    assert list(gr.parse_junit(str(p))["files"]) == ["tests/deep/test_z.py"]


def test_parse_sanitizer_log(tmp_path):
    p = tmp_path / "sanitizer-memcheck.log"
    p.write_text("========= COMPUTE-SANITIZER\n....\n"
                 "========= Invalid __global__ write of size 4 bytes\n"
                 "=========     at conv2d_direct+0x1c0\n"
                 "12 passed, 3 deselected in 40.1s\n"
                 "========= ERROR SUMMARY: 1 error\n")
    got = gr.parse_sanitizer_log(str(p))
    assert got["errors"] == 1 and got["hazards"] is None
    assert "========= ERROR SUMMARY: 1 error" in got["summary"]
    assert any(s.startswith("12 passed") for s in got["summary"])
    assert any("Invalid __global__ write" in s for s in got["summary"])
    p.write_text("========= RACECHECK SUMMARY: 2 hazards displayed (2 errors, 0 warnings)\n")
    assert gr.parse_sanitizer_log(str(p))["hazards"] == 2


# --------------------------------------------------------------------------
# benchmark files in the real format (fastconv.perf.records), times made up
# --------------------------------------------------------------------------
IMPLS = {  # label -> (backend, algorithm, role)
    "numba-cuda/direct": ("numba-cuda", "direct", "fastconv"),
    "numba-cuda/im2col": ("numba-cuda", "im2col", "fastconv"),
    "cupy/direct": ("cupy", "direct", "fastconv"),
    "cupy/implicit-gemm": ("cupy", "implicit-gemm", "fastconv"),
    "torch-cuda": (None, None, "peer"),
}
CEIL = {"device": "cuda", "gemm_gflops": 50000.0, "copy_gbs": 3000.0, "gemm_n": 4096,
        "ridge_flops_per_byte": 50000.0 / 3000.0, "name": "made-up GPU"}


def _entry(case, label, median):
    backend, algorithm, role = IMPLS.get(label, (label.split("/")[0], "direct", "fastconv"))
    r = runners.Runner(label, role, "cuda", None, backend, algorithm)
    params = runners.case_params(case)
    # a tight spread of made-up rounds around the median
    st = timing.stats([median * 0.99, median, median * 1.01])
    info = records.extra_info(case, r, params, st["median"], 1e-7, CEIL, "cupy/direct",
                              "made-up GPU (GPU)")
    return records.benchmark_record(f"{case.id} | {label}", case.group, st, info,
                                    {"case": case.id, "impl": label})


def _write_bench(path, times):
    """times: {case id: {impl label: median seconds}} over the GPU suite's cases."""
    by_id = {c.id: c for c in cases("gpu")}
    benches = [_entry(by_id[cid], label, t) for cid, row in times.items()
               for label, t in row.items()]
    doc = records.run_document(benches, {"cpu": "x", "cores": 16, "gpu": "made-up GPU"},
                               {"suite": "gpu", "quick": True, "ceilings": {"cuda": CEIL},
                                "skipped": ["ResNet-50 conv2 1x1 N=32 | cupy/im2col: no"],
                                "failed": ["VGG-16 conv1_2 N=16 | numba-cuda/im2col: WRONG"],
                                "command": "python -m fastconv.perf bench --suite gpu"})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f)
    return doc


RESNET = [c.id for c in cases("gpu", "ResNet-50")]
# per ResNet layer: cuDNN 1 ms; numba-cuda best 1.5, 2, 2, 3, 4 ms; cupy best 1, 1.1, 1.2, 1.3, 2
NC = [1.5, 2.0, 2.0, 3.0, 4.0]
CP = [1.0, 1.1, 1.2, 1.3, 2.0]


def _resnet_times():
    return {cid: {"torch-cuda": 1e-3, "numba-cuda/direct": NC[i] * 1e-3,
                  "numba-cuda/im2col": NC[i] * 1.5e-3, "cupy/direct": CP[i] * 2e-3,
                  "cupy/implicit-gemm": CP[i] * 1e-3} for i, cid in enumerate(RESNET)}


def _other_times():
    dw = [c.id for c in cases("gpu", "depthwise")][0]
    pools = [c.id for c in cases("gpu", "pool")]
    out = {dw: {"torch-cuda": 2e-3, "cupy/direct": 1.8e-3, "numba-cuda/direct": 5e-3}}
    for p in pools:
        out[p] = {"torch-cuda": 1e-4, "cupy/direct": 8e-5, "numba-cuda/direct": 2e-4}
    return out


def test_bench_figures_ratios_geomeans_and_targets(tmp_path):
    a = tmp_path / "bench-resnet50" / "results.json"
    b = tmp_path / "bench-dwpool" / "results.json"
    _write_bench(str(a), _resnet_times())
    _write_bench(str(b), _other_times())
    fig = gr.bench_figures([str(a), str(b)], copy_gbs=2500.0)
    assert len(RESNET) == 5 and fig["resnet50_cases"] == sorted(RESNET)
    rows = {r["case"]: r for r in fig["layers"]}
    r0 = rows[RESNET[0]]
    assert r0["cudnn_s"] == pytest.approx(1e-3)
    assert r0["best"]["numba-cuda"]["impl"] == "numba-cuda/direct"
    assert r0["best"]["cupy"]["impl"] == "cupy/implicit-gemm"
    assert r0["best"]["numba-cuda"]["vs_cudnn"] == pytest.approx(1.5)
    g_nc = math.prod(NC) ** (1 / 5)
    g_cp = math.prod(CP) ** (1 / 5)
    c = fig["checks"]
    assert c["resnet50_geomean_numba-cuda"]["value"] == pytest.approx(g_nc)
    assert c["resnet50_geomean_numba-cuda"]["pass"] is (g_nc <= 2.0)
    assert c["resnet50_geomean_cupy"]["value"] == pytest.approx(g_cp)
    assert c["resnet50_geomean_cupy"]["pass"] is False      # 1.29 > 1.25
    assert c["resnet50_geomean_cupy"]["complete"] is True
    assert c["depthwise_cupy"]["value"] == pytest.approx(0.9) and c["depthwise_cupy"]["pass"]
    # pooling: bytes / time against the measured copy bandwidth
    pool = [r for r in fig["layers"] if r["op"] == "max_pool2d"][0]
    want = 100 * pool["bytes"] / 8e-5 / 1e9 / 2500.0
    assert pool["best"]["cupy"]["pct_copy"] == pytest.approx(want)
    key = f"pooling {pool['case']} cupy"
    assert c[key]["value"] == pytest.approx(want)
    assert c[key]["pass"] is (want >= 60) and c[key]["pass_80"] is (want >= 80)
    assert fig["failed"] == ["VGG-16 conv1_2 N=16 | numba-cuda/im2col: WRONG"] * 2
    # without a measured copy bandwidth, the bench's own ceiling is used
    fig2 = gr.bench_figures([str(b)])
    assert fig2["copy_gbs"] == 3000.0


def test_geomean_incomplete_when_a_layer_is_missing(tmp_path):
    times = _resnet_times()
    del times[RESNET[2]]["cupy/direct"], times[RESNET[2]]["cupy/implicit-gemm"]
    p = tmp_path / "bench-a" / "results.json"
    _write_bench(str(p), times)
    c = gr.bench_figures([str(p)])["checks"]["resnet50_geomean_cupy"]
    assert c["complete"] is False and c["pass"] is None and c["layers"] == 4
    assert c["missing"] == [RESNET[2]]


# --------------------------------------------------------------------------
# the whole record from a work folder, and the merge of two calls
# --------------------------------------------------------------------------
def _work(tmp_path, kernels_tree_env="t" * 40):
    w = tmp_path / "work"
    w.mkdir()
    vers = {"date": "2026-11-23T10:00:00Z",
            "versions": {"python": "3.12.3", "cupy": "14.2.0", "torch": "2.11.0",
                         "cudnn": 91000, "driver": "580.159.04"},
            "device": {"name": "made-up GPU", "compute_capability": "9.0"}, "errors": {},
            "backends": [{"name": "cupy", "device": "cuda", "available": True, "reason": None},
                         {"name": "numba-cuda", "device": "cuda", "available": False,
                          "reason": "no driver"}],
            "source": {"commit": "a" * 40, "kernels_tree": kernels_tree_env,
                       "kernels_tree_worktree": "w" * 40, "kernels_match": False}}
    (w / "versions.json").write_text(json.dumps(vers))
    (w / "steps.tsv").write_text("step\tstatus\trc\tseconds\tbudget_s\tnote\n"
                                 "versions\tok\t0\t3\t90\t\n"
                                 "gputests\tfailed\t1\t100\t240\t\n"
                                 "suite\tskipped\t\t0\t600\tout of time (12s left)\n")
    (w / "junit-gpu.xml").write_text(JUNIT)
    (w / "sanitizer-memcheck.log").write_text("========= ERROR SUMMARY: 0 errors\n")
    (w / "copybw.json").write_text(json.dumps({
        "copy_gbs": 2500.0, "repeat": 50, "copy_kernel": {"gbs": 2400.0},
        "memcpy_d2d": {"gbs": 2500.0}}))
    _write_bench(str(w / "bench-resnet50" / "results.json"), _resnet_times())
    return w


def test_assemble_writes_record_and_summary(tmp_path):
    w = _work(tmp_path)
    out = tmp_path / "out"
    assert gr.main(["assemble", "--work", str(w), "--out", str(out)]) == 0
    rec = json.loads((out / "record.json").read_text())
    for key in ("date", "device", "versions", "commit", "kernels_tree", "tests", "bench"):
        assert rec[key], key
    assert rec["device"] == "made-up GPU" and rec["commit"] == "a" * 40
    assert rec["kernels_tree"] == "t" * 40 and rec["dry_run"] is False
    assert rec["tests_total"] == dict(passed=3, failed=2, errors=1, skipped=2)
    assert rec["tests"]["gpu"]["files"]["tests/test_api.py"]["failed"] == 1
    assert rec["sanitizer"]["memcheck"]["errors"] == 0
    assert rec["bench"]["copy_gbs"] == 2500.0
    geo = rec["bench"]["checks"]["resnet50_geomean_cupy"]["value"]
    assert geo == pytest.approx(math.prod(CP) ** 0.2)
    assert [s["status"] for s in rec["steps"]] == ["ok", "failed", "skipped"]
    warn = " | ".join(rec["warnings"])
    assert "kernels/ on the device differs" in warn
    assert "numba-cuda unavailable" in warn and "step gputests: failed" in warn
    md = (out / "summary.md").read_text()
    assert "made-up GPU" in md and "resnet50_geomean_cupy" in md
    assert "test_grid_stride" in md and "ERROR SUMMARY: 0 errors" in md


def test_merge_two_calls(tmp_path):
    w = _work(tmp_path)
    a = gr.assemble(str(w))
    os.remove(w / "junit-gpu.xml")
    b = gr.assemble(str(w))
    b["tests"] = {"rest": {"totals": dict(passed=5, failed=0, errors=0, skipped=1),
                           "files": {}, "failures": []}}
    b["commit"] = "b" * 40
    m = gr.merge([a, b])
    assert set(m["tests"]) == {"gpu", "rest"}
    assert m["tests_total"] == dict(passed=8, failed=2, errors=1, skipped=3)
    assert any("commit differs" in x for x in m["warnings"])
    path = tmp_path / "m.json"
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert gr.main(["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o",
                    str(path)]) == 0
    assert json.loads(path.read_text())["tests_total"]["passed"] == 8
    assert (tmp_path / "m.md").exists()


def test_device_command_is_short_and_carries_the_identity():
    cmd = gr.device_command("tests")
    assert len(cmd) < 2000 and cmd.endswith("bash tools/gpu_run.sh tests")
    assert re.match(r"FASTCONV_COMMIT=\S+ FASTCONV_KERNELS_TREE=\S+ ", cmd)


# --------------------------------------------------------------------------
# the script
# --------------------------------------------------------------------------
def _env(tmp_path, **extra):
    env = dict(os.environ, PYTHON=sys.executable, FASTCONV_GPU_WORK=str(tmp_path / "work"),
               PYTHONWARNINGS="ignore")
    env.pop("OUT", None)
    env.update(extra)
    return env


def test_script_syntax():
    assert subprocess.run(["bash", "-n", SCRIPT]).returncode == 0


def test_bench_chunks_cover_the_gpu_suite_once():
    text = open(SCRIPT).read()
    block = re.search(r"BENCH_CHUNKS=\((.*?)\)", text, re.S).group(1)
    chunks = re.findall(r'"([^":]+):([^":]+):(\d+)"', block)
    assert chunks
    seen = {}
    for name, filt, _t in chunks:
        for c in cases("gpu", filt):
            seen.setdefault(c.id, []).append(name)
    assert set(seen) == {c.id for c in cases("gpu")}
    assert all(len(v) == 1 for v in seen.values()), seen
    assert sum(int(t) for _n, _f, t in chunks) <= 480


@pytest.mark.skipif(_gpu_visible(), reason="a GPU is visible here")
def test_script_refuses_without_a_gpu(tmp_path):
    run = subprocess.run(["bash", SCRIPT, "--out", str(tmp_path / "out"), "tests"],
                         capture_output=True, text=True, timeout=60, env=_env(tmp_path))
    assert run.returncode == 3
    assert "no GPU visible" in run.stderr and "--dry-run" in run.stderr
    assert not (tmp_path / "out" / "record.json").exists()


def test_script_rejects_unknown_arguments(tmp_path):
    run = subprocess.run(["bash", SCRIPT, "--dry-run", "benchmark"], capture_output=True,
                         text=True, timeout=60, env=_env(tmp_path))
    assert run.returncode == 2 and "unknown argument" in run.stderr


def _check_out_folder(out):
    files = sorted(os.listdir(out))
    assert len(files) <= 8      # the device tool brings back at most 8 files
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files)
    assert all(os.path.isfile(os.path.join(out, f)) for f in files)
    return files


@pytest.mark.skipif(_gpu_visible(), reason="a GPU is visible here")
def test_dry_run_walks_every_step_quickly(tmp_path):
    out = tmp_path / "out"
    t0 = time.perf_counter()
    run = subprocess.run(["bash", SCRIPT, "--dry-run", "--out", str(out), "all"],
                         capture_output=True, text=True, timeout=180,
                         env=_env(tmp_path, FASTCONV_COMMIT="c" * 40))
    elapsed = time.perf_counter() - t0
    text = run.stdout + run.stderr
    assert run.returncode == 0, text[-3000:]
    assert elapsed < 120, f"dry run took {elapsed:.0f} s"
    files = _check_out_folder(out)
    assert files == ["artifacts.tar.gz", "gpu_run.log", "record.json", "summary.md"]
    rec = json.loads((out / "record.json").read_text())
    assert rec["dry_run"] is True and rec["commit"] == "c" * 40
    assert rec["bench"] is None and rec["copy_bandwidth"] is None
    status = {s["step"]: s["status"] for s in rec["steps"]}
    assert status == {"versions": "ok", "install": "skipped", "smoke": "ok", "gputests": "ok",
                      "apitests": "ok", "copybw": "skipped", "bench": "skipped",
                      "sanitize": "skipped", "suite": "ok"}, rec["steps"]
    assert any("dry run" in w for w in rec["warnings"])
    # the selections were collected (a typo in a -k expression or path shows here)
    assert re.search(r"[1-9]\d*/\d+ tests collected", text), text[-3000:]
    assert "would run: " in text and "GPU-suite cases: ResNet-50" in text
    assert "DRY RUN" in (out / "summary.md").read_text()


@pytest.mark.skipif(_gpu_visible(), reason="a GPU is visible here")
def test_steps_skipped_when_the_budget_is_spent(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run(["bash", SCRIPT, "--dry-run", "--out", str(out), "bench"],
                         capture_output=True, text=True, timeout=60,
                         env=_env(tmp_path, FASTCONV_GPU_BUDGET_S="25"))
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    rec = json.loads((out / "record.json").read_text())
    assert [s["step"] for s in rec["steps"]] == ["versions", "install", "smoke", "copybw", "bench"]
    assert all(s["status"] == "skipped" and "out of time" in s["note"] for s in rec["steps"])


@pytest.mark.skipif(_gpu_visible(), reason="a GPU is visible here")
def test_smoke_runs_each_gpu_implementation_or_says_why(tmp_path):
    """Under the CUDA C emulator the cupy implementations really run (the same host code
    as on a GPU); numba-cuda, without a GPU or the simulator, is reported unavailable."""
    env = dict(os.environ, FASTCONV_CUPY_EMULATE="1", PYTHONWARNINGS="ignore")
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    out = tmp_path / "smoke.json"
    run = subprocess.run([sys.executable, "-m", "fastconv.perf.gpu_record", "smoke", "--out",
                          str(out)], capture_output=True, text=True, timeout=300, env=env,
                         cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    got = json.loads(out.read_text())
    from fastconv import registry
    want = {i.key for op in ("conv2d", "max_pool2d") for i in registry.implementations(op)
            if registry.get_backend(i.backend).device == "cuda"}
    assert set(got) == want
    for key, res in got.items():
        if "/cupy/" in key and "unavailable" not in res:
            assert res.startswith("ok ("), (key, res)
        if "/numba-cuda/" in key:
            assert res.startswith("unavailable: "), (key, res)
    if not any(res.startswith("ok") for res in got.values()):
        pytest.skip("the CUDA C emulator is not usable here: " + str(got))


FAKE_SMI = """#!/bin/sh
case "$1" in
  -L) echo "GPU 0: Fake Test GPU (UUID: GPU-00000000)";;
  --query-gpu=*) echo "Fake Test GPU, 000.00, 9.0, 1 MiB, 1 MHz, 1 W";;
  *) echo "fake nvidia-smi (a test stand-in, no GPU)";;
esac
"""
FAKE_SANITIZER = """#!/bin/sh
echo "fake-sanitizer $*" >> "$FAKE_LOG"
while [ $# -gt 0 ]; do case "$1" in --*) shift 2;; *) break;; esac; done
"$@"; rc=$?
echo "========= ERROR SUMMARY: 0 errors"
exit $rc
"""
FAKE_PY = """#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "fake pip $*" >> "$FAKE_LOG"; exit 0; fi
exec "{python}" "$@"
"""


@pytest.mark.skipif(_gpu_visible(), reason="a GPU is visible here")
def test_full_path_with_stand_ins_for_the_gpu_tools(tmp_path):
    """The non-dry code paths (pip, sanitizer command lines, the bench chunks, a failing
    step) with stand-in nvidia-smi, compute-sanitizer and pip: the backends stay
    unavailable, so every GPU test is skipped and the bench measures nothing."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name, text in (("nvidia-smi", FAKE_SMI), ("compute-sanitizer", FAKE_SANITIZER),
                       ("python-wrapper", FAKE_PY.format(python=sys.executable))):
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    log = tmp_path / "fake.log"
    out = tmp_path / "out"
    env = _env(tmp_path, PATH=f"{bin_}{os.pathsep}{os.environ['PATH']}", FAKE_LOG=str(log),
               PYTHON=str(bin_ / "python-wrapper"),
               FASTCONV_SAN_K_MEMCHECK="cupy and conv2d_matches_reference and nobias and direct",
               FASTCONV_SAN_K_RACECHECK="numba-cuda and max_pool2d_exact")
    run = subprocess.run(["bash", SCRIPT, "--out", str(out), "install", "gputests",
                          "sanitize", "copybw", "bench"], capture_output=True, text=True,
                         timeout=400, env=env)
    text = run.stdout + run.stderr
    assert run.returncode == 0, text[-4000:]
    _check_out_folder(out)
    rec = json.loads((out / "record.json").read_text())
    assert rec["dry_run"] is False and rec["device"] == "Fake Test GPU"
    status = {s["step"]: s["status"] for s in rec["steps"]}
    assert status == {"versions": "ok", "install": "ok", "smoke": "ok", "gputests": "ok",
                      "sanitize": "ok", "copybw": "failed", "bench": "ok"}, rec["steps"]
    fake = log.read_text()
    assert "fake pip -m pip install --no-deps --no-build-isolation -e ." in fake
    assert "fake-sanitizer --tool memcheck --error-exitcode 86" in fake
    assert "fake-sanitizer --tool racecheck" in fake
    assert set(rec["sanitizer"]) == {"memcheck", "racecheck"}
    assert rec["sanitizer"]["memcheck"]["errors"] == 0
    assert any("skipped" in s or "passed" in s for s in rec["sanitizer"]["memcheck"]["summary"])
    gpu = rec["tests"]["gpu"]["totals"]
    assert gpu["skipped"] > 100 and gpu["failed"] == 0 and gpu["errors"] == 0
    assert sorted(rec["bench"]["files"]) == ["bench-dwpool/results.json",
                                             "bench-misc/results.json",
                                             "bench-resnet50/results.json",
                                             "bench-vgg/results.json"]
    assert rec["bench"]["layers"] == []   # no GPU usable: nothing measured, nothing invented
    assert rec["bench"]["checks"]["resnet50_geomean_cupy"]["pass"] is None
    warn = " | ".join(rec["warnings"])
    assert "step copybw: failed" in warn and "unavailable" in warn


def _fake_cupy():
    """A NumPy stand-in for the few CuPy calls measure_copy_bandwidth makes."""
    import ctypes
    import types

    import numpy as np

    class Arr(np.ndarray):
        @property
        def data(self):
            return types.SimpleNamespace(ptr=self.ctypes.data)

    class Event:
        def record(self, stream=None):
            self.t = time.perf_counter()

        def synchronize(self):
            pass

    stream = types.SimpleNamespace(ptr=0, synchronize=lambda: None)
    rng = np.random.default_rng(0)

    def kernel(*_a):
        def run(x, y):
            np.copyto(y, x)
        return run

    cp = types.SimpleNamespace(
        float32=np.float32,
        random=types.SimpleNamespace(standard_normal=lambda n, dtype: rng.standard_normal(
            n, dtype=np.float64).astype(dtype).view(Arr)),
        full=lambda n, v, dtype: np.full(n, v, dtype).view(Arr),
        array_equal=np.array_equal, ElementwiseKernel=kernel)
    cp.cuda = types.SimpleNamespace(
        Event=Event, get_current_stream=lambda: stream,
        get_elapsed_time=lambda a, b: (b.t - a.t) * 1e3,
        runtime=types.SimpleNamespace(
            memcpyDeviceToDevice=3,
            memcpyAsync=lambda d, s, n, kind, st: ctypes.memmove(d, s, n)))
    return cp


def test_copy_bandwidth_logic_with_a_fake_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    r = gr.measure_copy_bandwidth(nbytes=1 << 20, warmup=1, repeat=5)
    assert r["bytes_per_copy"] == 2 << 20 and r["repeat"] == 5
    for name in ("copy_kernel", "memcpy_d2d"):
        m = r[name]
        assert m["min_s"] <= m["median_s"] <= m["max_s"]
        assert m["gbs"] == pytest.approx((2 << 20) / m["median_s"] / 1e9)
    assert r["copy_gbs"] == max(r["copy_kernel"]["gbs"], r["memcpy_d2d"]["gbs"])


def test_merge_numbers_the_calls(tmp_path):
    w = _work(tmp_path)
    a, b = gr.assemble(str(w)), gr.assemble(str(w))
    m = gr.merge([a, b])
    assert [s["call"] for s in m["steps"]] == [1, 1, 1, 2, 2, 2]
    assert "call" not in a["steps"][0]
