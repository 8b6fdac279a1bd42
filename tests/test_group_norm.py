"""GroupNorm: normkit.functional (torch and NumPy arrays), normkit.torch.GroupNorm and
normkit.numpy.GroupNorm, for 1-D, 2-D and 3-D spatial ranks, NCHW and channels-last, against the
float64 references and torch.nn.

Tolerances: R.TOL per dtype (half types ~4 unit roundoffs: float32 math, one rounding; float32 1e-5 for
reductions of <= ~10^4 elements; float64 1e-12), absolute parts scaled by the magnitude of the terms.
"""

import channel_reference as CR
import normkit
import numpy as np
import pytest
import reference as R
import torch
import torch.nn.functional as TF
from normkit import functional as nkF

EPS = 1e-5
HALF = ("float16", "bfloat16")


def nt():
    import normkit.torch as m

    return m


def nknp():
    import normkit.numpy as m

    return m


def layout(t, fmt):
    return CR.to_channels_last_torch(t) if fmt == "cl" else t.contiguous()


# (x shape, num_groups, layout)
FUNC_CASES = [
    ((4, 6), 3, "nc"),  # no spatial dims
    ((3, 6, 7), 2, "nc"),  # 1-D spatial, odd
    ((3, 6, 7), 3, "cl"),  # 1-D spatial, NLC strides
    ((1, 1, 5), 1, "nc"),  # N = 1, C = 1
    ((2, 8, 5, 3), 4, "nc"),
    ((2, 8, 5, 3), 4, "cl"),
    ((2, 8, 5, 3), 8, "cl"),  # one channel per group (= InstanceNorm)
    ((2, 8, 5, 3), 1, "cl"),  # one group (= LayerNorm over C, H, W)
    ((3, 4, 1, 1), 2, "cl"),  # spatial size 1
    ((2, 512, 3, 3), 32, "cl"),  # large C
    ((2, 160, 12, 11), 8, "cl"),  # rows of 128+ channels summed in address order, blocks of two chunks
    ((2, 40, 3, 2), 5, "cl"),  # groups across a register tile of channels and the remainder
    ((2, 512, 3, 3), 32, "nc"),
    ((2, 6, 3, 2, 5), 3, "nc"),  # 3-D spatial
    ((2, 6, 3, 2, 5), 3, "cl"),
    ((1, 12, 1, 3, 1), 6, "cl"),
    # samples larger than one task's cache budget (float32: 2.25 MiB of dy and x each): the forward
    # pipelines samples across all threads, the backward goes sample by sample with all threads on one
    ((2, 64, 96, 96), 32, "cl"),
]


def case_id(case):
    return "x".join(map(str, case[0])) + f"-g{case[1]}-{case[2]}"


@pytest.mark.parametrize("affine", (True, False), ids=("affine", "plain"))
@pytest.mark.parametrize("dtype", R.DTYPES)
@pytest.mark.parametrize("case", FUNC_CASES, ids=case_id)
def test_functional_torch_vs_reference(case, dtype, affine):
    shape, g, fmt = case
    n, c = shape[:2]
    seed = 71 + sum(shape) + g
    x = layout(R.make_torch(shape, dtype, seed), fmt)
    dy = layout(R.make_torch(shape, dtype, seed + 1, 1.0, 0.0), fmt)
    w = R.make_torch((c,), dtype, seed + 2, 0.7, 1.0) if affine else None
    b = R.make_torch((c,), dtype, seed + 3) if affine else None
    snap = R.snapshot(x, dy, w, b)
    tol = R.TOL[dtype]
    acc_tol = R.TOL[R.ACC_DTYPE[dtype]]

    y, mean, rstd = nkF.group_norm_forward(x, g, w, b, EPS)
    ref = CR.group_norm_forward(x, g, w, b, EPS)
    assert isinstance(y, torch.Tensor) and y.dtype == x.dtype and tuple(y.shape) == shape
    if CR.keeps_channels_last_torch(x):
        assert CR.is_channels_last_torch(y), f"channels-last input, output strides {y.stride()}"
    else:  # (channels-first, or a 3-D NLC input: contiguous, as torch)
        assert y.is_contiguous(), f"output strides {y.stride()}"
    acc = torch.float64 if dtype == "float64" else torch.float32
    for name, s in (("mean", mean), ("rstd", rstd)):
        assert tuple(s.shape) == (n, g) and s.dtype == acc, (name, s.shape, s.dtype)
    xmax = float(np.abs(R.to_f64(x)).max())
    R.assert_close("y", y, ref["y"], tol, CR.y_scale(ref["xmag"], w, b))
    R.assert_close("mean", mean, ref["mean"], acc_tol, xmax)
    R.assert_close("rstd", rstd, ref["rstd"], acc_tol, 0.0)
    R.assert_bitwise_equal("group_norm vs group_norm_forward", nkF.group_norm(x, g, w, b, EPS), y)

    dx, dw, db = nkF.group_norm_backward(dy, x, g, mean, rstd, w, (True, True, True))
    assert dx.dtype == x.dtype and tuple(dx.shape) == shape
    if fmt == "cl":
        assert CR.is_channels_last_torch(dx), f"dx strides {dx.stride()}"
    if not affine:
        assert dw is None
        assert db is not None and db.dtype == x.dtype
    R.assert_unchanged((x, dy, w, b), snap)
    dxr, dwr, dbr = CR.group_norm_backward(dy, x, g, w, EPS)
    dxs = CR.dx_scale(dy, x, w, g, True, ref["rstd"])
    R.assert_close("dx", dx, dxr, tol, dxs)
    if affine:
        R.assert_close("dweight", dw, dwr, tol, CR.dweight_scale(dy, ref["xmag"]))
    R.assert_close("dbias", db, dbr, tol, CR.dbias_scale(dy))

    # torch.nn.functional.group_norm (float32 compute for the half types, as the library)
    cdt = torch.float32 if dtype in HALF else x.dtype
    xt = x.to(cdt).requires_grad_()
    wt = w.to(cdt).requires_grad_() if affine else None
    bt = b.to(cdt).requires_grad_() if affine else None
    yt = TF.group_norm(xt, g, wt, bt, EPS)
    yt.backward(dy.to(cdt))
    R.assert_close("y vs torch", y, yt, tol, CR.y_scale(ref["xmag"], w, b))
    R.assert_close("dx vs torch", dx, xt.grad, tol, dxs)
    if affine:
        R.assert_close("dweight vs torch", dw, wt.grad, tol, CR.dweight_scale(dy, ref["xmag"]))
        R.assert_close("dbias vs torch", db, bt.grad, tol, CR.dbias_scale(dy))


@pytest.mark.parametrize("dtype", R.NUMPY_DTYPES)
@pytest.mark.parametrize("case", [((3, 6, 7), 3, "nc"), ((3, 6, 7), 2, "cl"), ((2, 8, 3, 5), 2, "cl"),
                                  ((2, 6, 2, 3, 3), 3, "cl"), ((4, 6), 2, "nc")], ids=case_id)
def test_functional_numpy(case, dtype):
    shape, g, fmt = case
    n, c = shape[:2]
    x = R.make_numpy(shape, dtype, 1)
    dy = R.make_numpy(shape, dtype, 2, 1.0, 0.0)
    if fmt == "cl":
        x, dy = CR.to_channels_last_numpy(x), CR.to_channels_last_numpy(dy)
    w = R.make_numpy((c,), dtype, 3, 0.7, 1.0)
    b = R.make_numpy((c,), dtype, 4)
    y, mean, rstd = nkF.group_norm_forward(x, g, w, b)
    assert isinstance(y, np.ndarray) and y.dtype == x.dtype and y.shape == shape
    if fmt == "cl":
        assert CR.is_channels_last_numpy(y), y.strides
    assert mean.shape == (n, g) and rstd.shape == (n, g) and mean.dtype == np.dtype(R.ACC_DTYPE[dtype])
    ref = CR.group_norm_forward(x, g, w, b)
    tol = R.TOL[dtype]
    R.assert_close("y", y, ref["y"], tol, CR.y_scale(ref["xmag"], w, b))
    dx, dw, db = nkF.group_norm_backward(dy, x, g, mean, rstd, w)
    assert isinstance(dx, np.ndarray) and dx.dtype == x.dtype
    if fmt == "cl":
        assert CR.is_channels_last_numpy(dx), dx.strides
    dxr, dwr, dbr = CR.group_norm_backward(dy, x, g, w)
    R.assert_close("dx", dx, dxr, tol, CR.dx_scale(dy, x, w, g, True, ref["rstd"]))
    R.assert_close("dweight", dw, dwr, tol, CR.dweight_scale(dy, ref["xmag"]))
    R.assert_close("dbias", db, dbr, tol, CR.dbias_scale(dy))


@pytest.mark.parametrize("fmt", ("nc", "cl"))
def test_large_mean_small_std_float32(fmt):
    """Groups with mean 1e4 and std 0.1 in float32: the variance read back from rstd
    (1/rstd^2 - eps) within 1e-4 relative of the float64 variance of the same data (see the BatchNorm
    test of the same name)."""
    rng = np.random.default_rng(5)
    n, c, g = 4, 8, 2
    base = rng.standard_normal((n, c, 16, 16)) * 0.1 + 1e4 * (1 + np.arange(n)).reshape(n, 1, 1, 1)
    x = torch.from_numpy(base.astype(np.float32))
    if fmt == "cl":
        x = CR.to_channels_last_torch(x)
    _, _, rstd = nkF.group_norm_forward(x, g)
    var_ref = CR.group_norm_forward(x, g)["var"]
    var_got = 1.0 / R.to_f64(rstd) ** 2 - EPS
    rel = np.abs(var_got - var_ref) / var_ref
    assert (rel <= 1e-4).all(), f"group variance {var_got} vs float64 {var_ref}: relative error {rel}"


# ----------------------------------------------------------------------------------------------------
# normkit.torch.GroupNorm vs torch.nn.GroupNorm
# ----------------------------------------------------------------------------------------------------

MODULE_CASES = [
    # (id, N, C, G, spatial, layout, kwargs)
    ("1d", 3, 6, 2, (7,), "nc", {}),
    ("1d-noaffine", 2, 4, 4, (5,), "nc", {"affine": False}),
    ("1d-NLC", 3, 6, 3, (5,), "cl", {}),
    ("0d", 5, 6, 3, (), "nc", {}),
    ("2d", 2, 8, 4, (5, 3), "nc", {}),
    ("2d-cl", 2, 8, 4, (5, 3), "cl", {"eps": 1e-3}),
    ("2d-N1-C1", 1, 1, 1, (3, 4), "nc", {}),
    ("2d-spatial1-cl", 4, 6, 3, (1, 1), "cl", {}),
    ("2d-C512-cl", 2, 512, 32, (3, 3), "cl", {}),
    ("3d", 2, 6, 3, (2, 3, 4), "nc", {}),
    ("3d-cl", 2, 6, 3, (2, 3, 4), "cl", {}),
    ("3d-cl-noaffine", 1, 4, 2, (3, 1, 3), "cl", {"affine": False}),
]


@pytest.mark.parametrize("dtype", R.DTYPES)
@pytest.mark.parametrize("case", MODULE_CASES, ids=lambda c: c[0])
def test_module_parity_with_torch(case, dtype):
    cid, n, c, g, spatial, fmt, kwargs = case
    seed = 900 + len(cid) * 3 + c
    twin, ref = CR.make_module_pair(torch.nn.GroupNorm, nt().GroupNorm, (g, c), kwargs, dtype, seed)
    same = None
    if dtype == "float32":
        same = torch.nn.GroupNorm(g, c, **kwargs)
        same.load_state_dict(twin.state_dict())
    shape = (n, c) + spatial
    for step, mode in enumerate(("train", "eval")):  # GroupNorm: the same in both
        for m in (twin, ref) + ((same,) if same is not None else ()):
            m.train(mode == "train")
        x = R.make_torch(shape, dtype, seed + 10 * step + 1)
        dy = R.make_torch(shape, dtype, seed + 10 * step + 2, 1.0, 0.0)
        if fmt == "cl":
            x, dy = CR.to_channels_last_torch(x), CR.to_channels_last_torch(dy)
        CR.twin_step(twin, ref, x, dy, "group", tag=f"step {step} ({mode}): ", same=same)


def test_module_structure_matches_torch():
    for kwargs in ({}, {"affine": False}, {"eps": 1e-3}):
        a = nt().GroupNorm(4, 8, **kwargs)
        t = torch.nn.GroupNorm(4, 8, **kwargs)
        assert isinstance(a, torch.nn.GroupNorm)
        assert a.extra_repr() == t.extra_repr()
        assert list(a.state_dict().keys()) == list(t.state_dict().keys())
        a.load_state_dict(t.state_dict())


@pytest.mark.parametrize("fmt", ("nc", "cl", "1d", "3d-cl"))
def test_gradcheck(fmt):
    F = nt().functional
    shape = {"nc": (2, 6, 3, 2), "cl": (2, 6, 3, 2), "1d": (3, 4, 5), "3d-cl": (2, 4, 2, 2, 3)}[fmt]
    g = 2 if shape[1] == 4 else 3
    x = R.make_torch(shape, "float64", 1)
    if "cl" in fmt:
        x = CR.to_channels_last_torch(x)
    x.requires_grad_()
    c = shape[1]
    w = R.make_torch((c,), "float64", 2, 0.5, 1.0).requires_grad_()
    b = R.make_torch((c,), "float64", 3).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w, b: F.group_norm(x, g, w, b, EPS), (x, w, b), eps=1e-6, atol=1e-7,
                                    rtol=1e-5)


# ----------------------------------------------------------------------------------------------------
# normkit.numpy.GroupNorm
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", R.NUMPY_DTYPES)
@pytest.mark.parametrize("case", [((3, 6, 7), 3, "nc"), ((2, 8, 3, 5), 4, "cl"), ((2, 6, 2, 3, 3), 2, "cl"),
                                  ((5, 4), 2, "nc")], ids=case_id)
@pytest.mark.parametrize("affine", (True, False), ids=("affine", "plain"))
def test_numpy_layer(case, dtype, affine):
    shape, g, fmt = case
    c = shape[1]
    layer = nknp().GroupNorm(g, c, affine=affine, dtype=np.dtype(dtype))
    t = torch.nn.GroupNorm(g, c, affine=affine)
    assert list(layer.state_dict().keys()) == list(t.state_dict().keys())
    if affine:
        layer.weight[...] = R.make_numpy((c,), dtype, 1, 0.7, 1.0)
        layer.bias[...] = R.make_numpy((c,), dtype, 2)
    w = layer.weight.copy() if affine else None
    b = layer.bias.copy() if affine else None
    x = R.make_numpy(shape, dtype, 3)
    dy = R.make_numpy(shape, dtype, 4, 1.0, 0.0)
    if fmt == "cl":
        x, dy = CR.to_channels_last_numpy(x), CR.to_channels_last_numpy(dy)
    tol = R.TOL[dtype]
    for mode in ("train", "eval"):
        layer.train(mode == "train")
        y = layer(x)
        assert isinstance(y, np.ndarray) and y.dtype == np.dtype(dtype) and y.shape == shape
        if fmt == "cl":
            assert CR.is_channels_last_numpy(y), y.strides
        ref = CR.group_norm_forward(x, g, w, b)
        R.assert_close(mode + ": y", y, ref["y"], tol, CR.y_scale(ref["xmag"], w, b))
        dx = layer.backward(dy)
        dxr, dwr, dbr = CR.group_norm_backward(dy, x, g, w)
        R.assert_close(mode + ": dx", dx, dxr, tol, CR.dx_scale(dy, x, w, g, True, ref["rstd"]))
        if affine:
            assert set(layer.grads) == {"weight", "bias"}
            R.assert_close(mode + ": dweight", layer.grads["weight"], dwr, tol, CR.dweight_scale(dy, ref["xmag"]))
            R.assert_close(mode + ": dbias", layer.grads["bias"], dbr, tol, CR.dbias_scale(dy))


# ----------------------------------------------------------------------------------------------------
# Determinism: 1 vs 2 threads, bitwise
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ("float32", "float16"))
@pytest.mark.parametrize("shape,g,fmt", [((4, 64, 24, 25), 8, "nc"), ((4, 64, 24, 25), 8, "cl"),
                                         ((64, 32, 7, 7), 32, "cl"), ((2, 16, 8, 9, 10), 4, "nc"),
                                         # 1 thread: a sample per task; 2 threads: too few samples for
                                         # that, all threads on one sample at a time
                                         ((3, 32, 16, 20), 8, "cl"),
                                         # channels-last samples of 1.2 MB (float32): the forward
                                         # pipelines samples across all threads
                                         ((3, 64, 64, 72), 8, "cl"),
                                         # 1 thread: each task takes its 3 statistics' moments and
                                         # normalizes them, pipelined (segments of 2 chunks, the
                                         # second ending in a short block); 2 threads: too few
                                         # statistics for a task each, unfused passes
                                         ((1, 3, 200, 201), 3, "nc")])
def test_threads_bitwise_identical(shape, g, fmt, dtype):
    c = shape[1]
    x = layout(R.make_torch(shape, dtype, 1), fmt)
    dy = layout(R.make_torch(shape, dtype, 2, 1.0, 0.0), fmt)
    w = R.make_torch((c,), dtype, 3, 0.5, 1.0)
    b = R.make_torch((c,), dtype, 4)
    before = normkit.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 1):
            normkit.set_num_threads(threads)
            y, mean, rstd = nkF.group_norm_forward(x, g, w, b, EPS)
            dx, dw, db = nkF.group_norm_backward(dy, x, g, mean, rstd, w)
            results.append({"y": y, "mean": mean, "rstd": rstd, "dx": dx, "dweight": dw, "dbias": db})
    finally:
        normkit.set_num_threads(before)
    assert normkit.get_num_threads() == before
    for other in results[1:]:
        for k in results[0]:
            R.assert_bitwise_equal(f"{k} (1 vs 2 threads)", results[0][k], other[k])


@pytest.mark.parametrize("seed", range(16))
def test_randomized_module_configurations(seed):
    CR.run_random_module_config(seed, "group", "GroupNorm", nt())


def test_backward_output_mask():
    x = R.make_torch((3, 6, 5), "float32", 1)
    dy = R.make_torch((3, 6, 5), "float32", 2, 1.0, 0.0)
    w = R.make_torch((6,), "float32", 3, 0.5, 1.0)
    _, mean, rstd = nkF.group_norm_forward(x, 2, w)
    full = nkF.group_norm_backward(dy, x, 2, mean, rstd, w)
    dx, dw, db = nkF.group_norm_backward(dy, x, 2, mean, rstd, w, output_mask=(True, False, False))
    assert dw is None and db is None
    R.assert_bitwise_equal("dx (masked call)", dx, full[0])
    dx, dw, db = nkF.group_norm_backward(dy, x, 2, mean, rstd, w, output_mask=(False, True, True))
    assert dx is None
    R.assert_bitwise_equal("dweight (masked call)", dw, full[1])
    R.assert_bitwise_equal("dbias (masked call)", db, full[2])


@pytest.mark.parametrize("dtype", ("bfloat16", "float32", "float64"))
@pytest.mark.parametrize("case", [((2, 64, 40, 41), 4, "nc"), ((2, 64, 40, 41), 4, "cl"), ((3, 6, 1, 30001), 3, "nc"),
                                  ((2, 96, 7, 9, 11), 3, "cl"), ((4, 1000), 10, "nc")], ids=case_id)
def test_long_reductions(case, dtype):
    """Many values per group (up to ~6e4), sizes off every block multiple: float32 still ~1e-6 <= 1e-5."""
    shape, g, fmt = case
    c = shape[1]
    x = layout(R.make_torch(shape, dtype, 41), fmt)
    dy = layout(R.make_torch(shape, dtype, 42, 1.0, 0.0), fmt)
    w = R.make_torch((c,), dtype, 43, 0.7, 1.0)
    b = R.make_torch((c,), dtype, 44)
    tol = R.TOL[dtype]
    y, mean, rstd = nkF.group_norm_forward(x, g, w, b, EPS)
    ref = CR.group_norm_forward(x, g, w, b, EPS)
    R.assert_close("y", y, ref["y"], tol, CR.y_scale(ref["xmag"], w, b))
    R.assert_close("rstd", rstd, ref["rstd"], R.TOL[R.ACC_DTYPE[dtype]], 0.0)
    dx, dw, db = nkF.group_norm_backward(dy, x, g, mean, rstd, w)
    dxr, dwr, dbr = CR.group_norm_backward(dy, x, g, w, EPS)
    R.assert_close("dx", dx, dxr, tol, CR.dx_scale(dy, x, w, g, True, ref["rstd"]))
    R.assert_close("dweight", dw, dwr, tol, CR.dweight_scale(dy, ref["xmag"]))
    R.assert_close("dbias", db, dbr, tol, CR.dbias_scale(dy))


@pytest.mark.parametrize("dtype", HALF)
def test_mixed_precision_half_input_float32_params(dtype):
    """Half x, float32 weight / bias: y / dx within the half tolerance, dweight / dbias (float32 sums)
    within float32's 1e-5."""
    shape, g, c = (3, 8, 5, 4), 4, 8
    x = CR.to_channels_last_torch(R.make_torch(shape, dtype, 81))
    dy = R.make_torch(shape, dtype, 82, 1.0, 0.0)
    w = R.make_torch((c,), "float32", 83, 0.7, 1.0)
    b = R.make_torch((c,), "float32", 84)
    y, mean, rstd = nkF.group_norm_forward(x, g, w, b)
    assert y.dtype == x.dtype
    ref = CR.group_norm_forward(x, g, w, b)
    tol, f32 = R.TOL[dtype], R.TOL["float32"]
    R.assert_close("y", y, ref["y"], tol, CR.y_scale(ref["xmag"], w, b))
    R.assert_close("rstd", rstd, ref["rstd"], f32, 0.0)
    dx, dw, db = nkF.group_norm_backward(dy, x, g, mean, rstd, w, bias_dtype="float32")
    assert dx.dtype == x.dtype and dw.dtype == torch.float32 and db.dtype == torch.float32
    dxr, dwr, dbr = CR.group_norm_backward(dy, x, g, w)
    R.assert_close("dx", dx, dxr, tol, CR.dx_scale(dy, x, w, g, True, ref["rstd"]))
    R.assert_close("dweight", dw, dwr, f32, CR.dweight_scale(dy, ref["xmag"]))
    R.assert_close("dbias", db, dbr, f32, CR.dbias_scale(dy))


@pytest.mark.parametrize("shape,groups", [((2, 0, 4), 1), ((2, 0), 3), ((0, 0, 4), 2)])
def test_no_channels_gives_an_empty_output_as_torch(shape, groups):
    import normkit.torch as nt

    x = torch.randn(shape, requires_grad=True)
    y = nt.GroupNorm(groups, 0)(x)
    y.sum().backward()
    assert y.shape == torch.nn.GroupNorm(groups, 0)(x).shape == x.grad.shape == shape
