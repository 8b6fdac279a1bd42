"""Switchable Normalization (Luo et al., ICLR 2019): normkit.functional, normkit.numpy and normkit.torch
against a float64 NumPy forward reference and a float64 torch composite (plain torch ops + autograd,
for the outputs and every gradient: x, weight, bias, mean_weight, var_weight), both written from the
paper's equations.

Reference (x = [N, C, *spatial]; population variances):
    IN: mean/var over the spatial dims per (n, c); LN: over (C, spatial) per n; BN: over (N, spatial)
        per c when training, running_mean/running_var in eval
    mu = sum_k softmax(mean_weight)_k mu_k,  s2 = sum_k softmax(var_weight)_k s2_k  (k = IN, LN, BN)
    y  = weight * (x - mu) / sqrt(s2 + eps) + bias
    running = (1 - momentum) * running + momentum * batch   (BN batch mean and population variance)
A 2-D input [N, C] has no IN term: the softmaxes run over the LN and BN logits only. The NumPy
reference computes the LN and BN statistics directly over their axes; the torch composite derives them
from the per-(n, c) moments as the paper does, so the two also check each other.

Tolerances. Every dtype computes in its accumulation type (float32 for half types) and rounds each
output once, so against the float64 answer on the same rounded inputs the error is about half an ulp
of the output dtype plus a few accumulation ulps of the statistics: R.TOL (2e-3 float16 > 2^-11,
1.6e-2 bfloat16 > 2^-8, 1e-5 float32, 1e-12 float64), relative to the value plus the magnitude of the
terms combined: |w| |xhat| + |b| + 1 for y; for dx, whose terms couple every plane through the LN and
BN statistics, rstd |w| max|dy| (1 + |xhat|) summed over the three statistics (bounded here by the
global maxima, times 8); for dweight/dbias the sums of the absolute values of their terms; for the
logit gradients sum |dy w| rstd times the spread of the statistics they weigh (|mu_k - mu| <= 2 max|x|,
|s2_k - s2| <= 2 max x^2), generously bounded by the global maxima.
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
SHAPES = [(4, 3), (2, 3, 5), (3, 2, 4, 3), (2, 4, 3, 2, 2), (4, 5, 7, 6)]


def shape_id(s):
    return "x".join(map(str, s))


def channels_last(t):
    """The same values stored channels-last ([N, *spatial, C] in memory), for any rank >= 3."""
    nd = t.dim()
    if nd < 3:
        return t
    stored = t.permute(0, *range(2, nd), 1).contiguous()
    return stored.permute(0, nd - 1, *range(1, nd - 1))


def is_channels_last(t):
    nd = t.dim()
    return nd >= 3 and t.stride(1) == 1 and t.shape[1] > 1 and t.stride(nd - 1) == t.shape[1]


def make_params(C, dtype, seed, zero_logits=False):
    rng = np.random.default_rng(seed)
    td = R.torch_dtype(dtype)
    w = torch.from_numpy(rng.uniform(0.5, 1.5, C)).to(td)
    b = torch.from_numpy(rng.uniform(-0.5, 0.5, C)).to(td)
    mw = torch.from_numpy(np.zeros(3) if zero_logits else rng.uniform(-1, 1, 3)).to(td)
    vw = torch.from_numpy(np.zeros(3) if zero_logits else rng.uniform(-1, 1, 3)).to(td)
    rm = torch.from_numpy(rng.uniform(-0.3, 0.3, C)).to(td)
    rv = torch.from_numpy(rng.uniform(0.5, 2.0, C)).to(td)
    return w, b, mw, vw, rm, rv


# ---- references -----------------------------------------------------------------------------------


def np_softmax(logits, use_in):
    lg = np.asarray(logits, np.float64)
    if not use_in:
        e = np.exp(lg[1:] - lg[1:].max())
        return np.concatenate([[0.0], e / e.sum()])
    e = np.exp(lg - lg.max())
    return e / e.sum()


def ref_forward(x, mw, vw, w, b, rm, rv, training, momentum, eps=EPS):
    """float64 NumPy, LN and BN statistics straight over their axes. Returns y, running stats, xhat, rstd."""
    x, mw, vw, w, b, rm, rv = (R.to_f64(a) for a in (x, mw, vw, w, b, rm, rv))
    use_in = x.ndim >= 3
    x3 = x if use_in else x[:, :, None]
    nd, C = x3.ndim, x3.shape[1]
    bshape = (1, C) + (1,) * (nd - 2)
    sp = tuple(range(2, nd))
    mi, vi = x3.mean(axis=sp, keepdims=True), x3.var(axis=sp, keepdims=True)
    ml, vl = x3.mean(axis=(1,) + sp, keepdims=True), x3.var(axis=(1,) + sp, keepdims=True)
    if training:
        mb, vb = x3.mean(axis=(0,) + sp, keepdims=True), x3.var(axis=(0,) + sp, keepdims=True)
        rm = (1 - momentum) * rm + momentum * mb.reshape(C)
        rv = (1 - momentum) * rv + momentum * vb.reshape(C)
    else:
        mb, vb = rm.reshape(bshape), rv.reshape(bshape)
    wm, wv = np_softmax(mw, use_in), np_softmax(vw, use_in)
    mu = wm[0] * mi + wm[1] * ml + wm[2] * mb
    s2 = wv[0] * vi + wv[1] * vl + wv[2] * vb
    rstd = 1 / np.sqrt(s2 + eps)
    xhat = (x3 - mu) * rstd
    y = w.reshape(bshape) * xhat + b.reshape(bshape)
    return y.reshape(x.shape), rm, rv, xhat.reshape(x.shape), rstd


def torch_composite(x, mw, vw, w, b, rm, rv, training, eps=EPS):
    """Plain torch ops from the per-(n, c) moments (differentiable through every statistic)."""
    use_in = x.dim() >= 3
    x3 = x if use_in else x.unsqueeze(-1)
    nd, C = x3.dim(), x3.shape[1]
    bshape = (1, C) + (1,) * (nd - 2)
    sp = tuple(range(2, nd))
    pm = x3.mean(dim=sp, keepdim=True)
    pv = x3.var(dim=sp, unbiased=False, keepdim=True)
    ml = pm.mean(dim=1, keepdim=True)
    vl = (pv + pm * pm).mean(dim=1, keepdim=True) - ml * ml
    if training:
        mb = pm.mean(dim=0, keepdim=True)
        vb = (pv + pm * pm).mean(dim=0, keepdim=True) - mb * mb
    else:
        mb, vb = rm.view(bshape), rv.view(bshape)
    if use_in:
        wm, wv = torch.softmax(mw, 0), torch.softmax(vw, 0)
    else:
        z = mw.new_zeros(1)
        wm, wv = torch.cat([z, torch.softmax(mw[1:], 0)]), torch.cat([z, torch.softmax(vw[1:], 0)])
    mu = wm[0] * pm + wm[1] * ml + wm[2] * mb
    s2 = wv[0] * pv + wv[1] * vl + wv[2] * vb
    y = (x3 - mu) / torch.sqrt(s2 + eps)
    if w is not None:
        y = y * w.view(bshape)
    if b is not None:
        y = y + b.view(bshape)
    return y.reshape(x.shape)


def composite_grads(dy, x, mw, vw, w, b, rm, rv, training):
    leaves = [a.detach().double().requires_grad_(True) for a in (x, mw, vw, w, b)]
    y = torch_composite(*leaves, None if rm is None else rm.double(), None if rv is None else rv.double(), training)
    grads = torch.autograd.grad(y, leaves, dy.double())
    return y.detach(), grads


def grad_scales(dy, x, mw, vw, w, b, rm, rv, training):
    """Magnitudes of the terms behind each gradient (see the module docstring)."""
    _, _, _, xhat, rstd = ref_forward(x, mw, vw, w, b, rm, rv, training, 0.0)
    d, wd, xd = R.to_f64(dy), R.to_f64(w), R.to_f64(x)
    C, nd = d.shape[1], d.ndim
    bshape = (1, C) + (1,) * (nd - 2)
    red = (0,) + tuple(range(2, nd))
    rmax, wmax, gmax = rstd.max(), np.abs(wd).max(), np.abs(d).max()
    dx_scale = 8 * rmax * wmax * gmax * (1 + np.abs(xhat).max())
    dw_scale = (np.abs(d) * np.abs(xhat)).sum(axis=red)
    db_scale = np.abs(d).sum(axis=red)
    gw = (np.abs(d) * np.abs(wd.reshape(bshape))).sum()
    xm = np.abs(xd).max() + np.abs(R.to_f64(rm)).max() + 1
    dm_scale = 2 * gw * rmax * xm
    dv_scale = 2 * gw * rmax * (1 + np.abs(xhat).max()) * xm**2
    return dx_scale, dw_scale, db_scale, dm_scale, dv_scale


# ---- tests -----------------------------------------------------------------------------------------

# (shape, channels_last) pairs: a 2-D input has no channels-last form.
LAYOUTS = [(shape, cl) for shape in SHAPES for cl in (False, True) if not (cl and len(shape) < 3)]
LAYOUT_IDS = [f"{shape_id(shape)}-{'channels_last' if cl else 'ncs'}" for shape, cl in LAYOUTS]


@pytest.mark.parametrize("training", (True, False), ids=("train", "eval"))
@pytest.mark.parametrize("dtype", R.DTYPES)
@pytest.mark.parametrize("shape,cl", LAYOUTS, ids=LAYOUT_IDS)
def test_forward(shape, dtype, cl, training):
    seed = 7 + sum(shape) + len(dtype)
    x = R.make_torch(shape, dtype, seed)
    if cl:
        x = channels_last(x)
    w, b, mw, vw, rm, rv = make_params(shape[1], dtype, seed + 2)
    rm0, rv0 = rm.clone(), rv.clone()
    tol = R.TOL[dtype]
    mom = 0.3
    y, saved = nkF.switchable_norm_forward(x, mw, vw, rm, rv, w, b, training, mom, EPS)
    assert y.dtype == x.dtype and y.shape == x.shape
    # (torch tensors keep channels-last in channels_last / channels_last_3d only, as torch's layers)
    assert is_channels_last(y) == (cl and x.dim() in (4, 5)), "y: memory format does not follow x"
    yr, rmr, rvr, xhat, _ = ref_forward(x, mw, vw, w, b, rm0, rv0, training, mom)
    scale = np.abs(R.to_f64(w)).reshape((1, -1) + (1,) * (x.dim() - 2)) * np.abs(xhat) + 1
    R.assert_close("y", y, yr, tol, scale)
    R.assert_close("running_mean", rm, rmr, tol, 1.0)
    R.assert_close("running_var", rv, rvr, tol, 1.0)
    if not training:
        R.assert_bitwise_equal("eval running_mean unchanged", rm, rm0)
        R.assert_bitwise_equal("eval running_var unchanged", rv, rv0)
    yc = torch_composite(*(a.double() for a in (x, mw, vw, w, b, rm0, rv0)), training)
    R.assert_close("y vs composite", y, yc, tol, scale)


@pytest.mark.parametrize("training", (True, False), ids=("train", "eval"))
@pytest.mark.parametrize("dtype", ("float32", "float64"))
@pytest.mark.parametrize("shape,cl", LAYOUTS, ids=LAYOUT_IDS)
def test_backward(shape, dtype, cl, training):
    seed = 17 + sum(shape) + len(dtype)
    x = R.make_torch(shape, dtype, seed)
    dy = R.make_torch(shape, dtype, seed + 1, scale=1.0, offset=0.0)
    if cl:
        x, dy = channels_last(x), channels_last(dy)
    w, b, mw, vw, rm, rv = make_params(shape[1], dtype, seed + 2)
    tol = R.TOL[dtype]
    y, saved = nkF.switchable_norm_forward(x, mw, vw, rm.clone(), rv.clone(), w, b, training, 0.1, EPS)
    dx, dw, db, dm, dv = nkF.switchable_norm_backward(dy, x, mw, vw, saved, w, training)
    assert is_channels_last(dx) == cl, "dx: memory format does not follow x"
    assert dw.dtype == w.dtype and dm.dtype == mw.dtype and dm.shape == (3,)
    yc, (dxc, dmc, dvc, dwc, dbc) = composite_grads(dy, x, mw, vw, w, b, rm, rv, training)
    sx, sw, sb, sm, sv = grad_scales(dy, x, mw, vw, w, b, rm, rv, training)
    R.assert_close("dx", dx, dxc, tol, sx)
    R.assert_close("dweight", dw, dwc, tol, sw)
    R.assert_close("dbias", db, dbc, tol, sb)
    R.assert_close("dmean_weight", dm, dmc, tol, sm)
    R.assert_close("dvar_weight", dv, dvc, tol, sv)

    # normkit.torch through autograd: the same numbers as the functional form
    leaves = [a.clone().requires_grad_(True) for a in (mw, vw, w, b)]
    xa = x.clone(memory_format=torch.preserve_format).requires_grad_(True)
    ya = nkt.functional.switchable_norm(xa, leaves[0], leaves[1], rm.clone(), rv.clone(), leaves[2], leaves[3],
                                        training, 0.1, EPS)
    ya.backward(dy)
    R.assert_bitwise_equal("autograd y", ya.detach(), y)
    R.assert_bitwise_equal("autograd dx", xa.grad, dx)
    R.assert_bitwise_equal("autograd dmean_weight", leaves[0].grad, dm)
    R.assert_bitwise_equal("autograd dvar_weight", leaves[1].grad, dv)
    R.assert_bitwise_equal("autograd dweight", leaves[2].grad, dw)
    R.assert_bitwise_equal("autograd dbias", leaves[3].grad, db)


@pytest.mark.parametrize("dtype", ("float16", "bfloat16"))
def test_mixed_precision_params(dtype):
    """Half inputs with float32 parameters, logits and running statistics."""
    shape = (3, 4, 5, 2)
    x = R.make_torch(shape, dtype, 5)
    w, b, mw, vw, rm, rv = make_params(4, "float32", 7)
    rm0, rv0 = rm.clone(), rv.clone()
    y, saved = nkF.switchable_norm_forward(x, mw, vw, rm, rv, w, b, True, 0.1)
    yr, rmr, rvr, _, _ = ref_forward(x, mw, vw, w, b, rm0, rv0, True, 0.1)
    R.assert_close("y", y, yr, R.TOL[dtype], 3.0)
    R.assert_close("running_var", rv, rvr, 1e-5, 1.0)
    dx, dw, db, dm, dv = nkF.switchable_norm_backward(y, x, mw, vw, saved, w, True)
    assert dw.dtype == torch.float32 and dm.dtype == torch.float32 and dx.dtype == x.dtype


@pytest.mark.parametrize("training", (True, False))
@pytest.mark.parametrize("shape,cl", [((5, 3), False), ((3, 2, 3, 2), False), ((3, 2, 3, 2), True),
                                      ((2, 3, 4), False)])
def test_gradcheck(shape, cl, training):
    x = R.make_torch(shape, "float64", 21)
    if cl:
        x = channels_last(x)
    w, b, mw, vw, rm, rv = make_params(shape[1], "float64", 22)
    assert (mw != 0).all() and (vw != 0).all()
    leaves = [a.clone().requires_grad_(True) for a in (x, mw, vw, w, b)]

    def f(x, mw, vw, w, b):
        return nkt.functional.switchable_norm(x, mw, vw, rm.clone(), rv.clone(), w, b, training, 0.1, EPS)

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-7)


def test_layouts_agree():
    x = R.make_torch((3, 5, 4, 3), "float32", 11)
    w, b, mw, vw, rm, rv = make_params(5, "float32", 12)
    a = nkF.switchable_norm(x, mw, vw, rm.clone(), rv.clone(), w, b, True)
    c = nkF.switchable_norm(channels_last(x), mw, vw, rm.clone(), rv.clone(), w, b, True)
    R.assert_close("layouts", c, a, 1e-6, 3.0)


def test_running_stats_several_steps():
    torch.manual_seed(0)
    m = nkt.SwitchableNorm2d(3, momentum=0.2)
    rm, rv = np.zeros(3), np.ones(3)
    for step in range(4):
        x = torch.randn(4, 3, 5, 5) * (1 + step) + step
        m(x)
        _, rm, rv, _, _ = ref_forward(x, m.mean_weight.detach(), m.var_weight.detach(), m.weight.detach(),
                                      m.bias.detach(), rm, rv, True, 0.2)
    R.assert_close("running_mean", m.running_mean, rm, 1e-5, 1.0)
    R.assert_close("running_var", m.running_var, rv, 1e-5, 1.0)
    m.eval()
    x = torch.randn(2, 3, 4, 4)
    yr = ref_forward(x, m.mean_weight.detach(), m.var_weight.detach(), m.weight.detach(), m.bias.detach(), rm, rv,
                     False, 0.2)[0]
    R.assert_close("eval y", m(x).detach(), yr, 1e-5, 3.0)


def test_defaults_and_no_affine():
    m = nkt.SwitchableNorm3d(4)
    assert m.momentum == 0.003 and m.eps == 1e-5
    assert torch.equal(m.mean_weight.detach(), torch.zeros(3)) and torch.equal(m.var_weight.detach(), torch.zeros(3))
    names = {n for n, _ in m.named_parameters()}
    assert names == {"weight", "bias", "mean_weight", "var_weight"}
    assert {n for n, _ in m.named_buffers()} == {"running_mean", "running_var"}
    m2 = nkt.SwitchableNorm2d(4, affine=False)
    assert m2.weight is None and {n for n, _ in m2.named_parameters()} == {"mean_weight", "var_weight"}
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    y = m2(x)
    y.sum().backward()
    assert m2.mean_weight.grad is not None and x.grad is not None
    yr = ref_forward(x.detach(), torch.zeros(3), torch.zeros(3), torch.ones(4), torch.zeros(4), torch.zeros(4),
                     torch.ones(4), True, 0.003)[0]
    R.assert_close("no affine", y.detach(), yr, 1e-5, 3.0)
    with pytest.raises(ValueError, match="expected 4D"):
        m2(torch.randn(2, 4, 3))


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5)])
def test_1d_module(shape):
    m = nkt.SwitchableNorm1d(4)
    with torch.no_grad():
        m.mean_weight.copy_(torch.tensor([0.5, -0.3, 0.2]))
        m.var_weight.copy_(torch.tensor([-0.1, 0.4, 0.0]))
    x = torch.randn(*shape, dtype=torch.float32, requires_grad=True)
    y = m(x)
    yc = torch_composite(x.detach().double(), m.mean_weight.detach().double(), m.var_weight.detach().double(),
                         m.weight.detach().double(), m.bias.detach().double(), None, None, True)
    R.assert_close("y", y.detach(), yc, 1e-5, 3.0)
    y.backward(torch.randn_like(y))
    if len(shape) == 2:
        assert m.mean_weight.grad[0] == 0 and m.var_weight.grad[0] == 0, "no IN term on 2-D input"


@pytest.mark.parametrize("cls_dims", [("SwitchableNorm1d", (4, 3)), ("SwitchableNorm1d", (4, 3, 5)),
                                      ("SwitchableNorm2d", (3, 3, 4, 2)), ("SwitchableNorm3d", (2, 3, 2, 3, 2))])
def test_numpy_layer(cls_dims):
    name, shape = cls_dims
    layer = getattr(nknp, name)(3, momentum=0.1, dtype=np.float64)
    layer.mean_weight[...] = [0.3, -0.2, 0.1]
    layer.var_weight[...] = [-0.4, 0.2, 0.5]
    x = R.make_numpy(shape, "float64", 40)
    dy = R.make_numpy(shape, "float64", 41, scale=1.0, offset=0.0)
    y = layer(x)
    yr, rmr, rvr, _, _ = ref_forward(x, layer.mean_weight, layer.var_weight, layer.weight, layer.bias, np.zeros(3),
                                     np.ones(3), True, 0.1)
    R.assert_close("y", y, yr, 1e-12, 3.0)
    R.assert_close("running_mean", layer.running_mean, rmr, 1e-12, 1.0)
    R.assert_close("running_var", layer.running_var, rvr, 1e-12, 1.0)
    dx = layer.backward(dy)
    t = [torch.from_numpy(np.array(a)) for a in (x, layer.mean_weight, layer.var_weight, layer.weight, layer.bias)]
    _, (dxc, dmc, dvc, dwc, dbc) = composite_grads(torch.from_numpy(dy), *t, None, None, True)
    R.assert_close("dx", dx, dxc, 1e-10, 1.0)
    R.assert_close("dmean_weight", layer.grads["mean_weight"], dmc, 1e-10, 1.0)
    R.assert_close("dvar_weight", layer.grads["var_weight"], dvc, 1e-10, 1.0)
    R.assert_close("dweight", layer.grads["weight"], dwc, 1e-10, 1.0)
    R.assert_close("dbias", layer.grads["bias"], dbc, 1e-10, 1.0)
    layer.eval()
    R.assert_close("eval y", layer(x), ref_forward(x, layer.mean_weight, layer.var_weight, layer.weight,
                                                   layer.bias, rmr, rvr, False, 0.1)[0], 1e-12, 3.0)


def _x():
    return R.make_torch((2, 3, 4), "float32", 70)


@pytest.mark.parametrize(
    "kwargs,exc,message",
    [
        ({"x": torch.ones(3)}, ValueError, "at least 2 dimensions"),
        ({"mean_weight": torch.zeros(2)}, ValueError, "mean_weight: expected shape \\[3\\]"),
        ({"var_weight": torch.zeros(3, 1)}, ValueError, "var_weight: expected shape \\[3\\]"),
        ({"weight": torch.ones(4)}, ValueError, "weight: expected shape \\[3\\]"),
        ({"mean_weight": torch.zeros(3, dtype=torch.int64)}, TypeError, "mean_weight"),
        ({"eps": -1.0}, ValueError, "eps"),
        ({"running_mean": None, "training": False}, ValueError, "evaluation mode"),
    ],
)
def test_bad_inputs(kwargs, exc, message):
    args = {"x": _x(), "mean_weight": torch.zeros(3), "var_weight": torch.zeros(3), "running_mean": torch.zeros(3),
            "running_var": torch.ones(3), "weight": torch.ones(3), "bias": torch.zeros(3), "training": True,
            "eps": EPS}
    args.update(kwargs)
    if "running_mean" in kwargs and kwargs["running_mean"] is None:
        args["running_var"] = None
    rm_before = None if args["running_mean"] is None else args["running_mean"].clone()
    with pytest.raises(exc, match=message):
        nkF.switchable_norm(args["x"], args["mean_weight"], args["var_weight"], args["running_mean"],
                            args["running_var"], args["weight"], args["bias"], args["training"], 0.1, args["eps"])
    if rm_before is not None:
        assert torch.equal(args["running_mean"], rm_before), "a rejected call must not touch the buffers"


def test_bad_backward_inputs():
    x = _x()
    mw = torch.zeros(3)
    y, saved = nkF.switchable_norm_forward(x, mw, mw, None, None, training=True)
    with pytest.raises(ValueError, match="dy"):
        nkF.switchable_norm_backward(x[:, :, :2], x, mw, mw, saved)
    with pytest.raises(ValueError, match="saved"):
        nkF.switchable_norm_backward(x, x, mw, mw, saved[:-1])


@pytest.mark.parametrize("cl", (False, True))
@pytest.mark.parametrize("dtype", ("float32", "bfloat16"))
def test_thread_count_determinism(dtype, cl):
    shape = (4, 6, 33, 17)
    x = R.make_torch(shape, dtype, 90)
    dy = R.make_torch(shape, dtype, 91)
    if cl:
        x, dy = channels_last(x), channels_last(dy)
    w, b, mw, vw, rm, rv = make_params(6, dtype, 92)
    outs = []
    try:
        for threads in (1, 2, 2):
            normkit.set_num_threads(threads)
            rm2, rv2 = rm.clone(), rv.clone()
            y, saved = nkF.switchable_norm_forward(x, mw, vw, rm2, rv2, w, b, True, 0.1)
            grads = nkF.switchable_norm_backward(dy, x, mw, vw, saved, w, True)
            outs.append((y, rm2, rv2, saved, *grads))
    finally:
        normkit.set_num_threads(2)
    for other in outs[1:]:
        for i, (a, c) in enumerate(zip(outs[0], other)):
            R.assert_bitwise_equal(f"output #{i}", a, c)


def test_empty_batch():
    x = torch.zeros((0, 3, 4))
    y = nkF.switchable_norm(x, torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.ones(3), training=False)
    assert y.shape == x.shape


@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 3, 0)])
def test_empty_batch_statistics_and_gradients(shape):
    """An empty input saves the statistics of nothing (every mean 0, every variance and rstd NaN),
    its parameter and logit gradients are sums over nothing, 0, and running statistics stay."""
    n, c = shape[:2]
    x = np.zeros(shape, np.float32)
    logits = np.zeros(3, np.float32)
    rm, rv = np.full(c, 0.25, np.float32), np.full(c, 2.0, np.float32)
    w, b = np.ones(c, np.float32), np.zeros(c, np.float32)
    R.dirty_small_arrays()
    y, saved = nkF.switchable_norm_forward(x, logits, logits, rm, rv, w, b, training=True)
    assert y.shape == shape
    nc = n * c
    means = np.concatenate([saved[:nc], saved[2 * nc:3 * nc], saved[4 * nc:4 * nc + n],
                            saved[4 * nc + 2 * n:4 * nc + 2 * n + c]])
    spreads = np.concatenate([saved[nc:2 * nc], saved[3 * nc:4 * nc], saved[4 * nc + n:4 * nc + 2 * n],
                              saved[4 * nc + 2 * n + c:]])
    assert saved.size == 4 * nc + 2 * n + 2 * c
    np.testing.assert_array_equal(means, np.zeros_like(means))
    assert np.isnan(spreads).all()
    np.testing.assert_array_equal(rm, np.full(c, 0.25))
    np.testing.assert_array_equal(rv, np.full(c, 2.0))
    R.dirty_small_arrays()
    dx, dw, db, dmw, dvw = nkF.switchable_norm_backward(x, x, logits, logits, saved, w, training=True)
    assert dx.shape == shape
    for g in (dw, db, dmw, dvw):
        np.testing.assert_array_equal(g, np.zeros(3))


def test_empty_batch_torch_gradients_are_zero():
    layer = nkt.SwitchableNorm1d(3)
    x = torch.zeros((0, 3, 4), requires_grad=True)
    layer(x).sum().backward()
    for p in (layer.weight, layer.bias, layer.mean_weight, layer.var_weight):
        torch.testing.assert_close(p.grad, torch.zeros(3), rtol=0, atol=0)
