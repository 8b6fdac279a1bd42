"""normkit.torch.convert_model: swaps every torch.nn LayerNorm / RMSNorm / BatchNorm* / InstanceNorm* /
GroupNorm (exact type) for its normkit twin, keeping the Parameter objects and buffers; the converted
model computes the same outputs, gradients and running statistics as a deep copy of the original."""

import copy

import pytest
import reference as R
import torch
from torch import nn


def nt():
    import normkit.torch as m

    return m


class MyBatchNorm(nn.BatchNorm2d):
    """A user subclass: not an exact torch.nn type, so convert_model leaves it alone."""


# The nonlinearity is SiLU, smooth, not ReLU: test_same_outputs_and_gradients compares float32 models
# with float64, and a ReLU input within rounding of zero takes the other branch in one of them, an
# O(1) change of one gradient term whatever the layers' accuracy. With ReLU, 30 seeds of that test
# (float32, channels first, training) failed on 1 (main) or 2 (another, equally accurate, summation
# order) by up to 6x the bound, at scattered parameters; with SiLU none failed, the worst within
# 0.5-0.94 of the bound.


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.act = nn.SiLU()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.gn = nn.GroupNorm(4, c)

    def forward(self, x):
        out = self.act(self.bn1(self.conv1(x)))
        out = self.gn(self.conv2(out))
        return self.act(out + x)  # residual


class Net(nn.Module):
    def __init__(self, c=8, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c, momentum=None),
                                  nn.SiLU())
        self.layers = nn.Sequential(Block(c), Block(c))
        self.inorm = nn.InstanceNorm2d(c, affine=True, track_running_stats=True)
        self.custom = MyBatchNorm(c)
        self.seq = nn.ModuleDict({"bn3d": nn.BatchNorm3d(2), "in1d": nn.InstanceNorm1d(c)})
        self.pool = nn.AdaptiveAvgPool2d(1)
        # (no bias before the BatchNorm1d, and no LayerNorm before it either: in training a constant
        # shift across the batch would be removed by it, giving parameters a gradient of exactly 0,
        # i.e. compared rounding noise)
        self.head = nn.Sequential(nn.Linear(c, classes, bias=False), nn.BatchNorm1d(classes), nn.SiLU(),
                                  nn.LayerNorm(classes), nn.RMSNorm(classes))

    def forward(self, x):
        # every normalization is followed by a nonlinearity (or a residual sum) before the pooling, so
        # that the output depends on x in a well-conditioned way: a per-(n, c) normalization pooled
        # directly would be constant (its spatial mean is its bias), leaving only rounding noise in dx
        act = torch.nn.functional.silu
        x = self.stem(x)
        x = self.layers(x)
        x = x + act(self.inorm(x))
        x = act(self.custom(x))
        n, c, h, w = x.shape
        x = x + act(self.seq["bn3d"](x.reshape(n, 2, c // 2, h, w)).reshape(n, c, h, w))
        x = x + act(self.seq["in1d"](x.reshape(n, c, h * w)).reshape(n, c, h, w))
        return self.head(self.pool(x).flatten(1))


EXPECTED = {
    # qualified name -> class name, for every module convert_model must replace
    "stem.1": "BatchNorm2d",
    "layers.0.bn1": "BatchNorm2d",
    "layers.0.gn": "GroupNorm",
    "layers.1.bn1": "BatchNorm2d",
    "layers.1.gn": "GroupNorm",
    "inorm": "InstanceNorm2d",
    "seq.bn3d": "BatchNorm3d",
    "seq.in1d": "InstanceNorm1d",
    "head.1": "BatchNorm1d",
    "head.3": "LayerNorm",
    "head.4": "RMSNorm",
}


def randomize(model, seed):
    """Non-trivial affine parameters and running statistics (the defaults would hide mix-ups)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() == 1:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g, dtype=torch.float64))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.3 * torch.randn(b.shape, generator=g, dtype=torch.float64))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g, dtype=torch.float64))
    return model


def build(dtype, seed=0):
    torch.manual_seed(seed)
    return randomize(Net().to(dtype), seed)


def convert(model):
    params = dict(model.named_parameters())
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    modules = dict(model.named_modules())
    report = []
    out = nt().convert_model(model, report=report)
    return out, params, buffers, modules, report


# float32: each norm layer is within ~1e-6 relative of torch, and a few conv/norm layers of O(1) gain
# carry that to the output and the gradients: 1e-4 (relative to each tensor's largest value) leaves a
# wide margin while a wrong layer (e.g. biased/unbiased variance, missing backward term) is off by >1e-3.
# float64: 1e-10 by the same argument with u = 1e-16.
TOL = {torch.float32: 1e-4, torch.float64: 1e-10}


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64), ids=str)
def test_structure_report_and_identity(dtype):
    model = build(dtype)
    model.layers[1].eval()  # a mixed training state must survive the swap
    out, params, buffers, modules, report = convert(model)

    named = dict(out.named_modules())
    # every exact torch.nn norm was replaced by the twin of the same name (and subclass of it)
    for qname, cls_name in EXPECTED.items():
        new = named[qname]
        old = modules[qname]
        assert type(new) is getattr(nt(), cls_name), f"{qname}: {type(new)}"
        assert isinstance(new, getattr(nn, cls_name))
        assert new.training == old.training, qname
        assert new.extra_repr() == old.extra_repr(), qname
    # everything else kept as it was (same objects)
    assert type(named["custom"]) is MyBatchNorm and named["custom"] is modules["custom"]
    for qname in ("stem.0", "layers.0.conv1", "layers.1.conv2", "head.0", "head.2", "pool"):
        assert named[qname] is modules[qname], qname
    # the report: (qualified name, old class name, new class name), one per replacement
    assert len(report) == len(EXPECTED), report
    for entry in report:
        assert isinstance(entry, tuple) and len(entry) == 3, entry
    assert {e[0]: e[1] for e in report} == EXPECTED
    for qname, _, new_name in report:
        assert new_name == type(named[qname]).__name__
    # parameters: the very same objects, same names; buffers: same values, dtype, device
    new_params = dict(out.named_parameters())
    assert new_params.keys() == params.keys()
    for k, p in new_params.items():
        assert p is params[k], f"parameter {k} is a new object"
        assert p.dtype == dtype
    new_buffers = dict(out.named_buffers())
    assert new_buffers.keys() == buffers.keys()
    for k, b in new_buffers.items():
        assert b.dtype == buffers[k].dtype and b.device == buffers[k].device, k
        assert torch.equal(b, buffers[k]), k
    assert list(out.state_dict().keys()) == list(build(dtype).state_dict().keys())

    # converting again replaces nothing
    again = []
    nt().convert_model(out, report=again)
    assert again == []
    assert nt().convert_model(out) is not None  # report=None is fine


def test_root_module_is_converted():
    for root, cls in ((nn.BatchNorm2d(4), "BatchNorm2d"), (nn.GroupNorm(2, 4), "GroupNorm"),
                      (nn.LayerNorm(4), "LayerNorm"), (nn.InstanceNorm3d(4), "InstanceNorm3d")):
        params = dict(root.named_parameters())
        report = []
        new = nt().convert_model(root, report=report)
        assert type(new) is getattr(nt(), cls)
        assert len(report) == 1 and report[0][1] == cls
        for k, p in new.named_parameters():
            assert p is params[k]


@pytest.mark.parametrize("mode", ("train", "eval"))
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64), ids=str)
@pytest.mark.parametrize("fmt", ("nc", "cl"))
def test_same_outputs_and_gradients(mode, dtype, fmt):
    """The converted model computes what the original computes. Both are compared with the same model
    run in float64: through a chain of layers (residual sums, cancelling sums in the
    gradients) a float32 result can be far less accurate than one layer's rounding, and the twin must
    then be about as accurate as torch itself, not bitwise like it."""
    model = build(dtype, seed=1)
    model.train(mode == "train")
    original = copy.deepcopy(model)
    exact = copy.deepcopy(model).double()
    converted, _, _, _, _ = convert(model)
    tol = TOL[dtype]
    g = torch.Generator().manual_seed(3)

    def check(name, got, torch_value, exact_value):
        # bound: tol relative to the values' scale, plus 4x torch's own distance to float64
        torch_value, exact_value = torch_value.detach(), exact_value.detach()
        torch_err = float((torch_value.double() - exact_value).abs().max())
        scale = float(exact_value.abs().max()) + 4 * torch_err / tol
        R.assert_close(name, got, exact_value, tol, scale)

    for step in range(2):
        x = torch.randn(4, 3, 6, 5, generator=g, dtype=torch.float64).to(dtype)
        if fmt == "cl":
            x = x.contiguous(memory_format=torch.channels_last)
        proj = torch.randn(4, 10, generator=g, dtype=torch.float64).to(dtype)
        xa, xb, xe = x.clone().requires_grad_(), x.clone().requires_grad_(), x.double().requires_grad_()
        for m in (original, converted, exact):
            m.zero_grad(set_to_none=True)
        ya, yb, ye = original(xa), converted(xb), exact(xe)
        (ya * proj).sum().backward()
        (yb * proj).sum().backward()
        (ye * proj.double()).sum().backward()
        tag = f"{mode} step {step}: "
        check(tag + "output", yb, ya, ye.detach())
        check(tag + "dx", xb.grad, xa.grad, xe.grad)
        pa, pe = dict(original.named_parameters()), dict(exact.named_parameters())
        for k, p in converted.named_parameters():
            assert p.grad is not None, f"{tag}{k}: no gradient"
            check(tag + "grad " + k, p.grad, pa[k].grad, pe[k].grad)
        ba, be = dict(original.named_buffers()), dict(exact.named_buffers())
        for k, b in converted.named_buffers():
            if b.is_floating_point():
                check(tag + k, b, ba[k], be[k])
            else:
                assert torch.equal(b, ba[k]), f"{tag}{k}: {b} vs {ba[k]}"
        # a tiny SGD step on all three, so that the next step starts from moved parameters
        with torch.no_grad():
            for k, p in converted.named_parameters():
                p.sub_(0.01 * p.grad)
                pa[k].sub_(0.01 * pa[k].grad)
                pe[k].sub_(0.01 * pe[k].grad)


def test_shared_module_replaced_everywhere():
    """A norm layer registered twice (weight sharing: the same module object under two names) is a
    torch.nn layer at both places: both must be replaced, and both must keep the shared Parameters."""
    bn = nn.BatchNorm2d(3)
    gn = nn.GroupNorm(1, 3)
    model = nn.Sequential(bn, nn.ReLU(), bn, nn.Sequential(gn), gn)
    params = {id(p) for p in bn.parameters()} | {id(p) for p in gn.parameters()}
    reference = copy.deepcopy(model)
    report = []
    out = nt().convert_model(model, report=report)
    left = [f"{name}: {type(m).__name__}" for name, m in out.named_modules(remove_duplicate=False)
            if type(m) in (nn.BatchNorm2d, nn.GroupNorm)]
    assert not left, f"torch.nn layers left after convert_model: {left}; report {report}"
    for i in (0, 2):
        assert type(out[i]) is nt().BatchNorm2d
        assert out[i].weight is bn.weight and out[i].bias is bn.bias
    for m in (out[3][0], out[4]):
        assert type(m) is nt().GroupNorm
        assert m.weight is gn.weight and m.bias is gn.bias
    assert {id(p) for p in out.parameters()} == params
    x = torch.randn(4, 3, 5, 5)
    R.assert_close("output", out(x), reference(x).detach(), 1e-5, 4.0)


def test_hook_handles_taken_before_the_conversion_still_remove_their_hooks():
    """The twin keeps the layer's registries: a RemovableHandle refers to its hook dict. The replaced layer
    keeps copies (dicts and sets), so registering on either module later leaves the other."""
    calls = []
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    old = model[1]
    forward = old.register_forward_hook(lambda m, i, o: calls.append("forward"))
    pre = old.register_forward_pre_hook(lambda m, i: calls.append("pre"))
    nt().convert_model(model)
    assert isinstance(model[1], nt().LayerNorm)
    model(torch.randn(2, 4))
    assert calls == ["pre", "forward"]
    forward.remove()
    pre.remove()
    calls.clear()
    model(torch.randn(2, 4))
    assert calls == []
    model[1].register_buffer("scratch", torch.zeros(1), persistent=False)
    assert "scratch" not in old._non_persistent_buffers_set and "scratch" not in old._buffers
    old.register_forward_hook(lambda m, i, o: calls.append("old"))
    model(torch.randn(2, 4))
    assert calls == []
