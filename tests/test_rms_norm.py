"""normkit.functional RMSNorm: forward, analytic backward and the default eps, against the float64
references (tests/reference.py) and against torch.nn.functional.rms_norm + autograd."""

import os

import numpy as np
import pytest
import reference as R
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from normkit import functional as nkF
from strided_rows import strided_layouts, torch_row_views, x_and_dy

HALF = ("float16", "bfloat16")
# small and fast by default; NORMKIT_HYPOTHESIS_EXAMPLES=2000 for a long randomized local search
HYPOTHESIS_EXAMPLES = int(os.environ.get("NORMKIT_HYPOTHESIS_EXAMPLES", "40"))

ROW_SIZES = (1, 2, 3, 7, 31, 64, 100, 1000, 1024, 4097, 8192)
SHAPES = [
    ((5, 1), (1,)),  # rows of a single element: y == sign(x) * w (almost)
    ((1, 1), (1,)),
    ((7,), (7,)),  # one row, 0-d rstd
    *[((3, n), (n,)) for n in ROW_SIZES],
    ((17, 129), (129,)),
    ((300, 257), (257,)),
    ((2, 3, 5), (5,)),
    ((2, 3, 5), (3, 5)),
    ((3, 4, 33), (4, 33)),
    ((2, 3, 4, 5), (4, 5)),
    ((2, 3, 4, 5), (3, 4, 5)),
    ((2, 3, 4, 5), (2, 3, 4, 5)),
]


def shape_id(case):
    xs, ns = case
    return "x" + "x".join(map(str, xs)) + "-ns" + "x".join(map(str, ns))


def ref_eps(eps, dtype):
    return R.default_rms_eps(dtype) if eps is None else eps


def make_weight(ns, dtype, with_weight, seed, lib="torch"):
    if not with_weight:
        return None
    make = R.make_torch if lib == "torch" else R.make_numpy
    return make(ns, dtype, seed + 1, 0.7, 1.0)


def check_against_reference(x, ns, w, eps, dy, y, rstd, dx, dw, tol=None, tag=""):
    dtype = R.dtype_name(x)
    e = ref_eps(eps, dtype)
    tol = R.TOL[dtype] if tol is None else tol
    yr, rr = R.rms_norm_forward(x, ns, w, e)
    R.assert_close(tag + "y", y, yr, tol, np.abs(yr).max(initial=0.0))
    if rstd is not None:
        R.assert_close(tag + "rstd", rstd, rr, R.TOL[R.ACC_DTYPE[dtype]], 0.0)
    if dy is None:
        return
    dxr, dwr = R.rms_norm_backward(dy, x, ns, w, e)
    if dx is not None:
        R.assert_close(tag + "dx", dx, dxr, tol, R.dx_scale(dy, x, ns, w, rr))
    if dw is not None:
        R.assert_close(tag + "dweight", dw, dwr, tol, R.dweight_scale(dy, x, ns, R.rms_norm_xhat(x, ns, e)))


# ----------------------------------------------------------------------------------------------------
# The main matrix
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", (None, 1e-6))
@pytest.mark.parametrize("with_weight", (True, False), ids=("weight", "no-weight"))
@pytest.mark.parametrize("dtype", R.DTYPES)
@pytest.mark.parametrize("case", SHAPES, ids=shape_id)
def test_forward_backward_vs_reference_and_torch(case, dtype, with_weight, eps):
    x_shape, ns = case
    seed = 2000 + len(x_shape) * 7 + sum(x_shape)
    x = R.make_torch(x_shape, dtype, seed)
    w = make_weight(ns, dtype, with_weight, seed)
    dy = R.make_torch(x_shape, dtype, seed + 3, 1.0, 0.0)
    snap = R.snapshot(x, w, dy)

    y, rstd = nkF.rms_norm_forward(x, ns, w, eps)
    lead = tuple(x_shape[: len(x_shape) - len(ns)])
    assert isinstance(y, torch.Tensor) and y.dtype == x.dtype and tuple(y.shape) == x_shape and y.is_contiguous()
    assert isinstance(rstd, torch.Tensor) and tuple(rstd.shape) == lead
    assert rstd.dtype == (torch.float64 if dtype == "float64" else torch.float32)
    R.assert_bitwise_equal("rms_norm vs rms_norm_forward", nkF.rms_norm(x, ns, w, eps), y)

    dx, dw = nkF.rms_norm_backward(dy, x, ns, rstd, w, (True, True))
    assert isinstance(dx, torch.Tensor) and dx.dtype == x.dtype and tuple(dx.shape) == x_shape
    if w is None:
        assert dw is None
    else:
        assert dw.dtype == w.dtype and tuple(dw.shape) == ns
    R.assert_unchanged((x, w, dy), snap)

    check_against_reference(x, ns, w, eps, dy, y, rstd, dx, dw)

    # torch (float32 on the same rounded inputs for the half dtypes, see test_layer_norm.py)
    cdt = torch.float32 if dtype in HALF else x.dtype
    xt = x.to(cdt).requires_grad_()
    wt = None if w is None else w.to(cdt).requires_grad_()
    yt = F.rms_norm(xt, ns, wt, eps)
    yt.backward(dy.to(cdt))
    tol = R.TOL[dtype]
    _, rr = R.rms_norm_forward(x, ns, w, ref_eps(eps, dtype))
    R.assert_close("y vs torch", y, yt, tol, yt.abs().max().item())
    R.assert_close("dx vs torch", dx, xt.grad, tol, R.dx_scale(dy, x, ns, w, rr))
    if w is not None:
        xhat = R.rms_norm_xhat(x, ns, ref_eps(eps, dtype))
        R.assert_close("dweight vs torch", dw, wt.grad, tol, R.dweight_scale(dy, x, ns, xhat))
    if dtype in HALF:
        y_native = F.rms_norm(x, ns, w, eps)
        R.assert_close("y vs torch (native half)", y, y_native, tol, y_native.abs().max().item())


@pytest.mark.parametrize("with_weight", (True, False))
@pytest.mark.parametrize("dtype", R.NUMPY_DTYPES)
@pytest.mark.parametrize(
    "case", [((4, 1), (1,)), ((5, 100), (100,)), ((2, 3, 4, 5), (4, 5)), ((9,), (9,))], ids=shape_id
)
def test_numpy_in_numpy_out(case, dtype, with_weight):
    x_shape, ns = case
    x = R.make_numpy(x_shape, dtype, 7)
    w = make_weight(ns, dtype, with_weight, 7, lib="numpy")
    dy = R.make_numpy(x_shape, dtype, 8, 1.0, 0.0)
    snap = R.snapshot(x, w, dy)
    y, rstd = nkF.rms_norm_forward(x, ns, w)
    assert type(y) is np.ndarray and y.dtype == x.dtype and y.shape == x_shape and y.flags.c_contiguous
    lead = x_shape[: len(x_shape) - len(ns)]
    assert isinstance(rstd, np.ndarray) and rstd.shape == lead
    assert rstd.dtype == (np.float64 if dtype == "float64" else np.float32)
    y2 = nkF.rms_norm(x, ns, w)
    assert type(y2) is np.ndarray
    R.assert_bitwise_equal("rms_norm vs rms_norm_forward", y2, y)
    dx, dw = nkF.rms_norm_backward(dy, x, ns, rstd, w)
    assert type(dx) is np.ndarray and dx.dtype == x.dtype and dx.shape == x_shape
    if w is None:
        assert dw is None
    else:
        assert type(dw) is np.ndarray and dw.dtype == w.dtype and dw.shape == ns
    R.assert_unchanged((x, w, dy), snap)
    check_against_reference(x, ns, w, None, dy, y, rstd, dx, dw)


@pytest.mark.parametrize("with_weight", (True, False))
@pytest.mark.parametrize("mask", [(a, b) for a in (True, False) for b in (True, False)])
def test_backward_output_mask(mask, with_weight):
    x = R.make_torch((6, 50), "float32", 11)
    dy = R.make_torch((6, 50), "float32", 12, 1.0, 0.0)
    w = R.make_torch((50,), "float32", 13, 0.5, 1.0) if with_weight else None
    _, rstd = nkF.rms_norm_forward(x, (50,), w)
    full = nkF.rms_norm_backward(dy, x, (50,), rstd, w, (True, True))
    part = nkF.rms_norm_backward(dy, x, (50,), rstd, w, mask)
    assert len(part) == 2
    for name, want, f, p in zip(("dx", "dweight"), (mask[0], mask[1] and with_weight), full, part):
        if not want:
            assert p is None, f"{name} should be None for output_mask={mask}, weight={with_weight}"
        else:
            R.assert_close(f"{name} (masked) vs full", p, f, R.TOL["float32"], np.abs(R.to_f64(f)).max())


# ----------------------------------------------------------------------------------------------------
# eps: the default (None) is the accumulation dtype's machine epsilon, as in torch
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", R.DTYPES)
def test_default_eps_is_accumulation_machine_epsilon(dtype):
    # Rows whose mean square is comparable to the default eps, so the eps value changes y by O(1):
    # float32 eps ~1.19e-7 -> |x| ~ 3e-4; float64 eps ~2.2e-16 -> |x| ~ 1.5e-8. float16 cannot hold
    # 3e-4 accurately (subnormal spacing 6e-8 ~ 2e-4 relative, fine) nor bfloat16 (8 bits, fine).
    mag = 1.5e-8 if dtype == "float64" else 3e-4
    x = R.make_torch((6, 40), dtype, 101, mag, 0.0)
    w = R.make_torch((40,), dtype, 102, 0.3, 1.0)
    y_default = nkF.rms_norm(x, (40,), w)
    y_none = nkF.rms_norm(x, (40,), w, None)
    y_explicit = nkF.rms_norm(x, (40,), w, R.default_rms_eps(dtype))
    R.assert_bitwise_equal("eps omitted vs eps=None", y_default, y_none)
    R.assert_bitwise_equal("eps=None vs explicit machine epsilon", y_none, y_explicit)
    tol = R.TOL[dtype]
    yr, _ = R.rms_norm_forward(x, (40,), w, R.default_rms_eps(dtype))
    R.assert_close("y (default eps) vs reference", y_none, yr, tol, np.abs(yr).max())
    # and that is what torch does with eps=None
    y_torch = F.rms_norm(
        x.to(torch.float32 if dtype in HALF else x.dtype), (40,), w.to(torch.float32 if dtype in HALF else x.dtype)
    )
    R.assert_close("y (default eps) vs torch eps=None", y_none, y_torch, tol, y_torch.abs().max().item())
    # the eps really matters for these rows: a different eps gives a visibly different answer
    y_other = R.rms_norm(x, (40,), w, 1e-6 if dtype != "float64" else 1e-12)
    assert np.abs(y_other - yr).max() > 0.1 * np.abs(yr).max()
    # backward with the default eps
    dy = R.make_torch((6, 40), dtype, 103, 1.0, 0.0)
    y, rstd = nkF.rms_norm_forward(x, (40,), w)
    dx, dw = nkF.rms_norm_backward(dy, x, (40,), rstd, w)
    check_against_reference(x, (40,), w, None, dy, y, rstd, dx, dw)


@pytest.mark.parametrize("dtype", ("float32", "float64"))
@pytest.mark.parametrize("eps", (0.0, 1e-5, 1e-2, 1.0))
def test_explicit_eps_inside_the_sqrt(eps, dtype):
    x = R.make_torch((4, 37), dtype, 21, 1e-2, 0.0)  # mean square ~1e-4
    w = R.make_torch((37,), dtype, 22, 0.5, 1.0)
    dy = R.make_torch((4, 37), dtype, 24, 1.0, 0.0)
    y, rstd = nkF.rms_norm_forward(x, (37,), w, eps)
    dx, dw = nkF.rms_norm_backward(dy, x, (37,), rstd, w)
    check_against_reference(x, (37,), w, eps, dy, y, rstd, dx, dw)
    R.assert_close("y vs torch", y, F.rms_norm(x, (37,), w, eps), R.TOL[dtype], 4.0)


def test_zero_row_gives_zero_output_and_finite_grad():
    # mean(x^2) == 0: rstd = 1/sqrt(eps), y = 0, dx = rstd * g (torch gives the same)
    x = torch.zeros(3, 8)
    x[1] = R.make_torch((8,), "float32", 5)
    dy = R.make_torch((3, 8), "float32", 6, 1.0, 0.0)
    y, rstd = nkF.rms_norm_forward(x, (8,), None, 1e-6)
    dx, _ = nkF.rms_norm_backward(dy, x, (8,), rstd, None)
    assert torch.isfinite(dx).all() and torch.isfinite(y).all()
    check_against_reference(x, (8,), None, 1e-6, dy, y, rstd, dx, None)


@pytest.mark.parametrize("dtype", HALF)
def test_half_input_with_float32_weight(dtype):
    ns = (48,)
    x = R.make_torch((10, 48), dtype, 41)
    dy = R.make_torch((10, 48), dtype, 42, 1.0, 0.0)
    w = R.make_torch(ns, "float32", 43, 0.5, 1.0)
    y, rstd = nkF.rms_norm_forward(x, ns, w)
    assert y.dtype == x.dtype and rstd.dtype == torch.float32
    dx, dw = nkF.rms_norm_backward(dy, x, ns, rstd, w)
    assert dx.dtype == x.dtype and dw.dtype == torch.float32
    check_against_reference(x, ns, w, None, dy, y, rstd, dx, None)
    e = R.default_rms_eps(dtype)
    _, dwr = R.rms_norm_backward(dy, x, ns, w, e)
    R.assert_close(
        "dweight (float32)", dw, dwr, R.TOL["float32"], R.dweight_scale(dy, x, ns, R.rms_norm_xhat(x, ns, e))
    )


@pytest.mark.parametrize("n", (7, 64, 1000, 8192))
@pytest.mark.parametrize("dtype", HALF)
def test_half_results_are_rounded_once(dtype, n):
    """float16/bfloat16: computed in float32, each result rounded once (see test_layer_norm.py)."""
    ns = (n,)
    x = R.make_torch((8, n), dtype, 111)
    w = R.make_torch(ns, dtype, 112, 0.5, 1.0)
    dy = R.make_torch((8, n), dtype, 114, 1.0, 0.0)
    y, rstd = nkF.rms_norm_forward(x, ns, w)
    dx, dw = nkF.rms_norm_backward(dy, x, ns, rstd, w)
    e = R.default_rms_eps(dtype)
    yr, rr = R.rms_norm_forward(x, ns, w, e)
    dxr, dwr = R.rms_norm_backward(dy, x, ns, w, e)
    xhat = R.rms_norm_xhat(x, ns, e)
    R.assert_rounded_once("y", y, yr, dtype, np.abs(yr))
    R.assert_rounded_once("dx", dx, dxr, dtype, R.dx_scale(dy, x, ns, w, rr))
    R.assert_rounded_once("dweight", dw, dwr, dtype, R.dweight_scale(dy, x, ns, xhat))


# ----------------------------------------------------------------------------------------------------
# Edge cases
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lib", ("numpy", "torch"))
@pytest.mark.parametrize("case", [((0, 8), (8,)), ((2, 0, 8), (8,)), ((0, 3, 4), (3, 4))], ids=shape_id)
def test_zero_size_leading_dims(case, lib):
    x_shape, ns = case
    make = R.make_torch if lib == "torch" else R.make_numpy
    x = make(x_shape, "float32", 1)
    dy = make(x_shape, "float32", 2)
    w = make(ns, "float32", 3)
    y, rstd = nkF.rms_norm_forward(x, ns, w)
    lead = x_shape[: len(x_shape) - len(ns)]
    assert tuple(y.shape) == x_shape and tuple(rstd.shape) == lead
    assert tuple(nkF.rms_norm(x, ns, w).shape) == x_shape
    dx, dw = nkF.rms_norm_backward(dy, x, ns, rstd, w)
    assert tuple(dx.shape) == x_shape
    np.testing.assert_array_equal(R.to_f64(dw), np.zeros(ns))


@pytest.mark.parametrize("dtype", ("float32", "float64", "bfloat16"))
def test_nan_and_inf_stay_in_their_row(dtype):
    x = R.make_torch((5, 16), dtype, 51)
    x[1, 3] = float("nan")
    x[2, 5] = float("inf")
    x[3, 0] = float("-inf")
    w = R.make_torch((16,), dtype, 52, 0.5, 1.0)
    dy = R.make_torch((5, 16), dtype, 54, 1.0, 0.0)
    y, rstd = nkF.rms_norm_forward(x, (16,), w, 1e-6)
    dx, _ = nkF.rms_norm_backward(dy, x, (16,), rstd, w)
    good = [0, 4]
    check_against_reference(x[good], (16,), w, 1e-6, dy[good], y[good], rstd[good], dx[good], None)
    yt = F.rms_norm(x.to(torch.float64), (16,), w.to(torch.float64), 1e-6)
    yn = R.to_f64(y)
    for r in (1, 2, 3):
        # torch: a NaN makes the whole row NaN; an Inf makes mean(x^2) Inf, rstd 0, so the row is 0
        # except NaN (Inf * 0) at the Inf
        np.testing.assert_array_equal(
            np.isnan(yn[r]), torch.isnan(yt[r]).numpy(), err_msg=f"NaN pattern of row {r} differs from torch"
        )
        assert not np.isfinite(yn[r]).all(), f"row {r}: the non-finite input did not propagate"


# ----------------------------------------------------------------------------------------------------
# Non-contiguous inputs
# ----------------------------------------------------------------------------------------------------


def _np_views(dtype):
    mk = lambda shape, seed: R.make_numpy(shape, dtype, seed)  # noqa: E731
    base2 = mk((12, 40), 61)
    base3 = mk((6, 4, 5), 62)
    return [
        ("transpose", mk((33, 6), 63).T, (33,)),
        ("step-slices", base2[::2, ::3], (14,)),
        ("negative-strides", base2[::-1, ::-2], (20,)),
        ("negative-rows-only", base2[::-3], (40,)),
        ("offset-start", base2[1:, 3:], (37,)),
        ("row-step-contiguous-rows", base2[::2], (40,)),
        ("fortran-order", np.asfortranarray(mk((7, 9), 64)), (9,)),
        ("3d-transpose-multidim-ns", base3.transpose(2, 0, 1), (6, 4)),
        ("3d-permute-reversed", base3[:, ::-1, ::-1].transpose(1, 0, 2), (6, 5)),
        ("broadcast-rows", np.broadcast_to(mk((1, 64), 65), (5, 64)), (64,)),
        ("broadcast-inside-row", np.broadcast_to(mk((4, 1, 16), 66), (4, 3, 16)), (3, 16)),
    ]


@pytest.mark.parametrize("with_weight", (True, False))
@pytest.mark.parametrize("dtype", R.NUMPY_DTYPES)
@pytest.mark.parametrize("which", range(11))
def test_numpy_non_contiguous(which, dtype, with_weight):
    name, xv, ns = _np_views(dtype)[which]
    xc = np.ascontiguousarray(xv)
    # a contiguous weight here (non-contiguous ones: test_non_contiguous_weight); dy transposed
    w = R.make_numpy(ns, dtype, 67, 0.5, 1.0) if with_weight else None
    dyv = R.make_numpy(xv.shape[::-1], dtype, 69, 1.0, 0.0).T
    snap = R.snapshot(xv, w, dyv)
    y, rstd = nkF.rms_norm_forward(xv, ns, w)
    dx, dw = nkF.rms_norm_backward(dyv, xv, ns, rstd, w)
    assert y.flags.c_contiguous and dx.flags.c_contiguous and y.shape == xv.shape
    R.assert_unchanged((xv, w, dyv), snap)
    check_against_reference(xv, ns, w, None, dyv, y, rstd, dx, dw, tag=f"[{name}] ")
    wc = None if w is None else np.ascontiguousarray(w)
    yc, rstdc = nkF.rms_norm_forward(xc, ns, wc)
    dxc, dwc = nkF.rms_norm_backward(np.ascontiguousarray(dyv), xc, ns, rstdc, wc)
    tol = R.TOL[dtype]
    R.assert_close(f"[{name}] y vs contiguous", y, yc, tol, np.abs(R.to_f64(yc)).max())
    R.assert_close(f"[{name}] rstd vs contiguous", rstd, rstdc, R.TOL[R.ACC_DTYPE[dtype]], 0.0)
    R.assert_close(f"[{name}] dx vs contiguous", dx, dxc, tol, np.abs(R.to_f64(dxc)).max())
    if w is not None:
        R.assert_close(f"[{name}] dweight vs contiguous", dw, dwc, tol, np.abs(R.to_f64(dwc)).max())


@pytest.mark.parametrize(
    "lib,dtype", [("numpy", "float32"), ("numpy", "float64"), ("torch", "bfloat16"), ("torch", "float32")]
)
@pytest.mark.parametrize("ns", [(40,), (6, 7)], ids=str)
def test_non_contiguous_weight(ns, lib, dtype):
    """A weight given as a strided / reversed / broadcast / transposed view is an input too."""
    make = R.make_numpy if lib == "numpy" else R.make_torch
    x = make((5,) + ns, dtype, 81)
    dy = make((5,) + ns, dtype, 82, 1.0, 0.0)
    failures = []
    for wname, w in R.param_views(lib, dtype, ns, 83):
        tag = f"[weight {wname}] "
        snap = R.snapshot(x, w, dy)
        try:
            y, rstd = nkF.rms_norm_forward(x, ns, w)
            dx, dw = nkF.rms_norm_backward(dy, x, ns, rstd, w)
        except Exception as e:
            failures.append(f"{tag}{type(e).__name__}: {e}")
            continue
        R.assert_unchanged((x, w, dy), snap)
        check_against_reference(x, ns, w, None, dy, y, rstd, dx, dw, tag=tag)
    assert not failures, "non-contiguous weights rejected:\n" + "\n".join(failures)


@pytest.mark.parametrize("dtype", R.DTYPES)
@pytest.mark.parametrize("which", range(7))
def test_torch_non_contiguous(which, dtype):
    name, xv, ns = torch_row_views(dtype)[which]
    w = R.make_torch((2,) + tuple(ns), dtype, 78, 0.5, 1.0)[1]
    dy = R.make_torch(tuple(xv.shape)[::-1], dtype, 80, 1.0, 0.0).permute(*reversed(range(xv.dim())))
    snap = R.snapshot(xv, w, dy)
    y, rstd = nkF.rms_norm_forward(xv, ns, w)
    dx, dw = nkF.rms_norm_backward(dy, xv, ns, rstd, w)
    assert y.is_contiguous() and dx.is_contiguous() and y.shape == xv.shape
    R.assert_unchanged((xv, w, dy), snap)
    check_against_reference(xv, ns, w, None, dy, y, rstd, dx, dw, tag=f"[{name}] ")
    yc, rstdc = nkF.rms_norm_forward(xv.contiguous(), ns, w.contiguous())
    dxc, dwc = nkF.rms_norm_backward(dy.contiguous(), xv.contiguous(), ns, rstdc, w.contiguous())
    tol = R.TOL[dtype]
    for nm, a, c in (("y", y, yc), ("dx", dx, dxc), ("dweight", dw, dwc)):
        R.assert_close(f"[{name}] {nm} vs contiguous", a, c, tol, np.abs(R.to_f64(c)).max())


# ----------------------------------------------------------------------------------------------------
# Property-based
# ----------------------------------------------------------------------------------------------------


@st.composite
def strided_cases(draw):
    case = draw(strided_layouts())
    case.update(with_weight=draw(st.booleans()), eps=draw(st.sampled_from([None, 1e-6, 1e-3, 0.5])))
    return case


@settings(max_examples=HYPOTHESIS_EXAMPLES, deadline=None)
@given(case=strided_cases())
def test_hypothesis_strided(case):
    ns, dtype, eps = case["ns"], case["dtype"], case["eps"]
    xv, dyv = x_and_dy(case)
    w = make_weight(ns, dtype, case["with_weight"], case["seed"], lib="numpy")
    snap = R.snapshot(xv, w, dyv)
    y, rstd = nkF.rms_norm_forward(xv, ns, w, eps)
    dx, dw = nkF.rms_norm_backward(dyv, xv, ns, rstd, w)
    R.assert_unchanged((xv, w, dyv), snap)
    assert y.flags.c_contiguous and dx.flags.c_contiguous
    check_against_reference(xv, ns, w, eps, dyv, y, rstd, dx, dw)
    yc = nkF.rms_norm(np.ascontiguousarray(xv), ns, w, eps)
    R.assert_close("y vs contiguous", y, yc, R.TOL[dtype], np.abs(R.to_f64(yc)).max(initial=0.0))


# ----------------------------------------------------------------------------------------------------
# The references themselves
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", [((4, 1), (1,)), ((3, 7), (7,)), ((2, 3, 5), (3, 5)), ((2, 3, 4, 5), (4, 5)), ((6,), (6,))], ids=shape_id
)
@pytest.mark.parametrize("with_weight", (True, False))
def test_reference_matches_torch_autograd_float64(case, with_weight):
    """tests/reference.py's RMSNorm forward and analytic backward equal torch autograd in float64."""
    x_shape, ns = case
    x = R.make_torch(x_shape, "float64", 91)
    w = make_weight(ns, "float64", with_weight, 91)
    dy = R.make_torch(x_shape, "float64", 92, 1.0, 0.0)
    for eps in (None, 1e-6, 0.3):
        xt = x.clone().requires_grad_()
        wt = None if w is None else w.clone().requires_grad_()
        yt = F.rms_norm(xt, ns, wt, eps)
        yt.backward(dy)
        e = R.default_rms_eps("float64") if eps is None else eps
        y, rstd = R.rms_norm_forward(x, ns, w, e)
        dx, dw = R.rms_norm_backward(dy, x, ns, w, e)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
        dims = tuple(range(x.dim() - len(ns), x.dim()))
        np.testing.assert_allclose(rstd, torch.rsqrt(x.pow(2).mean(dim=dims) + e).numpy(), rtol=1e-12)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
        if w is not None:
            np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-10, atol=1e-12)
        else:
            assert dw is None
