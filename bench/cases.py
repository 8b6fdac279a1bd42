"""Benchmark case definitions.

A :class:`Case` describes one measurement: a layer family, an input shape,
a dtype, a mode (``"fwd"`` or ``"fwd+bwd"``) and a *factory*.  Calling the
factory allocates the inputs and returns ``(normkit_fn, torch_fn)``: two
zero-argument closures that each perform exactly one repetition of the work
(one forward, or one forward + backward) and return what they produced (a
tensor, or a dict name -> tensor such as {"y", "dx", "dw", "db"}), so the
harness can also compare the two sides once before timing them.

To add cases for a new layer family (BatchNorm, GroupNorm, ...), write a
``*_cases()`` builder like :func:`layer_norm_cases` and call :func:`register`
on its output at the bottom of this module.  Nothing here imports
``normkit`` at module import time, so ``--list`` works without it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Callable

import torch

MODES = ("fwd", "fwd+bwd")

# Minimum bytes that must cross the memory bus, in units of the input
# tensor's size (per the project issue): forward reads x and writes y (2x);
# backward reads x and dy and writes dx (3x).  Weights/bias/statistics are
# O(N) and ignored.
MODE_TRAFFIC = {"fwd": 2, "fwd+bwd": 2 + 3}

# Fixed epsilons passed explicitly to both libraries so they compute the same
# function regardless of their defaults.
LAYER_NORM_EPS = 1e-5
RMS_NORM_EPS = 1e-6

_DTYPE_SHORT = {torch.float32: "float32", torch.bfloat16: "bfloat16",
                torch.float16: "float16", torch.float64: "float64"}

Fn = Callable[[], object]
Factory = Callable[[], "tuple[Fn, Fn]"]


@dataclass(frozen=True)
class Case:
    name: str
    family: str
    shape: tuple
    dtype: torch.dtype
    mode: str
    factory: Factory

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"{self.name}: mode must be one of {MODES}, got {self.mode!r}")

    @property
    def dtype_name(self) -> str:
        return _DTYPE_SHORT.get(self.dtype, str(self.dtype).replace("torch.", ""))

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def tensor_bytes(self) -> int:
        return self.numel * self.dtype.itemsize

    @property
    def min_bytes(self) -> int:
        """Minimum bytes moved per repetition (the roofline numerator)."""
        return MODE_TRAFFIC[self.mode] * self.tensor_bytes

    @property
    def shape_str(self) -> str:
        return "x".join(str(d) for d in self.shape)


def case_name(family: str, shape: Sequence[int], dtype: torch.dtype, mode: str) -> str:
    return f"{family}-{'x'.join(map(str, shape))}-{_DTYPE_SHORT.get(dtype, str(dtype))}-{mode}"


# --------------------------------------------------------------------------
# Generic closure builder for "normalize over the last dimension with an
# affine weight (and optionally bias)" layers.
# --------------------------------------------------------------------------

def _affine_last_dim_factory(nk_op, torch_op, shape, dtype, mode, *, bias: bool, seed: int = 0) -> Factory:
    """Build a factory for ops with signature ``op(x, w, b) -> y``.

    ``nk_op`` / ``torch_op`` are zero-argument callables returning the actual
    op (resolved lazily, so normkit is imported only when a case runs).
    """

    def factory():
        nk, th = nk_op(), torch_op()
        g = torch.Generator().manual_seed(seed)
        n = shape[-1]
        x0 = torch.randn(shape, generator=g).to(dtype)
        w0 = (1.0 + 0.1 * torch.randn(n, generator=g)).to(dtype)
        b0 = (0.1 * torch.randn(n, generator=g)).to(dtype) if bias else None
        dy = torch.randn(shape, generator=g).to(dtype) if mode == "fwd+bwd" else None

        def side(op):
            # Each side gets its own copies so autograd state never mixes.
            x = x0.clone()
            w = w0.clone()
            b = b0.clone() if b0 is not None else None
            if mode == "fwd":
                def fn():
                    with torch.no_grad():
                        return op(x, w, b)
                return fn
            leaves = {k: t.requires_grad_(True) for k, t in (("dx", x), ("dw", w), ("db", b)) if t is not None}
            leaf_list = list(leaves.values())

            def fn():
                for t in leaf_list:
                    t.grad = None
                y = op(x, w, b)
                y.backward(dy)
                return {"y": y.detach(), **{k: t.grad for k, t in leaves.items()}}
            return fn

        return side(nk), side(th)

    return factory


def _nk_functional():
    import normkit.torch.functional as nkF  # noqa: PLC0415  (lazy on purpose)
    return nkF


# ----------------------------- LayerNorm ----------------------------------

def layer_norm_cases(shapes: Iterable[Sequence[int]], dtypes: Iterable[torch.dtype],
                     modes: Iterable[str] = MODES) -> list[Case]:
    out = []
    for shape in shapes:
        shape = tuple(shape)
        ns = (shape[-1],)

        def nk_op(ns=ns):
            f = _nk_functional().layer_norm
            return lambda x, w, b: f(x, ns, w, b, eps=LAYER_NORM_EPS)

        def torch_op(ns=ns):
            f = torch.nn.functional.layer_norm
            return lambda x, w, b: f(x, ns, w, b, eps=LAYER_NORM_EPS)

        for dtype in dtypes:
            for mode in modes:
                out.append(Case(case_name("layernorm", shape, dtype, mode), "LayerNorm", shape, dtype, mode,
                                _affine_last_dim_factory(nk_op, torch_op, shape, dtype, mode, bias=True)))
    return out


# ------------------------------ RMSNorm -----------------------------------

def rms_norm_cases(shapes: Iterable[Sequence[int]], dtypes: Iterable[torch.dtype],
                   modes: Iterable[str] = MODES) -> list[Case]:
    out = []
    for shape in shapes:
        shape = tuple(shape)
        ns = (shape[-1],)

        def nk_op(ns=ns):
            f = _nk_functional().rms_norm
            return lambda x, w, b: f(x, ns, w, eps=RMS_NORM_EPS)

        def torch_op(ns=ns):
            f = torch.nn.functional.rms_norm
            return lambda x, w, b: f(x, ns, w, eps=RMS_NORM_EPS)

        for dtype in dtypes:
            for mode in modes:
                out.append(Case(case_name("rmsnorm", shape, dtype, mode), "RMSNorm", shape, dtype, mode,
                                _affine_last_dim_factory(nk_op, torch_op, shape, dtype, mode, bias=False)))
    return out


# ------------------- BatchNorm / InstanceNorm / GroupNorm -------------------

def _module_factory(make_pair, shape, dtype, mode, *, channels_last: bool, train: bool, seed: int = 0) -> Factory:
    """Factory for [N, C, *] layers given as modules. ``make_pair()`` returns (normkit module, torch
    module); the normkit twin gets the torch module's state so both compute the same function."""

    def factory():
        nk, th = make_pair()
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in th.parameters():
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        nk.load_state_dict(th.state_dict())
        x0 = (torch.randn(shape, generator=g) * 2 + 0.5).to(dtype)
        fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(len(shape))
        if channels_last:
            x0 = x0.contiguous(memory_format=fmt)
        dy = torch.randn(shape, generator=g).to(dtype) if mode == "fwd+bwd" else None
        if dy is not None:
            # dy in the layout of the output, as a model's next layer hands it back (InstanceNorm's
            # output is channels first whatever x's layout, as torch's).
            with torch.no_grad():  # (on a copy: a training step would move th's running statistics)
                y_layout = copy.deepcopy(th).to(dtype).train(train)(x0)
            if channels_last and y_layout.is_contiguous(memory_format=fmt) and not y_layout.is_contiguous():
                dy = dy.contiguous(memory_format=fmt)

        def side(module):
            module.to(dtype).train(train)
            x = x0.clone(memory_format=torch.preserve_format)
            if mode == "fwd":
                def fn():
                    with torch.no_grad():
                        return module(x)
                return fn
            x.requires_grad_(True)
            params = dict(module.named_parameters())

            def fn():
                x.grad = None
                for p in params.values():
                    p.grad = None
                y = module(x)
                y.backward(dy)
                grads = {"d" + k[0]: p.grad for k, p in params.items()}
                return {"y": y.detach(), "dx": x.grad, **grads}
            return fn

        return side(nk), side(th)

    return factory


def _nk_modules():
    import normkit.torch as nkt  # noqa: PLC0415  (lazy on purpose)
    return nkt


def channel_norm_cases() -> list[Case]:
    """The cases of the BatchNorm/InstanceNorm/GroupNorm issue."""
    out = []

    def add(family, label, shape, dtypes, make_pair, *, channels_last, train=True, modes=MODES):
        for dtype in dtypes:
            for mode in modes:
                name = case_name(label + ("-cl" if channels_last else ""), shape, dtype, mode)
                out.append(Case(name, family, tuple(shape), dtype, mode,
                                _module_factory(make_pair, shape, dtype, mode, channels_last=channels_last,
                                                train=train)))

    bn = lambda: (_nk_modules().BatchNorm2d(64), torch.nn.BatchNorm2d(64))  # noqa: E731
    for cl in (False, True):
        add("BatchNorm2d train" + (" NHWC" if cl else ""), "batchnorm2d-train", (32, 64, 56, 56),
            (torch.float32, torch.bfloat16), bn, channels_last=cl)
    add("BatchNorm2d eval", "batchnorm2d-eval", (32, 64, 56, 56), (torch.float32,), bn, channels_last=False,
        train=False)
    # A ResNet's last stage: many short planes (49 values), where per-plane overheads show.
    bn512 = lambda: (_nk_modules().BatchNorm2d(512), torch.nn.BatchNorm2d(512))  # noqa: E731
    add("BatchNorm2d train", "batchnorm2d-train", (32, 512, 7, 7), (torch.float32,), bn512, channels_last=False)
    inorm = lambda: (_nk_modules().InstanceNorm2d(64, affine=True), torch.nn.InstanceNorm2d(64, affine=True))  # noqa: E731
    for cl in (False, True):  # (channels-last: the output is contiguous, a transposition on both sides)
        add("InstanceNorm2d" + (" NHWC" if cl else ""), "instancenorm2d", (32, 64, 56, 56), (torch.float32,), inorm,
            channels_last=cl)
    gn = lambda: (_nk_modules().GroupNorm(32, 256), torch.nn.GroupNorm(32, 256))  # noqa: E731
    for cl in (False, True):
        add("GroupNorm" + (" NHWC" if cl else ""), "groupnorm", (8, 256, 64, 64), (torch.float32,), gn,
            channels_last=cl)
    return out


def local_response_norm_cases() -> list[Case]:
    """LocalResponseNorm across channels (AlexNet-style, size 5). The module has no parameters: the
    module factory then compares y and dx only."""
    out = []
    lrn = lambda: (_nk_modules().LocalResponseNorm(5), torch.nn.LocalResponseNorm(5))  # noqa: E731
    shape = (32, 64, 56, 56)
    for mode in MODES:
        out.append(Case(case_name("localresponsenorm", shape, torch.float32, mode),
                        "LocalResponseNorm", shape, torch.float32, mode,
                        _module_factory(lrn, shape, torch.float32, mode, channels_last=False, train=True)))
    return out


class _TorchBatchInstanceNorm(torch.nn.Module):
    """Batch-Instance Norm written with torch ops (torch has no such layer): the paper's
    y = gamma * (rho * xhat_BN + (1 - rho) * xhat_IN) + beta, rho clipped to [0, 1]. State dict keys
    match normkit's BatchInstanceNorm2d, so the module factory can give both the same state."""

    def __init__(self, c, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = torch.nn.Parameter(torch.ones(c))
        self.bias = torch.nn.Parameter(torch.zeros(c))
        self.rho = torch.nn.Parameter(torch.ones(c))
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        f = torch.nn.functional
        x_bn = f.batch_norm(x, self.running_mean, self.running_var, None, None, self.training, self.momentum,
                            self.eps)
        if self.training:
            self.num_batches_tracked += 1
        x_in = f.instance_norm(x, eps=self.eps)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        rho = self.rho.clamp(0, 1).view(shape)
        return (rho * x_bn + (1 - rho) * x_in) * self.weight.view(shape) + self.bias.view(shape)


def batch_instance_norm_cases() -> list[Case]:
    """Batch-Instance Norm (fused: one pass of per-(n, c) moments gives both statistics) against the
    same formula composed from torch's BatchNorm and InstanceNorm."""
    shape = (32, 64, 56, 56)
    make = lambda: (_nk_modules().BatchInstanceNorm2d(64), _TorchBatchInstanceNorm(64))  # noqa: E731
    return [Case(case_name("batchinstancenorm", shape, torch.float32, mode), "BatchInstanceNorm2d", shape,
                 torch.float32, mode, _module_factory(make, shape, torch.float32, mode, channels_last=False,
                                                      train=True))
            for mode in MODES]


class _TorchSwitchableNorm(torch.nn.Module):
    """Switchable Norm written with torch ops from the paper's equations (IN, LN, BN statistics of
    per-(n, c) moments, softmax-weighted); state dict keys match normkit's SwitchableNorm2d."""

    def __init__(self, c, eps=1e-5, momentum=0.003):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = torch.nn.Parameter(torch.ones(c))
        self.bias = torch.nn.Parameter(torch.zeros(c))
        self.mean_weight = torch.nn.Parameter(torch.zeros(3))
        self.var_weight = torch.nn.Parameter(torch.zeros(3))
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))

    def forward(self, x):
        dims = tuple(range(2, x.dim()))
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mu_in = x.mean(dims, keepdim=True)
        var_in = x.var(dims, keepdim=True, unbiased=False)
        sq_in = var_in + mu_in * mu_in
        mu_ln = mu_in.mean(1, keepdim=True)
        var_ln = sq_in.mean(1, keepdim=True) - mu_ln * mu_ln
        if self.training:
            mu_bn = mu_in.mean(0, keepdim=True)
            var_bn = sq_in.mean(0, keepdim=True) - mu_bn * mu_bn
            with torch.no_grad():
                self.running_mean.lerp_(mu_bn.flatten(), self.momentum)
                self.running_var.lerp_(var_bn.flatten(), self.momentum)
        else:
            mu_bn, var_bn = self.running_mean.view(shape), self.running_var.view(shape)
        mw, vw = self.mean_weight.softmax(0), self.var_weight.softmax(0)
        mu = mw[0] * mu_in + mw[1] * mu_ln + mw[2] * mu_bn
        var = vw[0] * var_in + vw[1] * var_ln + vw[2] * var_bn
        return (x - mu) * (var + self.eps).rsqrt() * self.weight.view(shape) + self.bias.view(shape)


def switchable_norm_cases() -> list[Case]:
    """Switchable Norm (fused: one pass of per-(n, c) moments) against the same equations in torch ops."""
    shape = (32, 64, 56, 56)
    make = lambda: (_nk_modules().SwitchableNorm2d(64), _TorchSwitchableNorm(64))  # noqa: E731
    return [Case(case_name("switchablenorm", shape, torch.float32, mode), "SwitchableNorm2d", shape,
                 torch.float32, mode, _module_factory(make, shape, torch.float32, mode, channels_last=False,
                                                      train=True))
            for mode in MODES]


def weight_norm_cases() -> list[Case]:
    """WeightNorm of a Linear(1024, 4096) weight along dim 0: normkit's functional form against
    torch._weight_norm (what torch's weight_norm parametrization computes)."""
    shape = (4096, 1024)

    def factory_for(mode):
        def factory():
            nk = _nk_functional().weight_norm
            gen = torch.Generator().manual_seed(0)
            v0 = torch.randn(shape, generator=gen)
            g0 = v0.norm(dim=1, keepdim=True) * (1 + 0.1 * torch.randn(shape[0], 1, generator=gen))
            dw = torch.randn(shape, generator=gen)

            def side(op):
                v, g = v0.clone(), g0.clone()
                if mode == "fwd":
                    def fn():
                        with torch.no_grad():
                            return op(v, g)
                    return fn
                v.requires_grad_(True)
                g.requires_grad_(True)

                def fn():
                    v.grad = g.grad = None
                    w = op(v, g)
                    w.backward(dw)
                    return {"y": w.detach(), "dv": v.grad, "dg": g.grad}
                return fn

            return side(lambda v, g: nk(v, g, 0)), side(lambda v, g: torch._weight_norm(v, g, 0))
        return factory

    return [Case(case_name("weightnorm", shape, torch.float32, mode), "WeightNorm", shape, torch.float32, mode,
                 factory_for(mode)) for mode in MODES]


def spectral_norm_cases() -> list[Case]:
    """SpectralNorm of a Linear(1024, 1024) weight: one training-mode access of ``module.weight`` (one
    power-iteration step on _u/_v, then W / sigma), normkit's twin against
    torch.nn.utils.parametrizations.spectral_norm. Both modules start from the same weight and the same
    _u/_v (registered after the same seed), and each repetition advances both by one step."""
    shape = (1024, 1024)

    def factory_for(mode):
        def factory():
            import normkit.torch as nkt  # noqa: PLC0415  (lazy on purpose)
            from torch.nn.utils import parametrizations  # noqa: PLC0415

            gen = torch.Generator().manual_seed(0)
            base = torch.nn.Linear(shape[1], shape[0])
            with torch.no_grad():
                base.weight.copy_(torch.randn(shape, generator=gen) / 32)
            dw = torch.randn(shape, generator=gen)
            a, b = torch.nn.Linear(shape[1], shape[0]), torch.nn.Linear(shape[1], shape[0])
            a.load_state_dict(base.state_dict())
            b.load_state_dict(base.state_dict())
            torch.manual_seed(1)
            nk = nkt.spectral_norm(a)
            torch.manual_seed(1)
            th = parametrizations.spectral_norm(b)

            def side(m):
                original = m.parametrizations.weight.original
                if mode == "fwd":
                    def fn():
                        with torch.no_grad():
                            return m.weight
                    return fn

                def fn():
                    original.grad = None
                    w = m.weight
                    w.backward(dw)
                    return {"y": w.detach(), "dw": original.grad}
                return fn

            return side(nk), side(th)
        return factory

    return [Case(case_name("spectralnorm", shape, torch.float32, mode), "SpectralNorm", shape, torch.float32, mode,
                 factory_for(mode)) for mode in MODES]


class _TorchMeanOnlyBatchNorm(torch.nn.Module):
    """Mean-only BatchNorm written with torch ops (x - batch mean + bias); state dict keys match
    normkit's MeanOnlyBatchNorm2d."""

    def __init__(self, c, momentum=0.1):
        super().__init__()
        self.momentum = momentum
        self.bias = torch.nn.Parameter(torch.zeros(c))
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.training:
            mean = x.mean((0, *range(2, x.dim())))
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
            self.num_batches_tracked += 1
        else:
            mean = self.running_mean
        return x - mean.view(shape) + self.bias.view(shape)


def mean_only_batch_norm_cases() -> list[Case]:
    """Mean-only BatchNorm (training) against the same formula in torch ops, NCHW and NHWC."""
    shape = (32, 64, 56, 56)
    make = lambda: (_nk_modules().MeanOnlyBatchNorm2d(64), _TorchMeanOnlyBatchNorm(64))  # noqa: E731
    return [Case(case_name("meanonlybatchnorm" + ("-cl" if cl else ""), shape, torch.float32, mode),
                 "MeanOnlyBatchNorm2d" + (" NHWC" if cl else ""), shape, torch.float32, mode,
                 _module_factory(make, shape, torch.float32, mode, channels_last=cl, train=True))
            for cl in (False, True) for mode in MODES]


# ----------------------------- registry -----------------------------------

_REGISTRY: dict[str, Case] = {}


def register(cases: Iterable[Case]) -> None:
    for c in cases:
        if c.name in _REGISTRY:
            raise ValueError(f"duplicate benchmark case {c.name!r}")
        _REGISTRY[c.name] = c


def all_cases() -> list[Case]:
    return list(_REGISTRY.values())


def get(name: str) -> Case:
    return _REGISTRY[name]


def select(filters: str | Sequence[str] | None) -> list[Case]:
    """Cases whose name contains any of the (case-insensitive) substrings.

    ``filters`` may be a comma-separated string or a sequence of strings;
    ``None``/empty selects everything.
    """
    if not filters:
        return all_cases()
    if isinstance(filters, str):
        filters = filters.split(",")
    subs = [f.strip().lower() for f in filters if f.strip()]
    return [c for c in all_cases() if any(s in c.name.lower() for s in subs)]


register(layer_norm_cases([(8192, 1024), (64, 4096)], [torch.float32, torch.bfloat16]))
register(rms_norm_cases([(8192, 1024)], [torch.float32, torch.bfloat16]))
register(channel_norm_cases())
register(local_response_norm_cases())
register(weight_norm_cases())
register(batch_instance_norm_cases())
register(switchable_norm_cases())
register(spectral_norm_cases())
register(mean_only_batch_norm_cases())

# The two cases timed by ``bench.run_quick`` (the package self-check).
QUICK_CASES = ("layernorm-8192x1024-float32-fwd", "rmsnorm-8192x1024-float32-fwd+bwd")
