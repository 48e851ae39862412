#!/usr/bin/env bash
# fastconv on a GPU machine, in one call of the device tool: versions, install,
# the GPU backends' tests run natively, compute-sanitizer, the GPU benchmark
# and the measured copy bandwidth; then record.json + summary.md.
#
# usage: bash tools/gpu_run.sh [--dry-run] [--out DIR] [GROUP|STEP ...]
#   groups: tests = versions install smoke gputests apitests sanitize suite
#           bench = versions install smoke copybw bench
#           all   = versions install smoke gputests apitests copybw bench sanitize suite
#                   (the default)
#   steps:  versions install smoke gputests apitests sanitize copybw bench suite
#           (versions, install and smoke always run first)
#   --dry-run  walk through the steps without a GPU: pytest only collects, the GPU-only
#              parts are skipped with a message, pip is not run; the record says so.
#
# Output ($OUT, else --out, else /tmp/fastconv-gpu-out.PID), at most 4 files:
#   record.json, summary.md, gpu_run.log (this console), artifacts.tar.gz (every
#   log, JUnit XML, sanitizer log and bench folder of the work directory).
#
# Environment: FASTCONV_COMMIT, FASTCONV_KERNELS_TREE (the measured commit and
#   `git rev-parse <commit>:kernels`, computed where the commit lives: the device
#   copy of the tree is no git checkout); FASTCONV_GPU_BUDGET_S (whole call, default
#   540 s); PYTHON (default python3); FASTCONV_GPU_WORK (work folder);
#   FASTCONV_GPU_XDIST=N (pytest -n N for the 'suite' step, if pytest-xdist is there);
#   FASTCONV_SAN_K_MEMCHECK, FASTCONV_SAN_K_RACECHECK (pytest -k of the sanitizer runs).
set -u -o pipefail

DRY=0
OUTDIR=${OUT:-}
REQ=()
while (($#)); do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUTDIR=$2; shift ;;
    --out=*) OUTDIR=${1#--out=} ;;
    -h|--help) sed -n "2,/^set -u/p" "$0" | sed "$ d"; exit 0 ;;
    tests|bench|all|versions|install|smoke|gputests|apitests|sanitize|copybw|suite) REQ+=("$1") ;;
    *) echo "gpu_run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
((${#REQ[@]})) || REQ=(all)

STEPS=(versions install smoke)
for r in "${REQ[@]}"; do
  case "$r" in
    tests) STEPS+=(gputests apitests sanitize suite) ;;
    bench) STEPS+=(copybw bench) ;;
    all) STEPS+=(gputests apitests copybw bench sanitize suite) ;;
    *) STEPS+=("$r") ;;
  esac
done
# unique, first occurrence kept
declare -A SEEN=(); UNIQ=()
for s in "${STEPS[@]}"; do [[ -n ${SEEN[$s]:-} ]] || { SEEN[$s]=1; UNIQ+=("$s"); }; done
STEPS=("${UNIQ[@]}")

cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
PY=${PYTHON:-python3}

gpu_visible() {
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    return 0
  fi
  [[ -e /dev/nvidia0 ]]
}
if ! gpu_visible; then
  if ((DRY)); then
    echo "gpu_run.sh: no GPU visible; --dry-run: GPU-only parts are skipped"
  else
    echo "gpu_run.sh: no GPU visible (nvidia-smi -L lists none, no /dev/nvidia0): refusing" \
         "to run. Use --dry-run to walk through the steps without a GPU." >&2
    exit 3
  fi
fi

OUTDIR=${OUTDIR:-/tmp/fastconv-gpu-out.$$}
WORK=${FASTCONV_GPU_WORK:-/tmp/fastconv-gpu-work.$$}
mkdir -p "$OUTDIR" "$WORK" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd); WORK=$(cd "$WORK" && pwd)
exec > >(tee -a "$OUTDIR/gpu_run.log") 2>&1
TEE_PID=$!

export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export FASTCONV_SKIP_CUDASIM=1          # the simulator subprocess test: CPU-only, slow
export CUPY_TF32=0 NVIDIA_TF32_OVERRIDE=0  # fp32 everywhere (cuDNN/cuBLAS peers included)
BUDGET=${FASTCONV_GPU_BUDGET_S:-540}
RESERVE=20                               # kept for the last record and the archive
DRYFLAG=(); ((DRY)) && DRYFLAG=(--dry-run)
PT=("$PY" -m pytest -p no:cacheprovider -q -rfE)
((DRY)) && PT+=(--collect-only)
if ! ((DRY)) && "$PY" -c "import pytest_timeout" 2>/dev/null; then
  PT_TIMEOUT=(--timeout=180)   # pytest-timeout loads itself (entry point)
else
  PT_TIMEOUT=()
fi
printf 'step\tstatus\trc\tseconds\tbudget_s\tnote\n' >"$WORK/steps.tsv"

log() { echo "[gpu_run $(date -u +%H:%M:%S) +${SECONDS}s] $*"; }

record() {
  "$PY" -m fastconv.perf.gpu_record assemble --work "$WORK" --out "$OUTDIR" "${DRYFLAG[@]}" \
    >/dev/null 2>"$WORK/record.err" || { log "record failed:"; cat "$WORK/record.err"; }
  tar -czf "$OUTDIR/artifacts.tar.gz.tmp" -C "$WORK" . 2>/dev/null &&
    mv -f "$OUTDIR/artifacts.tar.gz.tmp" "$OUTDIR/artifacts.tar.gz"
}

# run_step NAME WANT_S MIN_S: run step_NAME with a budget of min(WANT, time left)
run_step() {
  local name=$1 want=$2 min=$3 left b t0 rc status note
  left=$((BUDGET - SECONDS - RESERVE))
  b=$((want < left ? want : left))
  if ((b < min)); then
    log "$name: SKIPPED, ${left}s left of the ${BUDGET}s budget (needs ${min}s)"
    printf '%s\tskipped\t\t0\t%s\tout of time (%ss left)\n' "$name" "$want" "$left" >>"$WORK/steps.tsv"
    return
  fi
  log "== $name (budget ${b}s)"
  t0=$SECONDS
  STEP_NOTE=""
  "step_$name" "$b"
  rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status=timeout ;;
    200) status=skipped; rc=0 ;;
    *) status=failed ;;
  esac
  note=${STEP_NOTE//$'\t'/ }
  log "== $name: $status (rc $rc, $((SECONDS - t0))s)${note:+: $note}"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$((SECONDS - t0))" "$b" "$note" \
    >>"$WORK/steps.tsv"
  record
}

step_versions() {
  if command -v nvidia-smi >/dev/null 2>&1; then
    timeout 30 nvidia-smi 2>&1 | tee "$WORK/nvidia-smi.txt"
  else
    echo "nvidia-smi: not on PATH"
  fi
  (cd "$ROOT" && timeout -k 5 "$1" "$PY" -m fastconv.perf.gpu_record versions \
      --out "$WORK/versions.json") >"$WORK/versions.log" 2>&1
  local rc=$?
  ((rc == 0)) || tail -n 20 "$WORK/versions.log"
  "$PY" - "$WORK/versions.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
v, s = d["versions"], d["source"]
keys = ("python", "numpy", "numba", "numba-cuda", "cupy", "torch", "torch_cuda", "cudnn",
        "driver", "cuda_runtime", "cuda_driver_api", "nvrtc", "nvcc", "compute-sanitizer")
print("versions:", ", ".join(f"{k} {v.get(k)}" for k in keys))
print("device:", d["device"])
print("backends:", "; ".join(f"{b['name']} {'ok' if b['available'] else b['reason']}"
                             for b in d.get("backends") or []))
print("commit:", s.get("commit"), "(" + str(s.get("source")) + ")", "kernels_tree:",
      s.get("kernels_tree"), "device copy:", s.get("kernels_tree_worktree"),
      "match:", s.get("kernels_match"))
for k, e in d["errors"].items():
    print(f"  ({k}: {e})")
EOF
  return $rc
}

step_install() {
  local cmd=("$PY" -m pip install --no-deps --no-build-isolation -e .)
  if ((DRY)); then
    log "dry run: would run: ${cmd[*]} (log: $WORK/pip-install.log)"
    STEP_NOTE="dry run: pip not run"
    return 200
  fi
  timeout -k 5 "$1" "${cmd[@]}" >"$WORK/pip-install.log" 2>&1
  local rc=$?
  tail -n 2 "$WORK/pip-install.log"
  "$PY" -c "import fastconv, os; print('fastconv from', os.path.dirname(fastconv.__file__))"
  return $rc
}

# pytest under a budget: SIGINT at the limit still writes the JUnit XML
pytest_budget() {
  local b=$1 junit=$2; shift 2
  timeout -k 15 -s INT "$b" "${PT[@]}" "${PT_TIMEOUT[@]}" --junitxml="$WORK/junit-$junit.xml" "$@" \
    2>&1 | tee "$WORK/pytest-$junit.log" | grep -v '^\(tests/.*\)\?[.sxFE]*\( *\[ *[0-9]*%\]\)\?$'
  local rc=${PIPESTATUS[0]}
  ((DRY)) && STEP_NOTE="dry run: collected only"
  return "$rc"
}

step_gputests() {
  pytest_budget "$1" gpu tests/test_backends.py tests/gpu_sim \
    -k "numba-cuda or cupy or numba_cuda_kernels"
}

step_apitests() {
  pytest_budget "$1" registry tests/test_api.py tests/test_odd_values.py tests/test_fuzz.py \
    tests/test_index_limits.py
}

# every other test file, those that touch the GPU backends or CUDA tools first
SUITE_FIRST=(tests/test_cu_compile.py tests/test_numba_cuda_ptx.py tests/test_numba_cuda_sim.py
             tests/test_perf.py tests/test_backward.py tests/test_torch_modules.py)
SUITE_DONE=" tests/test_backends.py tests/test_api.py tests/test_odd_values.py tests/test_fuzz.py
 tests/test_index_limits.py "
SUITE_DONE=${SUITE_DONE//$'\n'/}

step_suite() {
  local x=() files=() f
  for f in "${SUITE_FIRST[@]}"; do [[ -e $f ]] && files+=("$f"); done
  for f in tests/test_*.py; do
    [[ $SUITE_DONE == *" $f "* || " ${files[*]} " == *" $f "* ]] || files+=("$f")
  done
  if [[ -n ${FASTCONV_GPU_XDIST:-} ]] && "$PY" -c "import xdist" 2>/dev/null; then
    x=(-n "$FASTCONV_GPU_XDIST")
  fi
  pytest_budget "$1" rest "${x[@]}" "${files[@]}"
}

GPU_K="(cupy or numba-cuda)"
SAN_K_MEMCHECK=${FASTCONV_SAN_K_MEMCHECK:-"$GPU_K and (conv2d_matches_reference or
 conv_transpose2d_matches_reference) and nobias or $GPU_K and (max_pool2d_exact or adaptive_max)"}
SAN_K_MEMCHECK=${SAN_K_MEMCHECK//$'\n'/}
SAN_K_RACECHECK=${FASTCONV_SAN_K_RACECHECK:-"$GPU_K and conv2d_matches_reference and nobias and
 not im2col"}
SAN_K_RACECHECK=${SAN_K_RACECHECK//$'\n'/}

step_sanitize() {
  local san
  san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
  if ((DRY)); then
    for k in "$SAN_K_MEMCHECK" "$SAN_K_RACECHECK"; do
      log "dry run: would run ${san:-compute-sanitizer (not found here)} over: -k \"$k\": $(
        "${PT[@]}" tests/test_backends.py -k "$k" 2>&1 | tail -n 1)"
    done
    STEP_NOTE="dry run: selections collected only"
    return 200
  fi
  if [[ -z $san ]]; then
    log "compute-sanitizer not found: sanitizer runs skipped"
    STEP_NOTE="compute-sanitizer not found"
    return 200
  fi
  # no CuPy memory pool: memcheck then sees every array as its own allocation
  printf 'def pytest_configure(config):\n    import cupy\n    cupy.cuda.set_allocator(None)\n' \
    >"$WORK/gpu_san_plugin.py"
  local b=$1 worst=0 rc tool k tb
  for tool in memcheck racecheck; do
    if [[ $tool == memcheck ]]; then
      k=$SAN_K_MEMCHECK; tb=$((b * 3 / 5))
    else
      k=$SAN_K_RACECHECK; tb=$((b - b * 3 / 5))
    fi
    log "compute-sanitizer --tool $tool (${tb}s): -k \"$k\""
    PYTHONPATH="$WORK${PYTHONPATH:+:$PYTHONPATH}" timeout -k 15 -s INT "$tb" "$san" \
      --tool "$tool" --error-exitcode 86 --print-limit 30 \
      "$PY" -m pytest -p no:cacheprovider -q -x -p gpu_san_plugin tests/test_backends.py \
      -k "$k" >"$WORK/sanitizer-$tool.log" 2>&1
    rc=$?
    grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|passed|failed' "$WORK/sanitizer-$tool.log" | tail -n 4
    ((rc > worst)) && worst=$rc
  done
  return $worst
}

step_smoke() {
  timeout -k 5 "$1" "$PY" -m fastconv.perf.gpu_record smoke --out "$WORK/smoke.json"
}

step_copybw() {
  if ((DRY)); then
    log "dry run: would measure the device-to-device copy bandwidth (CuPy, CUDA events)"
    STEP_NOTE="dry run: GPU only"
    return 200
  fi
  timeout -k 5 "$1" "$PY" -m fastconv.perf.gpu_record copybw --out "$WORK/copybw.json"
}

# the GPU suite in chunks: a chunk cut off by its budget loses only itself
BENCH_CHUNKS=("resnet50:ResNet-50:170" "dwpool:depthwise,pool:80"
              "misc:LeNet-5,AlexNet,image filter,edge detection,transposed:110" "vgg:VGG:90")

step_bench() {
  local b=$1 t0=$SECONDS worst=0 chunk name filt want left tb rc
  for chunk in "${BENCH_CHUNKS[@]}"; do
    IFS=: read -r name filt want <<<"$chunk"
    local cmd=("$PY" -m fastconv.perf bench --suite gpu --device cuda --no-edge --no-progress
               --filter "$filt" -o "$WORK/bench-$name"
               --note "tools/gpu_run.sh chunk $name; TF32 off (NVIDIA_TF32_OVERRIDE=0)")
    if ((DRY)); then
      log "dry run: would run: ${cmd[*]}"
      "$PY" -c "import sys; from fastconv.perf.suite import cases
print('   ', len(cases('gpu', sys.argv[1])), 'GPU-suite cases:', '; '.join(c.id for c in cases('gpu', sys.argv[1])))" "$filt"
      continue
    fi
    left=$((b - (SECONDS - t0)))
    tb=$((want < left ? want : left))
    if ((tb < 20)); then
      log "bench chunk $name: skipped, out of time"
      STEP_NOTE+="chunk $name not run (out of time); "
      continue
    fi
    log "bench chunk $name (${tb}s): --filter '$filt'"
    timeout -k 10 -s INT "$tb" "${cmd[@]}" 2>&1 | tee "$WORK/bench-$name.log" |
      grep -E '^fastconv bench|ceiling|\[[0-9]+/[0-9]+\]'
    rc=${PIPESTATUS[0]}
    ((rc != 0)) && STEP_NOTE+="chunk $name rc $rc; "
    ((rc > worst)) && worst=$rc
  done
  if ((DRY)); then STEP_NOTE="dry run: GPU only"; return 200; fi
  return $worst
}

log "fastconv GPU run: steps ${STEPS[*]}; budget ${BUDGET}s; out $OUTDIR; work $WORK$( ((DRY)) && echo '; DRY RUN')"
for s in "${STEPS[@]}"; do
  case $s in
    versions) run_step versions 90 10 ;;
    install)  run_step install 120 10 ;;
    smoke)    run_step smoke 90 10 ;;
    gputests) run_step gputests 240 30 ;;
    apitests) run_step apitests 150 30 ;;
    copybw)   run_step copybw 60 15 ;;
    bench)    run_step bench 450 40 ;;
    sanitize) run_step sanitize 150 40 ;;
    suite)    run_step suite 600 40 ;;
  esac
done
record
log "done in ${SECONDS}s; $OUTDIR: $(cd "$OUTDIR" && ls | tr '\n' ' ')"
echo
cat "$OUTDIR/summary.md" 2>/dev/null
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null
exit 0
