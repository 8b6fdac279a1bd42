"""The NCCL communicator of normkit's SyncBatchNorm: one rank of a group of processes, one CUDA device
each, summing CUDA arrays in place with NCCL.

NCCL is loaded at run time from the ``nvidia-nccl-cu13`` wheel (or from ``NORMKIT_NCCL_LIBRARY``, or the
system's ``libnccl.so.2``), so ``import normkit`` works on machines without NCCL or a GPU. Members of a
communicator agree on an NCCL unique id made by one of them; ``from_mpi`` and ``from_torch`` share it
through an existing process group::

    comm = NCCLCommunicator.from_torch(None, device=torch.cuda.current_device())
    comm.allreduce(tensor)  # in place, on torch's current stream
"""

from __future__ import annotations

import importlib.util
import operator
import os
import sys
from typing import Any

try:
    from normkit import _nccl
except ImportError:  # built without CUDA or without nccl.h
    _nccl = None

__all__ = ["NCCLCommunicator", "is_available", "nccl_library_path"]

_SYSTEM_LIBRARY = "libnccl.so.2"


def nccl_library_path() -> str:
    """Where NCCL is loaded from: ``$NORMKIT_NCCL_LIBRARY`` if set, else ``nvidia/nccl/lib/libnccl.so.2``
    of the installed ``nvidia-nccl-cu13`` wheel, else ``"libnccl.so.2"`` (the dynamic loader's search)."""
    env = os.environ.get("NORMKIT_NCCL_LIBRARY")
    if env:
        return env
    try:
        spec = importlib.util.find_spec("nvidia.nccl")  # a namespace package: no __file__
    except (ImportError, ValueError):
        spec = None
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(root, "lib", _SYSTEM_LIBRARY)
        if os.path.isfile(path):
            return path
    return _SYSTEM_LIBRARY


def _module():
    """The _nccl extension with NCCL loaded; RuntimeError when either is missing."""
    if _nccl is None:
        raise RuntimeError(
            "normkit was built without NCCL support (needs nvcc and nccl.h at build time: "
            "pip install nvidia-nccl-cu13, then rebuild normkit)"
        )
    if _nccl.loaded_path() is None:
        _nccl.load(nccl_library_path())
    return _nccl


def is_available() -> bool:
    """True when normkit was built with NCCL support and the NCCL library loads (needs no GPU)."""
    try:
        _module()
    except RuntimeError:
        return False
    return True


def _device_index(device: Any) -> int:
    """A CUDA device index from an int, "cuda:N" or a torch.device."""
    if hasattr(device, "__index__"):  # int, numpy integer
        return operator.index(device)
    if isinstance(device, str):
        index = int(device[5:]) if device.startswith("cuda:") and device[5:].isdigit() else None
    else:
        index = getattr(device, "index", None) if getattr(device, "type", None) == "cuda" else None  # torch.device
    if index is None:
        raise ValueError(
            f"device must be a CUDA device index, 'cuda:N' or a torch.device with an index, got {device!r}"
        )
    return int(index)


def _current_stream(array: Any) -> int:
    """The cudaStream_t (as an int) the caller's framework queues work on for `array`'s device."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(array, torch.Tensor):
        return torch.cuda.current_stream(array.device).cuda_stream if array.is_cuda else 0
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy.cuda.get_current_stream().ptr
    return 0


def _make_id_or_error(cls: type[NCCLCommunicator]) -> bytes | str:
    """A unique id, or the error message that other ranks must raise too instead of waiting forever."""
    try:
        return cls.unique_id()
    except Exception as e:  # passed on to every rank, which raise it too
        return f"{type(e).__name__}: {e}"


def _received(obj: Any, root: str) -> bytes:
    if isinstance(obj, str):
        raise RuntimeError(f"NCCL unique id: {root} could not make one: {obj}")
    return bytes(obj)


class NCCLCommunicator:
    """One rank of an NCCL communicator of `size` ranks on CUDA device `device`.

    All ranks construct it together (the constructor blocks until every rank has joined) with the same
    `unique_id`, made by one of them with :meth:`unique_id`. ``from_mpi`` and ``from_torch`` do that
    exchange over an existing group.
    """

    def __init__(self, unique_id: bytes, rank: int, size: int, device: Any) -> None:
        self._comm = _module().NcclCommunicator(bytes(unique_id), int(rank), int(size), _device_index(device))

    @staticmethod
    def unique_id() -> bytes:
        """A new NCCL unique id (128 bytes) naming a communicator; needs no GPU."""
        return _module().unique_id()

    @classmethod
    def from_mpi(cls, comm: Any, device: Any) -> NCCLCommunicator:
        """Over the ranks of an mpi4py communicator: rank 0 makes the unique id, ``comm.bcast`` shares it."""
        rank, size = comm.Get_rank(), comm.Get_size()
        uid = comm.bcast(_make_id_or_error(cls) if rank == 0 else None, root=0)
        return cls(_received(uid, "MPI rank 0"), rank, size, device)

    @classmethod
    def from_torch(cls, group: Any, device: Any) -> NCCLCommunicator:
        """Over the ranks of a torch.distributed process group (None: the default group): the group's
        rank 0 makes the unique id and ``broadcast_object_list`` shares it. Ranks are group ranks."""
        import torch.distributed as dist

        if group is None:
            group = dist.group.WORLD
        rank, size = dist.get_rank(group), dist.get_world_size(group)
        if rank < 0:
            raise ValueError("from_torch: this process is not a member of the given process group")
        root = dist.get_global_rank(group, 0)  # broadcast_object_list takes the root as a global rank
        box = [_make_id_or_error(cls) if rank == 0 else None]
        dist.broadcast_object_list(box, src=root, group=group)
        return cls(_received(box[0], f"rank 0 of the group (global rank {root})"), rank, size, device)

    @property
    def rank(self) -> int:
        return self._comm.rank

    @property
    def size(self) -> int:
        return self._comm.size

    @property
    def device(self) -> int:
        return self._comm.device

    @property
    def _nk_handle(self) -> int:
        """Address of the C++ normkit::Communicator, valid while this object lives."""
        return self._comm._nk_handle

    def allreduce(self, array: Any, stream: int | None = None) -> Any:
        """Sums a contiguous float32/float64 CUDA array (torch, CuPy or any DLPack producer) over all ranks,
        in place, and returns it. The sum is queued on `stream` (a cudaStream_t as an int; None: the
        framework's current stream for torch and CuPy, else the default stream) without waiting for it."""
        self._comm.allreduce(array, _current_stream(array) if stream is None else int(stream))
        return array

    def __repr__(self) -> str:
        return f"NCCLCommunicator(rank={self.rank}, size={self.size}, device=cuda:{self.device})"
