"""Batch-Instance Normalization (Nam & Kim, NeurIPS 2018): normkit.functional, normkit.numpy and
normkit.torch against a float64 NumPy reference written from the paper's formula and a float64 torch
composite (plain torch ops + autograd) for the gradients.

Reference (x = [N, C, *spatial]; statistics with the biased variance):
    r       = clip(rho, 0, 1)
    xhat_BN = (x - mean_{n,s} x) / sqrt(var_{n,s} x + eps)   (training; eval: running_mean/running_var)
    xhat_IN = (x - mean_s x) / sqrt(var_s x + eps)            (always, per (n, c))
    y       = weight * (r * xhat_BN + (1 - r) * xhat_IN) + bias
    running = (1 - momentum) * running + momentum * batch     (batch variance unbiased: * NS / (NS - 1))
The rho gradient follows torch.clamp's backward: passed where 0 <= rho <= 1 (bounds included, as
torch.clamp does), 0 outside; the composite reference uses torch.clamp so autograd checks the same.

Tolerances. Every dtype computes in its accumulation type (float32 for half types) and rounds each
output once, so against the float64 answer on the same rounded inputs the error is about half an ulp
of the output dtype plus a few float32 ulps of the statistics: R.TOL (2e-3 float16 > 2^-11, 1.6e-2
bfloat16 > 2^-8, 1e-5 float32, 1e-12 float64), relative to the value plus the magnitude of the terms
combined (|w| (|xhat_BN| + |xhat_IN|) + |b| for y; for dx, (rstd_BN + rstd_IN) |w| max|dy| times
(1 + |xhat_BN| + |xhat_IN|), which bounds every term of both branches; for the parameter gradients the
sums of the absolute values of their terms).
"""

import normkit
import numpy as np
import pytest
import reference as R
import torch
from normkit import functional as nkF
from normkit import numpy as nknp
from normkit import torch as nkt

EPS = 1e-5
SHAPES = [(2, 3, 5), (3, 2, 4, 3), (2, 4, 3, 2, 2), (4, 5, 7, 6)]


def shape_id(s):
    return "x".join(map(str, s))


def channels_last(t):
    """The same values stored channels-last ([N, *spatial, C] in memory), for any rank >= 3."""
    nd = t.dim()
    stored = t.permute(0, *range(2, nd), 1).contiguous()
    return stored.permute(0, nd - 1, *range(1, nd - 1))


def is_channels_last(t):
    nd = t.dim()
    return t.stride(1) == 1 and t.shape[1] > 1 and t.stride(nd - 1) == t.shape[1]


def make_params(C, dtype, seed, rho=None):
    rng = np.random.default_rng(seed)
    td = R.torch_dtype(dtype)
    w = torch.from_numpy(rng.uniform(0.5, 1.5, C)).to(td)
    b = torch.from_numpy(rng.uniform(-0.5, 0.5, C)).to(td)
    r = torch.from_numpy(rng.uniform(0.1, 0.9, C) if rho is None else np.asarray(rho, np.float64)).to(td)
    rm = torch.from_numpy(rng.uniform(-0.3, 0.3, C)).to(td)
    rv = torch.from_numpy(rng.uniform(0.5, 2.0, C)).to(td)
    return w, b, r, rm, rv


# ---- references -----------------------------------------------------------------------------------


def ref_forward(x, rho, w, b, rm, rv, training, momentum, eps=EPS):
    """float64 NumPy, from the paper's formula. Returns y and the new running statistics."""
    x, rho, w, b, rm, rv = (R.to_f64(a) for a in (x, rho, w, b, rm, rv))
    nd, C = x.ndim, x.shape[1]
    bshape = (1, C) + (1,) * (nd - 2)
    sp = tuple(range(2, nd))
    if training:
        mb = x.mean(axis=(0,) + sp, keepdims=True)
        vb = x.var(axis=(0,) + sp, keepdims=True)
        cnt = x.size // C
        rm = (1 - momentum) * rm + momentum * mb.reshape(C)
        rv = (1 - momentum) * rv + momentum * vb.reshape(C) * cnt / (cnt - 1)
    else:
        mb, vb = rm.reshape(bshape), rv.reshape(bshape)
    mi = x.mean(axis=sp, keepdims=True)
    vi = x.var(axis=sp, keepdims=True)
    r = np.clip(rho, 0, 1).reshape(bshape)
    xb = (x - mb) / np.sqrt(vb + eps)
    xi = (x - mi) / np.sqrt(vi + eps)
    y = w.reshape(bshape) * (r * xb + (1 - r) * xi) + b.reshape(bshape)
    return y, rm, rv, xb, xi, 1 / np.sqrt(vb + eps), 1 / np.sqrt(vi + eps)


def torch_composite(x, rho, w, b, rm, rv, training, eps=EPS):
    """Plain torch ops (differentiable through both statistics and torch.clamp)."""
    nd, C = x.dim(), x.shape[1]
    bshape = (1, C) + (1,) * (nd - 2)
    sp = tuple(range(2, nd))
    if training:
        mb = x.mean(dim=(0,) + sp, keepdim=True)
        vb = x.var(dim=(0,) + sp, unbiased=False, keepdim=True)
    else:
        mb, vb = rm.view(bshape), rv.view(bshape)
    mi = x.mean(dim=sp, keepdim=True)
    vi = x.var(dim=sp, unbiased=False, keepdim=True)
    r = torch.clamp(rho, 0, 1).view(bshape)
    xhat = r * (x - mb) / torch.sqrt(vb + eps) + (1 - r) * (x - mi) / torch.sqrt(vi + eps)
    if w is not None:
        xhat = xhat * w.view(bshape)
    if b is not None:
        xhat = xhat + b.view(bshape)
    return xhat


def composite_grads(dy, x, rho, w, b, rm, rv, training):
    leaves = [a.detach().double().requires_grad_(True) for a in (x, rho, w, b)]
    y = torch_composite(*leaves, rm.double(), rv.double(), training)
    grads = torch.autograd.grad(y, leaves, dy.double())
    return y.detach(), grads


def grad_scales(dy, x, rho, w, b, rm, rv, training):
    """Magnitudes of the terms behind each gradient (see the module docstring)."""
    _, _, _, xb, xi, rb, ri = ref_forward(x, rho, w, b, rm, rv, training, 0.0)
    d = R.to_f64(dy)
    wd = R.to_f64(w)
    C, nd = d.shape[1], d.ndim
    bshape = (1, C) + (1,) * (nd - 2)
    red = (0,) + tuple(range(2, nd))
    gmax = np.abs(d).max(axis=red, keepdims=True) * np.abs(wd.reshape(bshape))
    dx_scale = (rb + ri) * gmax * (1 + np.abs(xb) + np.abs(xi)) * 4
    dw_scale = (np.abs(d) * (np.abs(xb) + np.abs(xi))).sum(axis=red)
    db_scale = np.abs(d).sum(axis=red)
    dr_scale = np.abs(wd) * dw_scale
    return dx_scale, dw_scale, db_scale, dr_scale


# ---- tests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", (True, False), ids=("train", "eval"))
@pytest.mark.parametrize("cl", (False, True), ids=("ncs", "channels_last"))
@pytest.mark.parametrize("dtype", R.DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_forward_backward(shape, dtype, cl, training):
    seed = 7 + sum(shape) + len(dtype)
    x = R.make_torch(shape, dtype, seed)
    dy = R.make_torch(shape, dtype, seed + 1, scale=1.0, offset=0.0)
    if cl:
        x, dy = channels_last(x), channels_last(dy)
    w, b, rho, rm, rv = make_params(shape[1], dtype, seed + 2)
    rm0, rv0 = rm.clone(), rv.clone()
    tol = R.TOL[dtype]
    mom = 0.3

    y, *stats = nkF.batch_instance_norm_forward(x, rho, rm, rv, w, b, training, mom, EPS)
    assert y.dtype == x.dtype and y.shape == x.shape
    # (torch tensors keep channels-last in channels_last / channels_last_3d only, as torch's layers)
    assert is_channels_last(y) == (cl and x.dim() in (4, 5)), "y: memory format does not follow x"
    yr, rmr, rvr, xb, xi, _, _ = ref_forward(x, rho, w, b, rm0, rv0, training, mom)
    scale = np.abs(R.to_f64(w)).reshape((1, -1) + (1,) * (x.dim() - 2)) * (np.abs(xb) + np.abs(xi)) + 1
    R.assert_close("y", y, yr, tol, scale)
    R.assert_close("running_mean", rm, rmr, tol, 1.0)
    R.assert_close("running_var", rv, rvr, tol, 1.0)
    if not training:
        R.assert_bitwise_equal("eval running_mean unchanged", rm, rm0)

    dx, dw, db, dr = nkF.batch_instance_norm_backward(dy, x, rho, *stats, w, training)
    assert is_channels_last(dx) == cl, "dx: memory format does not follow x"
    assert dw.dtype == w.dtype and dr.dtype == rho.dtype
    yc, (dxc, drc, dwc, dbc) = composite_grads(dy, x, rho, w, b, rm0, rv0, training)
    R.assert_close("y vs composite", y, yc, tol, scale)
    sx, sw, sb, sr = grad_scales(dy, x, rho, w, b, rm0, rv0, training)
    R.assert_close("dx", dx, dxc, tol, sx)
    R.assert_close("dweight", dw, dwc, tol, sw)
    R.assert_close("dbias", db, dbc, tol, sb)
    R.assert_close("drho", dr, drc, tol, sr)

    # normkit.torch through autograd: the same numbers as the functional form
    rm2, rv2 = rm0.clone(), rv0.clone()
    leaves = [a.clone().requires_grad_(True) for a in (rho, w, b)]
    xa = x.clone(memory_format=torch.preserve_format).requires_grad_(True)
    ya = nkt.functional.batch_instance_norm(xa, leaves[0], rm2, rv2, leaves[1], leaves[2], training, mom, EPS)
    ya.backward(dy)
    R.assert_bitwise_equal("autograd y", ya.detach(), y)
    R.assert_bitwise_equal("autograd dx", xa.grad, dx)
    R.assert_bitwise_equal("autograd drho", leaves[0].grad, dr)
    R.assert_bitwise_equal("autograd dweight", leaves[1].grad, dw)
    R.assert_bitwise_equal("autograd dbias", leaves[2].grad, db)


@pytest.mark.parametrize("dtype", ("float16", "bfloat16"))
def test_mixed_precision_params(dtype):
    """Half inputs with float32 parameters and running statistics."""
    shape = (3, 4, 5, 2)
    x = R.make_torch(shape, dtype, 5)
    dy = R.make_torch(shape, dtype, 6, scale=1.0, offset=0.0)
    w, b, rho, rm, rv = make_params(4, "float32", 7)
    rm0, rv0 = rm.clone(), rv.clone()
    y, *stats = nkF.batch_instance_norm_forward(x, rho, rm, rv, w, b, True, 0.1)
    yr, rmr, rvr, xb, xi, _, _ = ref_forward(x, rho, w, b, rm0, rv0, True, 0.1)
    R.assert_close("y", y, yr, R.TOL[dtype], 3.0)
    R.assert_close("running_var", rv, rvr, 1e-5, 1.0)
    dx, dw, db, dr = nkF.batch_instance_norm_backward(dy, x, rho, *stats, w, True)
    assert dw.dtype == torch.float32 and dr.dtype == torch.float32
    _, (dxc, drc, dwc, dbc) = composite_grads(dy, x, rho, w, b, rm0, rv0, True)
    sx, sw, sb, sr = grad_scales(dy, x, rho, w, b, rm0, rv0, True)
    R.assert_close("dx", dx, dxc, R.TOL[dtype], sx)
    R.assert_close("dweight", dw, dwc, 1e-5, sw)
    R.assert_close("drho", dr, drc, 1e-5, sr)


def test_layouts_agree():
    x = R.make_torch((3, 5, 4, 3), "float32", 11)
    w, b, rho, rm, rv = make_params(5, "float32", 12)
    a = nkF.batch_instance_norm(x, rho, rm.clone(), rv.clone(), w, b, True)
    c = nkF.batch_instance_norm(channels_last(x), rho, rm.clone(), rv.clone(), w, b, True)
    R.assert_close("layouts", c, a, 1e-6, 3.0)


@pytest.mark.parametrize("training", (True, False))
@pytest.mark.parametrize("cl", (False, True))
def test_gradcheck(training, cl):
    x = R.make_torch((3, 2, 3, 2), "float64", 21)
    if cl:
        x = channels_last(x)
    w, b, rho, rm, rv = make_params(2, "float64", 22, rho=[0.3, 0.8])
    leaves = [a.clone().requires_grad_(True) for a in (x, rho, w, b)]

    def f(x, rho, w, b):
        return nkt.functional.batch_instance_norm(x, rho, rm.clone(), rv.clone(), w, b, training, 0.1, EPS)

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-7)


def test_rho_clipping():
    """rho = -0.5 behaves as 0 (pure InstanceNorm), 1.7 as 1 (pure BatchNorm); the rho gradient is
    torch.clamp's: 0 outside [0, 1], passed on the bounds 0 and 1 themselves."""
    shape = (3, 4, 5, 3)
    x = R.make_torch(shape, "float64", 31)
    dy = R.make_torch(shape, "float64", 32, scale=1.0, offset=0.0)
    w, b, _, rm, rv = make_params(4, "float64", 33)
    rho = torch.tensor([-0.5, 1.7, 0.0, 1.0], dtype=torch.float64)
    clipped = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    y, *stats = nkF.batch_instance_norm_forward(x, rho, rm.clone(), rv.clone(), w, b, True)
    y2 = nkF.batch_instance_norm(x, clipped, rm.clone(), rv.clone(), w, b, True)
    R.assert_bitwise_equal("clipped rho", y, y2)
    # pure InstanceNorm / BatchNorm channels
    yi = torch.nn.functional.instance_norm(x, weight=w, bias=b, eps=EPS)
    yb = torch.nn.functional.batch_norm(x, None, None, w, b, True, 0.1, EPS)
    R.assert_close("rho=-0.5 is InstanceNorm", y[:, 0], yi[:, 0], 1e-12, 3.0)
    R.assert_close("rho=1.7 is BatchNorm", y[:, 1], yb[:, 1], 1e-12, 3.0)
    dx, dw, db, dr = nkF.batch_instance_norm_backward(dy, x, rho, *stats, w, True)
    _, (dxc, drc, dwc, dbc) = composite_grads(dy, x, rho, w, b, rm, rv, True)
    assert dr[0] == 0 and dr[1] == 0
    assert dr[2] != 0 and dr[3] != 0
    R.assert_close("drho", dr, drc, 1e-12, grad_scales(dy, x, rho, w, b, rm, rv, True)[3])
    R.assert_close("dx", dx, dxc, 1e-12, grad_scales(dy, x, rho, w, b, rm, rv, True)[0])


def test_defaults_and_no_affine():
    x = R.make_torch((2, 3, 4), "float32", 41)
    rho = torch.full((3,), 0.5)
    rm, rv = torch.zeros(3), torch.ones(3)
    y = nkF.batch_instance_norm(x, rho, rm, rv)  # eval by default: running stats, untouched
    yr = ref_forward(x, rho, torch.ones(3), torch.zeros(3), torch.zeros(3), torch.ones(3), False, 0.1)[0]
    R.assert_close("y", y, yr, 1e-5, 3.0)
    assert torch.equal(rm, torch.zeros(3)) and torch.equal(rv, torch.ones(3))
    y, *stats = nkF.batch_instance_norm_forward(x, rho, None, None, training=True)
    dx, dw, db, dr = nkF.batch_instance_norm_backward(x, x, rho, *stats)
    assert dw is None and db is not None and dr is not None


@pytest.mark.parametrize("cls_dims", ((1, 3), (2, 4), (3, 5)))
def test_numpy_layer(cls_dims):
    d, nd = cls_dims
    layer = getattr(nknp, f"BatchInstanceNorm{d}d")(3, momentum=None)
    assert f"BatchInstanceNorm{d}d" in nknp.__all__
    assert repr(layer) == f"BatchInstanceNorm{d}d(3, eps=1e-05, momentum=None, affine=True)"
    assert np.all(layer.rho == 1)
    shape = (2, 3) + (3,) * (nd - 2)
    rng = np.random.default_rng(d)
    layer.rho[...] = [0.2, 0.5, 0.9]
    xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]
    for x in xs:
        layer(x)
    # momentum=None: the cumulative average of the batch statistics
    red = (0,) + tuple(range(2, nd))
    n = xs[0].size // 3
    np.testing.assert_allclose(layer.running_mean, np.mean([x.mean(axis=red) for x in xs], axis=0), atol=1e-6)
    np.testing.assert_allclose(layer.running_var, np.mean([x.var(axis=red) * n / (n - 1) for x in xs], axis=0),
                               rtol=1e-5)
    assert int(layer.num_batches_tracked) == 3
    dy = rng.standard_normal(shape).astype(np.float32)
    dx = layer.backward(dy)
    assert set(layer.grads) == {"weight", "bias", "rho"}
    _, (dxc, drc, dwc, dbc) = composite_grads(torch.from_numpy(dy), torch.from_numpy(xs[-1]),
                                              torch.from_numpy(layer.rho), torch.from_numpy(layer.weight),
                                              torch.from_numpy(layer.bias), torch.zeros(3), torch.ones(3), True)
    np.testing.assert_allclose(dx, dxc.numpy(), atol=1e-4)
    np.testing.assert_allclose(layer.grads["rho"], drc.numpy(), atol=1e-4)
    np.testing.assert_allclose(layer.grads["weight"], dwc.numpy(), atol=1e-4)
    layer.eval()
    ye = layer(xs[0])
    yr = ref_forward(xs[0], layer.rho, layer.weight, layer.bias, layer.running_mean, layer.running_var, False,
                     0.0)[0]
    np.testing.assert_allclose(ye, yr, atol=1e-5)
    assert int(layer.num_batches_tracked) == 3
    with pytest.raises(ValueError, match="expected"):
        layer(np.zeros((2, 3) + (3,) * (nd - 1), np.float32))
    state = layer.state_dict()
    assert set(state) == {"weight", "bias", "rho", "running_mean", "running_var", "num_batches_tracked"}


@pytest.mark.parametrize("cl", (False, True))
@pytest.mark.parametrize("d", (1, 2, 3))
def test_module_twin(d, cl):
    cls = getattr(nkt, f"BatchInstanceNorm{d}d")
    layer = cls(4, momentum=0.2).double()
    assert isinstance(layer, torch.nn.Module)
    assert repr(layer) == f"BatchInstanceNorm{d}d(4, eps=1e-05, momentum=0.2, affine=True)"
    assert {n for n, _ in layer.named_parameters()} == {"weight", "bias", "rho"}
    assert set(dict(layer.named_buffers())) == {"running_mean", "running_var", "num_batches_tracked"}
    assert torch.all(layer.rho == 1)
    with torch.no_grad():
        layer.rho.copy_(torch.tensor([0.1, 0.4, 0.6, 0.95]))
        layer.weight.copy_(torch.tensor([1.0, 0.5, 2.0, 1.5]))
    shape = (3, 4) + (3,) * d
    x = R.make_torch(shape, "float64", 50 + d)
    if cl:
        x = channels_last(x)
    xa = x.clone(memory_format=torch.preserve_format).requires_grad_(True)
    y = layer(xa)
    dy = R.make_torch(shape, "float64", 60 + d)
    y.backward(dy)
    assert int(layer.num_batches_tracked) == 1
    xc = x.clone().requires_grad_(True)
    rho = layer.rho.detach().clone().requires_grad_(True)
    w = layer.weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    yc = torch_composite(xc, rho, w, b, None, None, True)
    yc.backward(dy)
    torch.testing.assert_close(y, yc, rtol=1e-10, atol=1e-10)
    for name, got, ref in (("x", xa.grad, xc.grad), ("rho", layer.rho.grad, rho.grad),
                           ("weight", layer.weight.grad, w.grad), ("bias", layer.bias.grad, b.grad)):
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9, msg=name)
    red = (0,) + tuple(range(2, x.dim()))
    torch.testing.assert_close(layer.running_mean, 0.2 * x.mean(red), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.running_var, 0.8 + 0.2 * x.var(red), rtol=1e-12, atol=1e-12)
    layer.eval()
    with torch.no_grad():
        ye = layer(x)
        yr = torch_composite(x, layer.rho, layer.weight, layer.bias, layer.running_mean, layer.running_var, False)
    torch.testing.assert_close(ye, yr, rtol=1e-10, atol=1e-10)
    assert int(layer.num_batches_tracked) == 1
    layer.reset_parameters()
    assert torch.all(layer.rho == 1) and torch.all(layer.running_var == 1) and int(layer.num_batches_tracked) == 0
    with pytest.raises(ValueError, match="expected"):
        layer(torch.zeros((2, 4)))


def test_torch_momentum_none():
    layer = nkt.BatchInstanceNorm2d(3, momentum=None)
    xs = [R.make_torch((2, 3, 4, 4), "float32", 70 + i) for i in range(3)]
    for x in xs:
        layer(x)
    torch.testing.assert_close(layer.running_mean, torch.stack([x.mean((0, 2, 3)) for x in xs]).mean(0),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.running_var, torch.stack([x.var((0, 2, 3)) for x in xs]).mean(0),
                               rtol=1e-5, atol=1e-6)


def _x(shape=(2, 3, 4), dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype)


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        ({"rho": torch.ones(4)}, ValueError, r"rho: expected shape \[3\] \(the channels of x\)"),
        ({"weight": torch.ones(2)}, ValueError, r"weight: expected shape \[3\]"),
        ({"running_mean": torch.zeros(5)}, ValueError, r"running_mean: expected shape \[3\]"),
        ({"x": torch.zeros((2, 3, 4), dtype=torch.int32)}, TypeError, "x: expected dtype float16.*got int32"),
        ({"x": torch.zeros((2, 3))}, ValueError, "expected at least 3 dimensions"),
        ({"x": torch.zeros((2, 3, 1))}, ValueError, "more than 1 spatial element"),
        ({"rho": torch.ones(3, dtype=torch.int64)}, TypeError, "rho: expected dtype .*got int64"),
        ({"eps": -1.0}, ValueError, "eps"),
        ({"running_mean": None, "training": False}, ValueError, "evaluation mode"),
    ],
)
def test_bad_inputs(kwargs, exc, message):
    args = {"x": _x(), "rho": torch.ones(3), "running_mean": torch.zeros(3), "running_var": torch.ones(3),
            "weight": torch.ones(3), "bias": torch.zeros(3), "training": True, "eps": EPS}
    args.update(kwargs)
    if "running_mean" in kwargs and kwargs["running_mean"] is None:
        args["running_var"] = None
    rm_before = None if args["running_mean"] is None else args["running_mean"].clone()
    with pytest.raises(exc, match=message):
        nkF.batch_instance_norm(args["x"], args["rho"], args["running_mean"], args["running_var"], args["weight"],
                                args["bias"], args["training"], 0.1, args["eps"])
    if rm_before is not None:
        assert torch.equal(args["running_mean"], rm_before), "a rejected call must not touch the buffers"


def test_bad_backward_inputs():
    x = R.make_torch((2, 3, 4), "float32", 80)
    rho = torch.full((3,), 0.5)
    y, *stats = nkF.batch_instance_norm_forward(x, rho, None, None, training=True)
    with pytest.raises(ValueError, match="dy"):
        nkF.batch_instance_norm_backward(x[:, :, :2], x, rho, *stats)
    with pytest.raises(ValueError, match="save_mean_in"):
        nkF.batch_instance_norm_backward(x, x, rho, stats[0], stats[1], stats[0], stats[3])


# Channels first, (9, 3, 33, 17): on 1 thread tasks of channels {0, 1} and {2} take their statistics
# and normalize them (channel 1's plane statistics between the outputs of channel 0's planes), on 2
# threads too few channels for that: a pass of statistics, then one of outputs (and so the backward's
# sums and dx). Nine planes per channel, so that a merge in another order shows (a reversed one over
# four planes gave the same bits). (4, 6, 33, 17) takes the fused passes on both.
@pytest.mark.parametrize("cl", (False, True))
@pytest.mark.parametrize("dtype", ("float32", "bfloat16"))
@pytest.mark.parametrize("shape", ((4, 6, 33, 17), (9, 3, 33, 17)), ids=shape_id)
def test_thread_count_determinism(shape, dtype, cl):
    x = R.make_torch(shape, dtype, 90)
    dy = R.make_torch(shape, dtype, 91)
    if cl:
        x, dy = channels_last(x), channels_last(dy)
    w, b, rho, rm, rv = make_params(shape[1], dtype, 92)
    outs = []
    for threads in (1, 2, 2):
        normkit.set_num_threads(threads)
        rm2, rv2 = rm.clone(), rv.clone()
        y, *stats = nkF.batch_instance_norm_forward(x, rho, rm2, rv2, w, b, True, 0.1)
        grads = nkF.batch_instance_norm_backward(dy, x, rho, *stats, w, True)
        outs.append((y, rm2, rv2, *stats, *grads))
    for other in outs[1:]:
        for i, (a, c) in enumerate(zip(outs[0], other)):
            R.assert_bitwise_equal(f"output #{i}", a, c)


def test_empty_batch():
    x = torch.zeros((0, 3, 4))
    y = nkF.batch_instance_norm(x, torch.ones(3), torch.zeros(3), torch.ones(3), training=False)
    assert y.shape == x.shape


@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 3, 0)])
def test_empty_batch_statistics_and_gradients(shape):
    """An empty input (no values per statistic) saves the statistics of nothing, mean 0 and rstd
    NaN, as BatchNorm does; its parameter gradients are sums over nothing, 0; running statistics are
    not updated."""
    x = np.zeros(shape, np.float32)
    rho, w, b = np.full(3, 0.5, np.float32), np.ones(3, np.float32), np.zeros(3, np.float32)
    rm, rv = np.full(3, 0.25, np.float32), np.full(3, 2.0, np.float32)
    R.dirty_small_arrays()
    y, mb, sb, mi, si = nkF.batch_instance_norm_forward(x, rho, rm, rv, w, b, training=True)
    assert y.shape == shape
    np.testing.assert_array_equal(mb, np.zeros(3))
    assert np.isnan(sb).all()
    np.testing.assert_array_equal(mi, np.zeros((shape[0], 3)))
    assert mi.shape == si.shape == (shape[0], 3) and np.isnan(si).all()
    np.testing.assert_array_equal(rm, np.full(3, 0.25))
    np.testing.assert_array_equal(rv, np.full(3, 2.0))
    R.dirty_small_arrays()
    dx, dw, db, drho = nkF.batch_instance_norm_backward(x, x, rho, mb, sb, mi, si, w, training=True)
    assert dx.shape == shape
    for g in (dw, db, drho):
        np.testing.assert_array_equal(g, np.zeros(3))


def test_empty_batch_torch_gradients_are_zero():
    layer = nkt.BatchInstanceNorm1d(3)
    x = torch.zeros((0, 3, 4), requires_grad=True)
    layer(x).sum().backward()
    for p in (layer.weight, layer.bias, layer.rho):
        torch.testing.assert_close(p.grad, torch.zeros(3), rtol=0, atol=0)
    torch.testing.assert_close(layer.running_mean, torch.zeros(3), rtol=0, atol=0)
    torch.testing.assert_close(layer.running_var, torch.ones(3), rtol=0, atol=0)
