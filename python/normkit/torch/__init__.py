"""Drop-in twins of torch.nn normalization layers backed by the normkit core.

Each twin subclasses its torch.nn layer, so constructor arguments, parameters, buffers, state_dict
keys and ``extra_repr`` are torch's own; only the computation runs in normkit (through
``torch.autograd.Function``). ``convert_model(model)`` swaps them into an existing model.
``weight_norm(module)`` is torch.nn.utils.parametrizations.weight_norm with a normkit weight.
``spectral_norm(module)`` is torch.nn.utils.parametrizations.spectral_norm with a normkit weight."""

from normkit.torch import functional
from normkit.torch.convert import convert_model
from normkit.torch.modules import (
    BatchInstanceNorm1d,
    BatchInstanceNorm2d,
    BatchInstanceNorm3d,
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    BatchNormXd,
    GroupNorm,
    InstanceNorm1d,
    InstanceNorm2d,
    InstanceNorm3d,
    LayerNorm,
    LocalResponseNorm,
    MeanOnlyBatchNorm1d,
    MeanOnlyBatchNorm2d,
    MeanOnlyBatchNorm3d,
    RMSNorm,
    SpectralNorm,
    SwitchableNorm1d,
    SwitchableNorm2d,
    SwitchableNorm3d,
    SyncBatchNorm,
    WeightNorm,
    convert_sync_batchnorm,
    revert_sync_batchnorm,
    spectral_norm,
    weight_norm,
)

__all__ = [
    "BatchInstanceNorm1d",
    "BatchInstanceNorm2d",
    "BatchInstanceNorm3d",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "BatchNormXd",
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
    "SyncBatchNorm",
    "WeightNorm",
    "convert_model",
    "convert_sync_batchnorm",
    "functional",
    "revert_sync_batchnorm",
    "weight_norm",
    "MeanOnlyBatchNorm1d",
    "MeanOnlyBatchNorm2d",
    "MeanOnlyBatchNorm3d",
    "SpectralNorm",
    "spectral_norm",
]
