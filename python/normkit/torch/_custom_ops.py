"""normkit's ops as ``torch.library`` custom ops, for code that torch.compile or torch.export traces.

Eager calls go through the adapters in functional.py (an autograd.Function around the core: the custom
op dispatcher would add tens of microseconds per call). A trace cannot go there: the core reads data
pointers, which FakeTensors do not have, so each op used to be a graph break, and
``torch.compile(fullgraph=True)`` and ``torch.export`` failed. Under tracing the adapters call these
ops instead: an opaque node in the graph, with a fake implementation (output shapes, dtypes and
strides, which must equal the real op's: the compiled code relies on them) and an autograd formula
that calls the backward op. The real implementations are the same functional.py calls as eager mode.

An op returns tensors only: gradients that were not asked for come back as empty tensors, which the
autograd formula turns into None.
"""

from __future__ import annotations

import torch
from torch import Tensor

from normkit import functional as _F
from normkit._arrays import (
    _TorchKind,
    bool_arg,
    empty_in_layout,
    empty_like_layout,
    empty_output_like,
    float_arg,
    int_arg,
    is_channels_last,
    normalized_shape_tuple,
)
from normkit.torch import _higher_order as _H
from normkit.torch._torch_args import local_response_norm_input, rms_weight

_lib = torch.library
_NONE = "none"  # (a dtype name for "no bias": a custom op's str argument cannot be None)


class _FakeKind:
    """_arrays' array-kind interface over fake tensors: the fake implementations allocate through the
    layout helpers the real ops use (empty_like_layout, empty_output_like, empty_in_layout), so the
    strides are the real outputs' by construction. (new_empty: no host cache, no data.)"""

    output_channels_last_ranks = _TorchKind.output_channels_last_ranks

    @staticmethod
    def shape(x):
        return tuple(x.shape)

    @staticmethod
    def strides(x):
        return tuple(x.stride())

    @staticmethod
    def dtype_name(x):
        return str(x.dtype).removeprefix("torch.")

    @staticmethod
    def empty(shape, dtype_name, like):
        return like.new_empty(shape, dtype=getattr(torch, dtype_name))

    @staticmethod
    def permute(a, order):
        return a.permute(order)


def _acc(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _nothing(x):
    return x.new_empty(0)


def _tensors(grads, x):
    """An op's gradients as tensors: the ones not asked for (None) as empty tensors."""
    return tuple(_nothing(x) if g is None else g for g in grads)


def _grads_fake(x, dx, param_shape, weight, output_mask, bias_dtype):
    """The fake (dx, dweight, dbias) of a backward op: `dx` the fake dx, the parameter gradients of
    `param_shape` in weight's dtype (bias_dtype's for dbias); empty where the mask says no."""
    pdt = weight.dtype if weight is not None else x.dtype
    bdt = pdt if bias_dtype == _NONE else getattr(torch, bias_dtype)
    return (dx if output_mask[0] else _nothing(x),
            x.new_empty(param_shape, dtype=pdt) if output_mask[1] and weight is not None else _nothing(x),
            x.new_empty(param_shape, dtype=bdt) if output_mask[2] else _nothing(x))


def _or_none(t, wanted):
    return t if wanted else None


def _dtype_name(t):
    return _NONE if t is None else str(t.dtype).removeprefix("torch.")


def _bias_dtype(name):
    return None if name == _NONE else name


# ---- LayerNorm ------------------------------------------------------------------------------------


@_lib.custom_op("normkit::layer_norm_forward", mutates_args=())
def layer_norm_forward(x: Tensor, normalized_shape: list[int], weight: Tensor | None, bias: Tensor | None,
                       eps: float) -> tuple[Tensor, Tensor, Tensor]:
    return _F.layer_norm_forward(x, tuple(normalized_shape), weight, bias, eps)


@layer_norm_forward.register_fake
def _(x, normalized_shape, weight, bias, eps):
    lead = x.shape[: x.dim() - len(normalized_shape)]
    acc = _acc(x.dtype)
    return x.new_empty(x.shape), x.new_empty(lead, dtype=acc), x.new_empty(lead, dtype=acc)


@_lib.custom_op("normkit::layer_norm_backward", mutates_args=())
def layer_norm_backward(dy: Tensor, x: Tensor, normalized_shape: list[int], mean: Tensor, rstd: Tensor,
                        weight: Tensor | None, output_mask: list[bool],
                        bias_dtype: str) -> tuple[Tensor, Tensor, Tensor]:
    return _tensors(_F.layer_norm_backward(dy, x, tuple(normalized_shape), mean, rstd, weight, tuple(output_mask),
                                           _bias_dtype(bias_dtype)), x)


@layer_norm_backward.register_fake
def _(dy, x, normalized_shape, mean, rstd, weight, output_mask, bias_dtype):
    return _grads_fake(x, x.new_empty(x.shape), normalized_shape, weight, output_mask, bias_dtype)


def _affine_context(ctx, inputs, output):
    """LayerNorm and GroupNorm: inputs (x, arg, weight, bias, eps), arg being normalized_shape or
    num_groups; outputs (y, mean, rstd)."""
    x, arg, weight, bias, eps = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, weight, bias, mean, rstd)
    ctx.arg, ctx.eps = arg, eps
    ctx.mark_non_differentiable(mean, rstd)


def _affine_grad(backward_op, torch_op):
    """The autograd formula of an _affine_context op: `backward_op` (the custom backward op), or for a
    graph of the gradients, torch's own op `torch_op` differentiated."""

    def grad(ctx, dy, _mean_grad, _rstd_grad):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        need_x, _, need_w, need_b, _ = ctx.needs_input_grad
        if _H.wants_graph():
            dx, dw, db, _, _ = _H.differentiable_grads(
                lambda x, w, b, m, r: torch_op(x, ctx.arg, w, b, ctx.eps),
                (x, weight, bias, mean, rstd), (need_x, need_w, need_b, False, False), dy)
        else:
            dx, dw, db = backward_op(dy, x, ctx.arg, mean, rstd, weight,
                                     [need_x, need_w and weight is not None, need_b and bias is not None],
                                     _dtype_name(bias))
        return _or_none(dx, need_x), None, _or_none(dw, need_w), _or_none(db, need_b), None

    return grad


_lib.register_autograd("normkit::layer_norm_forward",
                       _affine_grad(torch.ops.normkit.layer_norm_backward, torch.nn.functional.layer_norm),
                       setup_context=_affine_context)


def layer_norm(x, normalized_shape, weight, bias, eps):
    return torch.ops.normkit.layer_norm_forward(x, list(normalized_shape), weight, bias, eps)[0]


# ---- RMSNorm --------------------------------------------------------------------------------------


@_lib.custom_op("normkit::rms_norm_forward", mutates_args=())
def rms_norm_forward(x: Tensor, normalized_shape: list[int], weight: Tensor | None,
                     eps: float | None) -> tuple[Tensor, Tensor]:
    return _F.rms_norm_forward(x, tuple(normalized_shape), weight, eps)


@rms_norm_forward.register_fake
def _(x, normalized_shape, weight, eps):
    lead = x.shape[: x.dim() - len(normalized_shape)]
    return x.new_empty(x.shape), x.new_empty(lead, dtype=_acc(x.dtype))


@_lib.custom_op("normkit::rms_norm_backward", mutates_args=())
def rms_norm_backward(dy: Tensor, x: Tensor, normalized_shape: list[int], rstd: Tensor, weight: Tensor | None,
                      output_mask: list[bool]) -> tuple[Tensor, Tensor]:
    return _tensors(_F.rms_norm_backward(dy, x, tuple(normalized_shape), rstd, weight, tuple(output_mask)), x)


@rms_norm_backward.register_fake
def _(dy, x, normalized_shape, rstd, weight, output_mask):
    return (x.new_empty(x.shape) if output_mask[0] else _nothing(x),
            x.new_empty(normalized_shape, dtype=weight.dtype) if output_mask[1] and weight is not None
            else _nothing(x))


def _rms_norm_context(ctx, inputs, output):
    x, normalized_shape, weight, eps = inputs
    ctx.save_for_backward(x, weight, output[1])
    ctx.normalized_shape, ctx.eps = normalized_shape, eps
    ctx.mark_non_differentiable(output[1])


def _rms_norm_grad(ctx, dy, _rstd_grad):
    x, weight, rstd = ctx.saved_tensors
    need_x, _, need_w, _ = ctx.needs_input_grad
    if _H.wants_graph():
        dx, dw = _H.differentiable_grads(
            lambda x, w: torch.nn.functional.rms_norm(x, ctx.normalized_shape, w, ctx.eps),
            (x, weight), (need_x, need_w), dy)
    else:
        dx, dw = torch.ops.normkit.rms_norm_backward(dy, x, ctx.normalized_shape, rstd, weight,
                                                     [need_x, need_w and weight is not None])
    return _or_none(dx, need_x), None, _or_none(dw, need_w), None


_lib.register_autograd("normkit::rms_norm_forward", _rms_norm_grad, setup_context=_rms_norm_context)


def rms_norm(x, normalized_shape, weight, eps):
    return torch.ops.normkit.rms_norm_forward(x, list(normalized_shape), weight, eps)[0]


# ---- BatchNorm, InstanceNorm (running statistics updated in place), GroupNorm ---------------------


def _channel_grads_fake(x, weight, output_mask, bias_dtype):
    return _grads_fake(x, empty_like_layout(_FakeKind, x), x.shape[1:2], weight, output_mask, bias_dtype)


# An op with an autograd formula must be functional: instead of updating the running statistics in place,
# the forward ops return their updated values (copies updated by the core; empty when not updated), and
# the callers below copy them into the buffers.


def _copies(update, *stats):
    return tuple(s.clone() if update and s is not None else s for s in stats)


def _updated(update, x, *stats):
    return tuple(s if update and s is not None else _nothing(x) for s in stats)


def _updated_fake(update, x, *stats):
    return tuple(s.new_empty(s.shape) if update and s is not None else _nothing(x) for s in stats)


def _running_stats_fake(x, saved_shape, update, running_mean, running_var):
    """The fake outputs of batch_norm_forward and instance_norm_forward: y, the saved statistics of
    `saved_shape` and the updated running statistics."""
    acc = _acc(x.dtype)
    return (empty_output_like(_FakeKind, x), x.new_empty(saved_shape, dtype=acc), x.new_empty(saved_shape, dtype=acc),
            *_updated_fake(update, x, running_mean, running_var))


def _store(update, buffers, values):
    if update:
        for buffer, value in zip(buffers, values):
            if buffer is not None:
                buffer.copy_(value)


@_lib.custom_op("normkit::batch_norm_forward", mutates_args=())
def batch_norm_forward(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
                       weight: Tensor | None, bias: Tensor | None, training: bool, momentum: float,
                       eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    rm, rv = _copies(training, running_mean, running_var)
    y, mean, rstd = _F.batch_norm_forward(x, rm, rv, weight, bias, training, momentum, eps)
    return y, mean, rstd, *_updated(training, x, rm, rv)


@batch_norm_forward.register_fake
def _(x, running_mean, running_var, weight, bias, training, momentum, eps):
    return _running_stats_fake(x, x.shape[1:2], training, running_mean, running_var)


@_lib.custom_op("normkit::batch_norm_backward", mutates_args=())
def batch_norm_backward(dy: Tensor, x: Tensor, save_mean: Tensor, save_rstd: Tensor, weight: Tensor | None,
                        training: bool, output_mask: list[bool], bias_dtype: str) -> tuple[Tensor, Tensor, Tensor]:
    return _tensors(_F.batch_norm_backward(dy, x, save_mean, save_rstd, weight, training, tuple(output_mask),
                                                 _bias_dtype(bias_dtype)), x)


@batch_norm_backward.register_fake
def _(dy, x, save_mean, save_rstd, weight, training, output_mask, bias_dtype):
    return _channel_grads_fake(x, weight, output_mask, bias_dtype)


@_lib.custom_op("normkit::instance_norm_forward", mutates_args=())
def instance_norm_forward(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
                          weight: Tensor | None, bias: Tensor | None, use_input_stats: bool, momentum: float,
                          eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    rm, rv = _copies(use_input_stats, running_mean, running_var)
    y, mean, rstd = _F.instance_norm_forward(x, rm, rv, weight, bias, use_input_stats, momentum, eps)
    return y, mean, rstd, *_updated(use_input_stats, x, rm, rv)


@instance_norm_forward.register_fake
def _(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps):
    saved = x.shape[:2] if use_input_stats else x.shape[1:2]
    return _running_stats_fake(x, saved, use_input_stats, running_mean, running_var)


@_lib.custom_op("normkit::instance_norm_backward", mutates_args=())
def instance_norm_backward(dy: Tensor, x: Tensor, save_mean: Tensor, save_rstd: Tensor, weight: Tensor | None,
                           use_input_stats: bool, output_mask: list[bool],
                           bias_dtype: str) -> tuple[Tensor, Tensor, Tensor]:
    return _tensors(_F.instance_norm_backward(dy, x, save_mean, save_rstd, weight, use_input_stats,
                                                    tuple(output_mask), _bias_dtype(bias_dtype)), x)


@instance_norm_backward.register_fake
def _(dy, x, save_mean, save_rstd, weight, use_input_stats, output_mask, bias_dtype):
    return _channel_grads_fake(x, weight, output_mask, bias_dtype)


def _running_stats_context(ctx, inputs, output):
    x, running_mean, running_var, weight, bias, batch_stats, momentum, eps = inputs
    _, mean, rstd, new_mean, new_var = output
    ctx.save_for_backward(x, weight, bias, mean, rstd)
    ctx.batch_stats = batch_stats
    ctx.uses_batch = batch_stats or running_mean is None or running_var is None
    ctx.eps = eps
    ctx.mark_non_differentiable(mean, rstd, new_mean, new_var)


def _running_stats_grad(backward_op, composite):
    def grad(ctx, dy, *_statistics_grads):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        need_x, _, _, need_w, need_b = ctx.needs_input_grad[:5]
        if _H.wants_graph():
            dx, dw, db, _, _ = _H.differentiable_grads(composite(ctx.uses_batch, ctx.eps),
                                                       (x, weight, bias, mean, rstd),
                                                       (need_x, need_w, need_b, False, False), dy)
        else:
            dx, dw, db = backward_op(dy, x, mean, rstd, weight, ctx.batch_stats,
                                     [need_x, need_w and weight is not None, need_b and bias is not None],
                                     _dtype_name(bias))
        return _or_none(dx, need_x), None, None, _or_none(dw, need_w), _or_none(db, need_b), None, None, None

    return grad


_lib.register_autograd("normkit::batch_norm_forward",
                       _running_stats_grad(torch.ops.normkit.batch_norm_backward, _H.batch_norm),
                       setup_context=_running_stats_context)
_lib.register_autograd("normkit::instance_norm_forward",
                       _running_stats_grad(torch.ops.normkit.instance_norm_backward, _H.instance_norm),
                       setup_context=_running_stats_context)


def batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps):
    y, _, _, *stats = torch.ops.normkit.batch_norm_forward(x, running_mean, running_var, weight, bias, training,
                                                           momentum, eps)
    _store(training, (running_mean, running_var), stats)
    return y


def instance_norm(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps):
    y, _, _, *stats = torch.ops.normkit.instance_norm_forward(x, running_mean, running_var, weight, bias,
                                                              use_input_stats, momentum, eps)
    _store(use_input_stats, (running_mean, running_var), stats)
    return y


@_lib.custom_op("normkit::group_norm_forward", mutates_args=())
def group_norm_forward(x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None,
                       eps: float) -> tuple[Tensor, Tensor, Tensor]:
    return _F.group_norm_forward(x, num_groups, weight, bias, eps)


@group_norm_forward.register_fake
def _(x, num_groups, weight, bias, eps):
    acc = _acc(x.dtype)
    stats = (x.shape[0], num_groups)
    return empty_output_like(_FakeKind, x), x.new_empty(stats, dtype=acc), x.new_empty(stats, dtype=acc)


@_lib.custom_op("normkit::group_norm_backward", mutates_args=())
def group_norm_backward(dy: Tensor, x: Tensor, num_groups: int, mean: Tensor, rstd: Tensor, weight: Tensor | None,
                        output_mask: list[bool], bias_dtype: str) -> tuple[Tensor, Tensor, Tensor]:
    return _tensors(_F.group_norm_backward(dy, x, num_groups, mean, rstd, weight, tuple(output_mask),
                                                 _bias_dtype(bias_dtype)), x)


@group_norm_backward.register_fake
def _(dy, x, num_groups, mean, rstd, weight, output_mask, bias_dtype):
    return _channel_grads_fake(x, weight, output_mask, bias_dtype)


_lib.register_autograd("normkit::group_norm_forward",
                       _affine_grad(torch.ops.normkit.group_norm_backward, torch.nn.functional.group_norm),
                       setup_context=_affine_context)


def group_norm(x, num_groups, weight, bias, eps):
    return torch.ops.normkit.group_norm_forward(x, num_groups, weight, bias, eps)[0]


# ---- LocalResponseNorm, WeightNorm, mean-only BatchNorm ---------------------------------------------


@_lib.custom_op("normkit::local_response_norm", mutates_args=())
def local_response_norm_op(x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    return _F.local_response_norm(x, size, alpha, beta, k)


@local_response_norm_op.register_fake
def _(x, size, alpha, beta, k):
    return empty_like_layout(_FakeKind, x)


@_lib.custom_op("normkit::local_response_norm_backward", mutates_args=())
def local_response_norm_backward(dy: Tensor, x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    return _F.local_response_norm_backward(dy, x, size, alpha, beta, k)


@local_response_norm_backward.register_fake
def _(dy, x, size, alpha, beta, k):
    return empty_like_layout(_FakeKind, x)


def _lrn_context(ctx, inputs, output):
    x, *params = inputs
    ctx.save_for_backward(x)
    ctx.params = params


def _lrn_grad(ctx, dy):
    (x,) = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None, None, None, None, None
    if _H.wants_graph():
        (dx,) = _H.differentiable_grads(lambda x: torch.nn.functional.local_response_norm(x, *ctx.params), (x,),
                                        (True,), dy)
    else:
        dx = torch.ops.normkit.local_response_norm_backward(dy, x, *ctx.params)
    return dx, None, None, None, None


_lib.register_autograd("normkit::local_response_norm", _lrn_grad, setup_context=_lrn_context)


def local_response_norm(x, size, alpha, beta, k):
    return torch.ops.normkit.local_response_norm(x, size, alpha, beta, k)


@_lib.custom_op("normkit::weight_norm_forward", mutates_args=())
def weight_norm_forward(v: Tensor, g: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    return _F.weight_norm_forward(v, g, dim)


@weight_norm_forward.register_fake
def _(v, g, dim):
    return v.new_empty(v.shape), v.new_empty(g.shape, dtype=_acc(v.dtype))


@_lib.custom_op("normkit::weight_norm_backward", mutates_args=())
def weight_norm_backward(dw: Tensor, v: Tensor, g: Tensor, norms: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    return _F.weight_norm_backward(dw, v, g, norms, dim)


@weight_norm_backward.register_fake
def _(dw, v, g, norms, dim):
    return v.new_empty(v.shape), v.new_empty(g.shape)


def _weight_norm_context(ctx, inputs, output):
    v, g, dim = inputs
    ctx.save_for_backward(v, g, output[1])
    ctx.dim = dim
    ctx.mark_non_differentiable(output[1])


def _weight_norm_grad(ctx, dw, _norms_grad):
    v, g, norms = ctx.saved_tensors
    need_v, need_g, _ = ctx.needs_input_grad
    if _H.wants_graph():
        dv, dg = _H.differentiable_grads(_H.weight_norm(ctx.dim), (v, g), (need_v, need_g), dw)
    else:
        dv, dg = torch.ops.normkit.weight_norm_backward(dw, v, g, norms, ctx.dim)
    return _or_none(dv, need_v), _or_none(dg, need_g), None


_lib.register_autograd("normkit::weight_norm_forward", _weight_norm_grad, setup_context=_weight_norm_context)


def weight_norm(v, g, dim):
    return torch.ops.normkit.weight_norm_forward(v, g, dim)[0]


@_lib.custom_op("normkit::mean_only_batch_norm_forward", mutates_args=())
def mean_only_batch_norm_forward(x: Tensor, running_mean: Tensor | None, bias: Tensor | None, training: bool,
                                 momentum: float) -> tuple[Tensor, Tensor, Tensor]:
    (rm,) = _copies(training, running_mean)
    y, mean = _F.mean_only_batch_norm_forward(x, rm, bias, training, momentum)
    return y, mean, *_updated(training, x, rm)


@mean_only_batch_norm_forward.register_fake
def _(x, running_mean, bias, training, momentum):
    return (empty_output_like(_FakeKind, x), x.new_empty(x.shape[1:2], dtype=_acc(x.dtype)),
            *_updated_fake(training, x, running_mean))


@_lib.custom_op("normkit::mean_only_batch_norm_backward", mutates_args=())
def mean_only_batch_norm_backward(dy: Tensor, training: bool, output_mask: list[bool], bias_dtype: str,
                                  channels_last: bool) -> tuple[Tensor, Tensor]:
    return _tensors(_F.mean_only_batch_norm_backward(dy, training, tuple(output_mask), _bias_dtype(bias_dtype),
                                                     channels_last), dy)


@mean_only_batch_norm_backward.register_fake
def _(dy, training, output_mask, bias_dtype, channels_last):
    bdt = dy.dtype if bias_dtype == _NONE else getattr(torch, bias_dtype)
    if output_mask[0]:
        dx = empty_in_layout(_FakeKind, _FakeKind.shape(dy), _FakeKind.dtype_name(dy), dy, channels_last)
    else:
        dx = _nothing(dy)
    return dx, dy.new_empty(dy.shape[1:2], dtype=bdt) if output_mask[1] else _nothing(dy)


def _mean_only_context(ctx, inputs, output):
    x, running_mean, bias, training, momentum = inputs
    ctx.training = training
    ctx.bias_dtype = _dtype_name(bias)
    ctx.bias_torch_dtype = None if bias is None else bias.dtype
    ctx.channels_last = is_channels_last(_FakeKind, x)
    ctx.mark_non_differentiable(output[1], output[2])


def _mean_only_grad(ctx, dy, _mean_grad, _running_grad):
    need_x, _, need_b, _, _ = ctx.needs_input_grad
    if _H.wants_graph():
        dims = [d for d in range(dy.dim()) if d != 1]
        dx = (dy - dy.mean(dim=dims, keepdim=True) if ctx.training else dy) if need_x else None
        db = dy.sum(dim=dims).to(ctx.bias_torch_dtype) if need_b else None
        return dx, None, db, None, None
    dx, db = torch.ops.normkit.mean_only_batch_norm_backward(dy, ctx.training, [need_x, need_b], ctx.bias_dtype,
                                                             ctx.channels_last)
    return _or_none(dx, need_x), None, _or_none(db, need_b), None, None


_lib.register_autograd("normkit::mean_only_batch_norm_forward", _mean_only_grad, setup_context=_mean_only_context)


def mean_only_batch_norm(x, running_mean, bias, training, momentum):
    y, _, new_mean = torch.ops.normkit.mean_only_batch_norm_forward(x, running_mean, bias, training, momentum)
    _store(training, (running_mean,), (new_mean,))
    return y


# ---- What normkit.torch.functional calls under tracing: its signatures, on the ops above ------------


def traced_layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    return layer_norm(input, normalized_shape_tuple(normalized_shape), weight, bias, float_arg(eps, "eps"))


def traced_rms_norm(input, normalized_shape, weight=None, eps=None):
    return rms_norm(input, normalized_shape_tuple(normalized_shape), rms_weight(input, weight),
                    None if eps is None else float_arg(eps, "eps"))


def traced_batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                      eps=1e-5):
    return batch_norm(input, running_mean, running_var, weight, bias, bool_arg(training, "training"),
                      float_arg(momentum, "momentum"), float_arg(eps, "eps"))


def traced_instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                         momentum=0.1, eps=1e-5):
    return instance_norm(input, running_mean, running_var, weight, bias,
                         bool_arg(use_input_stats, "use_input_stats"), float_arg(momentum, "momentum"),
                         float_arg(eps, "eps")).contiguous()


def traced_group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    return group_norm(input, int_arg(num_groups, "num_groups"), weight, bias, float_arg(eps, "eps"))


def traced_local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    return local_response_norm(local_response_norm_input(input), int_arg(size, "size"), float_arg(alpha, "alpha"),
                               float_arg(beta, "beta"), float_arg(k, "k"))


def traced_weight_norm(v, g, dim=0):
    return weight_norm(v, g, -1 if dim is None else int_arg(dim, "dim"))


def traced_mean_only_batch_norm(input, running_mean, bias=None, training=False, momentum=0.1):
    return mean_only_batch_norm(input, running_mean, bias, bool_arg(training, "training"),
                                float_arg(momentum, "momentum"))


TRACED = {
    "layer_norm": traced_layer_norm,
    "rms_norm": traced_rms_norm,
    "batch_norm": traced_batch_norm,
    "instance_norm": traced_instance_norm,
    "group_norm": traced_group_norm,
    "local_response_norm": traced_local_response_norm,
    "weight_norm": traced_weight_norm,
    "mean_only_batch_norm": traced_mean_only_batch_norm,
}
