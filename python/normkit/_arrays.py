"""The caller's array kind: how to hand an array to the core and how to allocate results like it.

NumPy arrays and torch tensors are recognised directly; any other object with ``__dlpack__`` is read
through DLPack, and its results are built with its ``__array_namespace__`` when it has one (JAX, CuPy,
array-API libraries), otherwise they are NumPy arrays. CUDA work is queued on torch's current stream
for torch tensors, on CuPy's for CuPy arrays, and on the legacy default stream (0) for other DLPack
arrays (see _DLPackKind.stream).
"""

from __future__ import annotations

import math
import numbers
import operator
import sys

import numpy as np

from normkit import _core

# CPU outputs at least this large come from normkit's host cache (see normkit.empty_host_cache): a
# fresh allocation of this size is faulted in page by page on first write when the previous outputs
# are still alive (autograd keeps them), which costs more than the op (LayerNorm [64, 4096] forward
# with three outputs held: 185 us from malloc, 115 us from the cache). Smaller ones come from malloc's
# bins, already mapped.
CACHED_OUTPUT_BYTES = 256 << 10
_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}

_ACC = {"float16": "float32", "bfloat16": "float32", "float32": "float32", "float64": "float64"}
# (A dict lookup: numpy's dtype.name builds the string anew, ~2 us, several times per op.)
_NUMPY_NAMES = {np.dtype(name): name for name in ("float16", "float32", "float64")}


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def int_arg(value, arg: str) -> int:
    """value as an int (Python and NumPy integers; bool and float are a TypeError naming `arg`, as
    torch rejects them: truncating 2.5 to 2 would hide a mistake). Past int64 is a ValueError naming
    `arg` (the extension would only say that no overload matched)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{arg}: expected an int, got bool {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{arg}: expected an int, got {type(value).__name__} {value!r}") from None
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"{arg}: expected an int in the int64 range, got {value}")
    return value


def float_arg(value, arg: str) -> float:
    """value as a float: Python and NumPy real numbers, or a 0-d real array or tensor (torch takes a
    tensor eps). Strings, None, bool and complex numbers are a TypeError naming `arg`: float() would take
    "1e-5", and None or "abc" would fail with a message that does not say which argument."""
    if isinstance(value, float):  # (the common case first)
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        return float(value)
    dtype = getattr(value, "dtype", None)
    if getattr(value, "ndim", None) == 0 and dtype is not None and _is_real_number_dtype(dtype):
        return float(value)
    raise TypeError(f"{arg}: expected a real number, got {type(value).__name__} {value!r}")


def _is_real_number_dtype(dtype) -> bool:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(dtype, torch.dtype):
        return not (dtype.is_complex or dtype == torch.bool)
    try:
        return np.dtype(dtype).kind in "iuf"
    except TypeError:  # (another library's dtype)
        return False


def bool_arg(value, arg: str) -> bool:
    """value as a bool: Python and NumPy bools only. bool() would count the string "False" (or any
    non-empty string, or 2) as True; torch takes only bools there too."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{arg}: expected a bool, got {type(value).__name__} {value!r}")


def acc_dtype_name(dtype_name: str) -> str:
    """The accumulation dtype of an element dtype (float32, float64 for float64)."""
    return _ACC.get(dtype_name, "float32")


def _address(a) -> int:
    """The data address of a NumPy array (0 for anything else): cached outputs start away from it (see
    empty_cached)."""
    interface = getattr(a, "__array_interface__", None)
    return interface["data"][0] if interface else 0


def _large(shape, dtype_name) -> bool:
    return math.prod(shape) * _ITEMSIZE.get(dtype_name, 8) >= CACHED_OUTPUT_BYTES


# torch.Tensor and torch's DLPack export, looked up once torch is imported (to_core runs for every
# caller's argument of every op; the lookups cost as much as the export). normkit never imports torch
# itself.
_TENSOR = _TO_DLPACK = None


def _tensor_type():
    """torch.Tensor, or None while torch is not imported."""
    global _TENSOR, _TO_DLPACK
    if _TENSOR is None:
        torch = sys.modules.get("torch")
        if torch is not None:
            _TENSOR, _TO_DLPACK = torch.Tensor, torch._C._to_dlpack
    return _TENSOR


def _is_torch(x) -> bool:
    tensor = _TENSOR or _tensor_type()
    return tensor is not None and isinstance(x, tensor)


def _as_is(a):
    return a


class _NumpyKind:
    wraps = False  # (results are the caller's kind as allocated)
    export = staticmethod(_as_is)  # (an array this package allocated, as the core takes it)

    def shape(self, x):
        return x.shape

    def strides(self, x):
        return tuple(st // x.itemsize for st in x.strides)

    def permute(self, a, order):
        return a.transpose(order)

    def dtype_name(self, x):
        return _NUMPY_NAMES.get(x.dtype) or x.dtype.name

    def empty(self, shape, dtype_name, like):
        if _large(shape, dtype_name) and dtype_name != "bfloat16":
            return _core.empty_cached(shape, dtype_name, "numpy", _address(like))
        return np.empty(shape, dtype=dtype_name)

    def wrap(self, out):
        return out

    def stream(self, x):
        return 0


class _TorchKind:
    # torch's channels-last memory formats: channels_last (4-D) and channels_last_3d (5-D). Its layers
    # return contiguous outputs for other ranks, whatever the input's strides.
    output_channels_last_ranks = (4, 5)
    wraps = False

    def __init__(self):
        import torch

        self.torch = torch
        self.strided = torch.strided
        self.dtypes = {name: getattr(torch, name) for name in _ITEMSIZE}
        self.names = {dtype: name for name, dtype in self.dtypes.items()}
        # The current stream's handle without building a torch.cuda.Stream object (inductor's own call
        # for it): once per op, where the object cost several microseconds. CUDA builds of torch only.
        self.raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)
        # A DLPack capsule's import without torch.utils.dlpack.from_dlpack's Python (~1 us of 1.9 for a
        # host-cache output).
        self.from_dlpack = getattr(torch._C, "_from_dlpack", None) or torch.utils.dlpack.from_dlpack
        self.export = torch._C._to_dlpack

    def shape(self, x):
        return tuple(x.shape)

    def strides(self, x):
        return tuple(x.stride())

    def permute(self, a, order):
        return a.permute(order)

    def dtype_name(self, x):
        return self.names.get(x.dtype) or str(x.dtype).removeprefix("torch.")

    def empty(self, shape, dtype_name, like):
        # (Other dtypes too: the core then raises its TypeError naming the argument.)
        dtype = self.dtypes.get(dtype_name) or getattr(self.torch, dtype_name)
        # (is_cpu rather than like.device.type: a device object costs more than the check.)
        if like.is_cpu and shape:
            if _large(shape, dtype_name):
                return self.from_dlpack(_core.empty_cached(shape, dtype_name, "dltensor", like.data_ptr()))
            return self.torch.empty(*shape, dtype=dtype)  # (torch parses sizes faster than a tuple of them)
        return like.new_empty(shape, dtype=dtype)

    def wrap(self, out):
        return out

    def empty_like_dense(self, x):
        """torch.empty_like(x) (same strides) for an x laid out contiguously or channels-last whose
        output is too small for the host cache; None otherwise. One C++ call instead of the layout
        checks and a new_empty (~1 us against ~4 us: it matters for small inputs)."""
        torch = self.torch
        if x.is_cpu and x.numel() * x.element_size() >= CACHED_OUTPUT_BYTES:
            return None
        if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
            return torch.empty_like(x)
        return None

    def stream(self, x):
        if x.is_cuda:
            if self.raw_stream is not None:
                return self.raw_stream(x.get_device())
            return self.torch.cuda.current_stream(x.device).cuda_stream
        return 0


class _DLPackKind:
    """Any other DLPack producer: compute into NumPy (CPU) and convert back with its namespace."""

    wraps = True
    export = staticmethod(_as_is)

    def __init__(self, x):
        self.xp = x.__array_namespace__() if hasattr(x, "__array_namespace__") else None

    def shape(self, x):
        return tuple(x.shape)

    def strides(self, x):
        return None  # not part of the array API: results are channels-first

    def dtype_name(self, x):
        return str(x.dtype).split(".")[-1]

    def empty(self, shape, dtype_name, like):
        dev = like.__dlpack_device__()[0] if hasattr(like, "__dlpack_device__") else 1
        if dev != 1 and self.xp is not None:  # device memory: allocate with the caller's library
            return self.xp.empty(shape, dtype=getattr(self.xp, dtype_name), device=like.device)
        if dtype_name == "bfloat16":
            raise TypeError("x: bfloat16 arrays from this library need PyTorch or a CUDA array library")
        return np.empty(shape, dtype=dtype_name)

    def wrap(self, out):
        if isinstance(out, np.ndarray) and self.xp is not None:
            return self.xp.from_dlpack(out)
        return out

    def stream(self, x):
        """The CUDA stream the op runs on: CuPy's current stream (of x's device) for a CuPy array, as
        torch's for a torch tensor, so that the caller's later work on that stream sees the results.
        Else 0, the legacy default stream, which blocking streams wait for but non-blocking ones (JAX's,
        for one) do not: a caller working on those synchronises before reading the results."""
        cupy = sys.modules.get("cupy")
        if cupy is not None and isinstance(x, cupy.ndarray):
            with x.device:
                return cupy.cuda.get_current_stream().ptr
        return 0


_NUMPY = _NumpyKind()
_TORCH = None


def kind_of(x, arg: str = "x"):
    """The adapter for x's array library; TypeError for objects that are not arrays."""
    global _TORCH
    if isinstance(x, np.ndarray):
        return _NUMPY
    if _is_torch(x):
        if _TORCH is None:
            _TORCH = _TorchKind()
        if x.layout is not _TORCH.strided:  # (sparse, mkldnn: outputs like x could not even be allocated)
            raise TypeError(f"{arg}: expected a strided (dense) tensor, got layout {x.layout}")
        return _TORCH
    if hasattr(x, "__dlpack__"):
        return _DLPackKind(x)
    raise TypeError(
        f"{arg}: expected a NumPy array, a torch.Tensor or an object with __dlpack__, got {type(x).__name__}"
    )


def to_core(x, arg: str = "x", written: bool = False, required: bool = False):
    """What the extension accepts for x: NumPy arrays as they are, torch tensors as a DLPack capsule
    (of the data only: the autograd graph is the torch adapter's business), None as None. Called for
    every caller's argument of every op (the outputs an op allocates pass without it: functional._out),
    so the common cases come first. `written`: the op updates x in place (running statistics,
    power-iteration vectors), so a read-only NumPy array is a ValueError naming `arg` (the extension
    would only say that no overload matched). `required`: None is a TypeError naming `arg` (same
    reason)."""
    if x is None:
        if required:
            raise TypeError(f"{arg}: expected an array, got None")
        return x
    if type(x) is np.ndarray:  # (exact type: a NumPy caller pays nothing for the torch check below)
        return _numpy_to_core(x, arg, written)
    if isinstance(x, _TENSOR) if _TENSOR is not None else _is_torch(x):
        if x.is_neg():  # a lazy negation, which DLPack drops: the values would be read un-negated
            if written:
                raise ValueError(f"{arg}: expected a tensor without the negative bit (it is updated in place), "
                                 "got one with is_neg() True")
            x = x.resolve_neg()
        try:
            # (A tensor that requires grad exports as it is: torch's C export takes the data, never the graph;
            # detaching it first cost as much as the export.)
            return _TO_DLPACK(x)
        except (BufferError, RuntimeError):
            _check_exportable(sys.modules["torch"], x, arg)
            raise
    if isinstance(x, np.ndarray):  # (subclasses: np.memmap)
        return _numpy_to_core(x, arg, written)
    if hasattr(x, "__dlpack__"):
        return x
    raise TypeError(
        f"{arg}: expected a NumPy array, a torch.Tensor or an object with __dlpack__, got {type(x).__name__}"
    )


def _numpy_to_core(x, arg, written):
    if written and not x.flags.writeable:
        raise ValueError(f"{arg}: expected a writable array (it is updated in place), got a read-only one")
    if not x.dtype.isnative:
        raise TypeError(f"{arg}: expected an array in the machine's byte order, got dtype {x.dtype.str}")
    return x


def _check_exportable(torch, x, arg):
    """After DLPack refused x: a TypeError naming `arg` for what it refuses (sparse, mkldnn and meta
    tensors: BufferError or RuntimeError from inside DLPack otherwise). (Checked only then: these checks
    cost more than the export on every call.)"""
    if x.layout != torch.strided:
        raise TypeError(f"{arg}: expected a strided (dense) tensor, got layout {x.layout}")
    if not (x.is_cpu or x.is_cuda):
        raise TypeError(f"{arg}: expected a CPU or CUDA tensor, got device {x.device}")


def _compact_in(shape, strides, order) -> bool:
    expected = 1
    for d in reversed(order):
        if shape[d] != 1 and strides[d] != expected:
            return False
        expected *= shape[d]
    return True


def is_contiguous_array(x) -> bool:
    """x's elements lie one after the other in row-major order (size-1 dims aside)."""
    kind = kind_of(x)
    shape, strides = kind.shape(x), kind.strides(x)
    return strides is None or _compact_in(shape, strides, list(range(len(shape))))


def is_channels_last(kind, x) -> bool:
    """x is [N, C, *spatial] stored channels-last (NHWC, NDHWC) and not also channels-first."""
    shape, strides = kind.shape(x), kind.strides(x)
    if strides is None or len(shape) <= 2:
        return False
    nd = len(shape)
    last = [0, *range(2, nd), 1]
    return _compact_in(shape, strides, last) and not _compact_in(shape, strides, list(range(nd)))


def empty_like_layout(kind, x, dtype_name=None):
    """An uninitialised array like x, channels-last when x is, channels-first otherwise."""
    fast = getattr(kind, "empty_like_dense", None)
    if fast is not None and dtype_name is None:
        out = fast(x)
        if out is not None:
            return out
    return empty_in_layout(kind, kind.shape(x), dtype_name or kind.dtype_name(x), x, is_channels_last(kind, x))


def empty_output_like(kind, x):
    """A layer's output for x: like x (empty_like_layout), except where the library has no channels-last
    format for x's rank (torch: 3-D [N, C, L] stored as NLC gives a contiguous output, as torch's layers
    do; gradients keep x's layout)."""
    fast = getattr(kind, "empty_like_dense", None)
    if fast is not None:  # (contiguous, or 4-D channels-last: like x whatever the rank rule says)
        out = fast(x)
        if out is not None:
            return out
    ranks = getattr(kind, "output_channels_last_ranks", None)
    shape = kind.shape(x)
    if ranks is not None and len(shape) not in ranks and is_channels_last(kind, x):
        return empty_in_layout(kind, shape, kind.dtype_name(x), x, False)
    return empty_like_layout(kind, x)


def empty_in_layout(kind, shape, dtype_name, like, channels_last: bool):
    """An uninitialised [N, C, *spatial] array of `shape`, stored channels-last (NHWC, NDHWC) when
    `channels_last` and it has spatial dims, channels-first otherwise."""
    if not channels_last or len(shape) <= 2:
        return kind.empty(shape, dtype_name, like)
    nd = len(shape)
    stored = kind.empty((shape[0], *shape[2:], shape[1]), dtype_name, like)
    return kind.permute(stored, (0, nd - 1, *range(1, nd - 1)))


def normalized_shape_tuple(normalized_shape) -> tuple:
    """torch accepts an int or a sequence of ints for normalized_shape."""
    if type(normalized_shape) is tuple:  # (the common case, already what the core takes; a loop, not
        for s in normalized_shape:        # all() over a generator: half the time, on every call)
            if type(s) is not int or not _INT64_MIN <= s <= _INT64_MAX:
                break
        else:
            return normalized_shape
    if isinstance(normalized_shape, (int, np.integer)) and not isinstance(normalized_shape, bool):
        return (int_arg(normalized_shape, "normalized_shape"),)
    if isinstance(normalized_shape, (str, bytes)) or not hasattr(normalized_shape, "__iter__"):
        raise TypeError(
            f"normalized_shape: expected an int or a sequence of ints, got {type(normalized_shape).__name__}"
        )
    # (Each one an int: torch refuses 2.5 rather than truncating it.)
    return tuple(int_arg(s, "normalized_shape") for s in normalized_shape)
