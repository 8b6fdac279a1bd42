"""Gradients of gradients (create_graph=True) through the torch adapter: torch.autograd.gradgradcheck
in float64 for every op that supports them, a gradient penalty through whole twin modules against
torch.nn, and a clear error for the ops that do not (Batch-Instance, Switchable and SyncBatchNorm)."""

import copy

import normkit.torch as nt
import normkit.torch.functional as nF
import pytest
import torch
from torch.autograd import gradgradcheck

D = torch.float64


def rand(*shape, grad=True, seed=0):
    g = torch.Generator().manual_seed(seed + sum(shape))
    return torch.randn(*shape, dtype=D, generator=g).requires_grad_(grad)


X = rand(4, 6, 3, 2)
W, B = rand(6, seed=1), rand(6, seed=2)
RM, RV = rand(6, grad=False, seed=3), rand(6, grad=False, seed=4).abs() + 0.5
U0 = torch.nn.functional.normalize(rand(4, grad=False, seed=5), dim=0)
V0 = torch.nn.functional.normalize(rand(3, grad=False, seed=6), dim=0)

CASES = {
    "layer_norm": (lambda x, w, b: nF.layer_norm(x, (2,), w, b), (rand(3, 4, 2), rand(2, seed=1), rand(2, seed=2))),
    "rms_norm": (lambda x, w: nF.rms_norm(x, (4, 2), w), (rand(3, 4, 2), rand(4, 2, seed=1))),
    "group_norm": (lambda x, w, b: nF.group_norm(x, 3, w, b), (X, W, B)),
    "batch_norm train": (lambda x, w, b: nF.batch_norm(x, None, None, w, b, True), (X, W, B)),
    "batch_norm eval": (lambda x, w, b: nF.batch_norm(x, RM, RV, w, b, False), (X, W, B)),
    "instance_norm": (lambda x, w, b: nF.instance_norm(x, None, None, w, b), (X, W, B)),
    "instance_norm running stats": (lambda x, w, b: nF.instance_norm(x, RM, RV, w, b, use_input_stats=False),
                                    (X, W, B)),
    "local_response_norm": (lambda x: nF.local_response_norm(x, 3, 0.1, 0.75, 1.0), (X,)),
    "weight_norm dim 0": (lambda v, g: nF.weight_norm(v, g, 0), (rand(4, 3), rand(4, 1, seed=1))),
    "weight_norm dim 1": (lambda v, g: nF.weight_norm(v, g, 1), (rand(4, 3), rand(1, 3, seed=1))),
    "weight_norm dim None": (lambda v, g: nF.weight_norm(v, g, None), (rand(2, 3, 2), rand(1, 1, 1, seed=1))),
    "spectral_norm eval": (lambda w: nF.spectral_norm(w, U0, V0, 1, 1e-12, 0, False), (rand(4, 3),)),
    "mean_only_batch_norm": (lambda x, b: nF.mean_only_batch_norm(x, None, b, True), (X, B)),
    "mean_only_batch_norm eval": (lambda x, b: nF.mean_only_batch_norm(x, RM, b, False), (X, B)),
}


@pytest.mark.parametrize("name", CASES)
def test_gradgradcheck(name):
    fn, inputs = CASES[name]
    assert gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def _gradient_penalty_step(model, x):
    """WGAN-GP's penalty: the gradient of the output with respect to the input, differentiated again."""
    x = x.clone().requires_grad_()
    (gx,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
    penalty = ((gx.flatten(1).norm(dim=1) - 1) ** 2).mean()
    penalty.backward()
    # (None where the penalty does not depend on a parameter: the last bias)
    return penalty.detach(), [None if p.grad is None else p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("norm", ["LayerNorm", "BatchNorm2d", "GroupNorm", "InstanceNorm2d"])
def test_gradient_penalty_through_twins_equals_torch(norm):
    layer = {
        "LayerNorm": lambda: torch.nn.LayerNorm([4, 5, 5]),
        "BatchNorm2d": lambda: torch.nn.BatchNorm2d(4),
        "GroupNorm": lambda: torch.nn.GroupNorm(2, 4),
        "InstanceNorm2d": lambda: torch.nn.InstanceNorm2d(4, affine=True),
    }[norm]
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), layer(), torch.nn.Tanh(),
                              torch.nn.Flatten(), torch.nn.Linear(100, 1)).double()
    report = []
    twin = nt.convert_model(copy.deepcopy(ref), report)
    assert [r[0] for r in report] == ["1"], report
    x = torch.randn(6, 3, 5, 5, dtype=D)
    p_ref, g_ref = _gradient_penalty_step(ref, x)
    p_twin, g_twin = _gradient_penalty_step(twin, x)
    torch.testing.assert_close(p_twin, p_ref, rtol=1e-10, atol=1e-12)
    assert [g is None for g in g_twin] == [g is None for g in g_ref]
    for a, b in zip(g_twin, g_ref):
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_first_order_gradients_are_unchanged_by_create_graph():
    """The differentiable route gives the first-order gradients of the kernels' route."""
    x, w, b = rand(3, 4, 2), rand(2, seed=1), rand(2, seed=2)
    fast = torch.autograd.grad(nF.layer_norm(x, (2,), w, b).pow(2).sum(), (x, w, b))
    graph = torch.autograd.grad(nF.layer_norm(x, (2,), w, b).pow(2).sum(), (x, w, b), create_graph=True)
    for a, c in zip(graph, fast):
        assert a.requires_grad
        torch.testing.assert_close(a.detach(), c, rtol=1e-12, atol=1e-12)


class _TwoAlikeProcesses:
    """A communicator of two processes that hold the same batch: the sum over processes doubles."""

    rank, size = 0, 2

    def allreduce(self, a):
        a *= 2


@pytest.mark.parametrize("layer,label", [("BatchInstanceNorm2d", "BatchInstanceNorm"),
                                         ("SwitchableNorm2d", "SwitchableNorm"), ("SyncBatchNorm", "SyncBatchNorm")])
def test_unsupported_second_order_raises_clearly(layer, label):
    # (SyncBatchNorm over one process is plain BatchNorm, as in torch: two processes take the sync path.)
    kwargs = {"comm": _TwoAlikeProcesses()} if layer == "SyncBatchNorm" else {}
    m = getattr(nt, layer)(6, **kwargs).double()
    x = X.detach().clone().requires_grad_()
    with pytest.raises(RuntimeError, match=f"{label}: gradients of its gradients"):
        torch.autograd.grad(m(x).sum(), x, create_graph=True)
    # first-order gradients still work
    (gx,) = torch.autograd.grad(m(x).sum(), x)
    assert gx.shape == x.shape
