"""convert_model: swap torch.nn normalization layers for their normkit twins in place of a model."""

from __future__ import annotations

import logging

import torch
from torch.nn.utils import parametrizations as _parametrizations

from normkit.torch import modules as M

__all__ = ["PARAMETRIZATION_TWINS", "TWINS", "convert_model"]

_log = logging.getLogger("normkit")

# Exact torch.nn class -> normkit twin (subclasses of torch.nn layers are left alone: they may
# override forward).
TWINS = {
    torch.nn.LayerNorm: M.LayerNorm,
    torch.nn.RMSNorm: M.RMSNorm,
    torch.nn.BatchNorm1d: M.BatchNorm1d,
    torch.nn.BatchNorm2d: M.BatchNorm2d,
    torch.nn.BatchNorm3d: M.BatchNorm3d,
    torch.nn.InstanceNorm1d: M.InstanceNorm1d,
    torch.nn.InstanceNorm2d: M.InstanceNorm2d,
    torch.nn.InstanceNorm3d: M.InstanceNorm3d,
    torch.nn.GroupNorm: M.GroupNorm,
    torch.nn.LocalResponseNorm: M.LocalResponseNorm,
}


def _twin_of(layer: torch.nn.Module, twin_cls):
    # The twin takes over the layer's state: the same Parameter and buffer objects (device, dtype and
    # optimizer references stay valid) in the same registries (_parameters, _buffers, hooks...: a
    # RemovableHandle of a hook registered before the conversion refers to its dict, and must still
    # remove it). The replaced layer keeps copies of the registries (dicts and sets), so that
    # registering or rebinding on one module later leaves the other.
    twin = twin_cls.__new__(twin_cls)
    twin.__dict__.update(layer.__dict__)
    for key, value in layer.__dict__.items():
        if isinstance(value, (dict, set)):
            layer.__dict__[key] = value.copy()
    return twin


# Exact torch parametrization class -> normkit twin, swapped in place (the parametrization object and
# its original0/original1 are kept; only its class changes).
PARAMETRIZATION_TWINS = {
    _parametrizations._WeightNorm: M.WeightNorm,
    _parametrizations._SpectralNorm: M.SpectralNorm,
}


def _convert_parametrizations(module: torch.nn.Module, report: list | None) -> None:
    for qualified, mod in module.named_modules():
        plists = getattr(mod, "parametrizations", None)
        if not isinstance(plists, torch.nn.ModuleDict):
            continue
        for tensor_name, plist in plists.items():
            for i, p in enumerate(plist):
                twin_cls = PARAMETRIZATION_TWINS.get(type(p))
                if twin_cls is None:
                    continue
                old = type(p).__name__
                p.__class__ = twin_cls
                full = f"{qualified}.parametrizations.{tensor_name}.{i}" if qualified else \
                    f"parametrizations.{tensor_name}.{i}"
                _log.info("convert_model: %s: %s -> normkit %s", full, old, twin_cls.__name__)
                if report is not None:
                    report.append((full, old, twin_cls.__name__))


def convert_model(module: torch.nn.Module, report: list | None = None) -> torch.nn.Module:
    """Returns ``module`` with every torch.nn normalization layer normkit has a twin for replaced by
    that twin, parameters and buffers kept, and every weight-norm and spectral-norm parametrization
    (torch.nn.utils.parametrizations.weight_norm, spectral_norm) computed by normkit (same object,
    parameters and buffers, normkit's class). If ``report`` is a list, ``(name, old_class, new_class)``
    is appended for each replacement; replacements are also logged on the ``normkit`` logger."""
    _convert_parametrizations(module, report)
    twin_cls = TWINS.get(type(module))
    if twin_cls is not None:
        if report is not None:
            report.append(("", type(module).__name__, twin_cls.__name__))
        return _twin_of(module, twin_cls)
    twins = {}  # id(old layer) -> its twin: a layer registered in several places stays shared
    for qualified, parent in list(module.named_modules()):
        for name, child in list(parent._modules.items()):  # _modules: named_children() skips repeats
            twin_cls = TWINS.get(type(child))
            if twin_cls is None:
                continue
            if id(child) not in twins:
                twins[id(child)] = _twin_of(child, twin_cls)
            setattr(parent, name, twins[id(child)])
            full = f"{qualified}.{name}" if qualified else name
            _log.info("convert_model: %s: %s -> normkit %s", full, type(child).__name__, twin_cls.__name__)
            if report is not None:
                report.append((full, type(child).__name__, twin_cls.__name__))
    return module
