"""Argument conversions torch makes inside its own ops, which the eager adapters (functional.py) and the
custom-op forms (_custom_ops.py) both make before calling normkit."""

from __future__ import annotations

import torch

_HALF = (torch.float16, torch.bfloat16)


def rms_weight(input, weight):
    """torch's rms_norm takes a weight of any float dtype (it computes in the wider of the two and
    returns input's dtype); the core takes input's dtype or, for half inputs, float32. Other weights
    are cast to input's accumulation dtype (float32, float64 for float64); autograd flows through."""
    if weight is None or weight.dtype == input.dtype or (weight.dtype == torch.float32 and input.dtype in _HALF):
        return weight
    return weight.to(torch.float64 if input.dtype == torch.float64 else torch.float32)


def local_response_norm_input(input):
    """torch's local_response_norm runs in float32 under autocast from 4 dims on (its avg_pool3d, on
    autocast's float32 list; 3-D inputs take avg_pool2d, which keeps the half type)."""
    if input.dim() > 3 and input.dtype in _HALF and torch.is_autocast_enabled(input.device.type):
        return input.float()
    return input
