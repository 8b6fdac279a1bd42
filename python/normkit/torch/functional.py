"""normkit ops with autograd, mirroring torch.nn.functional's signatures."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as TF
from torch.autograd.graph import increment_version

from normkit import functional as _F
from normkit._arrays import bool_arg, float_arg, int_arg, is_channels_last, kind_of, normalized_shape_tuple
from normkit.torch import _custom_ops, _torch_composite
from normkit.torch import _higher_order as _H
from normkit.torch._torch_args import local_response_norm_input, rms_weight

__all__ = [
    "batch_instance_norm",
    "batch_norm",
    "group_norm",
    "instance_norm",
    "layer_norm",
    "local_response_norm",
    "rms_norm",
    "switchable_norm",
    "sync_batch_norm",
    "weight_norm",
    "spectral_norm",
    "mean_only_batch_norm",
]


_TORCH_KIND = kind_of(torch.empty(0))


_REQUIRED = ("input", "v", "g")


def _needs_autograd(**tensors) -> bool:
    """Whether the call must be recorded for autograd; without it the op runs directly (the
    autograd.Function costs ~10 us per call, as much as a small normalization). Anything but a tensor
    (None for an optional one) is a TypeError naming the argument, as in torch."""
    needs = False
    for arg, t in tensors.items():
        if isinstance(t, torch.Tensor):
            needs = needs or t.requires_grad
        elif t is not None or arg in _REQUIRED:
            raise TypeError(f"{arg}: expected a torch.Tensor, got {type(t).__name__}")
    return needs and torch.is_grad_enabled()


def _dtype_name(t):
    return None if t is None else _TORCH_KIND.dtype_name(t)


def _refuse_inference(**saved):
    """Before an autograd.Function's forward computes anything: torch cannot save an inference-mode tensor
    for backward, and its layers raise then (RuntimeError). Raising only at save_for_backward would
    come after the running statistics were updated."""
    for arg, t in saved.items():
        if t is not None and t.is_inference():
            raise RuntimeError(f"{arg}: Inference tensors cannot be saved for backward (torch.nn's layers raise "
                               "too). Clone it to get a normal tensor, or use torch.no_grad() instead of "
                               "torch.inference_mode().")


# torch.autograd.Function.apply is a Python classmethod around the C++ apply of _FunctionBase; where no
# torch.func transform is active (always, on the eager path: _routed sends those calls elsewhere) it does
# no more than unwrap tensors left over from a finished transform. Calling the C++ apply directly with
# that unwrapping kept saves ~1.7 us of the ~5 us the wrapper costs per call, for the ops used on small
# tensors (LayerNorm, RMSNorm, GroupNorm, BatchNorm, InstanceNorm). (torch.autograd.Function.apply
# where a torch lacks either.)
_unwrap_if_dead = getattr(getattr(torch._C, "_functorch", None), "unwrap_if_dead", None)
_C_APPLY = torch._C._FunctionBase.__dict__.get("apply") if _unwrap_if_dead is not None else None


def _eager_apply(function):
    """`function`.apply for arguments (tensor, tensor or None, [tensor or None,] others...), the number of
    leading tensor arguments being `function.tensors`."""
    if _C_APPLY is None:
        return function.apply
    c_apply = _C_APPLY.__get__(None, function)

    def live(t):
        return t if t is None else _unwrap_if_dead(t)

    if function.tensors == 3:
        return lambda x, a, b, *rest: c_apply(_unwrap_if_dead(x), live(a), live(b), *rest)
    return lambda x, a, *rest: c_apply(_unwrap_if_dead(x), live(a), *rest)


class _AffineNorm(torch.autograd.Function):
    """The pattern of LayerNorm, GroupNorm, BatchNorm, InstanceNorm and SyncBatchNorm:
    ``forward_op(x, weight, bias) -> (y, mean, rstd)`` and
    ``backward_op(dy, x, mean, rstd, weight, output_mask, bias_dtype) -> (dx, dweight, dbias)``, the ops'
    other arguments bound in the two closures (they need no gradient); ``composite(x, weight, bias,
    mean, rstd)``, the same forward in differentiable torch operations, for gradients of gradients
    (see _higher_order.py)."""

    tensors = 3  # (x, weight, bias: see _eager_apply)

    @staticmethod
    def forward(ctx, x, weight, bias, forward_op, backward_op, composite):
        _refuse_inference(input=x, weight=weight, bias=bias)
        y, mean, rstd = forward_op(x, weight, bias)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.backward_op = backward_op
        ctx.composite = composite
        ctx.bias_dtype = _dtype_name(bias)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:3])
        if _H.wants_graph():
            dx, dw, db, _, _ = _H.differentiable_grads(ctx.composite, (x, weight, bias, mean, rstd),
                                                       (*needs, False, False), dy)
        else:
            dx, dw, db = ctx.backward_op(dy, x, mean, rstd, weight, needs, ctx.bias_dtype)
        return dx, dw, db, None, None, None


class _RMSNorm(torch.autograd.Function):
    tensors = 2  # (x, weight)

    @staticmethod
    def forward(ctx, x, weight, normalized_shape, eps):
        y, rstd = _F.rms_norm_forward(x, normalized_shape, weight, eps)
        # (An inference-mode tensor cannot be saved for backward; torch's rms_norm takes one in training.)
        ctx.save_for_backward(x.clone() if x.is_inference() else x, weight, rstd)
        ctx.normalized_shape, ctx.eps = normalized_shape, eps
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        if _H.wants_graph():
            dx, dw = _H.differentiable_grads(lambda x, w: TF.rms_norm(x, ctx.normalized_shape, w, ctx.eps),
                                             (x, weight), (need_x, need_w), dy)
        else:
            dx, dw = _F.rms_norm_backward(dy, x, ctx.normalized_shape, rstd, weight, output_mask=(need_x, need_w))
        return dx, dw, None, None


_affine_norm, _rms_norm = _eager_apply(_AffineNorm), _eager_apply(_RMSNorm)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Like ``torch.nn.functional.layer_norm``."""
    shape = normalized_shape_tuple(normalized_shape)
    eps = float_arg(eps, "eps")
    if not _needs_autograd(input=input, weight=weight, bias=bias):
        return _F.layer_norm(input, shape, weight, bias, eps)
    return _affine_norm(
        input, weight, bias,
        lambda x, w, b: _F.layer_norm_forward(x, shape, w, b, eps),
        lambda dy, x, mean, rstd, w, mask, bias_dtype: _F.layer_norm_backward(
            dy, x, shape, mean, rstd, w, output_mask=mask, bias_dtype=bias_dtype),
        lambda x, w, b, mean, rstd: TF.layer_norm(x, shape, w, b, eps),
    )


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """Like ``torch.nn.functional.rms_norm`` (``eps=None``: machine epsilon of the accumulation type)."""
    shape = normalized_shape_tuple(normalized_shape)
    needs = _needs_autograd(input=input, weight=weight)  # (types first: rms_weight reads dtypes)
    weight = rms_weight(input, weight)  # (a cast weight requires grad where the weight did)
    if not needs:
        return _F.rms_norm(input, shape, weight, eps)
    return _rms_norm(input, weight, shape, eps)


def _running_stats_norm(forward_op, backward_op, composite, input, running_mean, running_var, weight, bias,
                        batch_stats, momentum, eps, batch_stats_arg):
    """BatchNorm and InstanceNorm: the same arguments, `batch_stats` being training / use_input_stats
    (its name: batch_stats_arg); `composite(uses_batch_statistics, eps)` gives the differentiable form
    (_higher_order.py)."""
    batch_stats = bool_arg(batch_stats, batch_stats_arg)
    momentum, eps = float_arg(momentum, "momentum"), float_arg(eps, "eps")
    if not _needs_autograd(input=input, weight=weight, bias=bias):
        return forward_op(input, running_mean, running_var, weight, bias, batch_stats, momentum, eps)[0]
    # (Without running statistics the batch's are used whatever `batch_stats` says, as in the core.)
    uses_batch = batch_stats or running_mean is None or running_var is None
    return _affine_norm(
        input, weight, bias,
        lambda x, w, b: forward_op(x, running_mean, running_var, w, b, batch_stats, momentum, eps),
        lambda dy, x, mean, rstd, w, mask, bias_dtype: backward_op(
            dy, x, mean, rstd, w, batch_stats, output_mask=mask, bias_dtype=bias_dtype),
        composite(uses_batch, eps),
    )


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5):
    """Like ``torch.nn.functional.batch_norm`` (running statistics updated in place when training)."""
    return _running_stats_norm(_F.batch_norm_forward, _F.batch_norm_backward, _H.batch_norm, input, running_mean,
                               running_var, weight, bias, training, momentum, eps, "training")


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    """Like ``torch.nn.functional.instance_norm`` (whose output is contiguous whatever the input's memory
    format: so is this one's, written so by the core: torch's .contiguous() of a channels-last output
    took 4 times as long as the normalization)."""
    return _running_stats_norm(_instance_norm_forward_contiguous, _F.instance_norm_backward, _H.instance_norm,
                               input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps,
                               "use_input_stats")


_instance_norm_forward_contiguous = functools.partial(_F._instance_norm_forward, channels_first=True)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Like ``torch.nn.functional.group_norm``."""
    num_groups, eps = int_arg(num_groups, "num_groups"), float_arg(eps, "eps")
    needs_autograd = _needs_autograd(input=input, weight=weight, bias=bias)
    _verify_group_batch_size(input, num_groups)
    if not needs_autograd:
        return _F.group_norm(input, num_groups, weight, bias, eps)
    return _affine_norm(
        input, weight, bias,
        lambda x, w, b: _F.group_norm_forward(x, num_groups, w, b, eps),
        lambda dy, x, mean, rstd, w, mask, bias_dtype: _F.group_norm_backward(
            dy, x, num_groups, mean, rstd, w, output_mask=mask, bias_dtype=bias_dtype),
        lambda x, w, b, mean, rstd: TF.group_norm(x, num_groups, w, b, eps),
    )


def _verify_group_batch_size(input, num_groups):
    """torch's group_norm check (its _verify_batch_size on [N * C // G, G, *spatial]): one value per group
    normalizes to 0, and torch raises instead. (A num_groups that does not divide C is left to the core.)"""
    shape = input.shape
    if len(shape) < 2 or num_groups < 1 or shape[1] % num_groups:
        return
    size = [shape[0] * shape[1] // num_groups, num_groups, *shape[2:]]
    values = size[0]
    for d in size[2:]:
        values *= d
    if values == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {size}")


class _BatchInstanceNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, rho, weight, bias, running_mean, running_var, training, momentum, eps):
        _refuse_inference(input=x, rho=rho, weight=weight)
        y, *stats = _F.batch_instance_norm_forward(x, rho, running_mean, running_var, weight, bias, training,
                                                   momentum, eps)
        ctx.save_for_backward(x, rho, weight, *stats)
        ctx.training = training
        ctx.bias_dtype = _dtype_name(bias)
        return y

    @staticmethod
    def backward(ctx, dy):
        if _H.wants_graph():
            _H.refuse_graph("BatchInstanceNorm")
        x, rho, weight, *stats = ctx.saved_tensors
        need_x, need_r, need_w, need_b = ctx.needs_input_grad[:4]
        dx, dw, db, dr = _F.batch_instance_norm_backward(
            dy, x, rho, *stats, weight, ctx.training, output_mask=(need_x, need_w, need_b, need_r),
            bias_dtype=ctx.bias_dtype)
        return dx, dr, dw, db, None, None, None, None, None


def batch_instance_norm(input, rho, running_mean, running_var, weight=None, bias=None, training=False,
                        momentum=0.1, eps=1e-5):
    """Batch-Instance Normalization (Nam & Kim, 2018): ``y = weight * (r * xhat_BN + (1 - r) * xhat_IN)
    + bias`` with ``r = torch.clamp(rho, 0, 1)`` (see :func:`normkit.functional.batch_instance_norm_forward`).
    The gradient to rho is torch.clamp's: passed where 0 <= rho <= 1 (bounds included), 0 elsewhere.
    Running statistics are updated in place when training."""
    training, momentum, eps = bool_arg(training, "training"), float_arg(momentum, "momentum"), float_arg(eps, "eps")
    if not _needs_autograd(input=input, rho=rho, weight=weight, bias=bias):
        return _F.batch_instance_norm(input, rho, running_mean, running_var, weight, bias, training, momentum, eps)
    return _BatchInstanceNorm.apply(input, rho, weight, bias, running_mean, running_var, training, momentum, eps)


class _SwitchableNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mean_weight, var_weight, weight, bias, running_mean, running_var, training, momentum, eps):
        _refuse_inference(input=x, mean_weight=mean_weight, var_weight=var_weight, weight=weight)
        y, saved = _F.switchable_norm_forward(x, mean_weight, var_weight, running_mean, running_var, weight, bias,
                                              training, momentum, eps)
        ctx.save_for_backward(x, mean_weight, var_weight, weight, saved)
        ctx.training = training
        ctx.bias_dtype = _dtype_name(bias)
        return y

    @staticmethod
    def backward(ctx, dy):
        if _H.wants_graph():
            _H.refuse_graph("SwitchableNorm")
        x, mean_weight, var_weight, weight, saved = ctx.saved_tensors
        need_x, need_m, need_v, need_w, need_b = ctx.needs_input_grad[:5]
        dx, dw, db, dm, dv = _F.switchable_norm_backward(
            dy, x, mean_weight, var_weight, saved, weight, ctx.training,
            output_mask=(need_x, need_w, need_b, need_m, need_v), bias_dtype=ctx.bias_dtype)
        return dx, dm, dv, dw, db, None, None, None, None, None


def switchable_norm(input, mean_weight, var_weight, running_mean, running_var, weight=None, bias=None,
                    training=False, momentum=0.003, eps=1e-5):
    """Switchable Normalization (Luo et al., 2019): ``y = weight * (x - mu) / sqrt(s2 + eps) + bias`` with
    mu, s2 softmax(mean_weight)/softmax(var_weight)-weighted mixtures of the IN, LN and BN statistics
    (population variances; see :func:`normkit.functional.switchable_norm_forward`). Running statistics
    are updated in place when training (momentum 0.003 = the reference decay 0.997)."""
    training, momentum, eps = bool_arg(training, "training"), float_arg(momentum, "momentum"), float_arg(eps, "eps")
    if not _needs_autograd(input=input, mean_weight=mean_weight, var_weight=var_weight, weight=weight, bias=bias):
        return _F.switchable_norm(input, mean_weight, var_weight, running_mean, running_var, weight, bias, training,
                                  momentum, eps)
    return _SwitchableNorm.apply(input, mean_weight, var_weight, weight, bias, running_mean, running_var, training,
                                 momentum, eps)


class _LocalResponseNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        y = _F.local_response_norm(x, size, alpha, beta, k)
        ctx.save_for_backward(x)
        ctx.params = (size, alpha, beta, k)
        return y

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        if _H.wants_graph():
            (dx,) = _H.differentiable_grads(lambda x: TF.local_response_norm(x, *ctx.params), (x,), (True,), dy)
        else:
            dx = _F.local_response_norm_backward(dy, x, *ctx.params)
        return dx, None, None, None, None


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """Like ``torch.nn.functional.local_response_norm``."""
    size, alpha = int_arg(size, "size"), float_arg(alpha, "alpha")
    beta, k = float_arg(beta, "beta"), float_arg(k, "k")
    _needs_autograd(input=input)  # (its type first: input.dtype below)
    input = local_response_norm_input(input)
    if not _needs_autograd(input=input):
        return _F.local_response_norm(input, size, alpha, beta, k)
    return _LocalResponseNorm.apply(input, size, alpha, beta, k)


class _WeightNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, g, dim):
        w, norms = _F.weight_norm_forward(v, g, dim)
        ctx.save_for_backward(v, g, norms)
        ctx.dim = dim
        return w

    @staticmethod
    def backward(ctx, dw):
        v, g, norms = ctx.saved_tensors
        need_v, need_g = ctx.needs_input_grad[:2]
        if _H.wants_graph():
            dv, dg = _H.differentiable_grads(_H.weight_norm(ctx.dim), (v, g), (need_v, need_g), dw)
        else:
            dv, dg = _F.weight_norm_backward(dw, v, g, norms, ctx.dim)
        return (dv if need_v else None), (dg if need_g else None), None


def weight_norm(v, g, dim=0):
    """Like ``torch._weight_norm(v, g, dim)``: ``w = g * v / ||v||`` over every dim but ``dim``
    (``dim=None`` or ``-1``: the whole tensor, as in torch's parametrization). g has v's dtype and v's
    shape with size 1 on every dim but ``dim``. Zero-norm slices give inf/nan, as in torch."""
    dim = -1 if dim is None else int_arg(dim, "dim")
    if not _needs_autograd(v=v, g=g):
        return _F.weight_norm(v, g, dim)
    return _WeightNorm.apply(v, g, dim)


def sync_batch_norm(input, running_mean, running_var, weight=None, bias=None, momentum=0.1, eps=1e-5, comm=None,
                    check=None):
    """SyncBatchNorm in training (see :func:`normkit.functional.sync_batch_norm_forward`): BatchNorm over
    the batches of all processes of ``comm``; the backward all-reduces once. Every process must call it."""
    momentum, eps = float_arg(momentum, "momentum"), float_arg(eps, "eps")
    comm = _F._communicator(comm)  # resolved once, for the forward and the backward
    if not _needs_autograd(input=input, weight=weight, bias=bias):
        return _F.sync_batch_norm_forward(input, running_mean, running_var, weight, bias, momentum, eps, comm,
                                          check)[0]
    return _affine_norm(
        input, weight, bias,
        lambda x, w, b: _F.sync_batch_norm_forward(x, running_mean, running_var, w, b, momentum, eps, comm, check),
        lambda dy, x, mean, rstd, w, mask, bias_dtype: _F.sync_batch_norm_backward(
            dy, x, mean, rstd, w, comm, check, output_mask=mask, bias_dtype=bias_dtype),
        _H.unsupported("SyncBatchNorm"),
    )


class _SpectralNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, u, v, dim, n_power_iterations, eps, training):
        y, sigma = _F.spectral_norm_forward(w, u, v, n_power_iterations, eps, dim, training, check_sigma=False)
        # u and v are buffers that the next forward updates in place: keep the values used here.
        ctx.save_for_backward(w, u.clone(), v.clone(), sigma)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx, dy):
        w, u, v, sigma = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None, None
        if _H.wants_graph():
            (dw,) = _H.differentiable_grads(_H.spectral_norm(u, v, ctx.dim), (w,), (True,), dy)
        else:
            dw = _F.spectral_norm_backward(dy, w, u, v, sigma, ctx.dim)
        return dw, None, None, None, None, None, None


def spectral_norm(weight, u, v, n_power_iterations=1, eps=1e-12, dim=0, training=True):
    """What torch's spectral_norm parametrization computes for a weight of 2 or more dims: when training,
    ``n_power_iterations`` power-iteration steps update the buffers u and v in place (torch's order:
    ``u = normalize(W v)``, then ``v = normalize(W^T u)``), then ``weight / sigma`` with
    ``sigma = u^T W v`` on ``W = weight.movedim(dim, 0).flatten(1)``. The gradient is torch's: u and v
    are constants. As in torch, a zero sigma gives inf/nan (no check, which would synchronize CUDA)."""
    dim = 0 if dim is None else int_arg(dim, "dim")
    iterations = int_arg(n_power_iterations, "n_power_iterations")
    eps, training = float_arg(eps, "eps"), bool_arg(training, "training")
    if not _needs_autograd(weight=weight):
        y = _F.spectral_norm_forward(weight, u, v, iterations, eps, dim, training, check_sigma=False)[0]
    else:
        y = _SpectralNorm.apply(weight, u, v, dim, iterations, eps, training)
    if training:
        # written through DLPack: tell autograd, as torch's in-place update (out=_u) does
        increment_version((u, v))
    return y


class _MeanOnlyBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bias, running_mean, training, momentum):
        y, _ = _F.mean_only_batch_norm_forward(x, running_mean, bias, training, momentum)
        ctx.training = training
        ctx.bias_dtype = _dtype_name(bias)
        ctx.bias_torch_dtype = None if bias is None else bias.dtype
        ctx.channels_last = is_channels_last(_TORCH_KIND, x)  # dx keeps x's memory format
        return y

    @staticmethod
    def backward(ctx, dy):
        need_x, need_b = ctx.needs_input_grad[:2]
        if _H.wants_graph():
            # The gradients are linear in dy: the same formulas in torch operations.
            dims = [d for d in range(dy.dim()) if d != 1]
            dx = (dy - dy.mean(dim=dims, keepdim=True) if ctx.training else dy) if need_x else None
            db = dy.sum(dim=dims).to(ctx.bias_torch_dtype) if need_b else None
            return dx, db, None, None, None
        dx, db = _F.mean_only_batch_norm_backward(dy, ctx.training, output_mask=(need_x, need_b),
                                                  bias_dtype=ctx.bias_dtype, channels_last=ctx.channels_last)
        return dx, db, None, None, None


def mean_only_batch_norm(input, running_mean, bias=None, training=False, momentum=0.1):
    """Mean-only BatchNorm (Salimans & Kingma, 2016): ``y = x - mean_c + bias_c`` with the batch mean when
    training (running_mean, if given, updated in place with ``momentum``) and running_mean otherwise.
    The gradient: ``dx = dy - mean_c(dy)`` when training, ``dy`` otherwise; ``dbias = sum dy``."""
    training, momentum = bool_arg(training, "training"), float_arg(momentum, "momentum")
    if not _needs_autograd(input=input, bias=bias):
        return _F.mean_only_batch_norm(input, running_mean, bias, training, momentum)
    return _MeanOnlyBatchNorm.apply(input, bias, running_mean, training, momentum)


def _tracing() -> bool:
    """Whether torch.compile, torch.export or torch.jit.trace is recording the call, or a dispatch mode
    sees the ops (make_fx, FakeTensorMode, FlopCounterMode...). (They record or run the dispatcher ops a
    call makes: the eager adapters make none but their output allocations, so a traced model would
    return uninitialised memory.)"""
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch._C._len_torch_dispatch_stack() > 0


# Where no torch.compile'd code is running, no frame hook of dynamo's is set, and the adapter can be called
# without torch.compiler.disable's wrapper (which unsets the hook around it: ~1 us per call, a fifth of
# a small LayerNorm's). (Always through the wrapper where a torch lacks the getter.)
_frame_hook = (getattr(getattr(getattr(torch._C, "_dynamo", None), "eval_frame", None), "get_eval_frame_callback", None)
               or (lambda: True))


def _routed(name, adapter):
    """The op `name`: the eager `adapter` (never traced itself), its custom-op form under tracing
    (_custom_ops.py), its torch form under torch.func transforms and forward-mode AD
    (_torch_composite.py)."""
    eager = torch.compiler.disable(adapter)

    @functools.wraps(adapter)  # (not eager's: its attributes would mark this function disabled too)
    def op(*args, **kwargs):
        if _tracing():
            return _custom_ops.TRACED[name](*args, **kwargs)
        if _torch_composite.active(args, kwargs):
            return _torch_composite.COMPOSITE[name](*args, **kwargs)
        if _frame_hook() is None:
            return adapter(*args, **kwargs)
        return eager(*args, **kwargs)

    return op


def _untraceable(adapter):
    """An op without a custom-op form: a graph break for torch.compile (run as one opaque call), an
    error for torch.jit.trace (which would record nothing of it), torch.func transforms and forward-mode
    AD (which its autograd.Function does not support)."""
    eager = torch.compiler.disable(adapter)
    name = f"normkit.torch.functional.{adapter.__name__}"

    @functools.wraps(adapter)
    def op(*args, **kwargs):
        if torch.jit.is_tracing():
            raise RuntimeError(f"{name} cannot be recorded by torch.jit.trace; torch.compile runs it (as a graph "
                               "break)")
        if _torch_composite.active(args, kwargs):
            raise RuntimeError(f"{name} does not support torch.func transforms (vmap, grad, jacrev, jvp) or "
                               "forward-mode AD")
        return eager(*args, **kwargs)

    op._torchdynamo_disable = True  # (what torch.compiler.disable sets: dynamo never traces into op)
    return op


# torch.compile, torch.export and torch.jit.trace: ops with a custom-op form (_custom_ops.TRACED) become
# one node of the graph each; the others (SyncBatchNorm, Batch-Instance Norm, Switchable Norm, spectral
# norm) run as one opaque call, a graph break, under torch.compile. The eager adapters are never traced:
# dynamo used to trace into their Python, where the core calls break the graph anyway, and closures
# and argument kinds made it recompile the helpers over and over (up to its recompile limit).
for _name in __all__:
    _adapter = globals()[_name]
    globals()[_name] = _routed(_name, _adapter) if _name in _custom_ops.TRACED else _untraceable(_adapter)
del _name, _adapter
