"""torch.func transforms (vmap, grad, jacrev, jvp) and forward-mode AD with normkit's torch twins.

Under them the ops compute with torch operations (normkit/torch/_torch_composite.py): the core's
autograd.Functions have no vmap or jvp rule. These tests check that the transforms work and agree with
normkit's own kernels run eagerly, sample by sample.
"""

from __future__ import annotations

import normkit.torch as nt
import normkit.torch.functional as nF
import pytest
import torch
import torch.autograd.forward_ad as fwAD
from normkit.torch import _custom_ops, _torch_composite
from torch.func import functional_call, grad, jacrev, jvp, vmap


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _double(module):
    return module.double()


# (name, layer factory, per-sample input shape); float64, layers in the mode they are used in.
LAYERS = [
    ("LayerNorm", lambda: nt.LayerNorm(6), (3, 6)),
    ("RMSNorm", lambda: nt.RMSNorm(6), (3, 6)),
    ("GroupNorm", lambda: nt.GroupNorm(2, 4), (4, 5)),
    ("InstanceNorm1d", lambda: nt.InstanceNorm1d(4, affine=True), (4, 5)),
    ("BatchNorm1d-eval", lambda: nt.BatchNorm1d(4).eval(), (4, 5)),
    ("LocalResponseNorm", lambda: nt.LocalResponseNorm(3), (4, 5)),
    ("MeanOnlyBatchNorm1d-eval", lambda: nt.MeanOnlyBatchNorm1d(4).eval(), (4, 5)),
    ("weight_norm", lambda: nt.weight_norm(torch.nn.Linear(5, 3)), (5,)),
]


def _randomized(make):
    """The layer with non-trivial parameters and running statistics."""
    module = _double(make())
    g = _gen(7)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
        for name, b in module.named_buffers():
            if b.is_floating_point():
                b.copy_(torch.rand(b.shape, generator=g, dtype=b.dtype) + (0.5 if "var" in name else -0.5))
    return module


@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[layer[0] for layer in LAYERS])
def test_per_sample_gradients_equal_a_loop_of_eager_gradients(name, make, shape):
    """vmap(grad(loss)) over a batch (each sample its own batch of one) gives, per sample, the parameter
    and input gradients that eager autograd through normkit's kernels gives for that sample alone."""
    module = _randomized(make)
    x = torch.randn(4, *shape, generator=_gen(1), dtype=torch.float64)
    params = {k: v.detach() for k, v in module.named_parameters()}
    buffers = dict(module.named_buffers())

    def loss(p, xi):
        return functional_call(module, (p, buffers), (xi.unsqueeze(0),)).square().sum()

    per_sample, per_sample_x = vmap(grad(loss, argnums=(0, 1)), in_dims=(None, 0))(params, x)
    for i in range(x.shape[0]):
        xi = x[i:i + 1].clone().requires_grad_()
        module.zero_grad()
        module(xi).square().sum().backward()
        torch.testing.assert_close(per_sample_x[i], xi.grad[0], rtol=1e-10, atol=1e-12, msg=f"{name}: dx")
        for key, p in module.named_parameters():
            torch.testing.assert_close(per_sample[key][i], p.grad, rtol=1e-10, atol=1e-12, msg=f"{name}: {key}")


@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[layer[0] for layer in LAYERS])
def test_jacobians_and_forward_mode_equal_eager_gradients(name, make, shape):
    """jacrev and jvp (and forward-mode AD by hand) give the Jacobian that eager backward passes give."""
    module = _randomized(make)
    x = torch.randn(2, *shape, generator=_gen(2), dtype=torch.float64)
    tangent = torch.randn(x.shape, generator=_gen(3), dtype=torch.float64)
    jac = jacrev(module)(x)
    y = module(x)
    # Eager reverse mode: row by row of the Jacobian, through normkit's backward kernels.
    xs = x.clone().requires_grad_()
    ys = module(xs)
    rows = [torch.autograd.grad(ys.reshape(-1)[k], xs, retain_graph=True)[0] for k in range(ys.numel())]
    eager_jac = torch.stack(rows).reshape(*y.shape, *x.shape)
    torch.testing.assert_close(jac, eager_jac, rtol=1e-10, atol=1e-12)
    expected_jvp = (eager_jac.reshape(y.numel(), x.numel()) @ tangent.reshape(-1)).reshape(y.shape)
    y2, t2 = jvp(module, (x,), (tangent,))
    torch.testing.assert_close(y2, y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(t2, expected_jvp, rtol=1e-10, atol=1e-12)
    with fwAD.dual_level():
        out = fwAD.unpack_dual(module(fwAD.make_dual(x, tangent)))
    torch.testing.assert_close(out.tangent, expected_jvp, rtol=1e-10, atol=1e-12)


def test_batch_norm_training_under_vmap_raises_as_torch():
    """Running statistics updated in place inside vmap: torch's BatchNorm raises, and so does the twin."""
    x = torch.randn(3, 4, 4, 5)
    for layer in (torch.nn.BatchNorm1d(4), nt.BatchNorm1d(4)):
        with pytest.raises(RuntimeError):
            vmap(layer)(x)


@pytest.mark.parametrize("make", [lambda: nt.BatchInstanceNorm1d(4), lambda: nt.SwitchableNorm1d(4),
                                  lambda: nt.spectral_norm(torch.nn.Linear(5, 4))],
                         ids=["BatchInstanceNorm1d", "SwitchableNorm1d", "spectral_norm"])
def test_ops_without_a_torch_form_raise_clearly(make):
    layer = make().eval()  # (in training, the transforms already refuse the in-place num_batches_tracked += 1)
    x = torch.randn(3, 4, 5) if not isinstance(layer, torch.nn.Linear) else torch.randn(3, 5)
    with pytest.raises(RuntimeError, match="does not support torch.func transforms"):
        vmap(layer)(x.unsqueeze(1))
    with pytest.raises(RuntimeError, match="does not support torch.func transforms"):
        jvp(layer, (x,), (torch.ones_like(x),))


def test_eager_calls_take_the_kernels(monkeypatch):
    """Outside transforms, neither the custom ops nor the torch forms run."""
    def refuse(*args, **kwargs):
        raise AssertionError("not the eager adapter")

    for table in (_custom_ops.TRACED, _torch_composite.COMPOSITE):
        for name in table:
            monkeypatch.setitem(table, name, refuse)
    x = torch.randn(4, 6, 5, requires_grad=True)
    nF.layer_norm(x, (5,)).sum().backward()
    nt.GroupNorm(2, 6)(x).sum().backward()


def test_a_tensor_left_over_from_a_transform_works_as_with_torch():
    """A tensor that escaped a torch.func transform is a dead wrapper without storage; torch's layers
    unwrap it, and so does normkit's autograd path (torch.autograd.Function.apply did; the adapters
    call its C++ apply directly and keep that step)."""
    leaked = []

    def f(x):
        leaked.append(x)
        return x.sum()

    x = torch.randn(4, 12, generator=_gen(5), requires_grad=True)
    grad(f)(x)
    dead = leaked[0]
    assert torch._C._functorch.is_functorch_wrapped_tensor(dead)
    w = torch.randn(12, generator=_gen(6), requires_grad=True)
    for ours, theirs in ((nF.layer_norm(dead, (12,), w), torch.nn.functional.layer_norm(x, (12,), w)),
                         (nF.rms_norm(dead, (12,), w), torch.nn.functional.rms_norm(x, (12,), w))):
        torch.testing.assert_close(ours, theirs)
        got = torch.autograd.grad(ours.square().sum(), (x, w))
        expected = torch.autograd.grad(theirs.square().sum(), (x, w))
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b)


def test_a_forward_ad_level_without_dual_arguments_runs_the_kernels():
    """An open forward-AD level alone changes nothing: plain tensors take the eager kernels, the ops
    without a torch form included."""
    x = torch.randn(3, 4, 5)
    expected = nt.SwitchableNorm1d(4)(x)
    with fwAD.dual_level():
        torch.testing.assert_close(nt.SwitchableNorm1d(4)(x), expected, rtol=0, atol=0)


def test_mean_only_batch_norm_torch_form_rounds_half_inputs_once():
    """The torch form computes in float32 and rounds y once, as the kernels: the same running mean and y
    as eager mode for a bfloat16 input."""
    x = (torch.randn(6, 4, 5, generator=_gen(5)) * 3 + 2).to(torch.bfloat16)
    eager_rm, form_rm = torch.zeros(4), torch.zeros(4)
    eager = nF.mean_only_batch_norm(x, eager_rm, None, True, 0.5)
    form = _torch_composite.mean_only_batch_norm(x, form_rm, None, True, 0.5)
    torch.testing.assert_close(form_rm, eager_rm, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(form.float(), eager.float(), rtol=2 ** -8, atol=2 ** -8)
