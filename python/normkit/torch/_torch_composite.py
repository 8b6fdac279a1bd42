"""normkit's ops written in torch operations, for torch.func transforms and forward-mode AD.

torch.func (vmap, grad, jacrev, jvp; per-sample gradients, model ensembles) and forward-mode AD hand
the ops wrapped tensors with no data pointer of their own, and need vmap and jvp rules that the core's
autograd.Functions do not have. Under them the ops compute with the torch operations below instead:
torch.nn.functional's own op where torch has one, the paper's formula otherwise (the same forms that
gradients of gradients use, _higher_order.py). The ops without a form here raise there.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as _forward_ad
import torch.nn.functional as TF

from normkit._arrays import normalized_shape_tuple
from normkit.torch import _higher_order as _H


def active(args, kwargs) -> bool:
    """Whether a torch.func transform is active, or a forward-mode AD level with a dual tensor among the
    op's arguments."""
    if torch._C._are_functorch_transforms_active():
        return True
    if _forward_ad._current_level < 0:
        return False
    return any(isinstance(a, torch.Tensor) and _forward_ad.unpack_dual(a).tangent is not None
               for a in (*args, *kwargs.values()))


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    return TF.layer_norm(input, normalized_shape_tuple(normalized_shape), weight, bias, eps)


def rms_norm(input, normalized_shape, weight=None, eps=None):
    return TF.rms_norm(input, list(normalized_shape_tuple(normalized_shape)), weight, eps)


def weight_norm(v, g, dim=0):
    return _H.weight_norm(-1 if dim is None else dim)(v, g)


def mean_only_batch_norm(input, running_mean, bias=None, training=False, momentum=0.1):
    """y = x - mean_c + bias_c (Salimans & Kingma, 2016), mean over every dim but 1 when training (then
    moving running_mean by `momentum`, in place as torch's BatchNorm), running_mean otherwise."""
    dims = [d for d in range(input.dim()) if d != 1]
    shape = [1, -1] + [1] * (input.dim() - 2)
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32  # (as the kernels: one rounding)
    if training and input.numel() > 0:
        mean = input.mean(dim=dims, dtype=acc)
        if running_mean is not None:
            with torch.no_grad():
                running_mean.copy_(running_mean.to(acc) * (1 - momentum) + mean.detach() * momentum)
    elif training:  # an empty batch, as the kernels: no batch mean (0), the running mean kept
        mean = torch.zeros(input.shape[1], dtype=acc, device=input.device)
    else:
        mean = running_mean.to(acc)
    y = input.to(acc) - mean.reshape(shape)
    if bias is not None:
        y = y + bias.to(acc).reshape(shape)
    return y.to(input.dtype)


COMPOSITE = {
    "layer_norm": layer_norm,
    "rms_norm": rms_norm,
    "batch_norm": TF.batch_norm,
    "instance_norm": TF.instance_norm,
    "group_norm": TF.group_norm,
    "local_response_norm": TF.local_response_norm,
    "weight_norm": weight_norm,
    "mean_only_batch_norm": mean_only_batch_norm,
}
