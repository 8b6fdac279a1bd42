"""normkit.functional LayerNorm: forward statistics and output, analytic backward, against the float64
references (tests/reference.py) and against torch.nn.functional.layer_norm + autograd."""

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

EPS = 1e-5
HALF = ("float16", "bfloat16")
# small and fast by default; NORMKIT_HYPOTHESIS_EXAMPLES=2000 for a long randomized local search
HYPOTHESIS_EXAMPLES = int(os.environ.get("NORMKIT_HYPOTHESIS_EXAMPLES", "40"))

ROW_SIZES = (1, 2, 3, 7, 31, 64, 100, 1000, 1024, 4097, 8192)
SHAPES = [
    # (x shape, normalized_shape)
    ((5, 1), (1,)),  # rows of a single element: xhat == 0, y == bias
    ((1, 1), (1,)),
    ((7,), (7,)),  # a single row; mean/rstd are 0-d
    *[((3, n), (n,)) for n in ROW_SIZES],
    ((17, 129), (129,)),  # odd row count and odd row size
    ((300, 257), (257,)),  # enough rows that the dweight/dbias reduction across rows matters
    ((2, 3, 5), (5,)),
    ((2, 3, 5), (3, 5)),
    ((3, 4, 33), (4, 33)),
    ((2, 3, 4, 5), (4, 5)),
    ((2, 3, 4, 5), (3, 4, 5)),
    ((2, 3, 4, 5), (2, 3, 4, 5)),  # everything normalized: 0-d statistics
]
AFFINE = ("none", "weight", "weight_bias", "bias")


def shape_id(case):
    xs, ns = case
    return "x" + "x".join(map(str, xs)) + "-ns" + "x".join(map(str, ns))


def make_params(ns, dtype, affine, seed, lib="torch"):
    make = R.make_torch if lib == "torch" else R.make_numpy
    w = make(ns, dtype, seed + 1, 0.7, 1.0) if affine in ("weight", "weight_bias") else None
    b = make(ns, dtype, seed + 2, 1.0, 0.0) if affine in ("weight_bias", "bias") else None
    return w, b


def acc_torch(dtype):
    return torch.float64 if dtype == "float64" else torch.float32


def check_against_reference(x, ns, w, b, eps, dy, y, mean, rstd, dx, dw, db, tol=None, tag=""):
    """All of normkit's results against the float64 references from the same (rounded) inputs."""
    dtype = R.dtype_name(x)
    tol = R.TOL[dtype] if tol is None else tol
    acc_tol = R.TOL[R.ACC_DTYPE[dtype]]
    yr, mr, rr = R.layer_norm_forward(x, ns, w, b, eps)
    xr = R.to_f64(x)
    R.assert_close(tag + "y", y, yr, tol, np.abs(yr).max(initial=0.0))
    if mean is not None:
        R.assert_close(tag + "mean", mean, mr, acc_tol, np.abs(xr).max(initial=0.0))
        R.assert_close(tag + "rstd", rstd, rr, acc_tol, 0.0)
    if dy is None:
        return
    dxr, dwr, dbr = R.layer_norm_backward(dy, x, ns, w, eps, has_bias=True)
    if dx is not None:
        R.assert_close(tag + "dx", dx, dxr, tol, R.layer_norm_dx_scale(dy, x, ns, w, eps))
    if dw is not None:
        R.assert_close(tag + "dweight", dw, dwr, tol, R.layer_norm_dweight_scale(dy, x, ns, eps))
    if db is not None:
        R.assert_close(tag + "dbias", db, dbr, tol, R.dbias_scale(dy, ns))


# ----------------------------------------------------------------------------------------------------
# The main matrix: shapes x dtypes x affine variants, torch tensors in (bfloat16 needs torch).
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("dtype", R.DTYPES)
@pytest.mark.parametrize("case", SHAPES, ids=shape_id)
def test_forward_backward_vs_reference_and_torch(case, dtype, affine):
    x_shape, ns = case
    seed = 1000 + len(x_shape) * 7 + sum(x_shape)
    x = R.make_torch(x_shape, dtype, seed)
    w, b = make_params(ns, dtype, affine, seed)
    dy = R.make_torch(x_shape, dtype, seed + 3, 1.0, 0.0)
    snap = R.snapshot(x, w, b, dy)

    y, mean, rstd = nkF.layer_norm_forward(x, ns, w, b, EPS)
    lead = tuple(x_shape[: len(x_shape) - len(ns)])
    assert isinstance(y, torch.Tensor) and y.dtype == x.dtype and tuple(y.shape) == x_shape
    assert y.is_contiguous()
    for name, s in (("mean", mean), ("rstd", rstd)):
        assert isinstance(s, torch.Tensor), name
        assert tuple(s.shape) == lead, f"{name} shape {tuple(s.shape)}, expected {lead}"
        assert s.dtype == acc_torch(dtype), f"{name} dtype {s.dtype}"

    y_only = nkF.layer_norm(x, ns, w, b, EPS)
    R.assert_bitwise_equal("layer_norm vs layer_norm_forward", y_only, y)

    dx, dw, db = nkF.layer_norm_backward(dy, x, ns, mean, rstd, w, (True, True, True))
    assert isinstance(dx, torch.Tensor) and dx.dtype == x.dtype and tuple(dx.shape) == x_shape
    assert dx.is_contiguous()
    grad_dtype = w.dtype if w is not None else x.dtype
    if w is None:
        assert dw is None
    else:
        assert dw.dtype == grad_dtype and tuple(dw.shape) == ns
    assert db is not None and db.dtype == grad_dtype and tuple(db.shape) == ns
    R.assert_unchanged((x, w, b, dy), snap)

    check_against_reference(x, ns, w, b, EPS, dy, y, mean, rstd, dx, dw, db)

    # torch: for half dtypes the library computes in float32 and rounds once, so the torch reference
    # is torch in float32 on the same rounded inputs (torch's own CPU half backward rounds
    # intermediates and is less accurate than the contract). Forward is also compared with torch run
    # natively in the half dtype (two roundings apart at most: within tol).
    cdt = torch.float32 if dtype in HALF else x.dtype
    xt = x.to(cdt).requires_grad_()
    wt = None if w is None else w.to(cdt).requires_grad_()
    bt = None if b is None else b.to(cdt).requires_grad_()
    yt = F.layer_norm(xt, ns, wt, bt, EPS)
    yt.backward(dy.to(cdt))
    tol = R.TOL[dtype]
    R.assert_close("y vs torch", y, yt, tol, R.layer_norm_torch_y_scale(x, ns, w, b, EPS))
    R.assert_close("dx vs torch", dx, xt.grad, tol, R.layer_norm_dx_scale(dy, x, ns, w, EPS))
    if w is not None:
        R.assert_close("dweight vs torch", dw, wt.grad, tol, R.layer_norm_dweight_scale(dy, x, ns, EPS))
    if b is not None:
        R.assert_close("dbias vs torch", db, bt.grad, tol, R.dbias_scale(dy, ns))
    if dtype in HALF:
        y_native = F.layer_norm(x, ns, w, b, EPS)
        R.assert_close("y vs torch (native half)", y, y_native, tol, R.layer_norm_torch_y_scale(x, ns, w, b, EPS))


# ----------------------------------------------------------------------------------------------------
# NumPy in -> NumPy out
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("affine", ("none", "weight_bias"))
@pytest.mark.parametrize("dtype", R.NUMPY_DTYPES)
@pytest.mark.parametrize(
    "case", [((4, 1), (1,)), ((5, 100), (100,)), ((2, 3, 4, 5), (4, 5)), ((9,), (9,))], ids=shape_id
)
def test_numpy_in_numpy_out(case, dtype, affine):
    x_shape, ns = case
    x = R.make_numpy(x_shape, dtype, 7)
    w, b = make_params(ns, dtype, affine, 7, lib="numpy")
    dy = R.make_numpy(x_shape, dtype, 8, 1.0, 0.0)
    snap = R.snapshot(x, w, b, dy)
    y, mean, rstd = nkF.layer_norm_forward(x, ns, w, b, EPS)
    assert type(y) is np.ndarray and y.dtype == x.dtype and y.shape == x_shape and y.flags.c_contiguous
    lead = x_shape[: len(x_shape) - len(ns)]
    acc = np.float64 if dtype == "float64" else np.float32
    for s in (mean, rstd):
        assert isinstance(s, np.ndarray) and s.shape == lead and s.dtype == acc
    y2 = nkF.layer_norm(x, ns, w, b, EPS)
    assert type(y2) is np.ndarray
    R.assert_bitwise_equal("layer_norm vs layer_norm_forward", y2, y)
    dx, dw, db = nkF.layer_norm_backward(dy, x, ns, mean, rstd, w)
    assert type(dx) is np.ndarray and dx.dtype == x.dtype and dx.shape == x_shape
    assert type(db) is np.ndarray and db.dtype == x.dtype and db.shape == ns
    if w is None:
        assert dw is None
    else:
        assert type(dw) is np.ndarray and dw.dtype == w.dtype and dw.shape == ns
    R.assert_unchanged((x, w, b, dy), snap)
    check_against_reference(x, ns, w, b, EPS, dy, y, mean, rstd, dx, dw, db)


# ----------------------------------------------------------------------------------------------------
# output_mask
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_weight", (True, False))
@pytest.mark.parametrize("mask", [(a, b, c) for a in (True, False) for b in (True, False) for c in (True, False)])
def test_backward_output_mask(mask, with_weight):
    x = R.make_torch((6, 50), "float32", 11)
    dy = R.make_torch((6, 50), "float32", 12, 1.0, 0.0)
    w = R.make_torch((50,), "float32", 13, 0.5, 1.0) if with_weight else None
    b = R.make_torch((50,), "float32", 14)
    _, mean, rstd = nkF.layer_norm_forward(x, (50,), w, b, EPS)
    full = nkF.layer_norm_backward(dy, x, (50,), mean, rstd, w, (True, True, True))
    part = nkF.layer_norm_backward(dy, x, (50,), mean, rstd, w, mask)
    assert len(part) == 3
    names = ("dx", "dweight", "dbias")
    wanted = (mask[0], mask[1] and with_weight, mask[2])
    for name, want, f, p in zip(names, wanted, full, part):
        if not want:
            assert p is None, f"{name} should be None for output_mask={mask}, weight={with_weight}"
        else:
            assert p is not None, name
            R.assert_close(f"{name} (masked) vs full", p, f, R.TOL["float32"], np.abs(R.to_f64(f)).max())


# ----------------------------------------------------------------------------------------------------
# eps handling, numerical stability, mixed parameter dtypes
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ("float32", "float64"))
@pytest.mark.parametrize("eps", (0.0, 1e-5, 1e-2, 1.0))
def test_eps_inside_the_sqrt(eps, dtype):
    # Small-variance rows (std 1e-2, var 1e-4) so that eps visibly changes the result and a wrong
    # placement (sqrt(var) + eps, eps ignored, unbiased variance) is far outside the tolerance.
    x = R.make_torch((4, 37), dtype, 21, 1e-2, 0.03)
    w = R.make_torch((37,), dtype, 22, 0.5, 1.0)
    b = R.make_torch((37,), dtype, 23, 0.5, 0.0)
    dy = R.make_torch((4, 37), dtype, 24, 1.0, 0.0)
    y, mean, rstd = nkF.layer_norm_forward(x, (37,), w, b, eps)
    dx, dw, db = nkF.layer_norm_backward(dy, x, (37,), mean, rstd, w)
    check_against_reference(x, (37,), w, b, eps, dy, y, mean, rstd, dx, dw, db)
    R.assert_close("y vs torch", y, F.layer_norm(x, (37,), w, b, eps), R.TOL[dtype], 3.0)


@pytest.mark.parametrize("n", (7, 1000, 4097))
@pytest.mark.parametrize("dtype", ("float32", "float64"))
def test_large_mean_is_stable(dtype, n):
    # Rows with mean 1e4 and std 1: the textbook E[x^2] - E[x]^2 loses everything in float32 (relative
    # variance error ~ u * 1e8). Any algorithm has to round the mean (|mean| * u), which moves xhat by
    # about u * |mean| / std, so the tolerance is tol + 4 u |mean| / std.
    offset = 1e4
    x = R.make_torch((4, n), dtype, 31, 1.0, offset)
    y, mean, rstd = nkF.layer_norm_forward(x, (n,), None, None, EPS)
    yr, mr, rr = R.layer_norm_forward(x, (n,), None, None, EPS)
    tol = R.TOL[dtype] + 4 * R.ACC_EPS[dtype] * offset / 1.0
    R.assert_close("y", y, yr, tol, 1.0)
    R.assert_close("rstd", rstd, rr, tol, 0.0)
    R.assert_close("mean", mean, mr, R.TOL[dtype], offset)


@pytest.mark.parametrize("dtype", HALF)
def test_half_input_with_float32_parameters(dtype):
    # dweight/dbias take the weight's dtype and are accumulated in float32: with float32 parameters
    # they are float32 results (float32 tolerance); y and dx keep x's dtype (x's tolerance).
    ns = (48,)
    x = R.make_torch((10, 48), dtype, 41)
    dy = R.make_torch((10, 48), dtype, 42, 1.0, 0.0)
    w = R.make_torch(ns, "float32", 43, 0.5, 1.0)
    b = R.make_torch(ns, "float32", 44)
    y, mean, rstd = nkF.layer_norm_forward(x, ns, w, b, EPS)
    assert y.dtype == x.dtype and mean.dtype == torch.float32 and rstd.dtype == torch.float32
    dx, dw, db = nkF.layer_norm_backward(dy, x, ns, mean, rstd, w)
    assert dx.dtype == x.dtype and dw.dtype == torch.float32 and db.dtype == torch.float32
    check_against_reference(x, ns, w, b, EPS, dy, y, mean, rstd, dx, None, None)
    dxr, dwr, dbr = R.layer_norm_backward(dy, x, ns, w, EPS)
    R.assert_close("dweight", dw, dwr, R.TOL["float32"], R.layer_norm_dweight_scale(dy, x, ns, EPS))
    R.assert_close("dbias", db, dbr, R.TOL["float32"], R.dbias_scale(dy, ns))


@pytest.mark.parametrize("rows", (1, 4, 9))
@pytest.mark.parametrize("dtype", R.DTYPES)
def test_long_rows_normalized_in_groups(dtype, rows):
    """Rows whose weight and bias fill half of L1 are normalized a few rows at a time, column segment
    by column segment: a partial last group, a short last segment (3000 = 5 * 512 + 440) and rows
    read with a stride (a column slice of a wider array), against the float64 reference."""
    n = 3000
    wide = R.make_torch((rows, n + 37), dtype, 121)
    x = wide[:, 5:5 + n]
    assert rows == 1 or not x.is_contiguous()
    ns = (n,)
    w = R.make_torch(ns, dtype, 122, 0.5, 1.0)
    b = R.make_torch(ns, dtype, 123)
    y, mean, rstd = nkF.layer_norm_forward(x, ns, w, b, EPS)
    check_against_reference(x, ns, w, b, EPS, None, y, mean, rstd, None, None, None)
    yc, mean_c, rstd_c = nkF.layer_norm_forward(x.contiguous(), ns, w, b, EPS)
    for name, got, want in (("y", y, yc), ("mean", mean, mean_c), ("rstd", rstd, rstd_c)):
        R.assert_bitwise_equal(name, got, want)


@pytest.mark.parametrize("n", (7, 64, 1000, 8192))
@pytest.mark.parametrize("dtype", HALF)
def test_half_results_are_rounded_once(dtype, n):
    """float16/bfloat16: computed in float32, each result rounded once (within 0.5 ulp + float32 noise).

    Stricter than the 2-ulp tolerance of the main matrix: it catches double rounding and intermediates
    (xhat, g = dy * w) stored in the half type.
    """
    ns = (n,)
    x = R.make_torch((8, n), dtype, 111)
    w = R.make_torch(ns, dtype, 112, 0.5, 1.0)
    b = R.make_torch(ns, dtype, 113)
    dy = R.make_torch((8, n), dtype, 114, 1.0, 0.0)
    y, mean, rstd = nkF.layer_norm_forward(x, ns, w, b, EPS)
    dx, dw, db = nkF.layer_norm_backward(dy, x, ns, mean, rstd, w)
    yr, _, _ = R.layer_norm_forward(x, ns, w, b, EPS)
    dxr, dwr, dbr = R.layer_norm_backward(dy, x, ns, w, EPS)
    y_terms = R.layer_norm_xhat_terms(x, ns, EPS) * np.abs(R.to_f64(w)) + np.abs(R.to_f64(b))
    R.assert_rounded_once("y", y, yr, dtype, y_terms)
    R.assert_rounded_once("dx", dx, dxr, dtype, R.layer_norm_dx_scale(dy, x, ns, w, EPS))
    R.assert_rounded_once("dweight", dw, dwr, dtype, R.layer_norm_dweight_scale(dy, x, ns, EPS))
    R.assert_rounded_once("dbias", db, dbr, dtype, R.dbias_scale(dy, ns))


# ----------------------------------------------------------------------------------------------------
# Edge cases: empty leading dimensions, NaN / Inf rows
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lib", ("numpy", "torch"))
@pytest.mark.parametrize("case", [((0, 8), (8,)), ((2, 0, 8), (8,)), ((0, 3, 4), (3, 4))], ids=shape_id)
def test_zero_size_leading_dims(case, lib):
    x_shape, ns = case
    make = R.make_torch if lib == "torch" else R.make_numpy
    x = make(x_shape, "float32", 1)
    dy = make(x_shape, "float32", 2)
    w = make(ns, "float32", 3)
    b = make(ns, "float32", 4)
    y, mean, rstd = nkF.layer_norm_forward(x, ns, w, b, EPS)
    lead = x_shape[: len(x_shape) - len(ns)]
    assert tuple(y.shape) == x_shape and tuple(mean.shape) == lead and tuple(rstd.shape) == lead
    assert tuple(nkF.layer_norm(x, ns, w, b, EPS).shape) == x_shape
    dx, dw, db = nkF.layer_norm_backward(dy, x, ns, mean, rstd, w)
    assert tuple(dx.shape) == x_shape
    # torch semantics: parameter gradients of an empty batch are zeros
    np.testing.assert_array_equal(R.to_f64(dw), np.zeros(ns))
    np.testing.assert_array_equal(R.to_f64(db), np.zeros(ns))


@pytest.mark.parametrize("dtype", ("float32", "float64", "bfloat16"))
def test_nan_and_inf_stay_in_their_row(dtype):
    x = R.make_torch((5, 16), dtype, 51)
    x[1, 3] = float("nan")
    x[2, 5] = float("inf")
    x[3, 0] = float("-inf")
    w = R.make_torch((16,), dtype, 52, 0.5, 1.0)
    b = R.make_torch((16,), dtype, 53)
    dy = R.make_torch((5, 16), dtype, 54, 1.0, 0.0)
    y, mean, rstd = nkF.layer_norm_forward(x, (16,), w, b, EPS)
    dx, _, _ = nkF.layer_norm_backward(dy, x, (16,), mean, rstd, w)
    good = [0, 4]
    yt = F.layer_norm(x.to(torch.float64), (16,), w.to(torch.float64), b.to(torch.float64), EPS)
    # the clean rows are unaffected and correct
    check_against_reference(x[good], (16,), w, b, EPS, dy[good], y[good], mean[good], rstd[good], dx[good], None, None)
    # the bad rows are NaN exactly where torch's are (torch: the whole row, for NaN and for +-Inf,
    # since x - mean is Inf - Inf), and so are their statistics
    _, mt, rt = torch.native_layer_norm(x.to(torch.float64), (16,), None, None, EPS)
    yn, mn, rn = R.to_f64(y), R.to_f64(mean), R.to_f64(rstd)
    for r in (1, 2, 3):
        assert not np.isfinite(yn[r]).all(), f"row {r}: the non-finite input did not propagate"
        np.testing.assert_array_equal(
            np.isnan(yn[r]), torch.isnan(yt[r]).numpy(), err_msg=f"NaN pattern of y row {r} differs from torch"
        )
        assert np.isnan(rn[r]) == bool(torch.isnan(rt.reshape(-1)[r])), (
            f"rstd of row {r}: got {rn[r]}, torch {rt.reshape(-1)[r].item()}"
        )
        assert np.isfinite(mn[r]) == bool(torch.isfinite(mt.reshape(-1)[r])), (
            f"mean of row {r}: got {mn[r]}, torch {mt.reshape(-1)[r].item()}"
        )


# ----------------------------------------------------------------------------------------------------
# Non-contiguous inputs: same results as on a contiguous copy
# ----------------------------------------------------------------------------------------------------


def _np_views(dtype):
    """(name, x view, normalized_shape) for several layouts numpy can express."""
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


@pytest.mark.parametrize("affine", ("none", "weight_bias"))
@pytest.mark.parametrize("dtype", R.NUMPY_DTYPES)
@pytest.mark.parametrize("which", range(11))
def test_numpy_non_contiguous(which, dtype, affine):
    name, xv, ns = _np_views(dtype)[which]
    assert not xv.flags.c_contiguous or name == "row-step-contiguous-rows"
    xc = np.ascontiguousarray(xv)
    # contiguous parameters here (non-contiguous ones: test_non_contiguous_parameters); dy transposed
    w = R.make_numpy(ns, dtype, 67, 0.5, 1.0) if affine != "none" else None
    b = R.make_numpy(ns, dtype, 68) if affine != "none" else None
    dyv = R.make_numpy(xv.shape[::-1], dtype, 69, 1.0, 0.0).T
    snap = R.snapshot(xv, w, b, dyv)
    y, mean, rstd = nkF.layer_norm_forward(xv, ns, w, b, EPS)
    assert y.flags.c_contiguous and y.shape == xv.shape
    dx, dw, db = nkF.layer_norm_backward(dyv, xv, ns, mean, rstd, w)
    assert dx.flags.c_contiguous and dx.shape == xv.shape
    R.assert_unchanged((xv, w, b, dyv), snap)
    check_against_reference(xv, ns, w, b, EPS, dyv, y, mean, rstd, dx, dw, db, tag=f"[{name}] ")
    # and the same as on contiguous copies
    wc = None if w is None else np.ascontiguousarray(w)
    yc, meanc, rstdc = nkF.layer_norm_forward(xc, ns, wc, b, EPS)
    dxc, dwc, dbc = nkF.layer_norm_backward(np.ascontiguousarray(dyv), xc, ns, meanc, rstdc, wc)
    tol = R.TOL[dtype]
    R.assert_close(f"[{name}] y vs contiguous", y, yc, tol, np.abs(R.to_f64(yc)).max())
    R.assert_close(f"[{name}] rstd vs contiguous", rstd, rstdc, R.TOL[R.ACC_DTYPE[dtype]], 0.0)
    R.assert_close(f"[{name}] dx vs contiguous", dx, dxc, tol, np.abs(R.to_f64(dxc)).max())
    R.assert_close(f"[{name}] dbias vs contiguous", db, dbc, tol, np.abs(R.to_f64(dbc)).max())
    if w is not None:
        R.assert_close(f"[{name}] dweight vs contiguous", dw, dwc, tol, np.abs(R.to_f64(dwc)).max())


@pytest.mark.parametrize(
    "lib,dtype", [("numpy", "float32"), ("numpy", "float64"), ("torch", "bfloat16"), ("torch", "float32")]
)
@pytest.mark.parametrize("ns", [(40,), (6, 7)], ids=str)
def test_non_contiguous_parameters(ns, lib, dtype):
    """weight and bias given as strided / reversed / broadcast / transposed views are inputs too."""
    make = R.make_numpy if lib == "numpy" else R.make_torch
    x = make((5,) + ns, dtype, 81)
    dy = make((5,) + ns, dtype, 82, 1.0, 0.0)
    failures = []
    for (wname, w), (bname, b) in zip(R.param_views(lib, dtype, ns, 83), R.param_views(lib, dtype, ns, 93)):
        tag = f"[weight {wname}, bias {bname}] "
        snap = R.snapshot(x, w, b, dy)
        try:
            y, mean, rstd = nkF.layer_norm_forward(x, ns, w, b, EPS)
            dx, dw, db = nkF.layer_norm_backward(dy, x, ns, mean, rstd, w)
        except Exception as e:  # collect, so that one report lists every rejected layout
            failures.append(f"{tag}{type(e).__name__}: {e}")
            continue
        R.assert_unchanged((x, w, b, dy), snap)
        assert tuple(dw.shape) == ns and tuple(db.shape) == ns
        check_against_reference(x, ns, w, b, EPS, dy, y, mean, rstd, dx, dw, db, tag=tag)
    assert not failures, "non-contiguous parameters rejected:\n" + "\n".join(failures)


@pytest.mark.parametrize("dtype", R.DTYPES)
@pytest.mark.parametrize("which", range(7))
def test_torch_non_contiguous(which, dtype):
    name, xv, ns = torch_row_views(dtype)[which]
    assert not xv.is_contiguous() or name == "narrow-rows"
    w = R.make_torch((2,) + tuple(ns), dtype, 78, 0.5, 1.0)[1]  # a view with a storage offset
    b = R.make_torch(ns, dtype, 79)
    dy = R.make_torch(tuple(xv.shape)[::-1], dtype, 80, 1.0, 0.0).permute(*reversed(range(xv.dim())))
    snap = R.snapshot(xv, w, b, dy)
    y, mean, rstd = nkF.layer_norm_forward(xv, ns, w, b, EPS)
    dx, dw, db = nkF.layer_norm_backward(dy, xv, ns, mean, rstd, w)
    assert y.is_contiguous() and dx.is_contiguous() and y.shape == xv.shape
    R.assert_unchanged((xv, w, b, dy), snap)
    check_against_reference(xv, ns, w, b, EPS, dy, y, mean, rstd, dx, dw, db, tag=f"[{name}] ")
    yc, meanc, rstdc = nkF.layer_norm_forward(xv.contiguous(), ns, w.contiguous(), b, EPS)
    dxc, dwc, dbc = nkF.layer_norm_backward(dy.contiguous(), xv.contiguous(), ns, meanc, rstdc, w.contiguous())
    tol = R.TOL[dtype]
    for nm, a, c in (("y", y, yc), ("dx", dx, dxc), ("dweight", dw, dwc), ("dbias", db, dbc)):
        R.assert_close(f"[{name}] {nm} vs contiguous", a, c, tol, np.abs(R.to_f64(c)).max())


# ----------------------------------------------------------------------------------------------------
# Property-based: random shapes, strides, parameters, eps
# ----------------------------------------------------------------------------------------------------


@st.composite
def strided_cases(draw):
    case = draw(strided_layouts())
    case.update(affine=draw(st.sampled_from(AFFINE)), eps=draw(st.sampled_from([1e-5, 1e-3, 0.5])))
    return case


@settings(max_examples=HYPOTHESIS_EXAMPLES, deadline=None)
@given(case=strided_cases())
def test_hypothesis_strided(case):
    ns, dtype = case["ns"], case["dtype"]
    xv, dyv = x_and_dy(case)
    w, b = make_params(ns, dtype, case["affine"], case["seed"], lib="numpy")
    snap = R.snapshot(xv, w, b, dyv)
    y, mean, rstd = nkF.layer_norm_forward(xv, ns, w, b, case["eps"])
    dx, dw, db = nkF.layer_norm_backward(dyv, xv, ns, mean, rstd, w)
    R.assert_unchanged((xv, w, b, dyv), snap)
    assert y.flags.c_contiguous and dx.flags.c_contiguous
    check_against_reference(xv, ns, w, b, case["eps"], dyv, y, mean, rstd, dx, dw, db)
    yc = nkF.layer_norm(np.ascontiguousarray(xv), ns, w, b, case["eps"])
    R.assert_close("y vs contiguous", y, yc, R.TOL[dtype], np.abs(R.to_f64(yc)).max(initial=0.0))


# ----------------------------------------------------------------------------------------------------
# The references themselves
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", [((4, 1), (1,)), ((3, 7), (7,)), ((2, 3, 5), (3, 5)), ((2, 3, 4, 5), (4, 5)), ((6,), (6,))], ids=shape_id
)
@pytest.mark.parametrize("affine", AFFINE)
def test_reference_matches_torch_autograd_float64(case, affine):
    """tests/reference.py's forward and analytic backward equal torch autograd in float64."""
    x_shape, ns = case
    x = R.make_torch(x_shape, "float64", 91)
    w, b = make_params(ns, "float64", affine, 91)
    dy = R.make_torch(x_shape, "float64", 92, 1.0, 0.0)
    for eps in (1e-5, 0.3):
        xt = x.clone().requires_grad_()
        wt = None if w is None else w.clone().requires_grad_()
        bt = None if b is None else b.clone().requires_grad_()
        yt = F.layer_norm(xt, ns, wt, bt, eps)
        yt.backward(dy)
        y, mean, rstd = R.layer_norm_forward(x, ns, w, b, eps)
        dx, dw, db = R.layer_norm_backward(dy, x, ns, w, eps, has_bias=b is not None)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
        dims = tuple(range(x.dim() - len(ns), x.dim()))
        np.testing.assert_allclose(mean, x.mean(dim=dims).numpy(), rtol=1e-12, atol=1e-12)
        var = x.var(dim=dims, unbiased=False)
        np.testing.assert_allclose(rstd, (1 / torch.sqrt(var + eps)).numpy(), rtol=1e-12)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
        if w is not None:
            np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-10, atol=1e-12)
        else:
            assert dw is None
        if b is not None:
            np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-10, atol=1e-12)
        else:
            assert db is None
