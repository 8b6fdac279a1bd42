#!/usr/bin/env bash
# The GPU half of the checks, for a machine with an NVIDIA GPU (the `device` tool's machines, whose
# python3 already holds a CUDA build of PyTorch, nanobind, scikit-build-core, ninja, pytest, hypothesis
# and the NCCL wheel; nothing can be downloaded there). It builds normkit with that python3, prints
# what was built, runs the tests that need the GPU, benchmarks the CUDA kernels against torch's
# (bench/cuda.py), then runs the whole suite there too. The log, the JUnit report and the benchmark
# land in $OUT when the device tool sets it, else in bench/results.
#
#   device run:  bash tests/run_gpu.sh        (one call: about 5-10 minutes on 16 cores)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${OUT:-bench/results}
mkdir -p "$DEST"
exec > >(tee "$DEST/gpu-log.txt") 2>&1

nvidia-smi -L || echo "nvidia-smi: none"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
# NORMKIT_CUDA=ON: a build that silently left CUDA out would make every GPU test skip.
$PY -m pip install -q --no-build-isolation --no-deps --config-settings=cmake.define.NORMKIT_CUDA=ON . || exit 1
$PY -c "import json, normkit; print(json.dumps(normkit.build_info())); print('cuda_available', normkit.cuda_available())"

status=0
# -rs lists every skip with its reason: on a GPU machine, none of these should skip for want of a GPU.
$PY -m pytest tests/test_cuda.py tests/test_cuda_coverage.py tests/test_nccl.py \
  tests/distributed/test_sync_batch_norm_nccl.py -q -rs -p no:cacheprovider --junitxml="$DEST/gpu-tests.xml" || status=1
$PY -m bench.cuda --out "$DEST" --name cuda-bench || status=1
$PY -m pytest tests -q -x -p no:cacheprovider || status=1
exit $status
