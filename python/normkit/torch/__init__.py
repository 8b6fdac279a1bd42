"""Drop-in twins of torch.nn normalization layers backed by the normkit core.

Each twin subclasses its torch.nn layer, so constructor arguments, parameters, buffers, state_dict
keys and ``extra_repr`` are torch's own; only the computation runs in normkit (through
``torch.autograd.Function``). ``convert_model(model)`` swaps them into an existing model."""

from normkit.torch import functional
from normkit.torch.convert import convert_model
from normkit.torch.modules import (
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    GroupNorm,
    InstanceNorm1d,
    InstanceNorm2d,
    InstanceNorm3d,
    LayerNorm,
    LocalResponseNorm,
    RMSNorm,
)

__all__ = [
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
    "convert_model",
    "functional",
]
