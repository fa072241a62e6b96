#!/usr/bin/env bash
# shellcheck disable=SC2317  # the step functions are called through run_step
# gpu-check.sh: everything issue 7 asks of a GPU machine, in one run of at most ~8 minutes,
# written to one output folder. Each step records passed/failed/skipped and the next one runs
# anyway; the exit status is 1 when any step failed.
#
# Usage:
#   scripts/gpu-check.sh [--out DIR]                 # on the GPU machine (OUT defaults to $OUT)
#   scripts/gpu-check.sh --dry-run --out /tmp/gc     # here, on CPU: the plumbing (see below)
#
# Steps (results.json "steps", in this order):
#   env            nvidia-smi, torch / CUDA / transformers versions, torch's C++ ABI, tools
#   build          CMake (Ninja if present, else make) into build-gpu: Release,
#                  CMAKE_PREFIX_PATH=torch.utils.cmake_prefix_path, CMAKE_CUDA_ARCHITECTURES=90.
#                  hiredis / PCRE2 headers missing there: shared/gpu-deps (made here by
#                  scripts/gpu/pack-deps.sh) goes on PKG_CONFIG_PATH and LD_LIBRARY_PATH.
#                  Fails at once, saying why, if torch uses the pre-C++11 ABI.
#   unit_tests     build-gpu/tests/writeup_unit_tests, in parallel shards; suites that need a
#                  missing redis-server / node are left out (listed in the details)
#   golden         writeup-generate greedy continuations of tests/data/golden.json on cuda:0
#                  float16: identical ids, logits within 2e-2 of golden_logits (--dump-logits)
#   make_model     writeup-make-model --shape medium --dtype f16 (random weights)
#   hf_greedy      64-token greedy continuation, writeup (cuda:0 fp16) vs HF transformers
#                  GPT2LMHeadModel fp16 generate: identical ids required
#   oom            real CUDA OOM in writeup-server (WRITEUP_CUDA_MEMORY_FRACTION), small requests
#                  must complete, /ready stays 200, writeup_oom_total goes up
#   bench_writeup  writeup-bench decode (single stream) and engine (1, and 64 requests x 7)
#   bench_hf       HF generate fp16 greedy 128 tokens: single stream, 64x7 as one batch of 448, TTFT
# Then results.json and results.md (steps + the writeup-vs-HF table against the issue's bars).
#
# Options:
#   --out DIR             output folder (default: $OUT, else ./gpu-check-out)
#   --dry-run | --cpu     CPU only: skips nvidia-smi / HF / CUDA steps (recorded "skipped"),
#                         runs the rest on cpu/float32 with a tiny model, short benchmarks and a
#                         simulated OOM (WRITEUP_TEST_OOM_OVER_TOKENS)
#   --build-dir DIR       where to build (default build-gpu, or build-gpu-dry with --dry-run)
#   --reuse-build DIR     use DIR's binaries, do not configure or build (env WRITEUP_BUILD_DIR)
#   --skip-unit           do not run the unit tests (recorded skipped)
#   --unit-filter F       gtest filter for the unit tests (e.g. 'Utf8.*:Safetensors.*')
#   --unit-shards N       parallel gtest shards (default: min(nproc, 8))
#   --deps DIR            the packed dependencies (default shared/gpu-deps)
#   --torch-prefix DIR    CMake prefix of libtorch instead of python's torch (e.g. an unzipped
#                         cxx11-abi libtorch when the pip wheel uses the old ABI)
#   --shape S             writeup-make-model shape for hf_greedy/oom/bench (default medium;
#                         tiny with --dry-run)
#   --oom-fraction F|auto memory fraction for the OOM step (default auto: calibrated)
#   --oom-headroom-mb N   headroom over the calibrated reserved memory (default 8)
#   --budget S            seconds for the whole run (default 470); a step that would start
#                         with too little left is recorded failed ("time budget")
#   --work DIR            scratch folder for models and server configs (default /tmp/writeup-gpu-check)
# Environment: OUT, PYTHON (default python3), WRITEUP_BUILD_DIR (= --reuse-build),
#   WRITEUP_SERVER_BIN (server binary to use instead of BUILD/writeup-server), JOBS.
#
# On the GPU machine, with the `run` tool (shared/ travels by itself; node_modules lets the
# TokenizerReference unit tests run there if node exists):
#   run command="bash scripts/gpu-check.sh" carry=["tests/node/node_modules"] timeout_s=510
# Assumed from the C++ side (probed where possible, reported when missing): writeup-generate
# --device/--dtype; writeup-bench --device/--dtype, engine --n (+ "sequences_per_request" in its
# JSON) and engine --prompt-tokens N; WRITEUP_CUDA_MEMORY_FRACTION in writeup-server; the
# writeup_device_memory_reserved_bytes gauge filled on CUDA. See scripts/gpu/README.md.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GPU="$ROOT/scripts/gpu"
PYTHON=${PYTHON:-python3}
OUTDIR=${OUT:-}
DRY=0
BUILD_DIR=""
REUSE=${WRITEUP_BUILD_DIR:-}
SKIP_UNIT=0
UNIT_FILTER=""
NPROC=$(nproc 2>/dev/null || echo 4)
UNIT_SHARDS=$((NPROC < 8 ? NPROC : 8))
DEPS="$ROOT/shared/gpu-deps"
TORCH_PREFIX=""
SHAPE=""
OOM_FRACTION=auto
OOM_HEADROOM=8
BUDGET=470
WORK=/tmp/writeup-gpu-check
JOBS=${JOBS:-$NPROC}

usage() { sed -n '3,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

while (($#)); do
  case $1 in
    --out) OUTDIR=$2; shift ;;
    --dry-run | --cpu) DRY=1 ;;
    --build-dir) BUILD_DIR=$2; shift ;;
    --reuse-build) REUSE=$2; shift ;;
    --skip-unit) SKIP_UNIT=1 ;;
    --unit-filter) UNIT_FILTER=$2; shift ;;
    --unit-shards) UNIT_SHARDS=$2; shift ;;
    --deps) DEPS=$2; shift ;;
    --torch-prefix) TORCH_PREFIX=$2; shift ;;
    --shape) SHAPE=$2; shift ;;
    --oom-fraction) OOM_FRACTION=$2; shift ;;
    --oom-headroom-mb) OOM_HEADROOM=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    --work) WORK=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gpu-check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

OUTDIR=${OUTDIR:-$PWD/gpu-check-out}
mkdir -p "$OUTDIR/logs" "$OUTDIR/steps" "$WORK" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
rm -f "$OUTDIR"/steps/*.json
if ((DRY)); then
  MODE=dry-run DEVICE=cpu DTYPE=float32
  SHAPE=${SHAPE:-tiny}
  BUILD_DIR=${BUILD_DIR:-$ROOT/build-gpu-dry}
else
  MODE=gpu DEVICE=cuda:0 DTYPE=float16
  SHAPE=${SHAPE:-medium}
  BUILD_DIR=${BUILD_DIR:-$ROOT/build-gpu}
fi
[[ -n $REUSE ]] && BUILD_DIR=$REUSE
BUILD_DIR=$(mkdir -p "$BUILD_DIR" && cd "$BUILD_DIR" && pwd)
SERVER_BIN=${WRITEUP_SERVER_BIN:-$BUILD_DIR/writeup-server}
MODEL="$WORK/model-$SHAPE"
STARTED=$(date -u +%Y-%m-%dT%H:%M:%S+00:00)
T0=$SECONDS

log() { printf '[gpu-check %4ds] %s\n' "$((SECONDS - T0))" "$*" >&2; }
left() { echo $((BUDGET - (SECONDS - T0))); }
# cap N: N, or what is left of the budget less 15 s for the report, whichever is smaller.
cap() {
  local l
  l=$(($(left) - 15))
  ((l < 5)) && l=5
  echo $(($1 < l ? $1 : l))
}

# Step bookkeeping: a step function sets SUMMARY (and DETAILS, a JSON file) and returns 0
# (passed), 3 (skipped) or anything else (failed). Its output goes to logs/NAME.log.
SUMMARY="" DETAILS=""
ANY_FAILED=0
run_step() {
  local name=$1 fn=$2 min=${3:-10} t rc status
  SUMMARY="" DETAILS=""
  t=$SECONDS
  if (($(left) < min)); then
    rc=1 SUMMARY="not run: $(left) s of the ${BUDGET} s budget left, needs ~${min} s"
  else
    log "step $name ..."
    "$fn" >"$OUTDIR/logs/$name.log" 2>&1
    rc=$?
  fi
  case $rc in
    0) status=passed ;;
    3) status=skipped ;;
    *) status=failed ANY_FAILED=1 ;;
  esac
  log "step $name: $status ($((SECONDS - t)) s) $SUMMARY"
  [[ -z $SUMMARY && -f $DETAILS ]] && grep -o '"summary": "[^"]*' "$DETAILS" | head -1 | sed 's/^"summary": "/    /' >&2
  # Recorded with a partial report after every step: a run cut short still leaves one.
  local args=(record "$OUTDIR" "$name" "$status" "$((SECONDS - t))" "$SUMMARY" --log "$OUTDIR/logs/$name.log"
    --mode "$MODE" --started "$STARTED")
  [[ -n $DETAILS && -f $DETAILS ]] && args+=(--details "$DETAILS")
  "$PYTHON" "$GPU/results.py" "${args[@]}"
}

need_bin() {  # need_bin PATH: fails the step (with SUMMARY) when the binary is missing
  if [[ ! -x $1 ]]; then
    SUMMARY="no $(basename "$1") in $(dirname "$1") (build failed?)"
    return 1
  fi
}

# ----------------------------------------------------------------------------------- env
step_env() {
  DETAILS="$OUTDIR/env.json"
  if ((DRY)); then
    echo "dry run: nvidia-smi skipped"
  elif command -v nvidia-smi >/dev/null; then
    nvidia-smi | tee "$OUTDIR/nvidia-smi.txt"
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv |
      tee -a "$OUTDIR/nvidia-smi.txt"
  else
    echo "no nvidia-smi"
  fi
  {
    echo "== tools"
    for t in cmake ninja make gcc g++ nvcc pkg-config redis-server node ccache; do
      printf '%-13s %s\n' "$t" "$(command -v "$t" || echo '(absent)')"
    done
    cmake --version | head -1
    g++ --version | head -1
    if command -v nvcc >/dev/null; then nvcc --version | tail -2; fi
    ldd --version | head -1
    pkg-config --modversion hiredis libpcre2-8 2>&1
  } | tee "$OUTDIR/tools.txt"
  local dry=()
  ((DRY)) && dry=(--dry-run)
  timeout "$(cap 120)" "$PYTHON" "$GPU/hf_check.py" env --out "$DETAILS" "${dry[@]}"
}

# --------------------------------------------------------------------------------- build
BUILD_ENV_NOTES=()
setup_deps() {
  # hiredis / PCRE2 dev files: the machine's if pkg-config has both, else the packed ones.
  if ! command -v pkg-config >/dev/null && [[ -x $DEPS/bin/pkg-config ]]; then
    export PATH="$DEPS/bin:$PATH"
    BUILD_ENV_NOTES+=("pkg-config from $DEPS/bin")
  fi
  if ! pkg-config --exists hiredis libpcre2-8 2>/dev/null ||
    ! [[ -f "$(pkg-config --variable=includedir libpcre2-8 2>/dev/null)/pcre2.h" ]]; then
    if [[ -d $DEPS/lib/pkgconfig ]]; then
      export PKG_CONFIG_PATH="$DEPS/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
      export LD_LIBRARY_PATH="$DEPS/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      BUILD_ENV_NOTES+=("hiredis/PCRE2 from $DEPS")
    else
      BUILD_ENV_NOTES+=("hiredis/PCRE2 dev files missing and no $DEPS (run scripts/gpu/pack-deps.sh here)")
    fi
  fi
  if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
    export PATH="$PATH:/usr/local/cuda/bin"
  fi
}

step_build() {
  setup_deps
  if [[ -n $REUSE ]]; then
    need_bin "$BUILD_DIR/writeup-generate" || return 1
    need_bin "$SERVER_BIN" || return 1
    "$SERVER_BIN" --help >/dev/null || { SUMMARY="$SERVER_BIN does not run"; return 1; }
    SUMMARY="reused the existing build $BUILD_DIR (not rebuilt); its binaries run"
    return 0
  fi
  local prefix="" abi cmake_args gen build_args=()
  cmake_args=(-S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release)
  if ((!DRY)); then
    if [[ -n $TORCH_PREFIX ]]; then
      prefix=$TORCH_PREFIX
      BUILD_ENV_NOTES+=("libtorch from --torch-prefix (ABI not checked)")
    else
      prefix=$("$PYTHON" -c 'import torch;print(torch.utils.cmake_prefix_path)') ||
        { SUMMARY="python torch not importable: no libtorch to build against"; return 1; }
      abi=$("$PYTHON" -c 'import torch;print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
      echo "torch cmake prefix: $prefix; _GLIBCXX_USE_CXX11_ABI=$abi"
      if [[ $abi != 1 ]]; then
        SUMMARY="torch is built with the pre-C++11 ABI (_GLIBCXX_USE_CXX11_ABI=0) but the system Boost/spdlog/gtest use the new one: linking would fail (undefined std::__cxx11 symbols). Use a cxx11-abi libtorch via --torch-prefix DIR"
        return 1
      fi
      BUILD_ENV_NOTES+=("torch cxx11 ABI=1")
    fi
    cmake_args+=(-DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_CUDA_ARCHITECTURES=90)
  fi
  # The unit tests' CMake wants redis-server; without one, point it at a stand-in and leave
  # the Redis suites out of unit_tests.
  if ! command -v redis-server >/dev/null; then
    cmake_args+=(-DWRITEUP_REDIS_SERVER=/nonexistent/redis-server)
    BUILD_ENV_NOTES+=("no redis-server: Redis unit suites left out")
  fi
  if [[ -f $BUILD_DIR/CMakeCache.txt ]]; then
    gen=$(sed -n 's/^CMAKE_GENERATOR:INTERNAL=//p' "$BUILD_DIR/CMakeCache.txt")
  else
    gen=""
  fi
  if command -v ninja >/dev/null; then
    [[ -n $gen && $gen != Ninja ]] && rm -rf "$BUILD_DIR/CMakeCache.txt" "$BUILD_DIR/CMakeFiles"
    cmake_args+=(-G Ninja)
    build_args=(-- -k 0)
  else
    [[ -n $gen && $gen != "Unix Makefiles" ]] && rm -rf "$BUILD_DIR/CMakeCache.txt" "$BUILD_DIR/CMakeFiles"
    cmake_args+=(-G "Unix Makefiles")
    build_args=(-- -k)
  fi
  echo "+ cmake ${cmake_args[*]}"
  timeout "$(cap 150)" cmake "${cmake_args[@]}" || { SUMMARY="cmake configure failed (see logs/build.log)"; return 1; }
  # The tools first, so that a unit-test compile error cannot cost the later steps.
  echo "+ cmake --build (tools)"
  timeout "$(cap 400)" cmake --build "$BUILD_DIR" -j "$JOBS" --target writeup-server writeup-generate \
    writeup-make-model writeup-bench "${build_args[@]}"
  local tools_rc=$?
  echo "+ cmake --build (all)"
  timeout "$(cap 400)" cmake --build "$BUILD_DIR" -j "$JOBS" "${build_args[@]}"
  local all_rc=$?
  SUMMARY="$(basename "$BUILD_DIR") ($([[ ${cmake_args[*]} == *Ninja* ]] && echo ninja || echo make) -j$JOBS)${BUILD_ENV_NOTES:+; ${BUILD_ENV_NOTES[*]}}"
  if ((tools_rc != 0)); then
    SUMMARY="tools failed to build: $SUMMARY"
    return 1
  fi
  if ((all_rc != 0)); then
    SUMMARY="tools built, the rest (unit tests) failed: $SUMMARY"
    return 1
  fi
  return 0
}

# ---------------------------------------------------------------------------- unit tests
step_unit() {
  if ((SKIP_UNIT)); then SUMMARY="--skip-unit"; return 3; fi
  local bin="$BUILD_DIR/tests/writeup_unit_tests"
  need_bin "$bin" || return 1
  local exclude=() filter
  if ! command -v redis-server >/dev/null; then exclude+=("RedisClient.*" "Cache.*"); fi
  if ! command -v node >/dev/null || [[ ! -d $ROOT/tests/node/node_modules ]]; then exclude+=("TokenizerReference.*"); fi
  filter=${UNIT_FILTER:-*}
  if ((${#exclude[@]})); then  # gtest: POSITIVE[-NEGATIVE], patterns joined by ':'
    if [[ $filter == *-* ]]; then filter="$filter:"; else filter="$filter-"; fi
    filter="$filter$(IFS=:; echo "${exclude[*]}")"
  fi
  echo "gtest filter: $filter; shards: $UNIT_SHARDS"
  rm -f "$OUTDIR"/logs/unit-shard-*.xml
  local i pids=() t
  t=$(cap 240)
  for ((i = 0; i < UNIT_SHARDS; i++)); do
    (cd "$BUILD_DIR/tests" && GTEST_TOTAL_SHARDS=$UNIT_SHARDS GTEST_SHARD_INDEX=$i \
      timeout "$t" "$bin" --gtest_filter="$filter" --gtest_output="xml:$OUTDIR/logs/unit-shard-$i.xml" \
      >"$OUTDIR/logs/unit-shard-$i.log" 2>&1) &
    pids+=($!)
  done
  local rc=0
  for i in "${pids[@]}"; do wait "$i" || rc=1; done
  DETAILS="$OUTDIR/unit_tests.json"
  "$PYTHON" - "$OUTDIR" "$DETAILS" "$filter" "$UNIT_SHARDS" <<'PY' || rc=1
import glob, json, sys, xml.etree.ElementTree as ET
out, dest, filt, shards = sys.argv[1:5]
tests = failures = errors = skipped = 0
failed = []
for p in sorted(glob.glob(f"{out}/logs/unit-shard-*.xml")):
    try:
        r = ET.parse(p).getroot()
    except ET.ParseError:
        failed.append(f"{p}: unreadable (crashed shard?)")
        continue
    tests += int(r.get("tests", 0)); failures += int(r.get("failures", 0)); errors += int(r.get("errors", 0))
    skipped += int(r.get("skipped", 0) or r.get("disabled", 0) or 0)
    for tc in r.iter("testcase"):
        if tc.find("failure") is not None:
            failed.append(f"{tc.get('classname')}.{tc.get('name')}")
summary = f"{tests} tests in {shards} shards, {failures} failed, {errors} errors; gtest filter {filt}"
if failed:
    summary += "; failed: " + ", ".join(failed[:10])
json.dump({"filter": filt, "tests": tests, "failures": failures, "errors": errors, "skipped": skipped,
           "failed": failed, "summary": summary}, open(dest, "w"), indent=2)
print(summary)
sys.exit(0 if tests and not failures and not errors and not failed else 1)
for f in failed:
    print("FAILED", f)
PY
  tail -n 3 "$OUTDIR"/logs/unit-shard-*.log
  return "$rc"
}

# -------------------------------------------------------------------------------- golden
step_golden() {
  local gen="$BUILD_DIR/writeup-generate" flags=()
  need_bin "$gen" || return 1
  DETAILS="$OUTDIR/golden.json"
  if ! "$gen" --help 2>&1 | grep -q -- '--device'; then
    flags=(--no-device-flags)
    if ((!DRY)); then
      SUMMARY="writeup-generate has no --device/--dtype"
      return 1
    fi
  fi
  timeout "$(cap 180)" "$PYTHON" "$GPU/golden_check.py" --generate "$gen" --model "$ROOT/tests/data/tiny-gpt2" \
    --golden "$ROOT/tests/data/golden.json" --device "$DEVICE" --dtype "$DTYPE" --out "$DETAILS" "${flags[@]}"
  local rc=$?
  [[ -f $DETAILS ]] || SUMMARY="golden_check.py wrote nothing (see logs/golden.log)"
  return "$rc"
}

# ---------------------------------------------------------------------------- make model
step_make_model() {
  local mk="$BUILD_DIR/writeup-make-model"
  need_bin "$mk" || return 1
  rm -rf "$MODEL"
  timeout "$(cap 120)" "$mk" --shape "$SHAPE" --dtype f16 --seed 1 --out "$MODEL" || {
    SUMMARY="writeup-make-model --shape $SHAPE failed"
    return 1
  }
  SUMMARY="$SHAPE, float16, random weights (seed 1): $(du -sh "$MODEL" | cut -f1) in $MODEL"
}

# ----------------------------------------------------------------------------- HF greedy
HF_PROMPT="The history of the written word begins with"
step_hf_greedy() {
  if ((DRY)); then SUMMARY="dry run: needs CUDA and HF transformers"; return 3; fi
  local gen="$BUILD_DIR/writeup-generate" ids
  need_bin "$gen" || return 1
  [[ -f $MODEL/config.json ]] || { SUMMARY="no model (make_model failed)"; return 1; }
  DETAILS="$OUTDIR/hf_greedy.json"
  ids=$(timeout "$(cap 120)" "$gen" --model "$MODEL" --prompt "$HF_PROMPT" --max-tokens 64 --temperature 0 \
    --ids --device "$DEVICE" --dtype "$DTYPE") || { SUMMARY="writeup-generate failed on $DEVICE"; return 1; }
  echo "writeup: $ids"
  timeout "$(cap 180)" "$PYTHON" "$GPU/hf_check.py" greedy --model "$MODEL" --prompt "$HF_PROMPT" --tokens 64 \
    --writeup-ids "$ids" --generate "$gen" --device "$DEVICE" --dtype "$DTYPE" --out "$DETAILS"
  local rc=$?
  [[ -f $DETAILS ]] || SUMMARY="hf_check.py greedy wrote nothing (see logs/hf_greedy.log)"
  return "$rc"
}

# ------------------------------------------------------------------------------------ OOM
step_oom() {
  need_bin "$SERVER_BIN" || return 1
  [[ -f $MODEL/config.json ]] || { SUMMARY="no model (make_model failed)"; return 1; }
  DETAILS="$OUTDIR/oom.json"
  local mode=real args=()
  if ((DRY)); then
    mode=simulated
    args=(--big-n 4 --small 2)
  else
    args=(--fraction "$OOM_FRACTION" --headroom-mb "$OOM_HEADROOM")
  fi
  local t l
  t=$(cap 240)
  l=$(($(left) - 120)) # leave the benchmarks their time
  ((l < t)) && t=$l
  ((t < 30)) && t=30
  timeout "$t" "$PYTHON" "$GPU/oom_check.py" --server "$SERVER_BIN" --model "$MODEL" --device "$DEVICE" \
    --dtype "$DTYPE" --mode "$mode" --workdir "$WORK" --out "$DETAILS" "${args[@]}"
  local rc=$?
  cp "$WORK"/oom-server-*.log "$OUTDIR/logs/" 2>/dev/null
  [[ -f $DETAILS ]] || SUMMARY="oom_check.py wrote nothing (see logs/oom.log)"
  return "$rc"
}

# ----------------------------------------------------------------------------- benchmarks
step_bench_writeup() {
  need_bin "$BUILD_DIR/writeup-bench" || return 1
  [[ -f $MODEL/config.json ]] || { SUMMARY="no model (make_model failed)"; return 1; }
  DETAILS="$OUTDIR/bench_writeup.json"
  local args
  if ((DRY)); then
    args=(--tokens 8 --runs 1 --concurrency 2 --sequences 1 --timeout 60 --ttft-runs 1)
  else
    args=(--tokens 128 --runs 3 --concurrency '1,64' --sequences 7 --timeout "$(cap 150)")
  fi
  local t l
  t=$(cap 330)
  l=$(($(left) - 75)) # leave bench_hf its minute
  ((l < t)) && t=$l
  ((t < 20)) && t=20
  timeout "$t" "$PYTHON" "$GPU/bench_writeup.py" --bench "$BUILD_DIR/writeup-bench" \
    --generate "$BUILD_DIR/writeup-generate" --model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" \
    --budget "$((t - 5))" --out "$DETAILS" "${args[@]}"
  local rc=$?
  [[ -f $DETAILS ]] || SUMMARY="bench_writeup.py wrote nothing (see logs/bench_writeup.log)"
  return "$rc"
}

step_bench_hf() {
  if ((DRY)); then SUMMARY="dry run: needs CUDA and HF transformers"; return 3; fi
  [[ -f $MODEL/config.json ]] || { SUMMARY="no model (make_model failed)"; return 1; }
  DETAILS="$OUTDIR/bench_hf.json"
  timeout "$(cap 200)" "$PYTHON" "$GPU/hf_check.py" bench --model "$MODEL" --tokens 128 --runs 3 \
    --requests 64 --sequences 7 --out "$DETAILS"
  local rc=$?
  [[ -f $DETAILS ]] || SUMMARY="hf_check.py bench wrote nothing (see logs/bench_hf.log)"
  return "$rc"
}

# ---------------------------------------------------------------------------------- main
log "mode $MODE, output $OUTDIR, build $BUILD_DIR, budget ${BUDGET} s"
run_step env step_env 5
run_step build step_build 30
# Whatever the build step did, later steps need the packed libraries at run time too.
setup_deps >/dev/null 2>&1
run_step unit_tests step_unit 20
run_step golden step_golden 10
run_step make_model step_make_model 10
run_step hf_greedy step_hf_greedy 20
run_step oom step_oom 20
run_step bench_writeup step_bench_writeup 30
run_step bench_hf step_bench_hf 30
"$PYTHON" "$GPU/results.py" report "$OUTDIR" --mode "$MODE" --started "$STARTED" >/dev/null
cat "$OUTDIR/results.md"
log "done in $((SECONDS - T0)) s: $OUTDIR/results.json, $OUTDIR/results.md"
exit $((ANY_FAILED ? 1 : 0))
