"""Layer objects for NumPy arrays: ``layer(x)`` runs forward, ``layer.backward(dy)`` returns dx and
stores parameter gradients in ``layer.grads``. Parameters are NumPy arrays under the torch.nn names,
and ``state_dict()``/``load_state_dict()`` use torch.nn's keys, so weights move between the two."""

from __future__ import annotations

import numpy as np

from normkit import functional as F
from normkit._arrays import normalized_shape_tuple

__all__ = ["LayerNorm", "Module", "RMSNorm"]


class Module:
    """Base class: parameters and buffers by name, train/eval, state_dict."""

    _param_names: tuple = ()
    _buffer_names: tuple = ()

    def __init__(self):
        self.training = True
        self.grads: dict = {}

    def __call__(self, x):
        return self.forward(x)

    def train(self, mode: bool = True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def _entries(self):
        for name in self._param_names + self._buffer_names:
            value = getattr(self, name, None)
            if value is not None:
                yield name, value

    def parameters(self):
        return {n: getattr(self, n) for n in self._param_names if getattr(self, n, None) is not None}

    def state_dict(self) -> dict:
        return {name: np.array(value, copy=True) for name, value in self._entries()}

    def load_state_dict(self, state: dict, strict: bool = True):
        """Copies arrays (NumPy, or anything np.asarray takes, e.g. CPU torch tensors) into place."""
        own = dict(self._entries())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, target in own.items():
            if name not in state:
                continue
            value = np.asarray(state[name])
            if value.shape != target.shape:
                raise ValueError(f"state_dict[{name!r}]: expected shape {target.shape}, got {value.shape}")
            target[...] = value
        return self


class LayerNorm(Module):
    """LayerNorm over the trailing ``normalized_shape`` dimensions (torch.nn.LayerNorm semantics)."""

    _param_names = ("weight", "bias")

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=np.float32):
        super().__init__()
        self.normalized_shape = normalized_shape_tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.weight = np.ones(self.normalized_shape, dtype) if elementwise_affine else None
        self.bias = np.zeros(self.normalized_shape, dtype) if elementwise_affine and bias else None
        self._saved = None

    def forward(self, x):
        y, mean, rstd = F.layer_norm_forward(x, self.normalized_shape, self.weight, self.bias, self.eps)
        self._saved = (x, mean, rstd)
        return y

    def backward(self, dy):
        """dx for the last forward; parameter gradients go to ``self.grads``."""
        if self._saved is None:
            raise RuntimeError("backward: call forward first")
        x, mean, rstd = self._saved
        dx, dw, db = F.layer_norm_backward(
            dy, x, self.normalized_shape, mean, rstd, self.weight,
            output_mask=(True, self.weight is not None, self.bias is not None),
            bias_dtype=None if self.bias is None else self.bias.dtype.name,
        )
        self.grads = {k: v for k, v in (("weight", dw), ("bias", db)) if v is not None}
        return dx

    def __repr__(self):
        return (f"LayerNorm({self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine})")


class RMSNorm(Module):
    """RMSNorm over the trailing ``normalized_shape`` dimensions (torch.nn.RMSNorm semantics;
    ``eps=None`` is the machine epsilon of the accumulation type)."""

    _param_names = ("weight",)

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, dtype=np.float32):
        super().__init__()
        self.normalized_shape = normalized_shape_tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.weight = np.ones(self.normalized_shape, dtype) if elementwise_affine else None
        self._saved = None

    def forward(self, x):
        y, rstd = F.rms_norm_forward(x, self.normalized_shape, self.weight, self.eps)
        self._saved = (x, rstd)
        return y

    def backward(self, dy):
        if self._saved is None:
            raise RuntimeError("backward: call forward first")
        x, rstd = self._saved
        dx, dw = F.rms_norm_backward(dy, x, self.normalized_shape, rstd, self.weight)
        self.grads = {"weight": dw} if dw is not None else {}
        return dx

    def __repr__(self):
        return f"RMSNorm({self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine})"
