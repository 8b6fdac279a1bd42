"""Layer objects for NumPy arrays: ``layer(x)`` runs forward, ``layer.backward(dy)`` returns dx and
stores parameter gradients in ``layer.grads``. Parameters are NumPy arrays under the torch.nn names,
and ``state_dict()``/``load_state_dict()`` use torch.nn's keys, so weights move between the two."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping

import numpy as np

from normkit import functional as F
from normkit._arrays import float_arg, int_arg, is_channels_last, kind_of, normalized_shape_tuple
from normkit._momentum import batch_weight
from normkit._sync import SyncIdentity, check_enabled

__all__ = [
    "SyncBatchNorm",
    "BatchInstanceNorm1d",
    "BatchInstanceNorm2d",
    "BatchInstanceNorm3d",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LayerNorm",
    "LocalResponseNorm",
    "Module",
    "RMSNorm",
    "SwitchableNorm1d",
    "SwitchableNorm2d",
    "SwitchableNorm3d",
    "WeightNorm",
    "MeanOnlyBatchNorm1d",
    "MeanOnlyBatchNorm2d",
    "MeanOnlyBatchNorm3d",
    "SpectralNorm",
]


# What load_state_dict returns (torch's _IncompatibleKeys has the same two fields).
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class: parameters and buffers by name, train/eval, state_dict."""

    _param_names: tuple = ()
    _buffer_names: tuple = ()
    _expected_dims: tuple = ()  # input ranks the layer takes (checked by _check_input_dim)

    def __init__(self):
        self.training = True
        self.grads: dict = {}

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def _check_input_dim(self, x):
        if np.ndim(x) not in self._expected_dims:
            dims = " or ".join(f"{d}D" for d in self._expected_dims)
            raise ValueError(f"x: expected {dims} input, got {np.ndim(x)}D input")

    def train(self, mode: bool = True):
        if not isinstance(mode, bool):
            raise ValueError(f"train: training mode is expected to be boolean, got {type(mode).__name__} {mode!r}")
        self.training = mode
        return self

    def eval(self):
        return self.train(False)

    def _entries(self):
        for name in self._param_names + self._buffer_names:
            value = getattr(self, name, None)
            if value is not None:
                yield name, value

    def parameters(self):
        return {n: getattr(self, n) for n in self._param_names if getattr(self, n, None) is not None}

    def state_dict(self) -> dict:
        return {name: np.array(value, copy=True) for name, value in self._entries()}

    def load_state_dict(self, state, strict: bool = True):
        """Copies arrays (NumPy, or anything np.asarray takes, e.g. CPU torch tensors) into place, as
        torch.nn.Module.load_state_dict: RuntimeError for missing or unexpected keys (when `strict`) and
        for shape mismatches (always), nothing copied then; returns ``(missing_keys, unexpected_keys)``.
        A state without ``num_batches_tracked`` (checkpoints older than that buffer) keeps the current
        count, as torch does for them."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state_dict: expected a mapping (e.g. a dict), got {type(state).__name__}")
        own = dict(self._entries())
        missing = [k for k in own if k not in state and k != "num_batches_tracked"]
        unexpected = [k for k in state if k not in own]
        errors = []
        if strict and unexpected:
            errors.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected))
        if strict and missing:
            errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing))
        # Every value is converted and checked before the first is copied: a bad one must not leave the
        # layer half loaded.
        values = {}
        for name, target in own.items():
            if name not in state:
                continue
            try:
                value = np.asarray(state[name])
            except (TypeError, ValueError) as e:
                errors.append(f'While copying the parameter named "{name}": expected an array, got '
                              f"{type(state[name]).__name__} ({e})")
                continue
            # (Real numbers only: complex would lose its imaginary part, strings and objects would fail
            # half-way through the copies.)
            if value.dtype.kind not in "biuf" and value.dtype.name != "bfloat16":  # (ml_dtypes' is kind "V")
                errors.append(f'While copying the parameter named "{name}": expected an array of real numbers '
                              f"(float, int or bool), got dtype {value.dtype}")
            elif value.shape != target.shape:
                errors.append(f"size mismatch for {name}: copying a param with shape {value.shape} from "
                              f"checkpoint, the shape in current model is {target.shape}")
            values[name] = value
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        for name, value in values.items():
            own[name][...] = value
        return IncompatibleKeys(missing, unexpected)


class LayerNorm(Module):
    """LayerNorm over the trailing ``normalized_shape`` dimensions (torch.nn.LayerNorm semantics)."""

    _param_names = ("weight", "bias")

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=np.float32):
        super().__init__()
        self.normalized_shape = normalized_shape_tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.weight = np.ones(self.normalized_shape, dtype) if elementwise_affine else None
        self.bias = np.zeros(self.normalized_shape, dtype) if elementwise_affine and bias else None
        self._saved = None

    def forward(self, x):
        y, mean, rstd = F.layer_norm_forward(x, self.normalized_shape, self.weight, self.bias, self.eps)
        self._saved = (x, mean, rstd)
        return y

    def backward(self, dy):
        """dx for the last forward; parameter gradients go to ``self.grads``."""
        if self._saved is None:
            raise RuntimeError("backward: call forward first")
        x, mean, rstd = self._saved
        dx, dw, db = F.layer_norm_backward(
            dy, x, self.normalized_shape, mean, rstd, self.weight,
            output_mask=(True, self.weight is not None, self.bias is not None),
            bias_dtype=None if self.bias is None else self.bias.dtype.name,
        )
        self.grads = {k: v for k, v in (("weight", dw), ("bias", db)) if v is not None}
        return dx

    def __repr__(self):
        return (f"LayerNorm({self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine})")


class RMSNorm(Module):
    """RMSNorm over the trailing ``normalized_shape`` dimensions (torch.nn.RMSNorm semantics;
    ``eps=None`` is the machine epsilon of the accumulation type)."""

    _param_names = ("weight",)

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, dtype=np.float32):
        super().__init__()
        self.normalized_shape = normalized_shape_tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.weight = np.ones(self.normalized_shape, dtype) if elementwise_affine else None
        self._saved = None

    def _weight_for(self, x):
        """The weight as the core takes it for x (x's dtype, or float32 for half x). torch's RMSNorm
        takes a weight of any float dtype (computing in the wider one, returning x's dtype), so other
        weights are cast to x's accumulation dtype; their gradient goes back to the weight's dtype."""
        w = self.weight
        if w is None:
            return None
        xd = kind_of(x).dtype_name(x)
        if w.dtype.name == xd or (w.dtype == np.float32 and xd in ("float16", "bfloat16")):
            return w
        return w.astype(np.float64 if xd == "float64" else np.float32)

    def forward(self, x):
        w = self._weight_for(x)
        y, rstd = F.rms_norm_forward(x, self.normalized_shape, w, self.eps)
        self._saved = (x, rstd, w)
        return y

    def backward(self, dy):
        if self._saved is None:
            raise RuntimeError("backward: call forward first")
        x, rstd, w = self._saved
        dx, dw = F.rms_norm_backward(dy, x, self.normalized_shape, rstd, w)
        self.grads = {"weight": dw.astype(self.weight.dtype, copy=False)} if dw is not None else {}
        return dx

    def __repr__(self):
        return f"RMSNorm({self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine})"


# ---- BatchNorm, InstanceNorm, GroupNorm --------------------------------------------------------------


class _BatchNorm(Module):
    """BatchNorm over [N, C, *] (torch.nn.BatchNormNd semantics, running statistics included)."""

    _param_names = ("weight", "bias")
    _buffer_names = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 dtype=np.float32):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = np.ones(num_features, dtype) if affine else None
        self.bias = np.zeros(num_features, dtype) if affine else None
        if track_running_stats:
            self.running_mean = np.zeros(num_features, dtype)
            self.running_var = np.ones(num_features, dtype)
            self.num_batches_tracked = np.array(0, dtype=np.int64)
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self._saved = None

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def forward(self, x):
        self._check_input_dim(x)
        updating = self.training and self.track_running_stats
        factor = batch_weight(self.momentum, self.num_batches_tracked, updating)
        batch_stats = self.training or self.running_mean is None
        use_running = not self.training or self.track_running_stats
        y, mean, rstd = F.batch_norm_forward(
            x, self.running_mean if use_running else None, self.running_var if use_running else None,
            self.weight, self.bias, batch_stats, factor, self.eps,
        )
        if updating:
            self.num_batches_tracked += 1
        self._saved = (x, mean, rstd, batch_stats)
        return y

    def backward(self, dy):
        if self._saved is None:
            raise RuntimeError("backward: call forward first")
        x, mean, rstd, batch_stats = self._saved
        dx, dw, db = F.batch_norm_backward(dy, x, mean, rstd, self.weight, batch_stats,
                                           output_mask=(True, self.affine, self.affine))
        self.grads = {"weight": dw, "bias": db} if self.affine else {}
        return dx

    def __repr__(self):
        return (f"{type(self).__name__}({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats})")


class BatchNorm1d(_BatchNorm):
    _expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    _expected_dims = (4,)


class BatchNorm3d(_BatchNorm):
    _expected_dims = (5,)


class _InstanceNorm(_BatchNorm):
    """InstanceNorm over [N, C, *] or unbatched [C, *] (torch.nn.InstanceNormNd semantics)."""

    _no_batch_dim = 0

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False,
                 dtype=np.float32):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype)

    def _check_input_dim(self, x):
        if np.ndim(x) not in (self._no_batch_dim, self._no_batch_dim + 1):
            raise ValueError(f"x: expected {self._no_batch_dim}D (unbatched) or {self._no_batch_dim + 1}D "
                             f"(batched) input, got {np.ndim(x)}D input")

    def forward(self, x):
        self._check_input_dim(x)
        unbatched = np.ndim(x) == self._no_batch_dim
        xb = x[None] if unbatched else x
        use_input_stats = self.training or not self.track_running_stats
        factor = 0.0 if self.momentum is None else self.momentum
        y, mean, rstd = F.instance_norm_forward(xb, self.running_mean, self.running_var, self.weight,
                                                self.bias, use_input_stats, factor, self.eps)
        self._saved = (xb, mean, rstd, use_input_stats, unbatched)
        return y[0] if unbatched else y

    def backward(self, dy):
        if self._saved is None:
            raise RuntimeError("backward: call forward first")
        xb, mean, rstd, use_input_stats, unbatched = self._saved
        dyb = dy[None] if unbatched else dy
        dx, dw, db = F.instance_norm_backward(dyb, xb, mean, rstd, self.weight, use_input_stats,
                                              output_mask=(True, self.affine, self.affine))
        self.grads = {"weight": dw, "bias": db} if self.affine else {}
        return dx[0] if unbatched else dx


class InstanceNorm1d(_InstanceNorm):
    _no_batch_dim = 2


class InstanceNorm2d(_InstanceNorm):
    _no_batch_dim = 3


class InstanceNorm3d(_InstanceNorm):
    _no_batch_dim = 4


class GroupNorm(Module):
    """GroupNorm over [N, C, *] (torch.nn.GroupNorm semantics)."""

    _param_names = ("weight", "bias")

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, dtype=np.float32):
        super().__init__()
        if num_groups < 1 or num_channels % num_groups:
            raise ValueError(f"num_groups: expected a divisor of num_channels={num_channels}, got {num_groups}")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        self.weight = np.ones(num_channels, dtype) if affine else None
        self.bias = np.zeros(num_channels, dtype) if affine else None
        self._saved = None

    def forward(self, x):
        y, mean, rstd = F.group_norm_forward(x, self.num_groups, self.weight, self.bias, self.eps)
        self._saved = (x, mean, rstd)
        return y

    def backward(self, dy):
        if self._saved is None:
            raise RuntimeError("backward: call forward first")
        x, mean, rstd = self._saved
        dx, dw, db = F.group_norm_backward(dy, x, self.num_groups, mean, rstd, self.weight,
                                           output_mask=(True, self.affine, self.affine))
        self.grads = {"weight": dw, "bias": db} if self.affine else {}
        return dx

    def __repr__(self):
        return f"GroupNorm({self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine})"


class _BatchInstanceNorm(Module):
    """Batch-Instance Normalization (Nam & Kim, NeurIPS 2018) over [N, C, *spatial]::

        y = weight * (r * xhat_BN + (1 - r) * xhat_IN) + bias,   r = clip(rho, 0, 1)

    xhat_BN as BatchNorm's (batch statistics when training, running statistics in eval; running
    statistics updated with ``momentum``, ``momentum=None`` for the cumulative average), xhat_IN with
    per-(n, c) statistics. rho (init 1: pure BatchNorm) is clipped in the forward; its gradient is
    torch.clamp's (passed where 0 <= rho <= 1, bounds included). ``backward(dy)`` stores
    ``grads = {"weight", "bias", "rho"}`` ({"rho"} only without affine).
    """

    _param_names = ("weight", "bias", "rho")
    _buffer_names = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, dtype=np.float32):
        super().__init__()
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        self.weight = np.ones(num_features, dtype) if affine else None
        self.bias = np.zeros(num_features, dtype) if affine else None
        self.rho = np.ones(num_features, dtype)
        self.running_mean = np.zeros(num_features, dtype)
        self.running_var = np.ones(num_features, dtype)
        self.num_batches_tracked = np.array(0, dtype=np.int64)
        self._saved = None

    def reset_running_stats(self):
        self.running_mean[...] = 0
        self.running_var[...] = 1
        self.num_batches_tracked[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        self.rho[...] = 1
        if self.affine:
            self.weight[...] = 1
            self.bias[...] = 0

    def forward(self, x):
        self._check_input_dim(x)
        factor = batch_weight(self.momentum, self.num_batches_tracked, self.training)
        y, *stats = F.batch_instance_norm_forward(x, self.rho, self.running_mean, self.running_var, self.weight,
                                                  self.bias, self.training, factor, self.eps)
        if self.training:
            self.num_batches_tracked += 1
        self._saved = (x, stats, self.training)
        return y

    def backward(self, dy):
        if self._saved is None:
            raise RuntimeError("backward: call forward first")
        x, stats, training = self._saved
        dx, dw, db, dr = F.batch_instance_norm_backward(dy, x, self.rho, *stats, self.weight, training,
                                                        output_mask=(True, self.affine, self.affine, True))
        self.grads = {"weight": dw, "bias": db, "rho": dr} if self.affine else {"rho": dr}
        return dx

    def __repr__(self):
        return (f"{type(self).__name__}({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine})")


class BatchInstanceNorm1d(_BatchInstanceNorm):
    _expected_dims = (3,)


class BatchInstanceNorm2d(_BatchInstanceNorm):
    _expected_dims = (4,)


class BatchInstanceNorm3d(_BatchInstanceNorm):
    _expected_dims = (5,)


class _SwitchableNorm(Module):
    """Switchable Normalization (Luo et al., ICLR 2019) over [N, C, *spatial]::

        y = weight * (x - mu) / sqrt(s2 + eps) + bias,
        mu = sum_k softmax(mean_weight)_k mu_k,  s2 = sum_k softmax(var_weight)_k s2_k  (k = IN, LN, BN)

    with population variances (see :func:`normkit.functional.switchable_norm_forward`). mean_weight and
    var_weight are 3 logits each (IN, LN, BN), initialised to 0; a 2-D input (SwitchableNorm1d on
    [N, C]) mixes LN and BN only (softmax over those two logits). The BN term uses batch statistics when
    training, updating running_mean/running_var as ``(1 - momentum) * running + momentum * batch``
    (``momentum=0.003``: the reference implementation's decay 0.997; running_var takes the population
    batch variance), and the running statistics in eval. ``backward(dy)`` stores ``grads`` for
    "weight", "bias" (with affine), "mean_weight" and "var_weight".
    """

    _param_names = ("weight", "bias", "mean_weight", "var_weight")
    _buffer_names = ("running_mean", "running_var")

    def __init__(self, num_features, eps=1e-5, momentum=0.003, affine=True, dtype=np.float32):
        super().__init__()
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        self.weight = np.ones(num_features, dtype) if affine else None
        self.bias = np.zeros(num_features, dtype) if affine else None
        self.mean_weight = np.zeros(3, dtype)
        self.var_weight = np.zeros(3, dtype)
        self.running_mean = np.zeros(num_features, dtype)
        self.running_var = np.ones(num_features, dtype)
        self._saved = None

    def reset_running_stats(self):
        self.running_mean[...] = 0
        self.running_var[...] = 1

    def reset_parameters(self):
        self.reset_running_stats()
        self.mean_weight[...] = 0
        self.var_weight[...] = 0
        if self.affine:
            self.weight[...] = 1
            self.bias[...] = 0

    def forward(self, x):
        self._check_input_dim(x)
        y, saved = F.switchable_norm_forward(x, self.mean_weight, self.var_weight, self.running_mean,
                                             self.running_var, self.weight, self.bias, self.training,
                                             self.momentum, self.eps)
        self._saved = (x, saved, self.training)
        return y

    def backward(self, dy):
        if self._saved is None:
            raise RuntimeError("backward: call forward first")
        x, saved, training = self._saved
        dx, dw, db, dm, dv = F.switchable_norm_backward(
            dy, x, self.mean_weight, self.var_weight, saved, self.weight, training,
            output_mask=(True, self.affine, self.affine, True, True))
        self.grads = {"mean_weight": dm, "var_weight": dv}
        if self.affine:
            self.grads.update(weight=dw, bias=db)
        return dx

    def __repr__(self):
        return (f"{type(self).__name__}({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine})")


class SwitchableNorm1d(_SwitchableNorm):
    _expected_dims = (2, 3)


class SwitchableNorm2d(_SwitchableNorm):
    _expected_dims = (4,)


class SwitchableNorm3d(_SwitchableNorm):
    _expected_dims = (5,)


class LocalResponseNorm(Module):
    """LocalResponseNorm across the channels of [N, C, *] (torch.nn.LocalResponseNorm semantics; no
    parameters)."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.size, self.alpha = int_arg(size, "size"), float_arg(alpha, "alpha")
        self.beta, self.k = float_arg(beta, "beta"), float_arg(k, "k")
        self._saved = None

    def forward(self, x):
        y = F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)
        self._saved = x
        return y

    def backward(self, dy):
        if self._saved is None:
            raise RuntimeError("backward: call forward first")
        self.grads = {}
        return F.local_response_norm_backward(dy, self._saved, self.size, self.alpha, self.beta, self.k)

    def __repr__(self):
        return f"LocalResponseNorm({self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k})"


class WeightNorm(Module):
    """torch.nn.utils.parametrizations.weight_norm for a NumPy weight: ``weight = g * v / ||v||``, the
    norm over every axis but ``dim`` (``dim=None``, or -1 as torch spells it: the whole array).

    Initialised from ``weight`` as torch does: ``v = weight`` and ``g = ||weight||`` over the other
    axes, keeping them as size 1 (a 0-d array for the whole array). The parameters are stored under
    torch's names ``original0`` (g) and ``original1`` (v), which are also the state_dict keys;
    ``backward(dw)`` stores ``grads = {"original0": dg, "original1": dv}``. Zero-norm slices give
    inf/nan, as in torch.
    """

    _param_names = ("original0", "original1")

    def __init__(self, weight, dim=0):
        super().__init__()
        v = np.array(weight, copy=True)
        if np.issubdtype(v.dtype, np.integer) or v.dtype == np.bool_:
            raise TypeError(f"weight: expected a floating-point array, got {v.dtype}")
        self.dim = -1 if dim is None else int_arg(dim, "dim")
        nd = v.ndim
        if not -nd <= self.dim < nd:
            raise ValueError(f"dim: expected a dimension in [{-nd}, {nd - 1}] for weight of shape {v.shape}, "
                             f"got {self.dim}")
        wide = v.astype(np.float64)
        if self.dim == -1:
            g = np.asarray(np.sqrt(np.sum(wide * wide)))
        else:
            axes = tuple(i for i in range(nd) if i != self.dim % nd)
            g = np.sqrt(np.sum(wide * wide, axis=axes, keepdims=True))
        self.original0 = g.astype(v.dtype)
        self.original1 = v

    @property
    def g(self):
        return self.original0

    @property
    def v(self):
        return self.original1

    @property
    def weight(self):
        return F.weight_norm(self.original1, self.original0, self.dim)

    def forward(self, x=None):
        """The weight (the parametrization's output); x is ignored."""
        return self.weight

    def backward(self, dw):
        _, norms = F.weight_norm_forward(self.original1, self.original0, self.dim)
        dv, dg = F.weight_norm_backward(dw, self.original1, self.original0, norms, self.dim)
        self.grads = {"original0": dg, "original1": dv}

    def __repr__(self):
        return f"WeightNorm(shape={tuple(self.original1.shape)}, dim={self.dim})"


class SyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics cover the batches of all processes of ``comm`` (a
    :mod:`normkit.distributed` communicator; None: torch.distributed's default group when initialized,
    MPI ``COMM_WORLD`` under mpirun, else local). Evaluation uses the running statistics and does not
    communicate. ``sync_check`` (default: NORMKIT_SYNC_CHECK=1) makes processes that call different layers
    raise instead of mixing their statistics. ``backward`` returns dx; ``grads`` holds this process's
    dweight/dbias (average them over processes as data-parallel training does)."""

    _expected_dims = None

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, comm=None,
                 sync_check=None, dtype=np.float32):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype)
        self._comm_given = comm is not None  # a resolved default is not copied (see __getstate__)
        if comm is None:
            from normkit.distributed import default_communicator

            comm = default_communicator()
        self.comm = comm
        self._identity = SyncIdentity(check_enabled(sync_check))
        self._synced = False
        self._check = None

    def __getstate__(self):
        # A communicator wraps process-wide MPI/torch state and cannot be copied; the default one is
        # resolved again where the copy is unpickled (as the torch twin does).
        if self._comm_given:
            raise TypeError("SyncBatchNorm with an explicit comm cannot be copied or pickled; "
                            "construct it with comm=None (the default communicator) to copy it")
        state = dict(self.__dict__)
        state["comm"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.comm is None:
            from normkit.distributed import default_communicator

            self.comm = default_communicator()

    def _check_input_dim(self, x):
        if np.ndim(x) < 2:
            raise ValueError(f"x: expected at least 2 dimensions [N, C, *], got {np.ndim(x)}")

    def forward(self, x):
        self._synced = self.training
        if not self.training:
            return super().forward(x)
        self._check_input_dim(x)
        factor = batch_weight(self.momentum, self.num_batches_tracked, self.track_running_stats)
        check = self._identity.next_call()
        y, mean, rstd = F.sync_batch_norm_forward(x, self.running_mean, self.running_var, self.weight, self.bias,
                                                  factor, self.eps, self.comm, check)
        if self.track_running_stats:
            self.num_batches_tracked += 1
        self._saved = (x, mean, rstd, True)
        self._check = check
        return y

    def backward(self, dy):
        if self._saved is None or not self._synced:
            return super().backward(dy)
        x, mean, rstd, _ = self._saved
        dx, dw, db = F.sync_batch_norm_backward(dy, x, mean, rstd, self.weight, self.comm, self._check,
                                                output_mask=(True, self.affine, self.affine))
        self.grads = {"weight": dw, "bias": db} if self.affine else {}
        return dx
class SpectralNorm(Module):
    """torch.nn.utils.parametrizations.spectral_norm for a NumPy weight (2 or more dims): ``weight =
    original / sigma`` with ``sigma = _u^T W _v``, W the weight with ``dim`` moved first and flattened to
    a matrix [H, K]. In training mode every access of ``weight`` (or call) first runs
    ``n_power_iterations`` power-iteration steps on the buffers ``_u`` ([H]) and ``_v`` ([K]) in place,
    as torch does; in eval mode the stored vectors are used.

    Initialised as torch does: ``_u``, ``_v`` drawn from a standard normal (here NumPy's generator, seeded
    by ``seed``), normalized, then 15 power-iteration steps. Parameter ``original`` and buffers ``_u``,
    ``_v`` are the state_dict keys; torch's parametrized module stores them under
    ``parametrizations.weight.original`` and ``parametrizations.weight.0._u`` / ``..._v``.
    ``backward(dw)`` stores ``grads = {"original": ...}`` for the last forward (u, v constant, as in
    torch). Bad arguments and a zero sigma (an all-zero weight) raise ValueError.
    """

    _param_names = ("original",)
    _buffer_names = ("_u", "_v")

    def __init__(self, weight, n_power_iterations=1, dim=0, eps=1e-12, seed=None):
        super().__init__()
        w = np.array(weight, copy=True)
        if np.issubdtype(w.dtype, np.integer) or w.dtype == np.bool_:
            raise TypeError(f"weight: expected a floating-point array, got {w.dtype}")
        nd = w.ndim
        if nd < 2:
            raise ValueError(f"weight: expected 2 or more dimensions (torch normalizes a 1-D weight as "
                             f"w / max(||w||, eps), without power iteration), got shape {w.shape}")
        dim = 0 if dim is None else int_arg(dim, "dim")
        if not -nd <= dim < nd:
            raise ValueError(f"dim: expected a dimension in [{-nd}, {nd - 1}] for weight of shape {w.shape}, "
                             f"got {dim}")
        iterations = int_arg(n_power_iterations, "n_power_iterations")
        if iterations < 1:
            raise ValueError(f"n_power_iterations: expected a positive number, got {n_power_iterations}")
        self.dim, self.n_power_iterations, self.eps = dim % nd, iterations, float_arg(eps, "eps")
        h = w.shape[self.dim]
        k = w.size // h if h else 0
        rng = np.random.default_rng(seed)
        u, v = rng.standard_normal(h), rng.standard_normal(k)
        self.original = w
        self._u = (u / max(np.linalg.norm(u), self.eps)).astype(w.dtype)
        self._v = (v / max(np.linalg.norm(v), self.eps)).astype(w.dtype)
        F.spectral_norm_power_iteration(self.original, self._u, self._v, 15, self.eps, self.dim)
        self._saved = None

    @property
    def weight(self):
        y, sigma = F.spectral_norm_forward(self.original, self._u, self._v, self.n_power_iterations, self.eps,
                                           self.dim, self.training)
        self._saved = (self._u.copy(), self._v.copy(), sigma)
        return y

    def forward(self, x=None):
        """The weight (the parametrization's output); x is ignored."""
        return self.weight

    def backward(self, dw):
        if self._saved is None:
            raise RuntimeError("backward: call forward first")
        u, v, sigma = self._saved
        self.grads = {"original": F.spectral_norm_backward(dw, self.original, u, v, sigma, self.dim)}

    def __repr__(self):
        return (f"SpectralNorm(shape={tuple(self.original.shape)}, n_power_iterations={self.n_power_iterations}, "
                f"dim={self.dim}, eps={self.eps})")


class _MeanOnlyBatchNorm(Module):
    """Mean-only Batch Normalization (Salimans & Kingma, 2016) over [N, C, *spatial]::

        y = x - mean_c + bias_c

    with the per-channel batch mean when training (running_mean updated with ``momentum``, or the
    cumulative average for ``momentum=None``) and running_mean in eval. ``backward(dy)`` returns dx and
    stores ``grads = {"bias": ...}`` (with ``affine``).
    """

    _param_names = ("bias",)
    _buffer_names = ("running_mean", "num_batches_tracked")

    def __init__(self, num_features, momentum=0.1, affine=True, dtype=np.float32):
        super().__init__()
        self.num_features, self.momentum, self.affine = num_features, momentum, affine
        self.bias = np.zeros(num_features, dtype) if affine else None
        self.running_mean = np.zeros(num_features, dtype)
        self.num_batches_tracked = np.array(0, dtype=np.int64)
        self._saved = None

    def reset_running_stats(self):
        self.running_mean[...] = 0
        self.num_batches_tracked[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            self.bias[...] = 0

    def forward(self, x):
        self._check_input_dim(x)
        factor = batch_weight(self.momentum, self.num_batches_tracked, self.training)
        y, _ = F.mean_only_batch_norm_forward(x, self.running_mean, self.bias, self.training, factor)
        if self.training:
            self.num_batches_tracked += 1
        # (x itself is not needed for the gradients, only what dy must look like)
        self._saved = (self.training, is_channels_last(kind_of(x), x), np.shape(x), np.asarray(x).dtype)
        return y

    def backward(self, dy):
        if self._saved is None:
            raise RuntimeError("backward: call forward first")
        training, channels_last, shape, dtype = self._saved
        if np.shape(dy) != shape:
            raise ValueError(f"dy: expected shape {shape} (the forward's input), got {np.shape(dy)}")
        if np.asarray(dy).dtype != dtype:
            raise TypeError(f"dy: expected dtype {dtype} (the forward's input), got {np.asarray(dy).dtype}")
        dx, db = F.mean_only_batch_norm_backward(dy, training, output_mask=(True, self.affine),
                                                 bias_dtype=self.bias.dtype.name if self.affine else None,
                                                 channels_last=channels_last)
        self.grads = {"bias": db} if self.affine else {}
        return dx

    def __repr__(self):
        return f"{type(self).__name__}({self.num_features}, momentum={self.momentum}, affine={self.affine})"


class MeanOnlyBatchNorm1d(_MeanOnlyBatchNorm):
    _expected_dims = (2, 3)


class MeanOnlyBatchNorm2d(_MeanOnlyBatchNorm):
    _expected_dims = (4,)


class MeanOnlyBatchNorm3d(_MeanOnlyBatchNorm):
    _expected_dims = (5,)
