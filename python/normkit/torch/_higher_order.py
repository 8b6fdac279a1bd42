"""Gradients that must themselves be differentiable (``torch.autograd.grad(..., create_graph=True)``:
gradient penalties, Hessian-vector products, meta-learning).

normkit's backward kernels return plain tensors, so a backward run with ``create_graph=True`` goes
another way: the op's forward is recomputed with differentiable torch operations (torch.nn.functional
where torch has the op, the paper's formula otherwise) and differentiated by autograd. First-order
gradients never come here: the engine runs a backward without ``create_graph`` in no-grad mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF


def wants_graph() -> bool:
    """Whether the backward being run must build a graph (``create_graph=True``)."""
    return torch.is_grad_enabled()


def differentiable_grads(composite, inputs, needs, grad_output):
    """The gradients of ``composite(*inputs)`` with respect to the inputs whose `needs` flag is set
    (None for the others), as tensors with a graph back to the inputs and to grad_output."""
    chosen = [i for i, (t, n) in enumerate(zip(inputs, needs)) if n and t is not None]
    grads = [None] * len(inputs)
    if not chosen:
        return tuple(grads)
    with torch.enable_grad():
        y = composite(*inputs)
        found = torch.autograd.grad(y, [inputs[i] for i in chosen], grad_output, create_graph=True,
                                    allow_unused=True)
    for i, g in zip(chosen, found):
        grads[i] = torch.zeros_like(inputs[i]) if g is None else g
    return tuple(grads)


def refuse_graph(layer: str):
    """For an op without a composite: raises when a graph of its gradient is asked for."""
    raise RuntimeError(
        f"{layer}: gradients of its gradients (create_graph=True) are not supported; first-order gradients are"
    )


def unsupported(layer: str):
    """The composite of an op without one (see refuse_graph)."""
    return lambda *_: refuse_graph(layer)


def _per_channel(t, x):
    """A [C] tensor shaped to broadcast over x = [N, C, *]."""
    return t.reshape(1, -1, *([1] * (x.dim() - 2)))


def affine_with_statistics(x, weight, bias, mean, rstd):
    """``(x - mean) * rstd * weight + bias`` with per-channel constants (evaluation mode)."""
    y = (x - _per_channel(mean.to(x.dtype), x)) * _per_channel(rstd.to(x.dtype), x)
    if weight is not None:
        y = y * _per_channel(weight, x)
    if bias is not None:
        y = y + _per_channel(bias, x)
    return y


def _running_stats_composite(recompute, eps: float):
    def factory(uses_batch_statistics: bool):
        def composite(x, weight, bias, mean, rstd):
            if uses_batch_statistics:
                return recompute(x, None, None, weight, bias, True, 0.0, eps)
            return affine_with_statistics(x, weight, bias, mean, rstd)

        return composite

    return factory


def batch_norm(uses_batch_statistics: bool, eps: float):
    """BatchNorm's composite: batch statistics recomputed from x, or the saved (running) statistics as
    constants. instance_norm: the same with per-instance statistics."""
    return _running_stats_composite(TF.batch_norm, eps)(uses_batch_statistics)


def instance_norm(uses_input_statistics: bool, eps: float):
    return _running_stats_composite(TF.instance_norm, eps)(uses_input_statistics)


def spectral_norm(u, v, dim: int):
    """``w / sigma`` with ``sigma = u^T W v`` and u, v constants, as torch's parametrization."""

    def composite(w):
        mat = w.movedim(dim, 0).flatten(1) if w.dim() > 1 else w.reshape(1, -1)
        sigma = torch.vdot(u.to(w.dtype), torch.mv(mat, v.to(w.dtype)))
        return w / sigma

    return composite


def weight_norm(dim: int):
    """``v * (g / ||v||)``, the norm over every dim but ``dim`` (-1: the whole tensor), written out:
    torch._weight_norm's own second derivatives on the CPU fail torch.autograd.gradgradcheck (torch
    2.13), this form passes."""

    def composite(v, g):
        if dim == -1:
            norm = torch.linalg.vector_norm(v)
        else:
            keep = dim % v.dim()
            others = [d for d in range(v.dim()) if d != keep]
            norm = torch.linalg.vector_norm(v, dim=others, keepdim=True) if others else v.abs()
        return v * (g / norm)

    return composite
