"""Functional forms of the normalization ops for any DLPack array.

The result is of the caller's kind: NumPy in -> NumPy out, torch in -> torch out (same device),
other DLPack producers through their array namespace. Half types (float16, bfloat16) compute in
float32 and round each output once; float64 computes in float64.

Each layer has three functions:
  <op>(x, ...)                      the forward result only
  <op>_forward(x, ...)              the forward result plus the statistics backward needs
  <op>_backward(dy, x, ..., stats)  the gradients, for users who drive their own training loop
"""

from __future__ import annotations

import numpy as np

from normkit import _core
from normkit._arrays import (
    acc_dtype_name,
    bool_arg,
    empty_in_layout,
    empty_like_layout,
    empty_output_like,
    float_arg,
    int_arg,
    kind_of,
    normalized_shape_tuple,
    to_core,
)

__all__ = [
    "batch_instance_norm",
    "batch_instance_norm_backward",
    "batch_instance_norm_forward",
    "batch_norm",
    "batch_norm_backward",
    "batch_norm_forward",
    "group_norm",
    "group_norm_backward",
    "group_norm_forward",
    "instance_norm",
    "instance_norm_backward",
    "instance_norm_forward",
    "layer_norm",
    "layer_norm_backward",
    "layer_norm_forward",
    "local_response_norm",
    "local_response_norm_backward",
    "rms_norm",
    "rms_norm_backward",
    "rms_norm_forward",
    "switchable_norm",
    "switchable_norm_backward",
    "switchable_norm_forward",
    "sync_batch_norm_backward",
    "sync_batch_norm_forward",
    "weight_norm",
    "weight_norm_backward",
    "weight_norm_forward",
    "spectral_norm",
    "spectral_norm_backward",
    "spectral_norm_forward",
    "spectral_norm_power_iteration",
    "mean_only_batch_norm",
    "mean_only_batch_norm_backward",
    "mean_only_batch_norm_forward",
]

_MACHINE_EPS = {"float32": 1.1920928955078125e-07, "float64": 2.220446049250313e-16}


def _leading(shape, normalized_shape):
    k = len(normalized_shape)
    return tuple(shape[: len(shape) - k]) if len(shape) >= k else ()


def _grad_shape(normalized_shape, x_shape):
    """The shape of dweight/dbias: normalized_shape when it is x's trailing dims, the only one the core
    accepts; an empty placeholder otherwise, so that the core raises its error about normalized_shape
    before a huge normalized_shape becomes a huge allocation."""
    k = len(normalized_shape)
    if 0 < k <= len(x_shape) and tuple(x_shape[len(x_shape) - k:]) == tuple(normalized_shape):
        return normalized_shape
    return (0,)


def _in_place(a, arg, required=False):
    """to_core for an argument the op updates in place (a read-only NumPy array is a ValueError)."""
    return to_core(a, arg, written=True, required=required)


def _strided_1d(a) -> bool:
    """A NumPy array or torch tensor whose elements are not one after the other."""
    if isinstance(a, np.ndarray):
        return not a.flags.c_contiguous
    is_contiguous = getattr(a, "is_contiguous", None)
    return is_contiguous is not None and not is_contiguous()


class _RunningStats:
    """Running statistics an op updates in place, as the core takes them. torch updates a strided view
    (``stats[:, 0]``) in place; the core takes compact arrays only, so such a view goes through a compact
    copy, written back by write_back() once the op has succeeded (never before: a rejected call leaves
    the caller's arrays untouched)."""

    def __init__(self, *arrays, updated: bool = True):
        self.arrays = arrays
        self.updated = updated  # (evaluation only reads them: nothing to write back)
        self.compact = [a.copy() if isinstance(a, np.ndarray) and _strided_1d(a) else
                        a.contiguous() if a is not None and _strided_1d(a) else a for a in arrays]

    def core(self, i, arg):
        if self.compact[i] is not self.arrays[i]:
            _in_place(self.arrays[i], arg)  # (the caller's array must be writable, whatever goes to the core)
        return _in_place(self.compact[i], arg)

    def write_back(self):
        if not self.updated:
            return
        for a, c in zip(self.arrays, self.compact):
            if c is not a:
                if isinstance(a, np.ndarray):
                    np.copyto(a, c)
                else:
                    a.copy_(c)


def _required(a, arg):
    """to_core for an array the op cannot do without: None is a TypeError naming it (the extension's
    own message would only list its overloads)."""
    return to_core(a, arg, required=True)


def _output_mask(mask, n):
    """output_mask as a tuple of n bools; a TypeError or ValueError naming it (not an IndexError, nor
    "False" counting as True)."""
    if type(mask) is tuple and len(mask) == n and all(type(e) is bool for e in mask):
        return mask  # (the common case, from the adapters)
    try:
        entries = tuple(mask)
    except TypeError:
        raise TypeError(f"output_mask: expected a sequence of {n} bools, got {type(mask).__name__}") from None
    if len(entries) != n:
        raise ValueError(f"output_mask: expected {n} entries, got {len(entries)}: {mask!r}")
    return tuple(bool_arg(e, f"output_mask[{i}]") for i, e in enumerate(entries))


def _dtype_name(a, arg):
    return kind_of(a, arg).dtype_name(a)


def layer_norm_forward(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """LayerNorm over the trailing ``normalized_shape`` dims; returns ``(y, mean, rstd)``.

    ``y = (x - mean) * rstd * weight + bias`` with ``rstd = 1 / sqrt(var + eps)`` (biased variance).
    ``mean`` and ``rstd`` have the leading shape of x and the accumulation dtype (float32; float64 for
    float64 inputs).
    """
    return _layer_norm(x, normalized_shape, weight, bias, eps, True)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """LayerNorm forward (see :func:`layer_norm_forward`), without the statistics."""
    return _layer_norm(x, normalized_shape, weight, bias, eps, False)[0]


def _out(kind, a):
    """An output this module allocated, as the core takes it: without to_core's checks, which it passes by
    construction (dense, writable, no negative bit)."""
    return a if a is None else kind.export(a)


def _results(kind, *arrays):
    """The op's results as the caller's kind, None staying None. (NumPy arrays and torch tensors are
    already: no call per result for them.)"""
    if not kind.wraps:
        return arrays
    return tuple(None if a is None else kind.wrap(a) for a in arrays)


def _layer_norm(x, normalized_shape, weight, bias, eps, stats):
    """(y, mean, rstd), the statistics None unless `stats` (two allocations fewer per call)."""
    kind = kind_of(x)
    shape = normalized_shape_tuple(normalized_shape)
    xs, dt = kind.shape(x), kind.dtype_name(x)
    y = kind.empty(xs, dt, x)
    mean = rstd = None
    if stats:
        lead, acc = _leading(xs, shape), acc_dtype_name(dt)
        mean, rstd = kind.empty(lead, acc, x), kind.empty(lead, acc, x)
    _core.layer_norm_forward(
        to_core(x), shape, to_core(weight, "weight"), to_core(bias, "bias"), float_arg(eps, "eps"),
        _out(kind, y), _out(kind, mean), _out(kind, rstd), kind.stream(x),
    )
    return _results(kind, y, mean, rstd)


def layer_norm_backward(dy, x, normalized_shape, mean, rstd, weight=None, output_mask=(True, True, True),
                        bias_dtype=None):
    """Gradients of LayerNorm: returns ``(dx, dweight, dbias)``.

    ``mean``/``rstd`` are the statistics from :func:`layer_norm_forward`. ``output_mask`` selects which
    gradients to compute (the others are None); ``dweight`` is None without a weight. Parameter
    gradients are summed in float32 (float64 for float64) and returned in the weight's dtype (x's when
    there is no weight); ``bias_dtype`` overrides the dtype of ``dbias``.
    """
    output_mask = _output_mask(output_mask, 3)
    kind = kind_of(x)
    shape = normalized_shape_tuple(normalized_shape)
    xs, dt = kind.shape(x), kind.dtype_name(x)
    pdt = _dtype_name(weight, "weight") if weight is not None else dt
    dx = kind.empty(xs, dt, x) if output_mask[0] else None
    gs = _grad_shape(shape, xs)
    dw = kind.empty(gs, pdt, x) if output_mask[1] and weight is not None else None
    db = kind.empty(gs, bias_dtype or pdt, x) if output_mask[2] else None
    _core.layer_norm_backward(
        _required(dy, "dy"), to_core(x), shape, _required(mean, "mean"), _required(rstd, "rstd"),
        to_core(weight, "weight"), _out(kind, dx), _out(kind, dw), _out(kind, db), kind.stream(x),
    )
    return _results(kind, dx, dw, db)


def rms_norm_forward(x, normalized_shape, weight=None, eps=None):
    """RMSNorm over the trailing ``normalized_shape`` dims; returns ``(y, rstd)``.

    ``y = x * rstd * weight`` with ``rstd = 1 / sqrt(mean(x^2) + eps)``. ``eps=None`` is the machine
    epsilon of the accumulation type (float32's for half and float32 inputs, float64's for float64),
    which is what ``torch.nn.functional.rms_norm`` uses.
    """
    return _rms_norm(x, normalized_shape, weight, eps, True)


def rms_norm(x, normalized_shape, weight=None, eps=None):
    """RMSNorm forward (see :func:`rms_norm_forward`), without the statistics."""
    return _rms_norm(x, normalized_shape, weight, eps, False)[0]


def _rms_norm(x, normalized_shape, weight, eps, stats):
    """(y, rstd), rstd None unless `stats`."""
    kind = kind_of(x)
    shape = normalized_shape_tuple(normalized_shape)
    xs, dt = kind.shape(x), kind.dtype_name(x)
    acc = acc_dtype_name(dt)
    if eps is None:
        eps = _MACHINE_EPS[acc]
    y = kind.empty(xs, dt, x)
    rstd = kind.empty(_leading(xs, shape), acc, x) if stats else None
    _core.rms_norm_forward(
        to_core(x), shape, to_core(weight, "weight"), float_arg(eps, "eps"), _out(kind, y), _out(kind, rstd),
        kind.stream(x),
    )
    return _results(kind, y, rstd)


def rms_norm_backward(dy, x, normalized_shape, rstd, weight=None, output_mask=(True, True)):
    """Gradients of RMSNorm: returns ``(dx, dweight)`` (dweight None without a weight)."""
    output_mask = _output_mask(output_mask, 2)
    kind = kind_of(x)
    shape = normalized_shape_tuple(normalized_shape)
    xs, dt = kind.shape(x), kind.dtype_name(x)
    dx = kind.empty(xs, dt, x) if output_mask[0] else None
    dw = None
    if output_mask[1] and weight is not None:
        dw = kind.empty(_grad_shape(shape, xs), _dtype_name(weight, "weight"), x)
    _core.rms_norm_backward(
        _required(dy, "dy"), to_core(x), shape, _required(rstd, "rstd"), to_core(weight, "weight"),
        _out(kind, dx), _out(kind, dw), kind.stream(x),
    )
    return _results(kind, dx, dw)


# ---- BatchNorm, InstanceNorm, GroupNorm: x is [N, C, *spatial]; outputs keep x's memory format ----


def _channel_outputs(kind, x, saved_shape, channels_first=False):
    acc = acc_dtype_name(kind.dtype_name(x))
    y = kind.empty(kind.shape(x), kind.dtype_name(x), x) if channels_first else empty_output_like(kind, x)
    return y, kind.empty(saved_shape, acc, x), kind.empty(saved_shape, acc, x)


def _channel_grads(kind, x, weight, output_mask, bias_dtype):
    dt = kind.dtype_name(x)
    pdt = _dtype_name(weight, "weight") if weight is not None else dt
    c = (kind.shape(x)[1],) if len(kind.shape(x)) > 1 else (0,)
    dx = empty_like_layout(kind, x) if output_mask[0] else None
    dw = kind.empty(c, pdt, x) if output_mask[1] and weight is not None else None
    db = kind.empty(c, bias_dtype or pdt, x) if output_mask[2] else None
    return dx, dw, db


def _channels(kind, x):
    shape = kind.shape(x)
    return shape[1] if len(shape) > 1 else 0


def batch_norm_forward(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                       eps=1e-5):
    """BatchNorm over x = [N, C, *]; returns ``(y, save_mean, save_rstd)`` (per channel).

    training: batch statistics; running_mean/running_var (if given) are updated in place with
    ``momentum`` (the weight of the batch) and the unbiased batch variance. Otherwise the running
    statistics normalize, and save_mean/save_rstd hold them as mean and 1/sqrt(var + eps).
    """
    kind = kind_of(x)
    y, sm, sr = _channel_outputs(kind, x, (_channels(kind, x),))
    stats = _RunningStats(running_mean, running_var, updated=training)
    _core.batch_norm_forward(
        to_core(x), stats.core(0, "running_mean"), stats.core(1, "running_var"),
        to_core(weight, "weight"), to_core(bias, "bias"), bool_arg(training, "training"),
        float_arg(momentum, "momentum"), float_arg(eps, "eps"), _out(kind, y), _out(kind, sm), _out(kind, sr),
        kind.stream(x),
    )
    stats.write_back()
    return _results(kind, y, sm, sr)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Like ``torch.nn.functional.batch_norm`` (see :func:`batch_norm_forward`)."""
    return batch_norm_forward(x, running_mean, running_var, weight, bias, training, momentum, eps)[0]


def batch_norm_backward(dy, x, save_mean, save_rstd, weight=None, training=True, output_mask=(True, True, True),
                        bias_dtype=None):
    """Gradients of BatchNorm: ``(dx, dweight, dbias)``. training=True differentiates through the batch
    statistics; training=False holds the (running) statistics fixed."""
    output_mask = _output_mask(output_mask, 3)
    kind = kind_of(x)
    dx, dw, db = _channel_grads(kind, x, weight, output_mask, bias_dtype)
    _core.batch_norm_backward(
        _required(dy, "dy"), to_core(x), _required(save_mean, "save_mean"), _required(save_rstd, "save_rstd"),
        to_core(weight, "weight"), bool_arg(training, "training"), _out(kind, dx), _out(kind, dw), _out(kind, db),
        kind.stream(x),
    )
    return _results(kind, dx, dw, db)


def instance_norm_forward(x, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                          momentum=0.1, eps=1e-5):
    """InstanceNorm over x = [N, C, *]; returns ``(y, save_mean, save_rstd)``, shaped [N, C] with
    use_input_stats (running statistics, if given, move toward the batch average of the instance
    statistics, as torch does) and [C] without (the running statistics normalize)."""
    return _instance_norm_forward(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)


def _instance_norm_forward(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps,
                           channels_first=False):
    """instance_norm_forward; `channels_first`: y channels-first whatever x's layout, as torch's
    instance_norm returns it (the CPU core transposes a channels-last x a few samples at a time through
    cache; other devices copy it channels first once)."""
    kind = kind_of(x)
    shape = kind.shape(x)
    use_input_stats = bool_arg(use_input_stats, "use_input_stats")  # (it picks the statistics' shape)
    saved = tuple(shape[:2]) if use_input_stats else (_channels(kind, x),)
    y, sm, sr = _channel_outputs(kind, x, saved, channels_first)
    stats = _RunningStats(running_mean, running_var, updated=use_input_stats)
    _core.instance_norm_forward(
        to_core(x), stats.core(0, "running_mean"), stats.core(1, "running_var"),
        to_core(weight, "weight"), to_core(bias, "bias"), use_input_stats,
        float_arg(momentum, "momentum"), float_arg(eps, "eps"), _out(kind, y), _out(kind, sm), _out(kind, sr),
        kind.stream(x),
    )
    stats.write_back()
    return _results(kind, y, sm, sr)


def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    """Like ``torch.nn.functional.instance_norm``."""
    return instance_norm_forward(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)[0]


def instance_norm_backward(dy, x, save_mean, save_rstd, weight=None, use_input_stats=True,
                           output_mask=(True, True, True), bias_dtype=None):
    """Gradients of InstanceNorm: ``(dx, dweight, dbias)``."""
    output_mask = _output_mask(output_mask, 3)
    kind = kind_of(x)
    dx, dw, db = _channel_grads(kind, x, weight, output_mask, bias_dtype)
    _core.instance_norm_backward(
        _required(dy, "dy"), to_core(x), _required(save_mean, "save_mean"), _required(save_rstd, "save_rstd"),
        to_core(weight, "weight"), bool_arg(use_input_stats, "use_input_stats"), _out(kind, dx), _out(kind, dw),
        _out(kind, db), kind.stream(x),
    )
    return _results(kind, dx, dw, db)


def group_norm_forward(x, num_groups, weight=None, bias=None, eps=1e-5):
    """GroupNorm over x = [N, C, *]; returns ``(y, mean, rstd)`` shaped [N, num_groups]."""
    kind = kind_of(x)
    shape = kind.shape(x)
    groups = int_arg(num_groups, "num_groups")
    # Statistics of that shape only for a num_groups the core can accept (it raises otherwise): a
    # huge num_groups must not become a huge allocation first.
    channels = shape[1] if len(shape) > 1 else 0
    stat_groups = groups if 1 <= groups and (groups <= channels or channels == 0) else 0
    y, sm, sr = _channel_outputs(kind, x, (shape[0] if shape else 0, stat_groups))
    _core.group_norm_forward(
        to_core(x), groups, to_core(weight, "weight"), to_core(bias, "bias"), float_arg(eps, "eps"),
        _out(kind, y), _out(kind, sm), _out(kind, sr), kind.stream(x),
    )
    return _results(kind, y, sm, sr)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Like ``torch.nn.functional.group_norm``."""
    return group_norm_forward(x, num_groups, weight, bias, eps)[0]


def group_norm_backward(dy, x, num_groups, mean, rstd, weight=None, output_mask=(True, True, True),
                        bias_dtype=None):
    """Gradients of GroupNorm: ``(dx, dweight, dbias)``."""
    output_mask = _output_mask(output_mask, 3)
    kind = kind_of(x)
    dx, dw, db = _channel_grads(kind, x, weight, output_mask, bias_dtype)
    _core.group_norm_backward(
        _required(dy, "dy"), to_core(x), int_arg(num_groups, "num_groups"), _required(mean, "mean"),
        _required(rstd, "rstd"), to_core(weight, "weight"), _out(kind, dx), _out(kind, dw), _out(kind, db),
        kind.stream(x),
    )
    return _results(kind, dx, dw, db)


# ---- Batch-Instance Normalization: x is [N, C, *spatial]; outputs keep x's memory format ------------


def batch_instance_norm_forward(x, rho, running_mean, running_var, weight=None, bias=None, training=False,
                                momentum=0.1, eps=1e-5):
    """Batch-Instance Normalization (Nam & Kim, NeurIPS 2018) over x = [N, C, *spatial] (rank >= 3)::

        y = weight * (r * xhat_BN + (1 - r) * xhat_IN) + bias,   r = clip(rho, 0, 1)

    xhat_BN uses per-channel batch statistics when training (biased variance; running_mean/running_var,
    if given, are updated in place as BatchNorm's, with ``momentum`` and the unbiased variance) and the
    running statistics otherwise; xhat_IN always uses per-(n, c) statistics. rho is clipped in the
    forward with torch.clamp's semantics: its gradient (see :func:`batch_instance_norm_backward`)
    passes where ``0 <= rho <= 1``, bounds included, and is 0 outside.

    Returns ``(y, save_mean_bn, save_rstd_bn, save_mean_in, save_rstd_in)``: [C] and [N, C] in the
    accumulation dtype. y keeps x's memory format.
    """
    kind = kind_of(x)
    shape = kind.shape(x)
    acc = acc_dtype_name(kind.dtype_name(x))
    c = _channels(kind, x)
    nc = tuple(shape[:2]) if len(shape) >= 2 else (0, 0)
    y = empty_output_like(kind, x)
    mb, sb = kind.empty((c,), acc, x), kind.empty((c,), acc, x)
    mi, si = kind.empty(nc, acc, x), kind.empty(nc, acc, x)
    stats = _RunningStats(running_mean, running_var, updated=training)
    _core.batch_instance_norm_forward(
        to_core(x), _required(rho, "rho"), to_core(weight, "weight"), to_core(bias, "bias"),
        stats.core(0, "running_mean"), stats.core(1, "running_var"), bool_arg(training, "training"),
        float_arg(momentum, "momentum"), float_arg(eps, "eps"), _out(kind, y), _out(kind, mb), _out(kind, sb),
        _out(kind, mi), _out(kind, si), kind.stream(x),
    )
    stats.write_back()
    return _results(kind, y, mb, sb, mi, si)


def batch_instance_norm(x, rho, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                        eps=1e-5):
    """Batch-Instance Normalization; the output only (see :func:`batch_instance_norm_forward`)."""
    return batch_instance_norm_forward(x, rho, running_mean, running_var, weight, bias, training, momentum,
                                       eps)[0]


def batch_instance_norm_backward(dy, x, rho, save_mean_bn, save_rstd_bn, save_mean_in, save_rstd_in,
                                 weight=None, training=True, output_mask=(True, True, True, True),
                                 bias_dtype=None):
    """Gradients of Batch-Instance Normalization: ``(dx, dweight, dbias, drho)``.

    training=True differentiates through the batch statistics of the BN branch; training=False holds
    the running statistics fixed (the instance statistics are always differentiated). With
    ``r = clip(rho, 0, 1)``: ``dweight = sum dy (r xhat_BN + (1 - r) xhat_IN)``, ``dbias = sum dy``,
    ``drho = sum dy weight (xhat_BN - xhat_IN)`` where ``0 <= rho <= 1`` and 0 elsewhere (torch.clamp's
    gradient). dweight is None without a weight; output_mask = (dx, dweight, dbias, drho).
    """
    output_mask = _output_mask(output_mask, 4)
    kind = kind_of(x)
    dx, dw, db = _channel_grads(kind, x, weight, output_mask[:3], bias_dtype)
    dr = kind.empty((_channels(kind, x),), _dtype_name(rho, "rho"), x) if output_mask[3] else None
    _core.batch_instance_norm_backward(
        _required(dy, "dy"), to_core(x), _required(rho, "rho"), to_core(weight, "weight"),
        _required(save_mean_bn, "save_mean_bn"), _required(save_rstd_bn, "save_rstd_bn"),
        _required(save_mean_in, "save_mean_in"), _required(save_rstd_in, "save_rstd_in"),
        bool_arg(training, "training"), _out(kind, dx), _out(kind, dw), _out(kind, db), _out(kind, dr), kind.stream(x),
    )
    return _results(kind, dx, dw, db, dr)


# ---- Switchable Normalization: x is [N, C, *spatial]; outputs keep x's memory format ---------------


def switchable_norm_forward(x, mean_weight, var_weight, running_mean, running_var, weight=None, bias=None,
                            training=False, momentum=0.003, eps=1e-5):
    """Switchable Normalization (Luo et al., ICLR 2019) over x = [N, C, *spatial] (rank >= 2)::

        y = weight * (x - mu) / sqrt(s2 + eps) + bias
        mu = sum_k softmax(mean_weight)_k mu_k,   s2 = sum_k softmax(var_weight)_k s2_k,   k = IN, LN, BN

    with the paper's population (biased) variances: IN per (n, c), LN per n (over C and the spatial
    dims), BN per channel (the batch statistics when training, running_mean/running_var otherwise).
    mean_weight and var_weight are 3 logits each, in the order (IN, LN, BN). A 2-D x [N, C] has no IN
    term (one value per (n, c)): the softmaxes then run over the LN and BN logits only and the IN
    logits get zero gradient.

    When training and running statistics are given they are updated in place with the BN batch
    statistics, ``running = (1 - momentum) * running + momentum * batch``; ``momentum=0.003`` is the
    reference implementation's moving-average decay of 0.997. running_var takes the population BN
    variance, as in the paper's equations (not BatchNorm's unbiased one).

    Returns ``(y, saved)``: saved is the accumulation-dtype buffer the backward needs
    (4 N C + 2 N + 2 C values). y keeps x's memory format.
    """
    kind = kind_of(x)
    shape = kind.shape(x)
    acc = acc_dtype_name(kind.dtype_name(x))
    n, c = (shape[0], shape[1]) if len(shape) >= 2 else (0, 0)
    y = empty_output_like(kind, x)
    saved = kind.empty((4 * n * c + 2 * n + 2 * c,), acc, x)
    stats = _RunningStats(running_mean, running_var, updated=training)
    _core.switchable_norm_forward(
        to_core(x), _required(mean_weight, "mean_weight"), _required(var_weight, "var_weight"),
        to_core(weight, "weight"), to_core(bias, "bias"), stats.core(0, "running_mean"),
        stats.core(1, "running_var"), bool_arg(training, "training"), float_arg(momentum, "momentum"),
        float_arg(eps, "eps"), _out(kind, y), _out(kind, saved), kind.stream(x),
    )
    stats.write_back()
    return _results(kind, y, saved)


def switchable_norm(x, mean_weight, var_weight, running_mean, running_var, weight=None, bias=None, training=False,
                    momentum=0.003, eps=1e-5):
    """Switchable Normalization; the output only (see :func:`switchable_norm_forward`)."""
    return switchable_norm_forward(x, mean_weight, var_weight, running_mean, running_var, weight, bias, training,
                                   momentum, eps)[0]


def switchable_norm_backward(dy, x, mean_weight, var_weight, saved, weight=None, training=True,
                             output_mask=(True, True, True, True, True), bias_dtype=None):
    """Gradients of Switchable Normalization: ``(dx, dweight, dbias, dmean_weight, dvar_weight)``.

    dx flows through every statistic (the IN and LN ones always, the BN ones when training=True;
    training=False holds the running statistics fixed). ``dweight = sum dy xhat``, ``dbias = sum dy``;
    dmean_weight/dvar_weight are the gradients of the 3 logits each (through the softmaxes). dweight
    is None without a weight; output_mask = (dx, dweight, dbias, dmean_weight, dvar_weight).
    """
    output_mask = _output_mask(output_mask, 5)
    kind = kind_of(x)
    dx, dw, db = _channel_grads(kind, x, weight, output_mask[:3], bias_dtype)
    ldt = _dtype_name(mean_weight, "mean_weight")
    dm = kind.empty((3,), ldt, x) if output_mask[3] else None
    dv = kind.empty((3,), ldt, x) if output_mask[4] else None
    _core.switchable_norm_backward(
        _required(dy, "dy"), to_core(x), _required(mean_weight, "mean_weight"), _required(var_weight, "var_weight"),
        to_core(weight, "weight"), _required(saved, "saved"), bool_arg(training, "training"), _out(kind, dx),
        _out(kind, dw), _out(kind, db), _out(kind, dm), _out(kind, dv), kind.stream(x),
    )
    return _results(kind, dx, dw, db, dm, dv)


# ---- LocalResponseNorm: x is [N, C, *spatial]; outputs keep x's memory format -----------------------


def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """Like ``torch.nn.functional.local_response_norm``: normalization across channels,

    ``y_c = x_c / (k + alpha / size * sum_{c' in W(c)} x_{c'}^2) ** beta`` with the window
    ``W(c) = [c - size // 2, c + (size - 1) // 2]`` clipped to the channels (zero padding: the sum is
    divided by ``size`` even at the edges). x has 3 or more dimensions [N, C, *]; y keeps x's memory
    format (channels-last in, channels-last out).
    """
    kind = kind_of(x)
    y = empty_like_layout(kind, x)
    _core.local_response_norm_forward(
        to_core(x), int_arg(size, "size"), float_arg(alpha, "alpha"), float_arg(beta, "beta"), float_arg(k, "k"),
        _out(kind, y), kind.stream(x),
    )
    return kind.wrap(y)


def local_response_norm_backward(dy, x, size, alpha=1e-4, beta=0.75, k=1.0):
    """Gradient of :func:`local_response_norm` with respect to x (no statistics are saved: the window
    sums are recomputed from x). dx keeps x's memory format."""
    kind = kind_of(x)
    dx = empty_like_layout(kind, x)
    _core.local_response_norm_backward(
        _required(dy, "dy"), to_core(x), int_arg(size, "size"), float_arg(alpha, "alpha"), float_arg(beta, "beta"),
        float_arg(k, "k"), _out(kind, dx), kind.stream(x),
    )
    return kind.wrap(dx)


# ---- WeightNorm: w = g * v / ||v||, the norm over every dim but `dim` -------------------------------


def _weight_norm_dim(dim) -> int:
    # torch's convention: dim=None is the norm of the whole tensor, which torch spells dim=-1.
    return -1 if dim is None else int_arg(dim, "dim")


def _param_shape(gs, vs):
    """g's shape for allocating norms/dg when it can be a valid one (each size 1 or v's, no more dims than
    v), so at most v's size; an empty placeholder otherwise, so that the core raises its error about g
    before a huge g becomes a huge allocation."""
    if len(gs) <= len(vs) and all(d == 1 or d == vs[i] for i, d in enumerate(gs)):
        return gs
    return (0,)


def weight_norm_forward(v, g, dim=0):
    """Like ``torch._weight_norm(v, g, dim)``; returns ``(w, norms)``.

    ``w = g * v / ||v||`` with the 2-norm taken over every dim of v but ``dim``. As in torch's
    parametrization, ``dim=None`` (or ``-1``, as torch spells it) takes the norm of the whole tensor;
    other negative dims count from the end. g has v's dtype and v's shape with size 1 on every dim but
    ``dim`` (all sizes 1, or 0-d, for the whole tensor); ``norms`` has g's shape and the accumulation
    dtype (float32; float64 for float64). A zero-norm slice gives what torch gives: inf or nan
    (``0 * (g / 0)``).
    """
    kind = kind_of(v, "v")
    vs, dt = kind.shape(v), kind.dtype_name(v)
    gs = kind_of(g, "g").shape(g)
    w = kind.empty(vs, dt, v)
    norms = kind.empty(_param_shape(gs, vs), acc_dtype_name(dt), v)
    _core.weight_norm_forward(to_core(v, "v"), _required(g, "g"), _weight_norm_dim(dim), to_core(w, "w"),
                              to_core(norms, "norms"), kind.stream(v))
    return _results(kind, w, norms)


def weight_norm(v, g, dim=0):
    """``w = g * v / ||v||``, the norm over every dim of v but ``dim`` (see :func:`weight_norm_forward`)."""
    return weight_norm_forward(v, g, dim)[0]


def weight_norm_backward(dw, v, g, norms, dim=0):
    """Gradients of :func:`weight_norm` with respect to v and g; returns ``(dv, dg)``.

    With ``n = ||v||`` per slice and ``s = sum(dw * v)`` over it: ``dg = s / n`` and
    ``dv = g / n * (dw - v * s / n**2)``. ``norms`` is the second result of :func:`weight_norm_forward`.
    """
    kind = kind_of(v, "v")
    vs, dt = kind.shape(v), kind.dtype_name(v)
    gs = kind_of(g, "g").shape(g)
    dv = kind.empty(vs, dt, v)
    dg = kind.empty(_param_shape(gs, vs), dt, v)
    _core.weight_norm_backward(_required(dw, "dw"), to_core(v, "v"), _required(g, "g"), _required(norms, "norms"),
                               _weight_norm_dim(dim), to_core(dv, "dv"), to_core(dg, "dg"), kind.stream(v))
    return _results(kind, dv, dg)


def _communicator(comm):
    from normkit.distributed import as_communicator, default_communicator

    return default_communicator() if comm is None else as_communicator(comm)


def sync_batch_norm_forward(x, running_mean=None, running_var=None, weight=None, bias=None, momentum=0.1, eps=1e-5,
                            comm=None, check=None):
    """SyncBatchNorm in training: BatchNorm over the union of the batches x = [N, C, *] of all processes of
    ``comm`` (a :mod:`normkit.distributed` communicator; None: see ``default_communicator``). Returns
    ``(y, save_mean, save_rstd)`` with the global statistics; running statistics (if given) get the global
    mean and unbiased variance. Every process must call it (an empty local batch is fine).

    ``check``: None, or ``(layer_id, call)``; then processes that disagree on them (or on C) all raise
    ValueError instead of mixing the statistics of different layers.
    """
    kind = kind_of(x)
    y, sm, sr = _channel_outputs(kind, x, (_channels(kind, x),))
    stats = _RunningStats(running_mean, running_var)
    _core.sync_batch_norm_forward(
        to_core(x), stats.core(0, "running_mean"), stats.core(1, "running_var"),
        to_core(weight, "weight"), to_core(bias, "bias"), float_arg(momentum, "momentum"), float_arg(eps, "eps"),
        _communicator(comm), check, _out(kind, y), _out(kind, sm), _out(kind, sr), kind.stream(x),
    )
    stats.write_back()
    return _results(kind, y, sm, sr)


def sync_batch_norm_backward(dy, x, save_mean, save_rstd, weight=None, comm=None, check=None,
                             output_mask=(True, True, True), bias_dtype=None):
    """Gradients of :func:`sync_batch_norm_forward`: ``(dx, dweight, dbias)``. dx flows through the global
    statistics (one all-reduce, every process must call); dweight/dbias are this process's sums."""
    output_mask = _output_mask(output_mask, 3)
    kind = kind_of(x)
    dx, dw, db = _channel_grads(kind, x, weight, output_mask, bias_dtype)
    _core.sync_batch_norm_backward(
        _required(dy, "dy"), to_core(x), _required(save_mean, "save_mean"), _required(save_rstd, "save_rstd"),
        to_core(weight, "weight"), _communicator(comm), check, _out(kind, dx), _out(kind, dw), _out(kind, db),
        kind.stream(x),
    )
    return _results(kind, dx, dw, db)
# ---- SpectralNorm (Miyato et al., 2018): W / sigma, sigma estimated by power iteration ---------------


def _spectral_norm_dim(dim) -> int:
    return 0 if dim is None else int_arg(dim, "dim")


def spectral_norm_forward(w, u, v, n_power_iterations=1, eps=1e-12, dim=0, training=True, check_sigma=True):
    """What ``torch.nn.utils.parametrizations.spectral_norm`` computes for a weight w; returns ``(y, sigma)``.

    w (2 or more dims) is seen as the matrix ``W = w.movedim(dim, 0).flatten(1)`` of shape [H, K]; u ([H])
    and v ([K]) have w's dtype and are **updated in place**. With ``training`` (the default),
    ``n_power_iterations`` steps of ``u = normalize(W v)``, ``v = normalize(W^T u)`` run first, in torch's
    order, with ``normalize(t) = t / max(||t||, eps)``; otherwise the stored u and v are used as they are.
    Then ``sigma = u^T W v`` (a 0-d array of the accumulation dtype: float32, float64 for float64) and
    ``y = w / sigma``. Negative dims count from the end.

    A zero (or non-finite) sigma, e.g. from an all-zero weight, raises ValueError before u, v or anything
    else is written (torch would divide by it and return inf/nan); ``check_sigma=False`` skips the check
    (on CUDA it costs a device-to-host copy). A 1-D w is a ValueError: torch does not iterate for it but
    returns ``w / max(||w||, eps)``.
    """
    kind = kind_of(w, "w")
    training = bool_arg(training, "training")  # (it decides below whether u and v are written)
    ws, dt = kind.shape(w), kind.dtype_name(w)
    y = kind.empty(ws, dt, w)
    sigma = kind.empty((), acc_dtype_name(dt), w)
    # u and v are written only when training: in evaluation any u and v will do (the core compacts
    # strided ones; a read-only NumPy one is copied, the extension takes only writable arrays there).
    def vector(a, arg):
        if training:
            return _in_place(a, arg, required=True)
        if getattr(a, "flags", None) is not None and not a.flags.writeable:  # (NumPy)
            a = a.copy()
        return _required(a, arg)

    _core.spectral_norm_forward(
        to_core(w, "w"), vector(u, "u"), vector(v, "v"), _spectral_norm_dim(dim),
        int_arg(n_power_iterations, "n_power_iterations"), float_arg(eps, "eps"), training,
        bool_arg(check_sigma, "check_sigma"), to_core(y, "y"), to_core(sigma, "sigma"), kind.stream(w),
    )
    return _results(kind, y, sigma)


def spectral_norm(w, u, v, n_power_iterations=1, eps=1e-12, dim=0, training=True):
    """The spectrally normalized weight ``w / sigma``; u and v are updated in place when training (see
    :func:`spectral_norm_forward`)."""
    return spectral_norm_forward(w, u, v, n_power_iterations, eps, dim, training)[0]


def spectral_norm_power_iteration(w, u, v, n_power_iterations=1, eps=1e-12, dim=0, check_sigma=True):
    """Only the power iteration of :func:`spectral_norm_forward`: updates u and v in place (torch runs 15
    steps when it registers the parametrization) and returns ``(u, v)``."""
    kind = kind_of(w, "w")
    _core.spectral_norm_forward(
        to_core(w, "w"), _in_place(u, "u", True), _in_place(v, "v", True), _spectral_norm_dim(dim),
        int_arg(n_power_iterations, "n_power_iterations"),
        float_arg(eps, "eps"), True, bool_arg(check_sigma, "check_sigma"), None, None, kind.stream(w),
    )
    return u, v


def spectral_norm_backward(dy, w, u, v, sigma, dim=0):
    """Gradient of ``y = w / sigma`` with respect to w, u and v held constant (torch's gradient):
    ``dW = dY / sigma - (sum(dY * W) / sigma**2) u v^T`` on the matrix view. u, v and sigma are the values
    the forward used (after its power iteration)."""
    kind = kind_of(w, "w")
    dw = kind.empty(kind.shape(w), kind.dtype_name(w), w)
    _core.spectral_norm_backward(
        _required(dy, "dy"), to_core(w, "w"), _required(u, "u"), _required(v, "v"), _spectral_norm_dim(dim),
        _required(sigma, "sigma"), to_core(dw, "dw"), kind.stream(w),
    )
    return kind.wrap(dw)


# ---- Mean-only BatchNorm (Salimans & Kingma, 2016): x is [N, C, *]; outputs keep x's memory format -----


def mean_only_batch_norm_forward(x, running_mean, bias=None, training=False, momentum=0.1):
    """Mean-only BatchNorm over x = [N, C, *spatial]: ``y = x - mean_c + bias_c`` (no division by a
    standard deviation; the layer is meant to follow a weight-normalized one). Returns ``(y, save_mean)``.

    training: mean_c over the batch and spatial dims, and running_mean (if given) is updated in place as
    ``(1 - momentum) * running_mean + momentum * mean``; otherwise running_mean is subtracted. save_mean
    ([C], the accumulation dtype) holds the mean that was subtracted. y keeps x's memory format.
    """
    kind = kind_of(x)
    acc = acc_dtype_name(kind.dtype_name(x))
    y = empty_output_like(kind, x)
    sm = kind.empty((_channels(kind, x),), acc, x)
    stats = _RunningStats(running_mean, updated=training)
    _core.mean_only_batch_norm_forward(
        to_core(x), stats.core(0, "running_mean"), to_core(bias, "bias"), bool_arg(training, "training"),
        float_arg(momentum, "momentum"), _out(kind, y), _out(kind, sm), kind.stream(x),
    )
    stats.write_back()
    return _results(kind, y, sm)


def mean_only_batch_norm(x, running_mean, bias=None, training=False, momentum=0.1):
    """Mean-only BatchNorm; the output only (see :func:`mean_only_batch_norm_forward`)."""
    return mean_only_batch_norm_forward(x, running_mean, bias, training, momentum)[0]


def mean_only_batch_norm_backward(dy, training=True, output_mask=(True, True), bias_dtype=None, channels_last=None):
    """Gradients of mean-only BatchNorm: ``(dx, dbias)``. training=True: ``dx = dy - mean_c(dy)`` (the batch
    mean depends on x); training=False: ``dx = dy``. ``dbias = sum dy`` over every dim but the channels.
    dx is channels-last when ``channels_last`` is True, channels-first when False, and in dy's memory
    format when None; output_mask = (dx, dbias)."""
    output_mask = _output_mask(output_mask, 2)
    kind = kind_of(dy, "dy")
    dt = kind.dtype_name(dy)
    dx = None
    if output_mask[0]:
        if channels_last is None:
            dx = empty_like_layout(kind, dy)
        else:
            dx = empty_in_layout(kind, kind.shape(dy), dt, dy, bool_arg(channels_last, "channels_last"))
    db = kind.empty((_channels(kind, dy),), bias_dtype or dt, dy) if output_mask[1] else None
    _core.mean_only_batch_norm_backward(
        _required(dy, "dy"), bool_arg(training, "training"), to_core(dx, "dx"), to_core(db, "dbias"), kind.stream(dy),
    )
    return _results(kind, dx, db)
