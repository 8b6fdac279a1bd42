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

from normkit import _core
from normkit._arrays import acc_dtype_name, kind_of, normalized_shape_tuple, to_core

__all__ = [
    "layer_norm",
    "layer_norm_backward",
    "layer_norm_forward",
    "rms_norm",
    "rms_norm_backward",
    "rms_norm_forward",
]

_MACHINE_EPS = {"float32": 1.1920928955078125e-07, "float64": 2.220446049250313e-16}


def _leading(shape, normalized_shape):
    k = len(normalized_shape)
    return tuple(shape[: len(shape) - k]) if len(shape) >= k else ()


def _dtype_name(a):
    return kind_of(a).dtype_name(a)


def layer_norm_forward(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """LayerNorm over the trailing ``normalized_shape`` dims; returns ``(y, mean, rstd)``.

    ``y = (x - mean) * rstd * weight + bias`` with ``rstd = 1 / sqrt(var + eps)`` (biased variance).
    ``mean`` and ``rstd`` have the leading shape of x and the accumulation dtype (float32; float64 for
    float64 inputs).
    """
    kind = kind_of(x)
    shape = normalized_shape_tuple(normalized_shape)
    xs, dt = kind.shape(x), kind.dtype_name(x)
    lead, acc = _leading(xs, shape), acc_dtype_name(dt)
    y = kind.empty(xs, dt, x)
    mean = kind.empty(lead, acc, x)
    rstd = kind.empty(lead, acc, x)
    _core.layer_norm_forward(
        to_core(x), shape, to_core(weight, "weight"), to_core(bias, "bias"), float(eps),
        to_core(y), to_core(mean), to_core(rstd), kind.stream(x),
    )
    return kind.wrap(y), kind.wrap(mean), kind.wrap(rstd)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """LayerNorm forward (see :func:`layer_norm_forward`)."""
    return layer_norm_forward(x, normalized_shape, weight, bias, eps)[0]


def layer_norm_backward(dy, x, normalized_shape, mean, rstd, weight=None, output_mask=(True, True, True),
                        bias_dtype=None):
    """Gradients of LayerNorm: returns ``(dx, dweight, dbias)``.

    ``mean``/``rstd`` are the statistics from :func:`layer_norm_forward`. ``output_mask`` selects which
    gradients to compute (the others are None); ``dweight`` is None without a weight. Parameter
    gradients are summed in float32 (float64 for float64) and returned in the weight's dtype (x's when
    there is no weight); ``bias_dtype`` overrides the dtype of ``dbias``.
    """
    kind = kind_of(x)
    shape = normalized_shape_tuple(normalized_shape)
    xs, dt = kind.shape(x), kind.dtype_name(x)
    pdt = _dtype_name(weight) if weight is not None else dt
    dx = kind.empty(xs, dt, x) if output_mask[0] else None
    dw = kind.empty(shape, pdt, x) if output_mask[1] and weight is not None else None
    db = kind.empty(shape, bias_dtype or pdt, x) if output_mask[2] else None
    _core.layer_norm_backward(
        to_core(dy, "dy"), to_core(x), shape, to_core(mean, "mean"), to_core(rstd, "rstd"),
        to_core(weight, "weight"), to_core(dx), to_core(dw), to_core(db), kind.stream(x),
    )
    return tuple(None if a is None else kind.wrap(a) for a in (dx, dw, db))


def rms_norm_forward(x, normalized_shape, weight=None, eps=None):
    """RMSNorm over the trailing ``normalized_shape`` dims; returns ``(y, rstd)``.

    ``y = x * rstd * weight`` with ``rstd = 1 / sqrt(mean(x^2) + eps)``. ``eps=None`` is the machine
    epsilon of the accumulation type (float32's for half and float32 inputs, float64's for float64),
    which is what ``torch.nn.functional.rms_norm`` uses.
    """
    kind = kind_of(x)
    shape = normalized_shape_tuple(normalized_shape)
    xs, dt = kind.shape(x), kind.dtype_name(x)
    acc = acc_dtype_name(dt)
    if eps is None:
        eps = _MACHINE_EPS[acc]
    y = kind.empty(xs, dt, x)
    rstd = kind.empty(_leading(xs, shape), acc, x)
    _core.rms_norm_forward(
        to_core(x), shape, to_core(weight, "weight"), float(eps), to_core(y), to_core(rstd), kind.stream(x)
    )
    return kind.wrap(y), kind.wrap(rstd)


def rms_norm(x, normalized_shape, weight=None, eps=None):
    """RMSNorm forward (see :func:`rms_norm_forward`)."""
    return rms_norm_forward(x, normalized_shape, weight, eps)[0]


def rms_norm_backward(dy, x, normalized_shape, rstd, weight=None, output_mask=(True, True)):
    """Gradients of RMSNorm: returns ``(dx, dweight)`` (dweight None without a weight)."""
    kind = kind_of(x)
    shape = normalized_shape_tuple(normalized_shape)
    xs, dt = kind.shape(x), kind.dtype_name(x)
    dx = kind.empty(xs, dt, x) if output_mask[0] else None
    dw = kind.empty(shape, _dtype_name(weight), x) if output_mask[1] and weight is not None else None
    _core.rms_norm_backward(
        to_core(dy, "dy"), to_core(x), shape, to_core(rstd, "rstd"), to_core(weight, "weight"),
        to_core(dx), to_core(dw), kind.stream(x),
    )
    return tuple(None if a is None else kind.wrap(a) for a in (dx, dw))
