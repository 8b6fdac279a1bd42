"""Float64 NumPy references for LayerNorm and RMSNorm, written from the defining formulas.

Everything here works in float64 whatever the input dtype (the inputs are converted first), so a
test compares the library, run on some (possibly rounded) inputs, with the exact-as-possible answer
for those same inputs.

Notation: a tensor x of shape lead + normalized_shape is seen as R rows of N = prod(normalized_shape)
elements. Per row:

LayerNorm
    mu   = mean(x)
    var  = mean((x - mu)^2)                 (biased / population variance)
    r    = 1 / sqrt(var + eps)              ("rstd")
    xhat = (x - mu) * r
    y    = xhat * w + b

  Backward (g = dy * w, all means over the row):
    d xhat_i / d x_j = r * (delta_ij - 1/N) - (x_i - mu) * r^3 * (x_j - mu) / N
                     = r * (delta_ij - 1/N - xhat_i * xhat_j / N)
    (using d var / d x_j = 2 (x_j - mu) / N and d r / d var = -r^3 / 2)
    dx_j = sum_i g_i * d xhat_i / d x_j
         = r * (g_j - mean(g) - xhat_j * mean(g * xhat))
    dw   = sum over rows of dy * xhat
    db   = sum over rows of dy

RMSNorm
    ms   = mean(x^2)
    r    = 1 / sqrt(ms + eps)
    xhat = x * r
    y    = xhat * w

  Backward (g = dy * w):
    d r / d x_j    = -r^3 * x_j / N
    d xhat_i / d x_j = r * delta_ij - x_i * r^3 * x_j / N = r * (delta_ij - xhat_i * xhat_j / N)
    dx_j = r * (g_j - xhat_j * mean(g * xhat))
    dw   = sum over rows of dy * xhat

The RMSNorm default eps (eps=None) is torch's: the machine epsilon of the accumulation dtype, i.e.
float32's for float16/bfloat16/float32 inputs and float64's for float64 inputs.
"""

from __future__ import annotations

import math

import numpy as np


def _f64(a):
    """Any array-like (numpy array, torch tensor incl. bfloat16) -> float64 numpy array (a copy)."""
    if a is None:
        return None
    try:
        import torch

        if isinstance(a, torch.Tensor):
            return a.detach().to(torch.float64).cpu().numpy().copy()
    except ImportError:  # pragma: no cover - torch is always installed in this project
        pass
    return np.array(a, dtype=np.float64, copy=True)


def _normalize_shape(normalized_shape):
    if isinstance(normalized_shape, (int, np.integer)):
        return (int(normalized_shape),)
    return tuple(int(s) for s in normalized_shape)


def _rows(x, normalized_shape):
    """Reshape x to (R, N); returns the matrix and the leading shape."""
    ns = _normalize_shape(normalized_shape)
    k = len(ns)
    assert k >= 1, "empty normalized_shape"
    assert tuple(x.shape[x.ndim - k :]) == ns, (x.shape, ns)
    lead = tuple(x.shape[: x.ndim - k])
    n = int(math.prod(ns))
    return x.reshape(int(math.prod(lead)), n), lead, ns


def default_rms_eps(dtype_name: str) -> float:
    """torch's default RMSNorm eps for an input dtype given by name."""
    return float(np.finfo(np.float64).eps) if dtype_name == "float64" else float(np.finfo(np.float32).eps)


# ----------------------------------------------------------------------------------------------------
# LayerNorm
# ----------------------------------------------------------------------------------------------------


def layer_norm_forward(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Returns (y, mean, rstd) in float64; mean and rstd have the leading shape."""
    x = _f64(x)
    m, lead, ns = _rows(x, normalized_shape)
    n = m.shape[1]
    mu = m.sum(axis=1) / n
    c = m - mu[:, None]
    var = (c * c).sum(axis=1) / n
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = c * rstd[:, None]
    y = xhat
    if weight is not None:
        y = y * _f64(weight).reshape(1, n)
    if bias is not None:
        y = y + _f64(bias).reshape(1, n)
    return y.reshape(x.shape), mu.reshape(lead), rstd.reshape(lead)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return layer_norm_forward(x, normalized_shape, weight, bias, eps)[0]


def layer_norm_backward(dy, x, normalized_shape, weight=None, eps=1e-5, has_bias=True):
    """Analytic gradients of layer_norm w.r.t. x, weight and bias, in float64.

    Returns (dx, dweight, dbias); dweight is None when weight is None, dbias None when not has_bias.
    """
    x = _f64(x)
    dy = _f64(dy)
    m, lead, ns = _rows(x, normalized_shape)
    dym, _, _ = _rows(dy, normalized_shape)
    n = m.shape[1]
    mu = m.sum(axis=1, keepdims=True) / n
    c = m - mu
    var = (c * c).sum(axis=1, keepdims=True) / n
    r = 1.0 / np.sqrt(var + eps)
    xhat = c * r
    w = np.ones((1, n)) if weight is None else _f64(weight).reshape(1, n)
    g = dym * w
    mean_g = g.sum(axis=1, keepdims=True) / n
    mean_gx = (g * xhat).sum(axis=1, keepdims=True) / n
    dx = r * (g - mean_g - xhat * mean_gx)
    dweight = None if weight is None else (dym * xhat).sum(axis=0).reshape(ns)
    dbias = dym.sum(axis=0).reshape(ns) if has_bias else None
    return dx.reshape(x.shape), dweight, dbias


# ----------------------------------------------------------------------------------------------------
# RMSNorm
# ----------------------------------------------------------------------------------------------------


def rms_norm_forward(x, normalized_shape, weight=None, eps=1e-6):
    """Returns (y, rstd) in float64; rstd has the leading shape. eps must be a number here."""
    assert eps is not None, "pass default_rms_eps(dtype) explicitly"
    x = _f64(x)
    m, lead, ns = _rows(x, normalized_shape)
    n = m.shape[1]
    ms = (m * m).sum(axis=1) / n
    rstd = 1.0 / np.sqrt(ms + eps)
    y = m * rstd[:, None]
    if weight is not None:
        y = y * _f64(weight).reshape(1, n)
    return y.reshape(x.shape), rstd.reshape(lead)


def rms_norm(x, normalized_shape, weight=None, eps=1e-6):
    return rms_norm_forward(x, normalized_shape, weight, eps)[0]


def rms_norm_backward(dy, x, normalized_shape, weight=None, eps=1e-6):
    """Analytic gradients of rms_norm w.r.t. x and weight, in float64: (dx, dweight)."""
    assert eps is not None
    x = _f64(x)
    dy = _f64(dy)
    m, lead, ns = _rows(x, normalized_shape)
    dym, _, _ = _rows(dy, normalized_shape)
    n = m.shape[1]
    ms = (m * m).sum(axis=1, keepdims=True) / n
    r = 1.0 / np.sqrt(ms + eps)
    xhat = m * r
    w = np.ones((1, n)) if weight is None else _f64(weight).reshape(1, n)
    g = dym * w
    mean_gx = (g * xhat).sum(axis=1, keepdims=True) / n
    dx = r * (g - xhat * mean_gx)
    dweight = None if weight is None else (dym * xhat).sum(axis=0).reshape(ns)
    return dx.reshape(x.shape), dweight


# ====================================================================================================
# Test helpers shared by the test modules (kept here, not in conftest.py, so that they can be imported
# by name under any pytest import mode): dtype tables, tolerances, input generation, comparisons.
# ====================================================================================================

DTYPES = ("float16", "bfloat16", "float32", "float64")
NUMPY_DTYPES = ("float16", "float32", "float64")  # numpy has no bfloat16

# Tolerances, used both as rtol and (times a scale, see assert_close) as atol, relative to the float64
# reference computed from the same (already rounded) inputs:
#   float16 : 11 significant bits, unit roundoff u = 2^-11 ~ 4.9e-4. The library computes in float32
#             and rounds each result once (error <= u relative); float32 accumulation adds ~1e-6.
#             2e-3 ~ 4u = 2 ulps, which also covers a comparison with torch's own rounded result.
#   bfloat16: 8 significant bits, u = 2^-8 ~ 3.9e-3; same argument: 1.6e-2 ~ 2^-6 = 4u = 2 ulps.
#   float32 : u = 2^-24 ~ 6e-8. Row reductions over <= 8192 elements (pairwise / Welford / blocked)
#             give errors ~ sqrt(n)u .. log2(n)u ~ 1e-6 at worst; 1e-5 leaves a 10x margin while any
#             real formula error (wrong eps placement, unbiased variance, missing term) is >= 1e-4.
#   float64 : u = 2^-53 ~ 1.1e-16; 1e-12 ~ 1e4 u.
TOL = {"float16": 2e-3, "bfloat16": 1.6e-2, "float32": 1e-5, "float64": 1e-12}

# Machine epsilon of the accumulation type (float32 for the half types).
ACC_EPS = {
    "float16": float(np.finfo(np.float32).eps),
    "bfloat16": float(np.finfo(np.float32).eps),
    "float32": float(np.finfo(np.float32).eps),
    "float64": float(np.finfo(np.float64).eps),
}
ACC_DTYPE = {"float16": "float32", "bfloat16": "float32", "float32": "float32", "float64": "float64"}


def torch_dtype(name):
    import torch

    return getattr(torch, name)


def dtype_name(a):
    """'float32' etc. for a numpy array or a torch tensor."""
    import torch

    if isinstance(a, torch.Tensor):
        return str(a.dtype).replace("torch.", "")
    return np.dtype(a.dtype).name


def random_f64(shape, seed, scale=2.0, offset=0.5):
    """Reproducible float64 data: normal(offset, scale)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(size=tuple(shape)) * scale + offset


def make_torch(shape, dtype, seed, scale=2.0, offset=0.5):
    """A contiguous torch tensor of `dtype` (name) holding rounded random data."""
    import torch

    return torch.from_numpy(random_f64(shape, seed, scale, offset)).to(torch_dtype(dtype)).contiguous()


def make_numpy(shape, dtype, seed, scale=2.0, offset=0.5):
    return np.ascontiguousarray(random_f64(shape, seed, scale, offset).astype(dtype))


def to_f64(a):
    return _f64(a)


def _raw_bytes(a):
    """The exact bytes of an array's elements in logical (C) order, whatever its dtype and strides."""
    import torch

    if isinstance(a, torch.Tensor):
        t = a.detach().contiguous().reshape(-1)
        return t.view(torch.uint8).numpy().tobytes(), tuple(a.shape), str(a.dtype)
    arr = np.asarray(a)
    return np.ascontiguousarray(arr).tobytes(), arr.shape, str(arr.dtype)


def snapshot(*arrays):
    """Bitwise copies of the inputs, to check later that a call did not modify them."""
    return [None if a is None else _raw_bytes(a) for a in arrays]


def assert_unchanged(arrays, snapshots):
    for i, (a, s) in enumerate(zip(arrays, snapshots)):
        if a is None:
            continue
        data, shape, dtype = _raw_bytes(a)
        assert (shape, dtype) == s[1:], f"input #{i} changed shape/dtype: {s[1:]} -> {(shape, dtype)}"
        assert data == s[0], f"input #{i} ({dtype}{list(shape)}) was modified by the call"


def assert_close(name, got, ref, tol, atol_scale=1.0, equal_nan=False):
    """|got - ref| <= tol * atol_scale + tol * |ref| elementwise, in float64.

    atol_scale (scalar or broadcastable array) is the magnitude of the terms that were combined to
    produce a value (where cancellation can make the result itself much smaller than its error).
    Reports the worst element with its index, expected and actual values.
    """
    g = _f64(got)
    r = _f64(ref)
    assert g.shape == r.shape, f"{name}: shape {g.shape}, expected {r.shape}"
    if g.size == 0:
        return
    bound = tol * np.broadcast_to(np.asarray(atol_scale, dtype=np.float64), r.shape) + tol * np.abs(r)
    err = np.abs(g - r)
    ok = err <= bound
    if equal_nan:
        ok |= np.isnan(g) & np.isnan(r)
        ok |= np.isinf(r) & (g == r)
    if not ok.all():
        bad = np.argwhere(~ok)
        excess = np.where(ok, -np.inf, np.nan_to_num(err - bound, nan=np.inf))
        worst = np.unravel_index(int(np.argmax(excess)), r.shape)
        raise AssertionError(
            f"{name}: {len(bad)} of {r.size} elements out of tolerance (tol={tol:g}); worst at index "
            f"{tuple(int(i) for i in worst)}: got {g[worst]!r}, expected {r[worst]!r}, "
            f"|diff|={err[worst]:.3e} > bound {bound[worst]:.3e}; first bad indices "
            f"{[tuple(int(i) for i in b) for b in bad[:5]]}"
        )


def assert_bitwise_equal(name, a, b):
    """Same dtype, shape and bytes (NaNs with identical payloads compare equal)."""
    import torch

    def raw(t):
        if isinstance(t, torch.Tensor):
            t = t.detach().contiguous()
            if t.dtype in (torch.float16, torch.bfloat16):
                return t.view(torch.int16).numpy(), str(t.dtype)
            return t.numpy(), str(t.dtype)
        return np.ascontiguousarray(t), str(t.dtype)

    ra, da = raw(a)
    rb, db = raw(b)
    assert da == db, f"{name}: dtype {da} vs {db}"
    assert ra.shape == rb.shape, f"{name}: shape {ra.shape} vs {rb.shape}"
    va = ra.view(np.uint8)
    vb = rb.view(np.uint8)
    if not np.array_equal(va, vb):
        fa = ra.reshape(-1)
        fb = rb.reshape(-1)
        width = fa.dtype.itemsize
        neq = np.nonzero((va.reshape(-1, width) != vb.reshape(-1, width)).any(axis=1))[0]
        raise AssertionError(
            f"{name}: not bitwise identical at {len(neq)} of {fa.size} elements; first indices "
            f"{neq[:5].tolist()}: {[(fa[i].item(), fb[i].item()) for i in neq[:3]]}"
        )


# ---- scales for assert_close (see the docstring): the magnitude of the combined terms --------------


def rows_view(a, normalized_shape):
    m, _, _ = _rows(_f64(a), normalized_shape)
    return m


def dx_scale(dy, x, normalized_shape, weight, rstd_ref):
    """dx = rstd * (g - mean(g) - xhat * mean(g xhat)): its terms have size rstd * max|g| per row."""
    dym = rows_view(dy, normalized_shape)
    n = dym.shape[1]
    w = np.ones((1, n)) if weight is None else _f64(weight).reshape(1, n)
    g = np.abs(dym * w)
    per_row = np.asarray(rstd_ref, dtype=np.float64).reshape(-1) * (g.max(axis=1) if n else 0)
    return np.broadcast_to(per_row[:, None], dym.shape).reshape(_f64(x).shape)


def dweight_scale(dy, x, normalized_shape, xhat_ref):
    """dweight = sum over rows of dy * xhat: the sum of the magnitudes of its terms."""
    ns = _normalize_shape(normalized_shape)
    dym = rows_view(dy, ns)
    xh = rows_view(xhat_ref, ns)
    return np.abs(dym * xh).sum(axis=0).reshape(ns)


def dbias_scale(dy, normalized_shape):
    ns = _normalize_shape(normalized_shape)
    return np.abs(rows_view(dy, ns)).sum(axis=0).reshape(ns)


def layer_norm_xhat(x, normalized_shape, eps):
    return layer_norm_forward(x, normalized_shape, None, None, eps)[0]


def rms_norm_xhat(x, normalized_shape, eps):
    return rms_norm_forward(x, normalized_shape, None, eps)[0]


def layer_norm_xhat_terms(x, normalized_shape, eps):
    """(|x| + |mean|) * rstd per element: the size of the terms that form xhat = (x - mean) * rstd.

    Any implementation rounds the mean to the accumulation type, so its xhat carries an absolute error
    of about u * (|x| + |mean|) * rstd rather than u * |xhat| (where x ~ mean, xhat is tiny but not
    relatively accurate; torch, computing x * rstd - mean * rstd, even returns non-zero xhat for rows
    of one element). The LayerNorm scales below use this instead of |xhat|; it differs from |xhat|
    materially only when |mean| * rstd is large (rows far from zero mean relative to their spread).
    """
    x = _f64(x)
    m, lead, ns = _rows(x, normalized_shape)
    n = m.shape[1]
    mu = m.sum(axis=1, keepdims=True) / n
    r = 1.0 / np.sqrt(((m - mu) ** 2).sum(axis=1, keepdims=True) / n + eps)
    return ((np.abs(m) + np.abs(mu)) * r).reshape(x.shape)


layer_norm_torch_xhat_scale = layer_norm_xhat_terms


def layer_norm_dweight_scale(dy, x, normalized_shape, eps):
    """sum over rows of |dy| * xhat-terms (see layer_norm_xhat_terms)."""
    return dweight_scale(dy, x, normalized_shape, layer_norm_xhat_terms(x, normalized_shape, eps))


def layer_norm_dx_scale(dy, x, normalized_shape, weight, eps):
    """rstd * max|g| per row (see dx_scale), times (1 + |mean| * rstd) for the rounded mean's effect."""
    _, mu, r = layer_norm_forward(x, normalized_shape, None, None, eps)
    base = dx_scale(dy, x, normalized_shape, weight, r)
    k = len(_normalize_shape(normalized_shape))
    f = (1.0 + np.abs(mu) * r).reshape(np.shape(mu) + (1,) * k)
    return base * f


def layer_norm_torch_y_scale(x, normalized_shape, weight, bias, eps):
    """Largest |xhat term * w| + |b| with torch's xhat error model (see layer_norm_torch_xhat_scale)."""
    ns = _normalize_shape(normalized_shape)
    s = rows_view(layer_norm_torch_xhat_scale(x, ns, eps), ns)
    if weight is not None:
        s = s * np.abs(_f64(weight)).reshape(1, -1)
    if bias is not None:
        s = s + np.abs(_f64(bias)).reshape(1, -1)
    return float(s.max(initial=0.0))


def param_views(lib, dtype, ns, seed):
    """Non-contiguous views (reversed, strided, broadcast, transposed) holding parameters of shape ns."""
    n = int(np.prod(ns))
    if lib == "numpy":
        base = make_numpy((3 * n,), dtype, seed, 0.5, 1.0)
        views = [("reversed", base[::-1][:n]), ("step-2", base[::2][:n]), ("step-3-reversed", base[::-3][:n])]
        views = [(nm, v.reshape(ns)) for nm, v in views]  # uniformly strided: reshape stays a view
        views.append(("broadcast", np.broadcast_to(make_numpy((1,) * len(ns), dtype, seed + 1, 0.5, 1.0), ns)))
        if len(ns) == 2:
            views.append(("transposed", make_numpy(ns[::-1], dtype, seed + 2, 0.5, 1.0).T))
    else:
        base = make_torch((3 * n,), dtype, seed, 0.5, 1.0)
        views = [("step-2", base[::2][:n].view(ns)), ("step-3", base[::3][:n].view(ns))]
        views.append(("expand", make_torch((1,) * len(ns), dtype, seed + 1, 0.5, 1.0).expand(*ns)))
        if len(ns) == 2:
            views.append(("t()", make_torch(ns[::-1], dtype, seed + 2, 0.5, 1.0).t()))
    for nm, v in views:
        assert not (v.flags.c_contiguous if lib == "numpy" else v.is_contiguous()), nm
    return views


# Significand bits (excluding the implicit one) and smallest subnormal spacing of the half types.
_HALF_FORMAT = {"float16": (10, 2.0**-24), "bfloat16": (7, 2.0**-133)}


def assert_rounded_once(name, got, ref, dtype, slack_scale, slack_ulps_f32=16):
    """For float16/bfloat16 results computed in float32 and rounded once:
    |got - ref| <= 0.5 ulp_dtype(ref) + slack_ulps_f32 * eps_f32 * slack_scale.

    The second term is the float32 computation's own error (terms of magnitude slack_scale); the
    first is one correct rounding. Rounding an intermediate (xhat, x - mean, g = dy * w) to the half
    type, or rounding twice, exceeds this bound.
    """
    nmant, min_spacing = _HALF_FORMAT[dtype]
    g = _f64(got)
    r = _f64(ref)
    assert g.shape == r.shape, f"{name}: shape {g.shape}, expected {r.shape}"
    if r.size == 0:
        return
    mag = np.abs(r)
    with np.errstate(divide="ignore"):
        e = np.floor(np.log2(np.where(mag > 0, mag, 1.0)))
    ulp = np.maximum(2.0 ** (e - nmant), min_spacing)
    bound = 0.5 * ulp + slack_ulps_f32 * float(np.finfo(np.float32).eps) * np.broadcast_to(slack_scale, r.shape)
    err = np.abs(g - r)
    ok = err <= bound
    if not ok.all():
        worst = np.unravel_index(int(np.argmax(np.where(ok, -np.inf, err / bound))), r.shape)
        raise AssertionError(
            f"{name}: {int((~ok).sum())} of {r.size} {dtype} elements are not the once-rounded float32 "
            f"result; worst at {tuple(int(i) for i in worst)}: got {g[worst]!r}, exact {r[worst]!r}, "
            f"|diff| = {err[worst] / ulp[worst]:.2f} ulp > bound {bound[worst] / ulp[worst]:.2f} ulp"
        )


def dirty_small_arrays():
    """Frees a few small arrays full of 7s, so that np.empty outputs an op forgets to write are likely
    to hold 7s rather than zeros."""
    for _ in range(8):
        del_me = np.full(64, 7.0, np.float32)  # noqa: F841
        del del_me
