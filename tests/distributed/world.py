"""The process group the distributed tests run in, and helpers to cut one global batch into the local
batches of the processes. Under `mpirun -n W` the group is MPI COMM_WORLD; in a plain pytest run it is
the single process (W = 1), through MPI when normkit has its MPI module, so the same tests run at
W = 1, 2 and 4."""

from __future__ import annotations

import os

import numpy as np


def _mpi_available() -> bool:
    try:
        import mpi4py  # noqa: F401
        from normkit import _mpi  # noqa: F401
    except ImportError:
        return False
    return True


HAVE_MPI = _mpi_available()


def world():
    from normkit.distributed import LocalCommunicator, MPICommunicator

    return MPICommunicator() if HAVE_MPI else LocalCommunicator()


COMM = world()
RANK, SIZE = COMM.rank, COMM.size


def uneven_counts(size: int = SIZE) -> list[int]:
    """Local batch sizes with an empty one whenever there are 2+ processes: [2], [2, 0], [2, 0, 3, 1]."""
    return [(3 * r + 2) % 5 for r in range(size)]


def local_part(global_array, counts, rank: int = RANK):
    """This process's slice of the global batch (dim 0) for the given local batch sizes."""
    start = sum(counts[:rank])
    return global_array[start:start + counts[rank]]


def summed(comm, array) -> np.ndarray:
    """The float64 sum of `array` over the processes of comm (a copy)."""
    a = np.array(array, dtype=np.float64, copy=True).reshape(-1)
    comm.allreduce(a)
    return a.reshape(np.shape(array))


def seed_for(test_name: str) -> int:
    """The same seed on every process (the global batch is generated identically everywhere)."""
    return sum(map(ord, test_name)) + int(os.environ.get("NORMKIT_TEST_SEED", "0"))


class CountingCommunicator:
    """Wraps a communicator and counts what goes through it (calls and bytes)."""

    def __init__(self, inner):
        self.inner, self.calls, self.bytes = inner, 0, 0

    @property
    def rank(self):
        return self.inner.rank

    @property
    def size(self):
        return self.inner.size

    def allreduce(self, array):
        self.calls += 1
        self.bytes += array.nbytes
        return self.inner.allreduce(array)
