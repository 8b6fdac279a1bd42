#!/usr/bin/env bash
# The GPU half of the checks, for a machine with an NVIDIA GPU (the `device` tool's machines, whose
# python3 already holds a CUDA build of PyTorch, nanobind, scikit-build-core, ninja, pytest, hypothesis
# and the NCCL wheel; nothing can be downloaded there). It builds normkit with that python3, prints
# what was built, runs the tests that need the GPU, benchmarks the CUDA kernels against torch's
# (bench/cuda.py), then runs the whole suite there too. The log, the JUnit report and the benchmark
# land in $OUT when the device tool sets it, else in bench/results.
#
#   device run:  bash tests/run_gpu.sh        (one call: about 8 minutes on 16 cores)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${OUT:-bench/results}
mkdir -p "$DEST"
exec > >(tee "$DEST/gpu-log.txt") 2>&1

gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
nvidia-smi -L || echo "nvidia-smi: none"
[ "$gpus" -gt 0 ] && echo "driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
$PY -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
# Only the present GPU's architecture ("native"): a quarter of the compile time of the wheel's list.
ARCHS=${NORMKIT_CUDA_ARCHS:-native}
# NORMKIT_CUDA=ON: a build that silently left CUDA out would make every GPU test skip.
$PY -m pip install -q --no-build-isolation --no-deps --config-settings=cmake.define.NORMKIT_CUDA=ON \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES="$ARCHS" . || exit 1
$PY -c "import json, normkit; print(json.dumps(normkit.build_info())); print('cuda_available', normkit.cuda_available())"
# A GPU that normkit cannot use (a driver older than the CUDA runtime linked in: CUDA 13 needs 580 or
# newer) would make every GPU test skip, and pytest passes when all it did was skip.
if [ "$gpus" -gt 0 ] && [ "$($PY -c 'import normkit; print(normkit.cuda_available())')" != True ]; then
  echo "FAIL: nvidia-smi lists $gpus GPU(s) but normkit.cuda_available() is False (driver and build_info above)"
  exit 1
fi

status=0
# pytest-xdist where installed (the device machines have it): the whole suite on 8 workers took 4.5
# minutes there, inside one call's 10-minute limit with the build and the benchmark.
XDIST=()
$PY -c "import xdist" 2>/dev/null && XDIST=(-n "${NORMKIT_TEST_WORKERS:-8}")
# -rs lists every skip with its reason: on a GPU machine, none of these should skip for want of a GPU.
$PY -m pytest tests/test_cuda.py tests/test_cuda_coverage.py tests/test_nccl.py \
  tests/distributed/test_sync_batch_norm_nccl.py -q -rs "${XDIST[@]}" -p no:cacheprovider \
  --junitxml="$DEST/gpu-tests.xml" || status=1
# ... and a run in which no test ran, or one skipped for want of a CUDA device, is a failure.
$PY - "$DEST/gpu-tests.xml" <<'EOF_PY' || status=1
import sys
import xml.etree.ElementTree as ET

cases = list(ET.parse(sys.argv[1]).getroot().iter("testcase"))
reasons = [c.find("skipped").get("message", "") for c in cases if c.find("skipped") is not None]
ran, no_gpu = len(cases) - len(reasons), sum(r == "needs a CUDA device" for r in reasons)
print(f"GPU tests: {len(cases)} collected, {ran} ran, {len(reasons)} skipped ({no_gpu} for want of a CUDA device)")
sys.exit(1 if ran == 0 or no_gpu else 0)
EOF_PY
$PY -m bench.cuda --out "$DEST" --name cuda-bench || status=1
# Host time per call on tiny tensors (what bench.cuda's loop times hold beyond the kernels), profiled.
$PY -m bench.host_overhead --device cuda --profile "LayerNorm fwd+bwd" | tee "$DEST/host-overhead.txt" || status=1
# The whole suite on this machine's torch (which may differ from the CPU pin): every failure, not just the first.
$PY -m pytest tests -q "${XDIST[@]}" -p no:cacheprovider --junitxml="$DEST/all-tests.xml" || status=1
exit $status
