"""SpectralNorm: normkit.functional, normkit.numpy and normkit.torch against
torch.nn.utils.parametrizations.spectral_norm (+ autograd) and a float64 NumPy reference written from
the formulas (Miyato et al., ICLR 2018, with torch's power iteration).

Reference. The weight w (2 or more dims) is the matrix W = movedim(w, dim, 0).reshape(H, K). One
power-iteration step (torch's order), normalize(t) = t / max(||t||, eps):
    u = normalize(W v),  v = normalize(W^T u)
each vector rounded to w's dtype when stored (torch keeps it in a buffer of that dtype). Then
    sigma = u^T W v,  y = w / sigma
and, with u and v constants (torch's gradient),
    dW = dY / sigma - (sum(dY * W) / sigma^2) u v^T.

Tolerances (R.TOL): each dtype computes in its accumulation type and rounds each output once, so
against the float64 answer for the same rounded inputs the error is about half an ulp of the output
dtype plus a few accumulation ulps of the terms combined. Comparisons with torch itself over several
training steps use the float64 (1e-12) or float32 (1e-5) tolerance relative to the largest magnitude.
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
from torch.nn.utils import parametrize

# ---- the float64 reference ------------------------------------------------------------------------


def ref_matrix(w, dim):
    w = R.to_f64(w)
    m = np.moveaxis(w, dim, 0)
    return m.reshape(m.shape[0], -1)


def ref_from_matrix(m, shape, dim):
    moved = np.moveaxis(np.empty(shape), dim, 0).shape
    return np.moveaxis(m.reshape(moved), 0, dim)


def ref_normalize(t, eps):
    return t / max(np.linalg.norm(t), eps)


def round_to(a, dtype):
    """float64 values rounded to `dtype` (a name) and back, as a buffer of that dtype stores them."""
    if dtype == "float64":
        return a
    return torch.from_numpy(np.asarray(a, dtype=np.float64)).to(R.torch_dtype(dtype)).double().numpy()


def ref_power(w, u, v, n, eps, dim, dtype="float64"):
    W = ref_matrix(w, dim)
    u, v = R.to_f64(u), R.to_f64(v)
    for _ in range(n):
        u = round_to(ref_normalize(W @ v, eps), dtype)
        v = round_to(ref_normalize(W.T @ u, eps), dtype)
    return u, v


def ref_forward(w, u, v, n, eps, dim, training=True, dtype="float64"):
    """(y, sigma, u, v) in float64."""
    if training:
        u, v = ref_power(w, u, v, n, eps, dim, dtype)
    else:
        u, v = R.to_f64(u), R.to_f64(v)
    sigma = float(u @ ref_matrix(w, dim) @ v)
    return R.to_f64(w) / sigma, sigma, u, v


def ref_backward(dy, w, u, v, sigma, dim):
    """(dw, scale): the gradient and the magnitude of its terms."""
    dy, w, u, v = R.to_f64(dy), R.to_f64(w), R.to_f64(u), R.to_f64(v)
    dot = float(np.sum(dy * w))
    dot_abs = float(np.sum(np.abs(dy * w)))
    outer = ref_from_matrix(np.outer(u, v), w.shape, dim)
    dw = dy / sigma - dot / sigma**2 * outer
    scale = np.abs(dy) / abs(sigma) + dot_abs / sigma**2 * np.abs(outer)
    return dw, scale


def make_module(kind, seed, dtype=torch.float64):
    torch.manual_seed(seed)
    if kind == "linear":
        return torch.nn.Linear(9, 13, dtype=dtype)
    if kind == "conv":
        return torch.nn.Conv2d(3, 6, 3, dtype=dtype)
    return torch.nn.ConvTranspose2d(4, 5, 3, dtype=dtype)


def module_input(kind, seed, dtype):
    shape = {"linear": (5, 9), "conv": (2, 3, 7, 6), "convt": (2, 4, 5, 5)}[kind]
    return R.make_torch(shape, dtype, seed)


def sn_of(m):
    return m.parametrizations.weight[0]


def twins(kind, seed, dtype=torch.float64, **kw):
    """A torch spectral_norm module and its normkit twin, built from identical seeds."""
    base = make_module(kind, seed, dtype)
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    torch.manual_seed(seed + 100)
    ref = P.spectral_norm(a, **kw)
    torch.manual_seed(seed + 100)
    nk = nkt.spectral_norm(b, **kw)
    return ref, nk


KINDS = ("linear", "conv", "convt")


def test_reference_matches_torch_autograd():
    for kind in KINDS:
        for dim in (None, 1, -1):
            ref, _ = twins(kind, 1, dim=dim)
            sn = sn_of(ref)
            d = sn.dim
            w = ref.parametrizations.weight.original
            u0, v0 = sn._u.clone(), sn._v.clone()
            y = ref.weight  # training: one power-iteration step, then W / sigma
            want_y, sigma, u, v = ref_forward(w.detach(), u0, v0, 1, sn.eps, d)
            R.assert_close("y", want_y, y.detach(), 1e-12)
            R.assert_close("u", u, sn._u, 1e-12)
            R.assert_close("v", v, sn._v, 1e-12)
            dy = R.make_torch(y.shape, "float64", 3, 1.0, 0.0)
            y.backward(dy)
            dw, scale = ref_backward(dy, w.detach(), u, v, sigma, d)
            R.assert_close("dw", dw, w.grad, 1e-12, scale)


# ---- the torch twin against torch's parametrization --------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_registration_is_torchs(kind):
    ref, nk = twins(kind, 5)
    assert type(sn_of(nk)) is nkt.SpectralNorm and isinstance(sn_of(nk), P._SpectralNorm)
    assert sn_of(nk).dim == sn_of(ref).dim == (1 if kind == "convt" else 0)
    assert list(nk.state_dict()) == list(ref.state_dict())
    assert {"parametrizations.weight.original", "parametrizations.weight.0._u",
            "parametrizations.weight.0._v"} <= set(nk.state_dict())
    # the same random vectors and 15 initial steps as torch's
    R.assert_bitwise_equal("_u", sn_of(ref)._u, sn_of(nk)._u)
    R.assert_bitwise_equal("_v", sn_of(ref)._v, sn_of(nk)._v)


@pytest.mark.parametrize("dtype", ("float32", "float64"))
@pytest.mark.parametrize("n_iter", (1, 3))
@pytest.mark.parametrize("kind", KINDS)
def test_training_steps_match_torch(kind, n_iter, dtype):
    tdt = R.torch_dtype(dtype)
    ref, nk = twins(kind, 11, tdt, n_power_iterations=n_iter)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.05)
    opt_nk = torch.optim.SGD(nk.parameters(), lr=0.05)
    tol = 1e-5 if dtype == "float32" else 1e-12
    for step in range(4):
        x = module_input(kind, 20 + step, dtype)
        y_ref, y = ref(x), nk(x)
        R.assert_close(f"y step {step}", y_ref.detach(), y.detach(), tol, y_ref.detach().abs().max().item())
        for name in ("_u", "_v"):
            a, b = getattr(sn_of(ref), name), getattr(sn_of(nk), name)
            R.assert_close(f"{name} step {step}", a, b, tol, a.abs().max().item())
        dy = R.make_torch(y.shape, dtype, 40 + step, 1.0, 0.0)
        opt_ref.zero_grad()
        opt_nk.zero_grad()
        y_ref.backward(dy)
        y.backward(dy)
        for (name, p_ref), p in zip(ref.named_parameters(), nk.parameters()):
            R.assert_close(f"{name}.grad step {step}", p_ref.grad, p.grad, tol, p_ref.grad.abs().max().item())
        opt_ref.step()
        opt_nk.step()


@pytest.mark.parametrize("dtype", ("float16", "bfloat16"))
@pytest.mark.parametrize("kind", KINDS)
def test_half_modules_match_torch(kind, dtype):
    """Half weights: torch rounds its intermediate products to the half type, normkit accumulates in
    float32; the two agree to the half type's tolerance of the largest value."""
    ref, nk = twins(kind, 31, R.torch_dtype(dtype))
    R.assert_bitwise_equal("_u", sn_of(ref)._u, sn_of(nk)._u)  # registered by torch in both
    tol = R.TOL[dtype]
    for step in range(2):
        x = module_input(kind, 50 + step, dtype)
        y_ref, y = ref(x), nk(x)
        R.assert_close(f"y step {step}", y_ref.detach(), y.detach(), tol, y_ref.detach().abs().max().item())
        for name in ("_u", "_v"):
            a, b = getattr(sn_of(ref), name), getattr(sn_of(nk), name)
            R.assert_close(f"{name} step {step}", a, b, tol, a.abs().max().item())
        y_ref.float().sum().backward()
        y.float().sum().backward()
    g_ref = ref.parametrizations.weight.original.grad
    g = nk.parametrizations.weight.original.grad
    R.assert_close("grad", g_ref, g, tol, g_ref.abs().max().item())


@pytest.mark.parametrize("kind", KINDS)
def test_eval_mode_uses_the_stored_vectors(kind):
    ref, nk = twins(kind, 12)
    x = module_input(kind, 3, "float64")
    ref(x), nk(x)  # one training step each
    ref.eval()
    nk.eval()
    u, v = sn_of(nk)._u.clone(), sn_of(nk)._v.clone()
    for _ in range(2):
        w_ref, w = ref.weight, nk.weight
        R.assert_close("eval weight", w_ref.detach(), w.detach(), 1e-12, w_ref.detach().abs().max().item())
    R.assert_bitwise_equal("_u unchanged", u, sn_of(nk)._u)
    R.assert_bitwise_equal("_v unchanged", v, sn_of(nk)._v)
    want, _, _, _ = ref_forward(nk.parametrizations.weight.original.detach(), u, v, 1, 1e-12, sn_of(nk).dim, False)
    R.assert_close("eval weight vs reference", want, nk.weight.detach(), 1e-12)
    # gradients in eval mode too
    w = nk.weight
    dy = R.make_torch(w.shape, "float64", 8, 1.0, 0.0)
    w.backward(dy)
    sigma = float(u @ torch.from_numpy(ref_matrix(nk.parametrizations.weight.original.detach(), sn_of(nk).dim)) @ v)
    dw, scale = ref_backward(dy, nk.parametrizations.weight.original.detach(), u, v, sigma, sn_of(nk).dim)
    R.assert_close("eval dw", dw, nk.parametrizations.weight.original.grad, 1e-12, scale)


def test_buffer_versions_advance_like_torchs():
    """The in-place update of _u/_v is visible to autograd's version counters, as torch's out= update is."""
    ref, nk = twins("linear", 9)
    before = [(sn_of(m)._u._version, sn_of(m)._v._version) for m in (ref, nk)]
    for m in (ref, nk):
        _ = m.weight
    after = [(sn_of(m)._u._version, sn_of(m)._v._version) for m in (ref, nk)]
    assert all(a[0] > b[0] and a[1] > b[1] for a, b in zip(after, before))
    nk.eval()
    _ = nk.weight
    assert (sn_of(nk)._u._version, sn_of(nk)._v._version) == after[1]


def test_two_forwards_then_one_backward_like_torch():
    """The GAN pattern (loss = D(real) - D(fake)): u and v change between the two forwards, and each
    backward uses the vectors of its own forward."""
    ref, nk = twins("linear", 13)
    xs = [module_input("linear", s, "float64") for s in (1, 2)]
    losses = [(m(xs[0]).sum() - m(xs[1]).square().sum()) for m in (ref, nk)]
    for loss in losses:
        loss.backward()
    g_ref = ref.parametrizations.weight.original.grad
    g = nk.parametrizations.weight.original.grad
    R.assert_close("grad", g_ref, g, 1e-12, g_ref.abs().max().item())


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trips(kind):
    ref, _ = twins(kind, 14)
    ref(module_input(kind, 1, "float64"))  # move u and v away from their initial values
    _, nk = twins(kind, 15)
    nk.load_state_dict(ref.state_dict(), strict=True)
    ref.eval()
    nk.eval()
    R.assert_bitwise_equal("_u", sn_of(ref)._u, sn_of(nk)._u)
    R.assert_close("weight torch -> normkit", ref.weight.detach(), nk.weight.detach(), 1e-12)
    nk.train()
    nk(module_input(kind, 2, "float64"))
    nk.eval()
    back, _ = twins(kind, 16)
    back.load_state_dict(nk.state_dict(), strict=True)
    back.eval()
    for key, t in nk.state_dict().items():
        R.assert_bitwise_equal(key, t, back.state_dict()[key])
    R.assert_close("weight normkit -> torch", nk.weight.detach(), back.weight.detach(), 1e-12)


def test_remove_parametrizations_like_torch():
    ref, nk = twins("conv", 17)
    parametrize.remove_parametrizations(ref, "weight")
    parametrize.remove_parametrizations(nk, "weight")
    assert not parametrize.is_parametrized(nk)
    assert isinstance(nk.weight, torch.nn.Parameter)
    R.assert_close("weight", ref.weight.detach(), nk.weight.detach(), 1e-12, ref.weight.detach().abs().max().item())


def test_convert_model_swaps_the_parametrization_in_place():
    ref, _ = twins("convt", 19)
    model = torch.nn.Sequential(copy.deepcopy(ref), torch.nn.ReLU())
    pobj, u = model[0].parametrizations.weight[0], model[0].parametrizations.weight[0]._u
    report = []
    nkt.convert_model(model, report)
    assert model[0].parametrizations.weight[0] is pobj and type(pobj) is nkt.SpectralNorm
    assert pobj._u is u and pobj.dim == 1
    assert ("0.parametrizations.weight.0", "_SpectralNorm", "SpectralNorm") in report
    x = module_input("convt", 4, "float64")
    y_ref, y = ref(x), model[0](x)
    R.assert_close("y", y_ref.detach(), y.detach(), 1e-12, y_ref.detach().abs().max().item())
    R.assert_close("_u", sn_of(ref)._u, u, 1e-12)


def test_one_dimensional_weight_takes_torchs_path():
    p = torch.nn.Parameter(R.make_torch((7,), "float64", 3))
    m_ref, m = torch.nn.Module(), torch.nn.Module()
    m_ref.weight = torch.nn.Parameter(p.detach().clone())
    m.weight = torch.nn.Parameter(p.detach().clone())
    P.spectral_norm(m_ref)
    nkt.spectral_norm(m)
    torch.testing.assert_close(m.weight, m_ref.weight, rtol=0, atol=0)
    m.weight.sum().backward()
    m_ref.weight.sum().backward()
    torch.testing.assert_close(m.parametrizations.weight.original.grad, m_ref.parametrizations.weight.original.grad,
                               rtol=0, atol=0)


@pytest.mark.parametrize("dim", (0, 1, 2, -1), ids=lambda d: f"dim{d}")
def test_gradcheck_float64(dim):
    w = R.make_torch((5, 4, 3), "float64", 2).requires_grad_(True)
    H = w.shape[dim]
    u = torch.nn.functional.normalize(R.make_torch((H,), "float64", 3), dim=0)
    v = torch.nn.functional.normalize(R.make_torch((w.numel() // H,), "float64", 4), dim=0)
    # eval mode: u and v are fixed, so the function of w is exactly w / (u^T W v)
    assert torch.autograd.gradcheck(lambda a: nkt.functional.spectral_norm(a, u, v, 1, 1e-12, dim, False), (w,))
    # training mode: the same gradient, with the vectors the forward produced
    uc, vc = u.clone(), v.clone()
    y = nkt.functional.spectral_norm(w, uc, vc, 2, 1e-12, dim, True)
    dy = R.make_torch(y.shape, "float64", 5, 1.0, 0.0)
    y.backward(dy)
    want_y, sigma, ru, rv = ref_forward(w.detach(), u, v, 2, 1e-12, dim % 3)
    R.assert_close("y", want_y, y.detach(), 1e-12)
    R.assert_close("u", ru, uc, 1e-12)
    R.assert_close("v", rv, vc, 1e-12)
    dw, scale = ref_backward(dy, w.detach(), ru, rv, sigma, dim % 3)
    R.assert_close("dw", dw, w.grad, 1e-12, scale)


# ---- functional form, every dtype -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", R.DTYPES)
@pytest.mark.parametrize("dim", (0, 1, -1), ids=lambda d: f"dim{d}")
@pytest.mark.parametrize("n_iter", (1, 2))
def test_functional_against_reference(n_iter, dim, dtype):
    w = R.make_torch((24, 10, 3), dtype, 21)
    d = dim % 3
    H = w.shape[d]
    u = torch.nn.functional.normalize(R.make_torch((H,), "float64", 22), dim=0).to(w.dtype)
    v = torch.nn.functional.normalize(R.make_torch((w.numel() // H,), "float64", 23), dim=0).to(w.dtype)
    u0, v0 = u.clone(), v.clone()
    y, sigma = nkF.spectral_norm_forward(w, u, v, n_iter, 1e-12, dim)
    assert y.dtype == w.dtype and y.shape == w.shape and y.is_contiguous()
    assert sigma.dtype == R.torch_dtype(R.ACC_DTYPE[dtype]) and sigma.shape == ()
    want_y, want_sigma, ru, rv = ref_forward(w, u0, v0, n_iter, 1e-12, d, dtype=dtype)
    tol = R.TOL[dtype]
    R.assert_close("u", ru, u, tol, 1.0 / np.sqrt(H))
    R.assert_close("v", rv, v, tol, 1.0 / np.sqrt(v.numel()))
    acc_tol = 1e-5 if dtype != "float64" else 1e-12
    R.assert_close("sigma", want_sigma, sigma, acc_tol)
    # y against the reference for the vectors normkit stored (isolates the rounding of u and v)
    want_y2, want_sigma2, _, _ = ref_forward(w, u, v, 1, 1e-12, d, training=False)
    R.assert_close("sigma (stored vectors)", want_sigma2, sigma, acc_tol)
    R.assert_close("y", want_y2, y, tol)
    R.assert_close("y vs reference", want_y, y, 2 * tol)
    dy = R.make_torch(w.shape, dtype, 24, 1.0, 0.0)
    dw = nkF.spectral_norm_backward(dy, w, u, v, sigma, dim)
    assert dw.dtype == w.dtype and dw.shape == w.shape
    rdw, scale = ref_backward(dy, w, u, v, float(sigma), d)
    R.assert_close("dw", rdw, dw, tol, scale)


@pytest.mark.parametrize("dtype", R.NUMPY_DTYPES)
@pytest.mark.parametrize("dim", (0, 2), ids=lambda d: f"dim{d}")
def test_numpy_functional_strided_views(dim, dtype):
    w = R.make_numpy((6, 8, 5), dtype, 31)
    w = np.ascontiguousarray(w.transpose(2, 0, 1)).transpose(1, 2, 0)  # a strided view
    assert not w.flags.c_contiguous
    H = w.shape[dim]
    u = ref_normalize(R.random_f64((H,), 32), 1e-12).astype(dtype)
    v = ref_normalize(R.random_f64((w.size // H,), 33), 1e-12).astype(dtype)
    u0, v0 = u.copy(), v.copy()
    snap = R.snapshot(w)
    y = nkF.spectral_norm(w, u, v, 1, 1e-12, dim)
    R.assert_unchanged([w], snap)
    assert isinstance(y, np.ndarray) and y.flags.c_contiguous and y.dtype == w.dtype
    want_y, _, ru, rv = ref_forward(w, u0, v0, 1, 1e-12, dim, dtype=dtype)
    tol = R.TOL[dtype]
    R.assert_close("u", ru, u, tol, 1.0 / np.sqrt(H))
    R.assert_close("v", rv, v, tol, 1.0 / np.sqrt(v.size))
    R.assert_close("y", ref_forward(w, u, v, 1, 1e-12, dim, training=False)[0], y, tol)
    # the power iteration alone
    u2, v2 = u0.copy(), v0.copy()
    assert nkF.spectral_norm_power_iteration(w, u2, v2, 1, 1e-12, dim) == (u2, v2)
    R.assert_bitwise_equal("u (power iteration only)", u, u2)
    R.assert_bitwise_equal("v (power iteration only)", v, v2)


def test_matches_torch_on_a_large_linear_weight():
    """[1024, 512]: many row blocks in W^T u, lane sums over long rows."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(512, 1024)
    ref, nk = copy.deepcopy(lin), copy.deepcopy(lin)
    torch.manual_seed(1)
    P.spectral_norm(ref)
    torch.manual_seed(1)
    nkt.spectral_norm(nk)
    for _ in range(3):
        w_ref, w = ref.weight, nk.weight
        R.assert_close("weight", w_ref.detach(), w.detach(), 1e-5, w_ref.detach().abs().max().item())
    R.assert_close("_u", sn_of(ref)._u, sn_of(nk)._u, 1e-5, sn_of(ref)._u.abs().max().item())
    R.assert_close("_v", sn_of(ref)._v, sn_of(nk)._v, 1e-5, sn_of(ref)._v.abs().max().item())


# ---- NumPy layer ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", (0, 1), ids=lambda d: f"dim{d}")
def test_numpy_class(dim):
    weight = R.make_numpy((6, 4, 3, 3), "float64", 41)
    layer = nknp.SpectralNorm(weight, n_power_iterations=2, dim=dim, seed=3)
    assert set(layer.state_dict()) == {"original", "_u", "_v"}
    assert layer._u.shape == (weight.shape[dim],) and layer._v.shape == (weight.size // weight.shape[dim],)
    # initialised with 15 steps from its random vectors: u and v are (nearly) the top singular pair
    W = ref_matrix(weight, dim)
    s = np.linalg.svd(W, compute_uv=False)
    assert abs(float(layer._u @ W @ layer._v) - s[0]) < 1e-3 * s[0]
    u0, v0 = layer._u.copy(), layer._v.copy()
    y = layer(None)
    want, sigma, ru, rv = ref_forward(weight, u0, v0, 2, 1e-12, dim)
    R.assert_close("y", want, y, 1e-12)
    R.assert_close("u", ru, layer._u, 1e-12)
    dw = R.make_numpy(weight.shape, "float64", 42)
    assert layer.backward(dw) is None
    rdw, scale = ref_backward(dw, weight, ru, rv, sigma, dim)
    R.assert_close("grad", rdw, layer.grads["original"], 1e-12, scale)
    # eval: stored vectors, no update
    layer.eval()
    u1 = layer._u.copy()
    R.assert_close("eval y", ref_forward(weight, u1, layer._v, 1, 1e-12, dim, False)[0], layer.weight, 1e-12)
    np.testing.assert_array_equal(u1, layer._u)


def test_numpy_class_state_dict_moves_to_torch_and_back():
    conv = make_module("conv", 43)
    layer = nknp.SpectralNorm(conv.weight.detach().numpy(), seed=1)
    layer(None)
    tm = P.spectral_norm(copy.deepcopy(conv))
    sd = layer.state_dict()
    tm.load_state_dict({"bias": conv.bias.detach(),
                        "parametrizations.weight.original": torch.from_numpy(sd["original"]),
                        "parametrizations.weight.0._u": torch.from_numpy(sd["_u"]),
                        "parametrizations.weight.0._v": torch.from_numpy(sd["_v"])})
    tm.eval()
    layer.eval()
    R.assert_close("weight", tm.weight.detach(), layer.weight, 1e-12)
    tm.train()
    _ = tm.weight  # one torch step
    back = nknp.SpectralNorm(conv.weight.detach().numpy(), seed=2)
    tsd = tm.state_dict()
    back.load_state_dict({"original": tsd["parametrizations.weight.original"],
                          "_u": tsd["parametrizations.weight.0._u"], "_v": tsd["parametrizations.weight.0._v"]})
    np.testing.assert_array_equal(back._u, tsd["parametrizations.weight.0._u"].numpy())
    tm.eval()
    back.eval()
    R.assert_close("weight back", tm.weight.detach(), back.weight, 1e-12)


# ---- bad inputs --------------------------------------------------------------------------------------


def test_bad_inputs_functional():
    w = R.make_numpy((4, 3), "float32", 1)
    u = ref_normalize(R.random_f64((4,), 2), 1e-12).astype(np.float32)
    v = ref_normalize(R.random_f64((3,), 3), 1e-12).astype(np.float32)
    snap = R.snapshot(u, v)
    with pytest.raises(ValueError, match=r"n_power_iterations: expected a positive number, got 0"):
        nkF.spectral_norm(w, u, v, 0)
    with pytest.raises(ValueError, match=r"n_power_iterations: expected a positive number, got -2"):
        nkF.spectral_norm(w, u, v, -2)
    with pytest.raises(ValueError, match=r"dim: expected a dimension in \[-2, 1\] for w of shape \[4, 3\], got 2"):
        nkF.spectral_norm(w, u, v, dim=2)
    with pytest.raises(ValueError, match=r"dim: expected a dimension in \[-2, 1\].*got -3"):
        nkF.spectral_norm(w, u, v, dim=-3)
    with pytest.raises(ValueError, match=r"u: expected shape \[3\].*got \[4\]"):
        nkF.spectral_norm(w, u, v, dim=1)
    with pytest.raises(ValueError, match=r"v: expected shape \[3\].*got \[4\]"):
        nkF.spectral_norm(w, u, u)
    with pytest.raises(TypeError, match=r"u: expected dtype float32, got float64"):
        nkF.spectral_norm(w, u.astype(np.float64), v)
    with pytest.raises(ValueError, match=r"u: expected a contiguous array \(updated in place\)"):
        nkF.spectral_norm(w, np.repeat(u, 2)[::2], v)
    with pytest.raises(ValueError, match=r"w: expected 2 or more dimensions .*got shape \[4\]"):
        nkF.spectral_norm(w[:, 0].copy(), u, v)
    with pytest.raises(ValueError, match=r"w: expected a non-empty weight"):
        nkF.spectral_norm(np.empty((0, 3), np.float32), u[:0].copy(), v)
    with pytest.raises(ValueError, match=r"eps: expected a finite number >= 0"):
        nkF.spectral_norm(w, u, v, eps=-1.0)
    with pytest.raises(TypeError):
        nkF.spectral_norm(w.astype(np.int32), u.astype(np.int32), v.astype(np.int32))
    R.assert_unchanged([u, v], snap)


@pytest.mark.parametrize("training", (True, False))
def test_zero_weight_is_a_clear_error(training):
    w = np.zeros((4, 3), np.float64)
    u = ref_normalize(R.random_f64((4,), 2), 1e-12)
    v = ref_normalize(R.random_f64((3,), 3), 1e-12)
    snap = R.snapshot(u, v)
    with pytest.raises(ValueError, match=r"w: expected a weight with a nonzero, finite spectral norm, got sigma = "
                                         r"u\^T W v = 0 for w of shape \[4, 3\] \(an all-zero weight"):
        nkF.spectral_norm(w, u, v, training=training)
    with pytest.raises(ValueError, match=r"sigma = u\^T W v = nan .*non-finite"):
        nkF.spectral_norm(np.full((4, 3), np.nan), u, v, training=training)
    R.assert_unchanged([u, v], snap)  # nothing written by a rejected call
    with pytest.raises(ValueError, match="nonzero, finite spectral norm"):
        nknp.SpectralNorm(w)
    # check_sigma=False: torch's arithmetic (0 / 0)
    y, sigma = nkF.spectral_norm_forward(w, u, v, training=training, check_sigma=False)
    assert float(sigma) == 0 and np.isnan(y).all()


def test_zero_weight_in_the_torch_twin_is_like_torch():
    ref, nk = twins("linear", 3)
    for m in (ref, nk):
        with torch.no_grad():
            m.parametrizations.weight.original.zero_()
    a, b = ref.weight, nk.weight
    assert torch.isnan(a).all() and torch.isnan(b).all()
    R.assert_bitwise_equal("_u", sn_of(ref)._u, sn_of(nk)._u)


def test_bad_inputs_modules():
    lin = make_module("linear", 1)
    with pytest.raises(ValueError, match="n_power_iterations"):
        nkt.spectral_norm(copy.deepcopy(lin), n_power_iterations=0)
    with pytest.raises(IndexError, match=r"Dimension out of range"):  # torch's own check and type
        nkt.spectral_norm(copy.deepcopy(lin), dim=2)
    with pytest.raises(ValueError, match="has no parameter or buffer with name 'nope'"):
        nkt.spectral_norm(copy.deepcopy(lin), name="nope")
    w = lin.weight.detach().numpy()
    with pytest.raises(ValueError, match=r"n_power_iterations: expected a positive number, got 0"):
        nknp.SpectralNorm(w, n_power_iterations=0)
    with pytest.raises(ValueError, match=r"dim: expected a dimension in \[-2, 1\] .*got 2"):
        nknp.SpectralNorm(w, dim=2)
    with pytest.raises(ValueError, match="2 or more dimensions"):
        nknp.SpectralNorm(w[0])
    with pytest.raises(TypeError, match="floating-point"):
        nknp.SpectralNorm(np.ones((3, 3), np.int64))
    with pytest.raises(RuntimeError, match="call forward first"):
        nknp.SpectralNorm(w).backward(np.ones_like(w))


# ---- determinism -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", (0, 1), ids=lambda d: f"dim{d}")
def test_one_vs_two_threads(dim):
    w = R.make_torch((300, 40, 3, 3), "float32", 12)
    H = w.shape[dim]
    dy = R.make_torch(w.shape, "float32", 13, 1.0, 0.0)
    results = []
    for threads in (1, 2):
        normkit.set_num_threads(threads)
        u = torch.nn.functional.normalize(R.make_torch((H,), "float32", 14), dim=0)
        v = torch.nn.functional.normalize(R.make_torch((w.numel() // H,), "float32", 15), dim=0)
        y, sigma = nkF.spectral_norm_forward(w, u, v, 3, 1e-12, dim)
        results.append((y, sigma, u, v, nkF.spectral_norm_backward(dy, w, u, v, sigma, dim)))
    for name, a, b in zip(("y", "sigma", "u", "v", "dw"), *results):
        R.assert_bitwise_equal(name, a.reshape(-1), b.reshape(-1))


# ---- CUDA --------------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not (normkit.cuda_available() and torch.cuda.is_available()),
                                reason="needs a CUDA device")


@needs_cuda
@pytest.mark.parametrize("dtype", R.DTYPES)
@pytest.mark.parametrize("dim", (0, 1, -1), ids=lambda d: f"dim{d}")
@pytest.mark.parametrize("training", (True, False))
def test_cuda_matches_reference(training, dim, dtype):
    w = R.make_torch((70, 33, 3), dtype, 14)
    d = dim % 3
    H = w.shape[d]
    u0 = torch.nn.functional.normalize(R.make_torch((H,), "float64", 15), dim=0).to(w.dtype)
    v0 = torch.nn.functional.normalize(R.make_torch((w.numel() // H,), "float64", 16), dim=0).to(w.dtype)
    u, v = u0.cuda(), v0.cuda()
    y, sigma = nkF.spectral_norm_forward(w.cuda(), u, v, 2, 1e-12, dim, training)
    tol = R.TOL[dtype]
    want_y, _, ru, rv = ref_forward(w, u0, v0, 2, 1e-12, d, training, dtype=dtype)
    R.assert_close("u", ru, u.cpu(), tol, 1.0 / np.sqrt(H))
    R.assert_close("v", rv, v.cpu(), tol, 1.0 / np.sqrt(v.numel()))
    want_y2, want_sigma2, _, _ = ref_forward(w, u.cpu(), v.cpu(), 1, 1e-12, d, training=False)
    R.assert_close("sigma", want_sigma2, sigma.cpu(), 1e-5 if dtype != "float64" else 1e-12)
    R.assert_close("y", want_y2, y.cpu(), tol)
    dy = R.make_torch(w.shape, dtype, 17, 1.0, 0.0)
    dw = nkF.spectral_norm_backward(dy.cuda(), w.cuda(), u, v, sigma, dim)
    rdw, scale = ref_backward(dy, w, u.cpu(), v.cpu(), float(sigma), d)
    R.assert_close("dw", rdw, dw.cpu(), tol, scale)
    with pytest.raises(ValueError, match="nonzero, finite spectral norm"):
        nkF.spectral_norm(torch.zeros_like(w).cuda(), u, v, 1, 1e-12, dim)


@needs_cuda
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_module_matches_torch(kind):
    ref, nk = twins(kind, 18)
    ref, nk = ref.cuda(), nk.cuda()
    for step in range(3):
        x = module_input(kind, step, "float64").cuda()
        y_ref, y = ref(x), nk(x)
        R.assert_close("y", y_ref.detach().cpu(), y.detach().cpu(), 1e-12, y_ref.abs().max().item())
        y_ref.sum().backward()
        y.sum().backward()
    g_ref = ref.parametrizations.weight.original.grad.cpu()
    R.assert_close("grad", g_ref, nk.parametrizations.weight.original.grad.cpu(), 1e-12, g_ref.abs().max().item())


# ---- torch's runtime behaviour past registration (found by a review against torch) -------------------


def test_twin_follows_torch_for_counts_set_after_registration():
    """torch checks n_power_iterations when registering only: 0 set afterwards runs no step (the stored
    vectors), True counts as 1."""
    for setting in (0, True):
        outs = []
        for f in (P.spectral_norm, nkt.spectral_norm):
            torch.manual_seed(0)
            m = f(torch.nn.Linear(4, 3))
            m.parametrizations.weight[0].n_power_iterations = setting
            outs.append((m(torch.ones(1, 4)).detach(), m.parametrizations.weight[0]._u.clone()))
        torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(outs[1][1], outs[0][1], rtol=1e-6, atol=1e-6)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_twin_takes_an_empty_weight_and_strided_vectors_in_eval():
    for f in (P.spectral_norm, nkt.spectral_norm):
        assert f(torch.nn.Linear(0, 3))(torch.ones(2, 0)).shape == (2, 3)
    outs = []
    for f in (P.spectral_norm, nkt.spectral_norm):
        torch.manual_seed(0)
        m = f(torch.nn.Linear(4, 3)).eval()
        m.parametrizations.weight[0]._u = torch.tensor(0.5).expand(3)  # stride 0: never written in eval
        outs.append(m(torch.ones(1, 4)).detach())
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-6, atol=1e-6)


def test_functional_eval_reads_read_only_vectors():
    w = R.make_numpy((4, 3), "float32", 1)
    u = ref_normalize(R.random_f64((4,), 2), 1e-12).astype(np.float32)
    v = ref_normalize(R.random_f64((3,), 3), 1e-12).astype(np.float32)
    want = nkF.spectral_norm(w, u.copy(), v.copy(), training=False)
    u.flags.writeable = v.flags.writeable = False
    np.testing.assert_array_equal(nkF.spectral_norm(w, u, v, training=False), want)
    with pytest.raises(ValueError, match="u: expected a writable array"):
        nkF.spectral_norm(w, u, v, training=True)
