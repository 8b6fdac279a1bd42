"""LocalResponseNorm: normkit.functional, normkit.numpy and normkit.torch against
torch.nn.functional.local_response_norm (+ autograd) and a float64 NumPy reference written from the
formula.

Reference (x = [N, C, *], window W(c) = [c - size // 2, c + (size - 1) // 2] clipped to [0, C)):
    s_c  = k + alpha / size * sum_{c' in W(c)} x_{c'}^2      (divided by size even at the edges)
    y_c  = x_c * s_c^-beta
    dx_j = dy_j s_j^-beta - (2 alpha beta / size) x_j * sum_{c : j in W(c)} dy_c x_c s_c^(-beta - 1)
(d s_c / d x_j = 2 alpha / size * x_j for j in W(c); j in W(c) <=> c in [j - (size - 1) // 2, j + size // 2]).

Tolerances. Every dtype computes in its accumulation type (float32 for half types) and rounds each
output once, so against the float64 answer for the same (rounded) inputs the error is at most about
half an ulp of the output dtype plus a few float32 ulps: R.TOL (2e-3 float16 > 2^-11, 1.6e-2 bfloat16
> 2^-8, 1e-5 float32 for the ~10 float32 roundings of the window sum and the power, 1e-12 float64),
relative to the value plus the magnitude of the terms combined (dx subtracts two terms of similar size).
"""

import normkit
import numpy as np
import pytest
import reference as R
import torch
import torch.nn.functional as TF
from normkit import functional as nkF
from normkit import numpy as nknp
from normkit import torch as nkt

ALPHA, K = 0.05, 0.8  # larger than torch's defaults so that the window actually matters

# (shape, size): C = 1, 2, 3, 7, 64; sizes odd and even, 1 .. 7, and size > C
CASES = [
    ((2, 1, 5), 1),
    ((2, 1, 5), 3),
    ((3, 2, 6), 2),
    ((2, 2, 4, 3), 5),
    ((2, 3, 4, 5), 3),
    ((2, 3, 4, 5), 4),
    ((3, 7, 11), 6),
    ((2, 7, 3, 4), 7),
    ((1, 7, 3, 2, 2), 5),
    ((2, 3, 2, 3, 2), 2),
    ((2, 64, 3, 3), 5),
    ((1, 64, 5, 2), 2),
]


def case_id(case):
    shape, size = case
    return "x".join(map(str, shape)) + f"-size{size}"


# ---- the float64 reference ------------------------------------------------------------------------


def _windows(C, size):
    return [(max(0, c - size // 2), min(C - 1, c + (size - 1) // 2)) for c in range(C)]


def _twindows(C, size):
    return [(max(0, j - (size - 1) // 2), min(C - 1, j + size // 2)) for j in range(C)]


def _window_sum(v, wins):
    return np.stack([v[:, lo:hi + 1].sum(axis=1) for lo, hi in wins], axis=1)


def ref_scale(x, size, alpha, k):
    x = R.to_f64(x)
    return k + alpha / size * _window_sum(x * x, _windows(x.shape[1], size))


def ref_forward(x, size, alpha=1e-4, beta=0.75, k=1.0):
    x = R.to_f64(x)
    return x * ref_scale(x, size, alpha, k) ** -beta


def ref_backward(dy, x, size, alpha=1e-4, beta=0.75, k=1.0):
    """(dx, scale): dx from the closed form; scale the magnitude of its terms (for assert_close)."""
    x, dy = R.to_f64(x), R.to_f64(dy)
    s = ref_scale(x, size, alpha, k)
    t = dy * x * s ** (-beta - 1)
    wins = _twindows(x.shape[1], size)
    coef = 2 * alpha * beta / size
    first = dy * s**-beta
    dx = first - coef * x * _window_sum(t, wins)
    return dx, np.abs(first) + coef * np.abs(x) * _window_sum(np.abs(t), wins)


def channels_last(t):
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}[t.dim()]
    return t.contiguous(memory_format=fmt)


def is_channels_last(t):
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim())
    return fmt is not None and t.is_contiguous(memory_format=fmt) and not t.is_contiguous()


def make_inputs(shape, dtype, seed, cl=False):
    x = R.make_torch(shape, dtype, seed)
    dy = R.make_torch(shape, dtype, seed + 1, 1.0, 0.0)
    if cl:
        x, dy = channels_last(x), channels_last(dy)
    return x, dy


# ---- the reference itself ---------------------------------------------------------------------------


@pytest.mark.parametrize("beta", (0.75, 0.5, 1.3))
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_reference_matches_torch_autograd(case, beta):
    shape, size = case
    x, dy = make_inputs(shape, "float64", 11)
    xg = x.clone().requires_grad_(True)
    y = TF.local_response_norm(xg, size, ALPHA, beta, K)
    (dx,) = torch.autograd.grad(y, xg, dy)
    R.assert_close("ref y", ref_forward(x, size, ALPHA, beta, K), y, 1e-12)
    dx_ref, scale = ref_backward(dy, x, size, ALPHA, beta, K)
    R.assert_close("ref dx", dx_ref, dx, 1e-12, scale)


# ---- the main matrix ----------------------------------------------------------------------------------


# every case channels-first, and the 4-D/5-D ones channels-last too
LAYOUT_CASES = [pytest.param(c, "nchw", id=case_id(c) + "-nchw") for c in CASES] + [
    pytest.param(c, "channels_last", id=case_id(c) + "-channels_last") for c in CASES if len(c[0]) >= 4
]


@pytest.mark.parametrize("beta", (0.75, 0.5, 1.3))
@pytest.mark.parametrize("dtype", R.DTYPES)
@pytest.mark.parametrize("case, layout", LAYOUT_CASES)
def test_forward_backward(case, layout, dtype, beta):
    shape, size = case
    cl = layout == "channels_last"
    x, dy = make_inputs(shape, dtype, 100 + sum(shape) + size, cl)
    tol = R.TOL[dtype]

    # functional
    y = nkF.local_response_norm(x, size, ALPHA, beta, K)
    dx = nkF.local_response_norm_backward(dy, x, size, ALPHA, beta, K)
    for name, out in (("y", y), ("dx", dx)):
        assert out.dtype == x.dtype and out.shape == x.shape, name
        assert is_channels_last(out) == is_channels_last(x), f"{name}: memory format does not follow x"
    yr = ref_forward(x, size, ALPHA, beta, K)
    dxr, scale = ref_backward(dy, x, size, ALPHA, beta, K)
    R.assert_close("y", y, yr, tol, np.abs(yr))
    R.assert_close("dx", dx, dxr, tol, scale)

    # torch itself, in float64 on the same rounded inputs (and in the dtype for float32/float64)
    xt = x.to(torch.float64, copy=True).requires_grad_(True)
    yt = TF.local_response_norm(xt, size, ALPHA, beta, K)
    (dxt,) = torch.autograd.grad(yt, xt, dy.double())
    R.assert_close("y vs torch", y, yt.detach(), tol, np.abs(yr))
    R.assert_close("dx vs torch", dx, dxt, tol, scale)
    if dtype in ("float32", "float64"):
        R.assert_close("y vs torch " + dtype, y, TF.local_response_norm(x, size, ALPHA, beta, K), 2 * tol,
                       np.abs(yr))

    # normkit.torch through autograd: the same numbers as the functional form
    xa = x.clone(memory_format=torch.preserve_format).requires_grad_(True)
    ya = nkt.functional.local_response_norm(xa, size, ALPHA, beta, K)
    ya.backward(dy)
    R.assert_bitwise_equal("autograd y", ya.detach(), y)
    R.assert_bitwise_equal("autograd dx", xa.grad, dx)


@pytest.mark.parametrize("size", (1, 2, 5))
@pytest.mark.parametrize("dtype", R.DTYPES)
def test_layouts_agree(dtype, size):
    """Channels-first and channels-last inputs compute the same function (to rounding)."""
    x, dy = make_inputs((2, 9, 5, 6), dtype, 7)
    y = nkF.local_response_norm(x, size)
    y_cl = nkF.local_response_norm(channels_last(x), size)
    dx = nkF.local_response_norm_backward(dy, x, size)
    dx_cl = nkF.local_response_norm_backward(channels_last(dy), channels_last(x), size)
    tol = R.TOL[dtype]
    R.assert_close("y", y_cl, y, tol, np.abs(R.to_f64(y)))
    R.assert_close("dx", dx_cl, dx, tol, ref_backward(dy, x, size)[1])


def test_strided_views_are_copied():
    """Views compact in neither layout (a slice, a permutation) are read through a compact copy."""
    base, dyb = make_inputs((2, 5, 8, 6), "float32", 3)
    for x, dy in ((base[:, :, ::2], dyb[:, :, ::2]), (base.permute(0, 1, 3, 2), dyb.permute(0, 1, 3, 2)),
                  (base.transpose(0, 2)[:, :, :2], dyb.transpose(0, 2)[:, :, :2])):
        snap = R.snapshot(x, dy)
        y = nkF.local_response_norm(x, 3, ALPHA, 0.75, K)
        dx = nkF.local_response_norm_backward(dy, x, 3, ALPHA, 0.75, K)
        R.assert_unchanged((x, dy), snap)
        R.assert_close("y", y, ref_forward(x, 3, ALPHA, 0.75, K), R.TOL["float32"], 1.0)
        dxr, scale = ref_backward(dy, x, 3, ALPHA, 0.75, K)
        R.assert_close("dx", dx, dxr, R.TOL["float32"], scale)


def test_defaults_match_torch():
    x, dy = make_inputs((2, 6, 4, 4), "float64", 5)
    xg = x.clone().requires_grad_(True)
    yt = TF.local_response_norm(xg, 3)
    (dxt,) = torch.autograd.grad(yt, xg, dy)
    R.assert_close("y", nkF.local_response_norm(x, 3), yt.detach(), 1e-12)
    R.assert_close("dx", nkF.local_response_norm_backward(dy, x, 3), dxt, 1e-12, ref_backward(dy, x, 3)[1])


@pytest.mark.parametrize("beta", (0.75, 1.3))
@pytest.mark.parametrize("cl", (False, True), ids=("nchw", "channels_last"))
def test_gradcheck(cl, beta):
    x = R.make_torch((2, 5, 3, 2), "float64", 17)
    if cl:
        x = channels_last(x)
    x.requires_grad_(True)
    for size in (2, 3):
        assert torch.autograd.gradcheck(
            lambda t, size=size: nkt.functional.local_response_norm(t, size, 0.3, beta, 0.7), (x,)
        )


def test_nan_propagates_like_torch():
    x = R.make_torch((2, 6, 3), "float32", 21)
    x[0, 2, 1] = float("nan")
    y = nkF.local_response_norm(x, 3, ALPHA, 0.75, K)
    yt = TF.local_response_norm(x, 3, ALPHA, 0.75, K)
    assert torch.equal(torch.isnan(y), torch.isnan(yt))
    assert torch.isnan(y[0, 1:4, 1]).all() and not torch.isnan(y[0, 0]).any() and not torch.isnan(y[1]).any()
    dx = nkF.local_response_norm_backward(torch.ones_like(x), x, 3, ALPHA, 0.75, K)
    assert torch.isnan(dx[0, 2, 1]) and not torch.isnan(dx[1]).any()


@pytest.mark.parametrize("shape", ((0, 3, 4), (2, 0, 4), (2, 3, 0), (2, 3, 0, 5)))
def test_empty(shape):
    x = torch.empty(shape)
    y = nkF.local_response_norm(x, 3)
    dx = nkF.local_response_norm_backward(x, x, 3)
    assert y.shape == x.shape and dx.shape == x.shape
    assert nkF.local_response_norm(np.empty(shape, np.float32), 3).shape == shape


# ---- NumPy -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", R.NUMPY_DTYPES)
def test_numpy_functional_and_class(dtype):
    x = R.make_numpy((2, 7, 4, 3), dtype, 31)
    dy = R.make_numpy((2, 7, 4, 3), dtype, 32, 1.0, 0.0)
    layer = nknp.LocalResponseNorm(4, alpha=ALPHA, beta=1.3, k=K)
    assert layer.parameters() == {} and layer.state_dict() == {}
    with pytest.raises(RuntimeError):
        layer.backward(dy)
    y = layer(x)
    dx = layer.backward(dy)
    assert isinstance(y, np.ndarray) and y.dtype == x.dtype and isinstance(dx, np.ndarray) and dx.dtype == x.dtype
    assert layer.grads == {}
    tol = R.TOL[dtype]
    yr = ref_forward(x, 4, ALPHA, 1.3, K)
    R.assert_close("y", y, yr, tol, np.abs(yr))
    dxr, scale = ref_backward(dy, x, 4, ALPHA, 1.3, K)
    R.assert_close("dx", dx, dxr, tol, scale)
    np.testing.assert_array_equal(y, nkF.local_response_norm(x, 4, ALPHA, 1.3, K))
    assert "LocalResponseNorm" in nknp.__all__ and "LocalResponseNorm(4" in repr(layer)


# ---- the torch twin ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cl", (False, True), ids=("nchw", "channels_last"))
@pytest.mark.parametrize("dtype", ("float32", "float64"))
def test_module_twin(dtype, cl):
    ref = torch.nn.LocalResponseNorm(5, alpha=ALPHA, beta=0.75, k=K)
    twin = nkt.LocalResponseNorm(5, alpha=ALPHA, beta=0.75, k=K)
    assert isinstance(twin, torch.nn.LocalResponseNorm)
    assert repr(twin) == repr(ref) and twin.state_dict() == {} == ref.state_dict()
    x, dy = make_inputs((2, 8, 5, 4), dtype, 41, cl)
    xa = x.clone(memory_format=torch.preserve_format).requires_grad_(True)
    xb = x.clone(memory_format=torch.preserve_format).requires_grad_(True)
    ya, yb = twin(xa), ref(xb)
    ya.backward(dy)
    yb.backward(dy)
    tol = 2 * R.TOL[dtype]
    R.assert_close("y", ya.detach(), yb.detach(), tol, 1.0)
    R.assert_close("dx", xa.grad, xb.grad, tol, ref_backward(dy, x, 5, ALPHA, 0.75, K)[1])
    assert is_channels_last(ya) == cl and is_channels_last(xa.grad) == cl
    with torch.no_grad():  # the no-grad bypass: no autograd node
        assert twin(xa).grad_fn is None


def test_convert_model():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.LocalResponseNorm(3, alpha=ALPHA, k=K),
                                torch.nn.ReLU())
    x = R.make_torch((2, 3, 9, 9), "float32", 51)
    expected = model(x)
    report = []
    nkt.convert_model(model, report)
    assert type(model[1]) is nkt.LocalResponseNorm
    assert report == [("1", "LocalResponseNorm", "LocalResponseNorm")]
    assert (model[1].size, model[1].alpha, model[1].beta, model[1].k) == (3, ALPHA, 0.75, K)
    R.assert_close("y", model(x).detach(), expected.detach(), 2e-5, 1.0)
    assert nkt.convert.TWINS[torch.nn.LocalResponseNorm] is nkt.LocalResponseNorm


# ---- errors ----------------------------------------------------------------------------------------------


_INT_MESSAGE = "expected dtype float16, bfloat16, float32 or float64, got int"


@pytest.mark.parametrize(
    "make, size, exc, message",
    [
        (lambda: torch.randn(2, 3, 4), 0, ValueError, "size: expected an integer >= 1, got 0"),
        (lambda: torch.randn(2, 3, 4), -2, ValueError, "size"),
        (lambda: torch.randn(2, 3), 3, ValueError, "x: expected 3 or more dimensions [N, C, *], got shape [2, 3]"),
        (lambda: torch.ones(2, 3, 4, dtype=torch.int32), 3, TypeError, _INT_MESSAGE),
        (lambda: np.ones((2, 3, 4), np.int64), 3, TypeError, _INT_MESSAGE),
        (lambda: torch.randn(2, 3, 4), 2.5, TypeError, "size: expected an int, got float 2.5"),
        (lambda: torch.randn(2, 3, 4), True, TypeError, "size: expected an int, got bool True"),
    ],
    ids=("size0", "size-negative", "rank2", "int-torch", "int-numpy", "size-float", "size-bool"),
)
def test_bad_inputs(make, size, exc, message):
    x = make()
    snap = R.snapshot(x)
    with pytest.raises(exc) as info:
        nkF.local_response_norm(x, size)
    assert message in str(info.value)
    assert str(info.value).startswith("size: " if "size" in message else "x: ")
    with pytest.raises(exc) as info:
        nkF.local_response_norm_backward(x, x, size)
    assert message in str(info.value)
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        xg = x.clone().requires_grad_(True)
        with pytest.raises(exc):
            nkt.functional.local_response_norm(xg, size)
    R.assert_unchanged((x,), snap)


def test_bad_dy_shape():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"dy: expected shape \[2, 3, 4\]"):
        nkF.local_response_norm_backward(torch.randn(2, 3, 5), x, 3)
    with pytest.raises(TypeError, match="dy: expected dtype float32"):
        nkF.local_response_norm_backward(x.double(), x, 3)


# ---- determinism ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cl", (False, True), ids=("nchw", "channels_last"))
@pytest.mark.parametrize("dtype", ("float32", "bfloat16"))
def test_thread_count_determinism(dtype, cl):
    x, dy = make_inputs((4, 64, 24, 20), dtype, 61, cl)
    results = []
    for threads in (1, 2, 2):
        normkit.set_num_threads(threads)
        results.append((nkF.local_response_norm(x, 5, ALPHA, 0.75, K),
                        nkF.local_response_norm_backward(dy, x, 5, ALPHA, 1.3, K)))
    for y, dx in results[1:]:
        R.assert_bitwise_equal("y", y, results[0][0])
        R.assert_bitwise_equal("dx", dx, results[0][1])


@pytest.mark.parametrize("beta", (0.75, 1.3))
@pytest.mark.parametrize("dtype", ("float32", "float64", "bfloat16"))
def test_window_sums_same_in_register_tile_and_remainder(dtype, beta):
    # Channels first, the window sums of a tile of positions stay in registers and the positions
    # past the last whole tile (64 for float accumulation, 32 for float64) take a scalar loop; both
    # must add the same terms in the same order. Position `tail` (past the tile) gets the column of
    # channels of position 0 (in it), so y and dx must be bitwise equal between the two.
    tile = 32 if dtype == "float64" else 64
    tail = tile + 1
    x = R.make_torch((2, 9, tail + 1), dtype, 71, 3.0, 0.5)
    dy = R.make_torch((2, 9, tail + 1), dtype, 72, 1.0, 0.0)
    x[:, :, tail], dy[:, :, tail] = x[:, :, 0], dy[:, :, 0]
    y = nkF.local_response_norm(x, 5, ALPHA, beta, K)
    dx = nkF.local_response_norm_backward(dy, x, 5, ALPHA, beta, K)
    R.assert_bitwise_equal(f"y: position {tail} vs 0", y[:, :, tail], y[:, :, 0])
    R.assert_bitwise_equal(f"dx: position {tail} vs 0", dx[:, :, tail], dx[:, :, 0])
