"""Drop-in twins of torch.nn normalization layers backed by the normkit core.

Each twin subclasses its torch.nn layer, so constructor arguments, parameters, buffers, state_dict
keys and ``extra_repr`` are torch's own; only ``forward`` runs normkit (through
``torch.autograd.Function``)."""

from normkit.torch import functional
from normkit.torch.modules import LayerNorm, RMSNorm

__all__ = ["LayerNorm", "RMSNorm", "functional"]
