"""WeightNorm: normkit.functional, normkit.numpy and normkit.torch against
torch.nn.utils.parametrizations.weight_norm (+ autograd) and a float64 NumPy reference written from
the formula.

Reference (torch's convention for dim: -1, which the parametrization's dim=None becomes, is the norm of
the whole tensor; other negative dims count from the end). Per slice d (every axis but dim):
    n  = sqrt(sum v^2),  w = g * v / n
    s  = sum(dw * v),    dg = s / n,    dv = g / n * (dw - v * s / n^2)

Tolerances (R.TOL): each dtype computes in its accumulation type and rounds each output once, so against
the float64 answer for the same rounded inputs the error is about half an ulp of the output dtype plus
a few accumulation ulps, relative to the magnitude of the terms combined (dv subtracts two terms).
"""

import copy

import normkit
import normkit.functional as nkF
import numpy as np
import pytest
import reference as R
import torch
from normkit import numpy as nknp
from normkit import torch as nkt
from torch.nn.utils import parametrizations as P

DIMS = (0, 1, -1, None)


def torch_dim(dim):
    return -1 if dim is None else dim


# ---- the float64 reference ------------------------------------------------------------------------


def _axes(ndim, dim):
    dim = torch_dim(dim)
    if dim == -1:
        return tuple(range(ndim))
    return tuple(i for i in range(ndim) if i != dim % ndim)


def ref_norm(v, dim):
    v = R.to_f64(v)
    return np.sqrt(np.sum(v * v, axis=_axes(v.ndim, dim), keepdims=True))


def ref_forward(v, g, dim):
    v, g = R.to_f64(v), R.to_f64(g)
    return v * (g / ref_norm(v, dim))


def ref_backward(dw, v, g, dim):
    """(dv, dg, dv_scale, dg_scale): the gradients and the magnitudes of their terms."""
    dw, v, g = R.to_f64(dw), R.to_f64(v), R.to_f64(g)
    axes = _axes(v.ndim, dim)
    n = ref_norm(v, dim)
    s = np.sum(dw * v, axis=axes, keepdims=True)
    s_abs = np.sum(np.abs(dw * v), axis=axes, keepdims=True)
    scale = g / n
    dv = scale * (dw - v * s / n**2)
    dv_scale = np.abs(scale) * (np.abs(dw) + np.abs(v) * s_abs / n**2)
    dg = (s / n).reshape(g.shape)
    return dv, dg, dv_scale, (s_abs / n).reshape(g.shape)


def make_module(kind, seed):
    torch.manual_seed(seed)
    if kind == "linear":
        return torch.nn.Linear(5, 7, dtype=torch.float64)
    return torch.nn.Conv2d(3, 4, 3, dtype=torch.float64)


def test_reference_matches_torch_autograd():
    for kind in ("linear", "conv"):
        for dim in DIMS + (-2,):
            m = P.weight_norm(make_module(kind, 1), dim=dim)
            g, v = m.parametrizations.weight.original0, m.parametrizations.weight.original1
            with torch.no_grad():
                g.mul_(1.7)
            w = m.weight
            dw = R.make_torch(w.shape, "float64", 3, 1.0, 0.0)
            w.backward(dw)
            R.assert_close("ref w", ref_forward(v.detach(), g.detach(), dim), w.detach(), 1e-12)
            dv, dg, dvs, dgs = ref_backward(dw, v.detach(), g.detach(), dim)
            R.assert_close("ref dv", dv, v.grad, 1e-12, dvs)
            R.assert_close("ref dg", dg, g.grad, 1e-12, dgs)


# ---- parity with torch's parametrization, every dtype ------------------------------------------------


@pytest.mark.parametrize("dtype", R.DTYPES)
@pytest.mark.parametrize("dim", DIMS + (-2,), ids=lambda d: f"dim{d}")
@pytest.mark.parametrize("kind", ("linear", "conv"))
def test_module_weight_and_grads(kind, dim, dtype):
    base = make_module(kind, 7)
    ref = P.weight_norm(copy.deepcopy(base), dim=dim)
    nk = nkt.weight_norm(copy.deepcopy(base).to(R.torch_dtype(dtype)), dim=dim)
    assert type(nk.parametrizations.weight[0]) is nkt.WeightNorm
    assert isinstance(nk.parametrizations.weight[0], P._WeightNorm)
    assert nk.state_dict().keys() == ref.state_dict().keys()
    pn = nk.parametrizations.weight
    assert pn.original0.shape == ref.parametrizations.weight.original0.shape
    with torch.no_grad():
        pn.original0.mul_(1.3)
    # the reference sees the same (rounded) parameters
    ref.load_state_dict({k: t.double() for k, t in nk.state_dict().items()})
    g, v = ref.parametrizations.weight.original0.detach(), ref.parametrizations.weight.original1.detach()

    w = nk.weight
    assert w.dtype == R.torch_dtype(dtype) and w.shape == base.weight.shape
    dw = R.make_torch(w.shape, dtype, 9, 1.0, 0.0)
    (w * dw).sum().backward()
    tol = R.TOL[dtype]
    R.assert_close("w", ref_forward(v, g, dim), w.detach(), tol)
    R.assert_close("w vs torch", ref.weight.detach(), w.detach(), tol)
    dv, dg, dvs, dgs = ref_backward(dw, v, g, dim)
    R.assert_close("original1.grad", dv, pn.original1.grad, tol, dvs)
    R.assert_close("original0.grad", dg, pn.original0.grad, tol, dgs)


@pytest.mark.parametrize("dtype", ("float32", "float64"))
@pytest.mark.parametrize("dim", DIMS, ids=lambda d: f"dim{d}")
@pytest.mark.parametrize("kind", ("linear", "conv"))
def test_module_forward_backward_through_layer(kind, dim, dtype):
    base = make_module(kind, 21).to(R.torch_dtype(dtype))
    ref = P.weight_norm(copy.deepcopy(base), dim=dim)
    nk = nkt.weight_norm(copy.deepcopy(base), dim=dim)
    shape = (3, 5) if kind == "linear" else (2, 3, 6, 5)
    x = R.make_torch(shape, dtype, 5)
    y_ref, y = ref(x), nk(x)
    dy = R.make_torch(y.shape, dtype, 6, 1.0, 0.0)
    y_ref.backward(dy)
    y.backward(dy)
    tol = 1e-5 if dtype == "float32" else 1e-12
    R.assert_close("y", y_ref.detach(), y.detach(), tol, y_ref.detach().abs().max().item())
    for name in ("original0", "original1"):
        got = getattr(nk.parametrizations.weight, name).grad
        want = getattr(ref.parametrizations.weight, name).grad
        R.assert_close(name + ".grad", want, got, tol, want.abs().max().item())
    R.assert_close("bias.grad", ref.bias.grad, nk.bias.grad, tol, ref.bias.grad.abs().max().item())


@pytest.mark.parametrize("dim", DIMS + (2, -3), ids=lambda d: f"dim{d}")
def test_gradcheck_float64(dim):
    v = R.make_torch((4, 3, 5), "float64", 2).requires_grad_(True)
    g = torch.norm_except_dim(v.detach(), 2, torch_dim(dim)).mul(1.5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: nkt.functional.weight_norm(a, b, dim), (v, g))


@pytest.mark.parametrize("dtype", R.NUMPY_DTYPES)
@pytest.mark.parametrize("dim", DIMS + (2, -2), ids=lambda d: f"dim{d}")
def test_numpy_functional_against_reference(dim, dtype):
    v = R.make_numpy((6, 4, 5), dtype, 31)
    v = np.ascontiguousarray(v.transpose(2, 0, 1)).transpose(1, 2, 0)  # a strided view
    g = (ref_norm(v, dim) * 0.8).astype(dtype)
    if torch_dim(dim) == -1:
        g = g.reshape(())
    w, norms = nkF.weight_norm_forward(v, g, dim)
    assert w.dtype == v.dtype and w.shape == v.shape and w.flags.c_contiguous
    assert norms.dtype == R.ACC_DTYPE[dtype] and norms.shape == g.shape
    tol = R.TOL[dtype]
    R.assert_close("w", ref_forward(v, g, dim), w, tol)
    R.assert_close("norms", ref_norm(v, dim).reshape(g.shape), norms, R.TOL["float32"] if dtype != "float64" else 1e-12)
    dw = R.make_numpy(v.shape, dtype, 32, 1.0, 0.0)
    dv, dg = nkF.weight_norm_backward(dw, v, g, norms, dim)
    assert dv.shape == v.shape and dg.shape == g.shape and dg.dtype == v.dtype
    rdv, rdg, dvs, dgs = ref_backward(dw, v, g, dim)
    R.assert_close("dv", rdv, dv, tol, dvs)
    R.assert_close("dg", rdg, dg, tol, dgs)


# ---- state_dict interchange and convert_model ---------------------------------------------------------


@pytest.mark.parametrize("dim", DIMS, ids=lambda d: f"dim{d}")
def test_state_dict_round_trip(dim):
    ref = P.weight_norm(make_module("conv", 3), dim=dim)
    nk = nkt.weight_norm(make_module("conv", 4), dim=dim)
    nk.load_state_dict(ref.state_dict(), strict=True)
    torch.testing.assert_close(nk.weight, ref.weight, rtol=1e-12, atol=1e-12)
    back = P.weight_norm(make_module("conv", 5), dim=dim)
    back.load_state_dict(nk.state_dict(), strict=True)
    torch.testing.assert_close(back.weight, ref.weight, rtol=0, atol=0)


def test_convert_model_swaps_the_parametrization_in_place():
    model = torch.nn.Sequential(P.weight_norm(make_module("linear", 1), dim=1), torch.nn.ReLU(),
                                torch.nn.LayerNorm(7, dtype=torch.float64))
    want = model[0].weight.detach().clone()
    pobj, g = model[0].parametrizations.weight[0], model[0].parametrizations.weight.original0
    report = []
    nkt.convert_model(model, report)
    assert model[0].parametrizations.weight[0] is pobj and type(pobj) is nkt.WeightNorm
    assert model[0].parametrizations.weight.original0 is g and pobj.dim == 1
    assert ("0.parametrizations.weight.0", "_WeightNorm", "WeightNorm") in report
    assert type(model[2]) is nkt.LayerNorm
    torch.testing.assert_close(model[0].weight, want, rtol=1e-12, atol=1e-12)


# ---- NumPy layer ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", DIMS, ids=lambda d: f"dim{d}")
def test_numpy_class(dim):
    base = make_module("conv", 8)
    weight = base.weight.detach().numpy().copy()
    tm = P.weight_norm(base, dim=dim)
    layer = nknp.WeightNorm(weight, dim=dim)
    tp = tm.parametrizations.weight
    np.testing.assert_allclose(layer.g, tp.original0.detach().numpy(), rtol=1e-12)
    np.testing.assert_array_equal(layer.v, tp.original1.detach().numpy())
    assert layer.g.shape == tuple(tp.original0.shape)
    assert set(layer.state_dict()) == {"original0", "original1"}
    layer.load_state_dict({k: t.detach().numpy() for k, t in tp.state_dict().items()})
    np.testing.assert_allclose(layer.weight, tm.weight.detach().numpy(), rtol=1e-12, atol=1e-14)
    dw = R.make_numpy(weight.shape, "float64", 3)
    assert layer.backward(dw) is None
    tm.weight.backward(torch.from_numpy(dw))
    np.testing.assert_allclose(layer.grads["original0"], tp.original0.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["original1"], tp.original1.grad.numpy(), rtol=1e-10, atol=1e-12)


# ---- bad inputs, zero norms ---------------------------------------------------------------------------


def test_bad_inputs():
    v = R.make_numpy((4, 3), "float32", 1)
    g0 = ref_norm(v, 0).astype(np.float32)
    with pytest.raises(ValueError, match="dim"):
        nkF.weight_norm(v, g0, 2)
    with pytest.raises(ValueError, match="dim"):
        nkF.weight_norm(v, g0, -3)
    with pytest.raises(ValueError, match="g"):
        nkF.weight_norm(v, g0.reshape(4), 0)
    with pytest.raises(ValueError, match="g"):
        nkF.weight_norm(v, g0, 1)
    with pytest.raises(TypeError, match="g"):
        nkF.weight_norm(v, g0.astype(np.float64), 0)
    with pytest.raises(TypeError):
        nkF.weight_norm(v.astype(np.int32), g0.astype(np.int32), 0)
    with pytest.raises(TypeError):
        nkt.functional.weight_norm(torch.ones(4, 3, dtype=torch.int64), torch.ones(4, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="dim"):
        nknp.WeightNorm(v, dim=2)
    with pytest.raises(TypeError):
        nknp.WeightNorm(v.astype(np.int64))
    # nothing was written into the caller's g by a rejected call
    assert np.array_equal(g0, ref_norm(v, 0).astype(np.float32))


@pytest.mark.parametrize("dim", (0, 1, None), ids=lambda d: f"dim{d}")
def test_zero_norm_like_torch(dim):
    v = R.make_torch((3, 4), "float64", 4)
    v[1] = 0.0
    v[:, 2] = 0.0
    g = torch.norm_except_dim(v, 2, torch_dim(dim)) + 0.5
    want = torch._weight_norm(v, g, torch_dim(dim))
    got = nkt.functional.weight_norm(v, g, dim)
    torch.testing.assert_close(got, want, equal_nan=True)
    if torch_dim(dim) != -1:
        assert not torch.isfinite(got).all()


def test_empty_slices_like_torch():
    v = torch.empty(3, 0, dtype=torch.float64)
    g = torch.full((3, 1), 2.0, dtype=torch.float64)
    w, norms = nkF.weight_norm_forward(v, g, 0)
    assert w.shape == (3, 0)
    torch.testing.assert_close(norms, torch.zeros(3, 1, dtype=torch.float64))
    assert nkF.weight_norm_forward(torch.empty(0, 4), torch.empty(0, 1), 0)[0].shape == (0, 4)


@pytest.mark.parametrize("dim", (0, 1, None), ids=lambda d: f"dim{d}")
def test_one_vs_two_threads(dim):
    v = R.make_torch((96, 40, 3, 3), "float32", 12)
    g = torch.norm_except_dim(v, 2, torch_dim(dim))
    dw = R.make_torch(v.shape, "float32", 13, 1.0, 0.0)
    results = []
    for threads in (1, 2):
        normkit.set_num_threads(threads)
        w, norms = nkF.weight_norm_forward(v, g, dim)
        results.append((w, norms, *nkF.weight_norm_backward(dw, v, g, norms, dim)))
    for name, a, b in zip(("w", "norms", "dv", "dg"), *results):
        R.assert_bitwise_equal(name, a.reshape(-1), b.reshape(-1))


@pytest.mark.skipif(not (normkit.cuda_available() and torch.cuda.is_available()), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", R.DTYPES)
@pytest.mark.parametrize("dim", DIMS + (2,), ids=lambda d: f"dim{d}")
def test_cuda_matches_reference(dim, dtype):
    v = R.make_torch((40, 33, 3, 3), dtype, 14)
    g = (torch.norm_except_dim(v.double(), 2, torch_dim(dim)) * 1.2).to(v.dtype)
    dw = R.make_torch(v.shape, dtype, 15, 1.0, 0.0)
    w, norms = nkF.weight_norm_forward(v.cuda(), g.cuda(), dim)
    dv, dg = nkF.weight_norm_backward(dw.cuda(), v.cuda(), g.cuda(), norms, dim)
    tol = R.TOL[dtype]
    R.assert_close("w", ref_forward(v, g, dim), w.cpu(), tol)
    rdv, rdg, dvs, dgs = ref_backward(dw, v, g, dim)
    R.assert_close("dv", rdv, dv.cpu(), tol, dvs)
    R.assert_close("dg", rdg, dg.cpu(), tol, dgs)
