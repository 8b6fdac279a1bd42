"""torch.nn twins: the torch.nn class with a normkit forward. Constructor arguments, parameters,
buffers, state_dict keys and extra_repr are inherited unchanged."""

from __future__ import annotations

import torch
from torch.nn.utils import parametrizations as _parametrizations
from torch.utils import checkpoint as _checkpoint

from normkit._momentum import batch_weight
from normkit._sync import SyncIdentity, check_enabled
from normkit.torch import functional as F

__all__ = [
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
    "RMSNorm",
    "SwitchableNorm1d",
    "SwitchableNorm2d",
    "SwitchableNorm3d",
    "WeightNorm",
    "weight_norm",
    "MeanOnlyBatchNorm1d",
    "MeanOnlyBatchNorm2d",
    "MeanOnlyBatchNorm3d",
    "SpectralNorm",
    "spectral_norm",
    "BatchNormXd",
    "SyncBatchNorm",
    "convert_sync_batchnorm",
    "revert_sync_batchnorm",
]


class LayerNorm(torch.nn.LayerNorm):
    """``torch.nn.LayerNorm`` computed by normkit."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


class RMSNorm(torch.nn.RMSNorm):
    """``torch.nn.RMSNorm`` computed by normkit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)


# Raised by non-reentrant activation checkpointing (from a saved-tensor hook, after the op has run) to
# stop a recomputation once it has what it needs; the batch then counts, as it does in torch.
_StopRecomputation = getattr(_checkpoint, "_StopRecomputationError", ())


def _counting_batch(module, updating: bool, run):
    """run(factor) with num_batches_tracked advanced first when `updating`, as torch's BatchNorm does (a
    forward that activation checkpointing recomputes then counts its batch again, as its running
    statistics do), and taken back if run raises anything (a rejected input, a meta or sparse tensor, a
    failing communicator: every exception), so a failed call leaves every buffer as it was -- except
    checkpointing's stop of a recomputation, after which torch's count stands. `factor` is the new
    batch's weight in the running statistics (0.0 when they are not updated)."""
    updating = updating and module.num_batches_tracked is not None
    factor = batch_weight(module.momentum, module.num_batches_tracked, updating)
    if updating:
        module.num_batches_tracked.add_(1)
    try:
        return run(factor)
    except _StopRecomputation:
        raise
    except BaseException:
        if updating:
            module.num_batches_tracked.sub_(1)
        raise


class _BatchNormForward:
    """torch's _BatchNorm.forward with a normkit batch_norm."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        use_running = not self.training or self.track_running_stats
        updating = self.training and self.track_running_stats
        return _counting_batch(self, updating, lambda factor: F.batch_norm(
            input,
            self.running_mean if use_running else None,
            self.running_var if use_running else None,
            self.weight, self.bias, batch_stats, factor, self.eps,
        ))


class BatchNorm1d(_BatchNormForward, torch.nn.BatchNorm1d):
    """``torch.nn.BatchNorm1d`` computed by normkit."""


class BatchNorm2d(_BatchNormForward, torch.nn.BatchNorm2d):
    """``torch.nn.BatchNorm2d`` computed by normkit."""


class BatchNorm3d(_BatchNormForward, torch.nn.BatchNorm3d):
    """``torch.nn.BatchNorm3d`` computed by normkit."""


class _InstanceNormApply:
    """torch's _InstanceNorm keeps its forward (input checks, unbatched input); only the op changes."""

    def _apply_instance_norm(self, input: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(
            input, self.running_mean, self.running_var, self.weight, self.bias,
            self.training or not self.track_running_stats,
            self.momentum if self.momentum is not None else 0.0, self.eps,
        )


class InstanceNorm1d(_InstanceNormApply, torch.nn.InstanceNorm1d):
    """``torch.nn.InstanceNorm1d`` computed by normkit."""


class InstanceNorm2d(_InstanceNormApply, torch.nn.InstanceNorm2d):
    """``torch.nn.InstanceNorm2d`` computed by normkit."""


class InstanceNorm3d(_InstanceNormApply, torch.nn.InstanceNorm3d):
    """``torch.nn.InstanceNorm3d`` computed by normkit."""


class GroupNorm(torch.nn.GroupNorm):
    """``torch.nn.GroupNorm`` computed by normkit."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)


class _BatchInstanceNorm(torch.nn.Module):
    """Batch-Instance Normalization (Nam & Kim, NeurIPS 2018) over [N, C, *spatial]::

        y = weight * (r * xhat_BN + (1 - r) * xhat_IN) + bias,   r = torch.clamp(rho, 0, 1)

    xhat_BN is BatchNorm's (batch statistics when training, with running_mean/running_var updated by
    ``momentum``, or the cumulative average for ``momentum=None``; the running statistics in eval),
    xhat_IN uses per-(n, c) statistics. Parameters weight, bias (with ``affine``) and rho (init 1),
    buffers running_mean, running_var, num_batches_tracked. rho is clipped in the forward as
    torch.clamp does, and so is its gradient: passed where 0 <= rho <= 1 (bounds included), 0 outside.
    """

    _expected_dims: tuple = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        if affine:
            self.weight = torch.nn.Parameter(torch.empty(num_features, **factory))
            self.bias = torch.nn.Parameter(torch.empty(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.rho = torch.nn.Parameter(torch.empty(num_features, **factory))
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_var.fill_(1)
        self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        with torch.no_grad():
            self.rho.fill_(1)
            if self.affine:
                self.weight.fill_(1)
                self.bias.zero_()

    def _check_input_dim(self, input):
        if input.dim() not in self._expected_dims:
            dims = " or ".join(f"{d}D" for d in self._expected_dims)
            raise ValueError(f"expected {dims} input (got {input.dim()}D input)")

    def extra_repr(self) -> str:
        return "{num_features}, eps={eps}, momentum={momentum}, affine={affine}".format(**self.__dict__)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        return _counting_batch(self, self.training, lambda factor: F.batch_instance_norm(
            input, self.rho, self.running_mean, self.running_var, self.weight, self.bias, self.training, factor,
            self.eps))


class BatchInstanceNorm1d(_BatchInstanceNorm):
    """Batch-Instance Normalization over [N, C, L]."""

    _expected_dims = (3,)


class BatchInstanceNorm2d(_BatchInstanceNorm):
    """Batch-Instance Normalization over [N, C, H, W]."""

    _expected_dims = (4,)


class BatchInstanceNorm3d(_BatchInstanceNorm):
    """Batch-Instance Normalization over [N, C, D, H, W]."""

    _expected_dims = (5,)


class _SwitchableNorm(torch.nn.Module):
    """Switchable Normalization (Luo et al., ICLR 2019) over [N, C, *spatial]::

        y = weight * (x - mu) / sqrt(s2 + eps) + bias,
        mu = sum_k softmax(mean_weight)_k mu_k,  s2 = sum_k softmax(var_weight)_k s2_k  (k = IN, LN, BN)

    with the paper's population variances. Parameters weight, bias (with ``affine``), mean_weight and
    var_weight (3 logits each, order IN, LN, BN, initialised to 0); buffers running_mean, running_var.
    When training the BN term uses the batch statistics and the running statistics are updated as
    ``(1 - momentum) * running + momentum * batch`` -- ``momentum=0.003`` is the reference
    implementation's moving-average decay 0.997 -- with running_var taking the population (biased)
    batch variance, as in the paper's equations; in eval the BN term uses the running statistics.
    SwitchableNorm1d on a 2-D [N, C] input mixes LN and BN only (the softmaxes run over those two
    logits, as the reference does).
    """

    _expected_dims: tuple = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.003, affine=True, device=None, dtype=None):
        super().__init__()
        if momentum is None:  # no num_batches_tracked here, so no cumulative average
            raise ValueError("momentum: expected a number (the new batch's weight), got None")
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        if affine:
            self.weight = torch.nn.Parameter(torch.empty(num_features, **factory))
            self.bias = torch.nn.Parameter(torch.empty(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.mean_weight = torch.nn.Parameter(torch.empty(3, **factory))
        self.var_weight = torch.nn.Parameter(torch.empty(3, **factory))
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_var.fill_(1)

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        with torch.no_grad():
            self.mean_weight.zero_()
            self.var_weight.zero_()
            if self.affine:
                self.weight.fill_(1)
                self.bias.zero_()

    def _check_input_dim(self, input):
        if input.dim() not in self._expected_dims:
            dims = " or ".join(f"{d}D" for d in self._expected_dims)
            raise ValueError(f"expected {dims} input (got {input.dim()}D input)")

    def extra_repr(self) -> str:
        return "{num_features}, eps={eps}, momentum={momentum}, affine={affine}".format(**self.__dict__)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        return F.switchable_norm(input, self.mean_weight, self.var_weight, self.running_mean, self.running_var,
                                 self.weight, self.bias, self.training, self.momentum, self.eps)


class SwitchableNorm1d(_SwitchableNorm):
    """Switchable Normalization over [N, C] (LN and BN only) or [N, C, L]."""

    _expected_dims = (2, 3)


class SwitchableNorm2d(_SwitchableNorm):
    """Switchable Normalization over [N, C, H, W]."""

    _expected_dims = (4,)


class SwitchableNorm3d(_SwitchableNorm):
    """Switchable Normalization over [N, C, D, H, W]."""

    _expected_dims = (5,)


class LocalResponseNorm(torch.nn.LocalResponseNorm):
    """``torch.nn.LocalResponseNorm`` computed by normkit."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.local_response_norm(input, self.size, self.alpha, self.beta, self.k)


class WeightNorm(_parametrizations._WeightNorm):
    """torch's weight-norm parametrization (``torch.nn.utils.parametrizations._WeightNorm``) computed
    by normkit: ``weight = original0 * original1 / ||original1||``, the norm over every dim but
    ``self.dim`` (-1: the whole tensor). right_inverse (the initialisation of g and v) is torch's."""

    def forward(self, weight_g, weight_v):
        return F.weight_norm(weight_v, weight_g, self.dim)


def weight_norm(module: torch.nn.Module, name: str = "weight", dim: int | None = 0) -> torch.nn.Module:
    """Like ``torch.nn.utils.parametrizations.weight_norm``, with the weight computed by normkit.

    torch registers its parametrization (so ``module.parametrizations.<name>.original0`` (g) and
    ``original1`` (v), the state_dict keys and the loader of old ``<name>_g``/``<name>_v`` checkpoints
    are torch's exactly), then the parametrization object becomes normkit's :class:`WeightNorm`.
    ``dim=None`` takes the norm of the whole tensor. Zero-norm slices give inf/nan, as in torch.
    """
    _parametrizations.weight_norm(module, name, dim)
    plist = module.parametrizations[name]
    plist[len(plist) - 1].__class__ = WeightNorm
    return module


class _AnyRank:
    """Inputs of any rank >= 2 ([N, C, *]), as torch.nn.SyncBatchNorm takes them."""

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")


class BatchNormXd(_AnyRank, _BatchNormForward, torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm for inputs of any rank >= 2 ([N, C, *]): what ``revert_sync_batchnorm`` turns a
    SyncBatchNorm (which does not know its input rank) into. State dict as torch's BatchNormNd."""


class SyncBatchNorm(_AnyRank, _BatchNormForward, torch.nn.modules.batchnorm._BatchNorm):
    """``torch.nn.SyncBatchNorm`` backed by normkit, on CPU and CUDA tensors.

    In training, the statistics cover the batches of all processes of ``comm`` (a
    :mod:`normkit.distributed` communicator) with one all-reduce per direction; ``comm=None`` means
    ``process_group`` (or torch.distributed's default group) when torch.distributed is initialized,
    MPI ``COMM_WORLD`` under mpirun with several processes, else this process alone -- resolved at the
    first training call. Evaluation does not communicate. ``sync_check`` (default NORMKIT_SYNC_CHECK=1)
    sends the layer's id and call number with each collective: processes that disagree all raise.
    State dict as torch's SyncBatchNorm and BatchNorm. (Not a subclass of torch.nn.SyncBatchNorm: DDP
    refuses CPU models that hold one.)
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None, device=None, dtype=None, *, comm=None, sync_check=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.process_group = process_group
        self.comm = comm
        self._comm_resolved = False  # comm=None: resolved at the first training call
        self._sync = SyncIdentity(check_enabled(sync_check))

    def _communicator(self):
        from normkit.distributed import as_communicator, default_communicator

        if self.comm is None:
            self.comm = default_communicator(self.process_group)
            self._comm_resolved = True
        else:  # (a ProcessGroup given as comm, as torch's positional process_group)
            self.comm = as_communicator(self.comm)
        return self.comm

    def __getstate__(self):
        # A resolved default communicator belongs to this process (and does not pickle): a copy
        # resolves its own. (A communicator given as `comm` is the caller's and stays.)
        state = super().__getstate__()
        if state.get("_comm_resolved"):
            state["comm"], state["_comm_resolved"] = None, False
        return state

    @classmethod
    def convert_sync_batchnorm(cls, module: torch.nn.Module, process_group=None) -> torch.nn.Module:
        """As ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` (see :func:`convert_sync_batchnorm`)."""
        return convert_sync_batchnorm(module, process_group=process_group)

    # A method, not a function of the layer: torch 2.11's dynamo takes a bound method's result as a
    # constant, but refuses a module passed as an argument.
    @torch.compiler.assume_constant_result
    def _single_process(self) -> bool:
        """Whether the communicator has one process (a constant for torch.compile, which cannot trace
        the communicator objects: a single-process SyncBatchNorm then compiles as BatchNorm does)."""
        return self._communicator().size == 1

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        # As torch: no communication in evaluation, nor for a single process (plain BatchNorm, which also
        # takes an empty batch: one process alone has no global count to check).
        if not self.training or self._single_process():
            return _BatchNormForward.forward(self, input)
        self._check_input_dim(input)
        # As torch: running statistics only while track_running_stats (it may be switched off later).
        rm, rv = (self.running_mean, self.running_var) if self.track_running_stats else (None, None)
        return _counting_batch(self, self.track_running_stats, lambda factor: F.sync_batch_norm(
            input, rm, rv, self.weight, self.bias, factor, self.eps, self._communicator(), self._sync.next_call()))


def _moved_state(src: torch.nn.Module, dst: torch.nn.Module) -> torch.nn.Module:
    # The same Parameter and buffer objects: optimizers and hooks that hold them stay valid.
    with torch.no_grad():
        if src.affine:
            dst.weight = src.weight
            dst.bias = src.bias
    dst.running_mean = src.running_mean
    dst.running_var = src.running_var
    dst.num_batches_tracked = src.num_batches_tracked
    dst.training = src.training
    if hasattr(src, "qconfig"):
        dst.qconfig = src.qconfig
    return dst


def convert_sync_batchnorm(module: torch.nn.Module, comm=None, process_group=None, sync_check=None) -> torch.nn.Module:
    """Every BatchNorm layer of ``module`` (torch's or normkit's BatchNorm1d/2d/3d, torch's SyncBatchNorm)
    replaced by a normkit :class:`SyncBatchNorm` over ``comm`` / ``process_group`` that keeps its
    parameters and buffers. Returns the converted module (a new object when ``module`` itself is one)."""
    out = module
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
        out = _moved_state(module, SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                                 module.track_running_stats, process_group, comm=comm,
                                                 sync_check=sync_check))
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, comm, process_group, sync_check))
    return out


def revert_sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """The inverse of :func:`convert_sync_batchnorm` (torch has none): every SyncBatchNorm (normkit's or
    torch's) becomes a normkit :class:`BatchNormXd` with the same parameters and buffers, for
    single-process evaluation or export."""
    out = module
    if isinstance(module, (torch.nn.SyncBatchNorm, SyncBatchNorm)):
        out = _moved_state(module, BatchNormXd(module.num_features, module.eps, module.momentum, module.affine,
                                               module.track_running_stats))
    for name, child in module.named_children():
        out.add_module(name, revert_sync_batchnorm(child))
    return out


class SpectralNorm(_parametrizations._SpectralNorm):
    """torch's spectral-norm parametrization (``torch.nn.utils.parametrizations._SpectralNorm``) computed
    by normkit: in training mode ``n_power_iterations`` power-iteration steps update the buffers ``_u`` and
    ``_v`` in place, then ``weight / sigma`` with ``sigma = _u^T W _v`` (the stored vectors in eval mode);
    W is the weight with ``self.dim`` moved first, flattened to a matrix. The gradient is torch's (u, v
    constant). A 1-D weight takes torch's own path (``F.normalize``: no power iteration). As in torch, a
    zero sigma (an all-zero weight) gives inf/nan."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1 or weight.numel() == 0:  # (torch's own path; an empty weight stays empty)
            return super().forward(weight)
        # torch checks n_power_iterations at registration only: a count set to 0 afterwards runs no step
        # (= the stored vectors, as in evaluation), and True counts as 1.
        iterations = int(self.n_power_iterations)
        return F.spectral_norm(weight, self._u, self._v, max(iterations, 1), self.eps, self.dim,
                               self.training and iterations > 0)


def spectral_norm(module: torch.nn.Module, name: str = "weight", n_power_iterations: int = 1, eps: float = 1e-12,
                  dim: int | None = None) -> torch.nn.Module:
    """Like ``torch.nn.utils.parametrizations.spectral_norm``, with the power iteration and the weight
    computed by normkit.

    torch registers its parametrization -- the argument checks (IndexError for dim, ValueError for
    n_power_iterations), ``dim=None`` meaning 1 for transposed convolutions and 0 otherwise, the random
    ``_u``/``_v`` drawn from torch's generator and their 15 initial power-iteration steps -- so a module
    built after ``torch.manual_seed(s)`` gets the same vectors as with torch, and the state_dict keys
    (``parametrizations.<name>.original``, ``parametrizations.<name>.0._u``, ``..._v``) are torch's.
    Then the parametrization object becomes normkit's :class:`SpectralNorm`.
    """
    _parametrizations.spectral_norm(module, name, n_power_iterations, eps, dim)
    plist = module.parametrizations[name]
    plist[len(plist) - 1].__class__ = SpectralNorm
    return module


class _MeanOnlyBatchNorm(torch.nn.Module):
    """Mean-only Batch Normalization (Salimans & Kingma, 2016), meant to follow a weight-normalized layer::

        y = x - mean_c + bias_c

    with the per-channel batch mean (over N and the spatial dims) when training and ``running_mean`` in
    eval; no division by the standard deviation. Parameter ``bias`` (with ``affine``, init 0); buffers
    ``running_mean`` (updated when training as ``(1 - momentum) * running_mean + momentum * mean``, or
    the cumulative average for ``momentum=None``) and ``num_batches_tracked``. Channels-last inputs give
    channels-last outputs.
    """

    _expected_dims: tuple = ()

    def __init__(self, num_features, momentum=0.1, affine=True, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.momentum, self.affine = num_features, momentum, affine
        if affine:
            self.bias = torch.nn.Parameter(torch.empty(num_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            with torch.no_grad():
                self.bias.zero_()

    def _check_input_dim(self, input):
        if input.dim() not in self._expected_dims:
            dims = " or ".join(f"{d}D" for d in self._expected_dims)
            raise ValueError(f"expected {dims} input (got {input.dim()}D input)")

    def extra_repr(self) -> str:
        return "{num_features}, momentum={momentum}, affine={affine}".format(**self.__dict__)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        return _counting_batch(self, self.training, lambda factor: F.mean_only_batch_norm(
            input, self.running_mean, self.bias, self.training, factor))


class MeanOnlyBatchNorm1d(_MeanOnlyBatchNorm):
    """Mean-only Batch Normalization over [N, C] or [N, C, L]."""

    _expected_dims = (2, 3)


class MeanOnlyBatchNorm2d(_MeanOnlyBatchNorm):
    """Mean-only Batch Normalization over [N, C, H, W]."""

    _expected_dims = (4,)


class MeanOnlyBatchNorm3d(_MeanOnlyBatchNorm):
    """Mean-only Batch Normalization over [N, C, D, H, W]."""

    _expected_dims = (5,)
