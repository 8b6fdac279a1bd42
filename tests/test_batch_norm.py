"""BatchNorm: normkit.functional (torch and NumPy arrays), normkit.torch twins and normkit.numpy layers,
against the float64 references (tests/channel_reference.py) and against torch.nn / autograd.

Tolerances (R.TOL, relative to the float64 answer for the same rounded inputs, with an absolute part
scaled by the magnitude of the combined terms, see channel_reference's *_scale helpers):
  float16 2e-3 (~4 unit roundoffs of 2^-11), bfloat16 1.6e-2 (~4u of 2^-8): the library accumulates in
  float32 and rounds each output once; float32 1e-5: reductions over <= ~10^4 elements per channel
  cost ~log2(n)..sqrt(n) u ~ 1e-6, any formula error (biased/unbiased mix-up, eps misplaced, a
  missing backward term) is >= 1e-3; float64 1e-12 ~ 1e4 u.
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


def acc_torch(dtype):
    return torch.float64 if dtype == "float64" else torch.float32


def layout(t, fmt):
    return CR.to_channels_last_torch(t) if fmt == "cl" else t.contiguous()


def rand_stats(c, dtype, seed, lib="torch"):
    rng = np.random.default_rng(seed)
    rm = rng.standard_normal(c) * 0.5
    rv = rng.uniform(0.5, 2.0, size=c)
    if lib == "torch":
        return torch.from_numpy(rm).to(R.torch_dtype(dtype)), torch.from_numpy(rv).to(R.torch_dtype(dtype))
    return rm.astype(dtype), rv.astype(dtype)


# ----------------------------------------------------------------------------------------------------
# normkit.functional on torch tensors: forward (y, save_mean, save_rstd, running stats in place) and
# backward against the float64 reference
# ----------------------------------------------------------------------------------------------------

FUNC_SHAPES = [
    ((8, 5), "nc"),  # BatchNorm1d on [N, C]
    ((3, 4, 7), "nc"),  # odd L
    ((3, 4, 7), "cl"),  # NLC strides
    ((1, 3, 9), "nc"),  # N = 1 (training is fine: 9 values per channel)
    ((4, 1, 5, 3), "nc"),  # C = 1
    ((4, 1, 5, 3), "cl"),
    ((5, 6, 1, 1), "cl"),  # spatial size 1
    ((2, 7, 3, 5), "nc"),
    ((2, 7, 3, 5), "cl"),
    ((2, 512, 3, 3), "cl"),  # large C, channels-last
    ((3, 160, 9, 11), "cl"),  # rows of 128+ channels summed in address order, blocks of two chunks
    ((2, 512, 3, 3), "nc"),
    ((3, 40, 2, 3), "cl"),  # channels-last sums: whole register tiles of channels plus a remainder
    ((2, 3, 3, 4, 5), "nc"),
    ((2, 3, 3, 4, 5), "cl"),
    ((3, 16, 1, 2, 1), "cl"),
]


def shape_id(case):
    return "x".join(map(str, case[0])) + "-" + case[1]


@pytest.mark.parametrize("training", (True, False), ids=("train", "eval"))
@pytest.mark.parametrize("dtype", R.DTYPES)
@pytest.mark.parametrize("case", FUNC_SHAPES, ids=shape_id)
def test_functional_torch_vs_reference(case, dtype, training):
    shape, fmt = case
    c = shape[1]
    seed = 11 + sum(shape) + len(shape)
    x = layout(R.make_torch(shape, dtype, seed), fmt)
    dy = layout(R.make_torch(shape, dtype, seed + 1, 1.0, 0.0), fmt)
    w = R.make_torch((c,), dtype, seed + 2, 0.7, 1.0)
    b = R.make_torch((c,), dtype, seed + 3, 1.0, 0.0)
    rm, rv = rand_stats(c, dtype, seed + 4)
    momentum = 0.3
    snap = R.snapshot(x, dy, w, b)
    stats_before = CR.f64_copies(rm, rv)  # float64 values, for the references
    stats_snap = R.snapshot(rm, rv)
    tol = R.TOL[dtype]
    acc_tol = R.TOL[R.ACC_DTYPE[dtype]]

    y, sm, sr = nkF.batch_norm_forward(x, rm, rv, w, b, training, momentum, EPS)
    ref = CR.batch_norm_forward(x, stats_before[0], stats_before[1], w, b, training, momentum, EPS)

    assert isinstance(y, torch.Tensor) and y.dtype == x.dtype and tuple(y.shape) == shape
    if CR.keeps_channels_last_torch(x):
        assert CR.is_channels_last_torch(y), f"channels-last input, output strides {y.stride()}"
    else:  # (channels-first, or a 3-D NLC input: contiguous, as torch)
        assert y.is_contiguous(), f"output strides {y.stride()}"
    for name, s in (("save_mean", sm), ("save_rstd", sr)):
        assert isinstance(s, torch.Tensor) and tuple(s.shape) == (c,), (name, s.shape)
        assert s.dtype == acc_torch(dtype), (name, s.dtype)
    R.assert_unchanged((x, dy, w, b), snap)

    xmax = float(np.abs(R.to_f64(x)).max())
    R.assert_close("y", y, ref["y"], tol, CR.y_scale(ref["xmag"], w, b))
    R.assert_close("save_mean", sm, ref["save_mean"], acc_tol, xmax)
    R.assert_close("save_rstd", sr, ref["save_rstd"], acc_tol, 0.0)
    if training:
        # running statistics move in place, in their own dtype, by the unbiased batch variance
        R.assert_close("running_mean", rm, ref["running_mean"], tol, xmax + np.abs(stats_before[0]).max())
        R.assert_close("running_var", rv, ref["running_var"], tol, 0.0)
    else:
        R.assert_unchanged((rm, rv), stats_snap)

    # y-only entry point: bitwise the same as the forward's y (on fresh copies of the running stats)
    rm2, rv2 = (torch.from_numpy(s.copy()).to(rm.dtype) for s in stats_before)
    y2 = nkF.batch_norm(x, rm2, rv2, w, b, training, momentum, EPS)
    R.assert_bitwise_equal("batch_norm vs batch_norm_forward", y2, y)
    R.assert_bitwise_equal("running_mean (second call)", rm2, rm)
    R.assert_bitwise_equal("running_var (second call)", rv2, rv)

    dx, dw, db = nkF.batch_norm_backward(dy, x, sm, sr, w, training, (True, True, True))
    assert dx.dtype == x.dtype and tuple(dx.shape) == shape
    if fmt == "cl":
        assert CR.is_channels_last_torch(dx), f"channels-last x and dy, dx strides {dx.stride()}"
    assert dw.dtype == w.dtype and tuple(dw.shape) == (c,)
    assert db.dtype == w.dtype and tuple(db.shape) == (c,)
    R.assert_unchanged((x, dy, w, b), snap)
    dxr, dwr, dbr = CR.batch_norm_backward(dy, x, w, training, stats_before[0], stats_before[1], EPS)
    rstd = ref["save_rstd"].reshape(1, c)
    R.assert_close("dx", dx, dxr, tol, CR.dx_scale(dy, x, w, c, False, rstd))
    R.assert_close("dweight", dw, dwr, tol, CR.dweight_scale(dy, ref["xmag"]))
    R.assert_close("dbias", db, dbr, tol, CR.dbias_scale(dy))

    # torch.nn.functional on the same values (float32 compute for the half types, as the library)
    cdt = torch.float32 if dtype in HALF else x.dtype
    xt = x.to(cdt).requires_grad_()
    wt = w.to(cdt).requires_grad_()
    bt = b.to(cdt).requires_grad_()
    rmt, rvt = (torch.from_numpy(s.copy()).to(cdt) for s in stats_before)
    yt = TF.batch_norm(xt, rmt, rvt, wt, bt, training, momentum, EPS)
    yt.backward(dy.to(cdt))
    R.assert_close("y vs torch", y, yt, tol, CR.y_scale(ref["xmag"], w, b))
    R.assert_close("dx vs torch", dx, xt.grad, tol, CR.dx_scale(dy, x, w, c, False, rstd))
    R.assert_close("dweight vs torch", dw, wt.grad, tol, CR.dweight_scale(dy, ref["xmag"]))
    R.assert_close("dbias vs torch", db, bt.grad, tol, CR.dbias_scale(dy))
    R.assert_close("running_mean vs torch", rm, rmt, tol, xmax + np.abs(stats_before[0]).max())
    R.assert_close("running_var vs torch", rv, rvt, tol, 0.0)


def test_functional_without_running_stats_and_affine():
    """training with running_mean=running_var=None and no weight/bias (as torch allows)."""
    x = R.make_torch((4, 3, 5, 2), "float32", 5)
    dy = R.make_torch((4, 3, 5, 2), "float32", 6, 1.0, 0.0)
    y, sm, sr = nkF.batch_norm_forward(x, None, None, None, None, True)
    ref = CR.batch_norm_forward(x, None, None, None, None, True)
    R.assert_close("y", y, ref["y"], 1e-5, CR.y_scale(ref["xmag"], None, None))
    dx, dw, db = nkF.batch_norm_backward(dy, x, sm, sr, None, True)
    dxr, _, dbr = CR.batch_norm_backward(dy, x, None, True)
    assert dw is None
    R.assert_close("dx", dx, dxr, 1e-5, CR.dx_scale(dy, x, None, 3, False, ref["save_rstd"].reshape(1, 3)))
    R.assert_close("dbias", db, dbr, 1e-5, CR.dbias_scale(dy))
    R.assert_close("y vs torch", y, TF.batch_norm(x, None, None, training=True), 1e-5, 4.0)


def test_backward_output_mask_and_bias_dtype():
    x = R.make_torch((4, 3, 5), "float32", 1)
    dy = R.make_torch((4, 3, 5), "float32", 2, 1.0, 0.0)
    w = R.make_torch((3,), "float32", 3, 0.5, 1.0)
    _, sm, sr = nkF.batch_norm_forward(x, None, None, w, None, True)
    full = nkF.batch_norm_backward(dy, x, sm, sr, w, True)
    dx, dw, db = nkF.batch_norm_backward(dy, x, sm, sr, w, True, output_mask=(True, False, False))
    assert dw is None and db is None
    R.assert_bitwise_equal("dx (masked call)", dx, full[0])
    dx, dw, db = nkF.batch_norm_backward(dy, x, sm, sr, w, True, output_mask=(False, True, True),
                                         bias_dtype="float64")
    assert dx is None
    R.assert_bitwise_equal("dweight (masked call)", dw, full[1])
    assert db.dtype == torch.float64
    R.assert_close("dbias float64", db, full[2], 1e-6, R.to_f64(dy).__abs__().sum(axis=(0, 2)))


# ----------------------------------------------------------------------------------------------------
# NumPy in -> NumPy out (also channels-last strided arrays)
# ----------------------------------------------------------------------------------------------------


_NUMPY_CASES = [((6, 4), "nc"), ((3, 5, 7), "cl"), ((3, 5, 4, 3), "nc"), ((3, 5, 4, 3), "cl"),
                ((2, 3, 2, 3, 5), "cl"), ((1, 8, 1, 1), "cl")]
# One value per channel is an error in training (test_channel_norm_errors): that shape runs in eval only.
_NUMPY_RUNS = [(case, training) for case in _NUMPY_CASES for training in (True, False)
               if not (training and int(np.prod(case[0])) // case[0][1] == 1)]


@pytest.mark.parametrize("dtype", R.NUMPY_DTYPES)
@pytest.mark.parametrize("case,training", _NUMPY_RUNS,
                         ids=[f"{shape_id(c)}-{'train' if t else 'eval'}" for c, t in _NUMPY_RUNS])
def test_functional_numpy(case, dtype, training):
    shape, fmt = case
    c = shape[1]
    x = R.make_numpy(shape, dtype, 3)
    dy = R.make_numpy(shape, dtype, 4, 1.0, 0.0)
    if fmt == "cl":
        x, dy = CR.to_channels_last_numpy(x), CR.to_channels_last_numpy(dy)
    w = R.make_numpy((c,), dtype, 5, 0.7, 1.0)
    b = R.make_numpy((c,), dtype, 6)
    rm, rv = rand_stats(c, dtype, 7, lib="numpy")
    before = CR.f64_copies(rm, rv)  # float64 values, for the references
    stats_snap = R.snapshot(rm, rv)
    y, sm, sr = nkF.batch_norm_forward(x, rm, rv, w, b, training, 0.2, EPS)
    assert isinstance(y, np.ndarray) and y.dtype == x.dtype and y.shape == shape
    if fmt == "cl":
        assert CR.is_channels_last_numpy(y), f"channels-last input {x.strides}, output strides {y.strides}"
    else:
        assert y.flags.c_contiguous
    assert isinstance(sm, np.ndarray) and sm.shape == (c,) and sm.dtype == np.dtype(R.ACC_DTYPE[dtype])
    assert isinstance(sr, np.ndarray) and sr.shape == (c,) and sr.dtype == np.dtype(R.ACC_DTYPE[dtype])
    ref = CR.batch_norm_forward(x, before[0], before[1], w, b, training, 0.2, EPS)
    tol = R.TOL[dtype]
    R.assert_close("y", y, ref["y"], tol, CR.y_scale(ref["xmag"], w, b))
    if training:
        R.assert_close("running_mean", rm, ref["running_mean"], tol, np.abs(R.to_f64(x)).max() + 1.0)
        R.assert_close("running_var", rv, ref["running_var"], tol, 0.0)
    else:
        R.assert_unchanged((rm, rv), stats_snap)
    dx, dw, db = nkF.batch_norm_backward(dy, x, sm, sr, w, training)
    assert isinstance(dx, np.ndarray) and dx.dtype == x.dtype
    if fmt == "cl":
        assert CR.is_channels_last_numpy(dx), f"dx strides {dx.strides}"
    dxr, dwr, dbr = CR.batch_norm_backward(dy, x, w, training, before[0], before[1], EPS)
    R.assert_close("dx", dx, dxr, tol, CR.dx_scale(dy, x, w, c, False, ref["save_rstd"].reshape(1, c)))
    R.assert_close("dweight", dw, dwr, tol, CR.dweight_scale(dy, ref["xmag"]))
    R.assert_close("dbias", db, dbr, tol, CR.dbias_scale(dy))


VIEWS = {
    "sliced": lambda: R.make_torch((6, 8, 9, 10), "float32", 9)[::2, 1:7, :, 1:8],
    "channel-strided": lambda: R.make_torch((4, 12, 5, 5), "float32", 9)[:, ::2],
    "permuted-NCWH": lambda: R.make_torch((4, 5, 7, 6), "float32", 9).permute(0, 3, 2, 1),
    "rank-6": lambda: R.make_torch((2, 6, 2, 3, 2, 3), "float32", 9),
    "numpy-sliced": lambda: R.make_numpy((6, 8, 9, 10), "float32", 9)[1::2, :6, ::3],
}


@pytest.mark.parametrize("op", ("batch", "instance", "group"))
@pytest.mark.parametrize("view", VIEWS)
def test_functional_strided_views(view, op):
    """Views that are neither NCHW- nor channels-last-compact (and a rank above 5) are read by their
    strides: same values as the reference, forward and backward."""
    x = VIEWS[view]()
    c = x.shape[1]
    dy = R.make_numpy(tuple(x.shape), "float32", 10, 1.0, 0.0)
    dy = torch.from_numpy(dy) if isinstance(x, torch.Tensor) else dy
    w = R.make_numpy((c,), "float32", 11, 0.7, 1.0)
    w = torch.from_numpy(w) if isinstance(x, torch.Tensor) else w
    if op == "batch":
        y, sm, sr = nkF.batch_norm_forward(x, None, None, w, None, True)
        ref = CR.batch_norm_forward(x, None, None, w, None, True)
        dx, dw, db = nkF.batch_norm_backward(dy, x, sm, sr, w, True)
        dxr, dwr, dbr = CR.batch_norm_backward(dy, x, w, True)
        groups, per_sample, rstd = c, False, ref["save_rstd"].reshape(1, c)
    elif op == "instance":
        y, sm, sr = nkF.instance_norm_forward(x, None, None, w)
        ref = CR.instance_norm_forward(x, None, None, w)
        dx, dw, db = nkF.instance_norm_backward(dy, x, sm, sr, w)
        dxr, dwr, dbr = CR.instance_norm_backward(dy, x, w)
        groups, per_sample, rstd = c, True, ref["save_rstd"]
    else:
        groups, per_sample = 3, True
        y, mean, rstd_ = nkF.group_norm_forward(x, groups, w)
        ref = CR.group_norm_forward(x, groups, w)
        dx, dw, db = nkF.group_norm_backward(dy, x, groups, mean, rstd_, w)
        dxr, dwr, dbr = CR.group_norm_backward(dy, x, groups, w)
        rstd = ref["rstd"]
    assert tuple(y.shape) == tuple(x.shape)
    R.assert_close("y", y, ref["y"], 1e-5, CR.y_scale(ref["xmag"], w, None))
    R.assert_close("dx", dx, dxr, 1e-5, CR.dx_scale(dy, x, w, groups, per_sample, rstd))
    R.assert_close("dweight", dw, dwr, 1e-5, CR.dweight_scale(dy, ref["xmag"]))
    R.assert_close("dbias", db, dbr, 1e-5, CR.dbias_scale(dy))


# ----------------------------------------------------------------------------------------------------
# normkit.torch twins vs torch.nn over several steps (train, eval, train again)
# ----------------------------------------------------------------------------------------------------

# (id, dims, N, C, spatial, layout, kwargs, modes)
TTT = ("train", "train", "eval", "train")
MODULE_CASES = [
    ("1d-NC", 1, 8, 5, (), "nc", {}, TTT),
    ("1d-NCL-odd", 1, 3, 4, (7,), "nc", {"momentum": 0.3}, TTT),
    ("1d-NLC", 1, 3, 4, (7,), "cl", {}, TTT),
    ("2d", 2, 4, 3, (5, 7), "nc", {}, TTT),
    ("2d-cl", 2, 4, 3, (5, 7), "cl", {}, TTT),
    ("2d-C1", 2, 5, 1, (3, 3), "nc", {"momentum": 0.5}, TTT),
    ("2d-spatial1-cl", 2, 6, 8, (1, 1), "cl", {}, TTT),
    ("2d-C512-cl", 2, 2, 512, (3, 5), "cl", {}, ("train", "eval")),
    ("2d-C512", 2, 2, 512, (3, 5), "nc", {}, ("train", "eval")),
    ("2d-N1-train", 2, 1, 6, (4, 5), "nc", {}, TTT),
    ("2d-N1-S1-eval", 2, 1, 6, (1, 1), "cl", {}, ("eval", "eval")),
    ("2d-noaffine-mNone-cl", 2, 4, 6, (3, 5), "cl", {"affine": False, "momentum": None}, TTT),
    ("2d-mNone", 2, 3, 4, (2, 3), "nc", {"momentum": None}, ("train", "train", "train", "eval")),
    ("2d-notrack", 2, 4, 6, (3, 5), "nc", {"track_running_stats": False}, ("train", "eval")),
    ("2d-notrack-cl-eps", 2, 4, 6, (3, 5), "cl", {"track_running_stats": False, "eps": 1e-3}, ("eval",)),
    ("3d", 3, 2, 4, (3, 5, 2), "nc", {}, TTT),
    ("3d-cl-mNone", 3, 2, 4, (3, 5, 2), "cl", {"momentum": None}, TTT),
    ("3d-spatial1-cl", 3, 4, 3, (1, 1, 1), "cl", {}, TTT),
]


@pytest.mark.parametrize("dtype", R.DTYPES)
@pytest.mark.parametrize("case", MODULE_CASES, ids=lambda c: c[0])
def test_module_parity_with_torch(case, dtype):
    cid, dims, n, c, spatial, fmt, kwargs, modes = case
    torch_cls = getattr(torch.nn, f"BatchNorm{dims}d")
    nk_cls = getattr(nt(), f"BatchNorm{dims}d")
    seed = 100 + len(cid) * 13 + c
    twin, ref = CR.make_module_pair(torch_cls, nk_cls, (c,), kwargs, dtype, seed)
    same = None
    if dtype == "float32":
        same = torch_cls(c, **kwargs)
        same.load_state_dict(twin.state_dict())
    shape = (n, c) + spatial
    for step, mode in enumerate(modes):
        for m in (twin, ref) + ((same,) if same is not None else ()):
            m.train(mode == "train")
        x = R.make_torch(shape, dtype, seed + 10 * step + 1)
        dy = R.make_torch(shape, dtype, seed + 10 * step + 2, 1.0, 0.0)
        if fmt == "cl":
            x, dy = CR.to_channels_last_torch(x), CR.to_channels_last_torch(dy)
        CR.twin_step(twin, ref, x, dy, "batch", tag=f"step {step} ({mode}): ", same=same)
    if twin.track_running_stats:
        expected = sum(1 for m in modes if m == "train")
        assert int(twin.num_batches_tracked) == expected


def test_module_structure_matches_torch():
    m = nt()
    for dims in (1, 2, 3):
        for kwargs in ({}, {"affine": False}, {"track_running_stats": False}, {"momentum": None, "eps": 1e-3}):
            a = getattr(m, f"BatchNorm{dims}d")(7, **kwargs)
            t = getattr(torch.nn, f"BatchNorm{dims}d")(7, **kwargs)
            assert isinstance(a, getattr(torch.nn, f"BatchNorm{dims}d"))
            assert a.extra_repr() == t.extra_repr()
            assert list(a.state_dict().keys()) == list(t.state_dict().keys())
            assert [k for k, _ in a.named_parameters()] == [k for k, _ in t.named_parameters()]
            a.load_state_dict(t.state_dict())
            t.load_state_dict(a.state_dict())
    a = m.BatchNorm2d(4)
    a(R.make_torch((3, 4, 2, 2), "float32", 1))
    assert int(a.num_batches_tracked) == 1 and not torch.equal(a.running_mean, torch.zeros(4))
    a.reset_running_stats()
    assert torch.equal(a.running_mean, torch.zeros(4)) and torch.equal(a.running_var, torch.ones(4))
    assert int(a.num_batches_tracked) == 0


def test_module_channels_last_training_loop_with_optimizer():
    """A few SGD steps: twin and torch.nn stay together (parameters, buffers, outputs)."""
    torch.manual_seed(0)
    t = torch.nn.BatchNorm2d(6)
    a = nt().BatchNorm2d(6)
    a.load_state_dict(t.state_dict())
    opt_t = torch.optim.SGD(t.parameters(), lr=0.1)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    for step in range(4):
        x = CR.to_channels_last_torch(R.make_torch((5, 6, 4, 3), "float32", 200 + step))
        # a well-conditioned loss (a random projection of y; sum(y^2 * k) would make the bias gradient
        # a cancellation of large terms, i.e. rounding noise, at the start)
        proj = R.make_torch((5, 6, 4, 3), "float32", 300 + step, 1.0, 0.0)
        for mod, opt in ((t, opt_t), (a, opt_a)):
            opt.zero_grad()
            (mod(x) * proj).sum().backward()
            opt.step()
        for (k, va), (_, vt) in zip(a.state_dict().items(), t.state_dict().items()):
            R.assert_close(f"step {step}: {k}", va, vt, 1e-5, 1.0)


# ----------------------------------------------------------------------------------------------------
# The numerically hard case: a large mean and a small spread
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ("nc", "cl"))
def test_large_mean_small_std_float32(fmt):
    """Channels with mean 1e4 and std 0.1 in float32: sum-of-squares formulas lose everything here
    (E[x^2] - E[x]^2 cancels 1e8 against 1e8 in float32, whose spacing at 1e8 is 8). The batch
    variance read back from save_rstd (var = 1/rstd^2 - eps) must be within 1e-4 relative of the float64
    variance of the same float32 data (a rstd rounded to float32 alone costs ~1e-7)."""
    n, c, h, w = 16, 3, 8, 8
    rng = np.random.default_rng(42)
    base = rng.standard_normal((n, c, h, w)) * 0.1 + np.array([1e4, -1e4, 3e4]).reshape(1, c, 1, 1)
    x = torch.from_numpy(base.astype(np.float32))
    if fmt == "cl":
        x = CR.to_channels_last_torch(x)
    rm, rv = torch.zeros(c), torch.ones(c)
    y, sm, sr = nkF.batch_norm_forward(x, rm, rv, None, None, True, 1.0, EPS)
    xf = R.to_f64(x)
    var_ref = xf.transpose(1, 0, 2, 3).reshape(c, -1).var(axis=1)
    var_got = 1.0 / R.to_f64(sr) ** 2 - EPS
    rel = np.abs(var_got - var_ref) / var_ref
    assert (rel <= 1e-4).all(), f"batch variance {var_got} vs float64 {var_ref}: relative error {rel}"
    # momentum 1: the running variance is the unbiased batch variance
    k = n * h * w
    rel_run = np.abs(R.to_f64(rv) - var_ref * k / (k - 1)) / (var_ref * k / (k - 1))
    assert (rel_run <= 1e-4).all(), f"running_var {R.to_f64(rv)}: relative error {rel_run}"
    # the mean: float32 holds 1e4 to ~5e-4; allow 8 float32 spacings (which still keeps xhat within ~5%)
    mean_ref = xf.transpose(1, 0, 2, 3).reshape(c, -1).mean(axis=1)
    spacing = np.spacing(np.abs(mean_ref).astype(np.float32)).astype(np.float64)
    assert (np.abs(R.to_f64(sm) - mean_ref) <= 8 * spacing).all(), (R.to_f64(sm), mean_ref)


# ----------------------------------------------------------------------------------------------------
# gradcheck (float64) of normkit.torch.functional.batch_norm
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ("train", "train-running", "eval", "train-cl", "eval-cl-3d"))
def test_gradcheck(mode):
    F = nt().functional
    shape = (3, 4, 3, 2, 2) if mode.endswith("3d") else (3, 4, 3, 2)
    x = R.make_torch(shape, "float64", 1)
    if "cl" in mode:
        x = CR.to_channels_last_torch(x)
    x.requires_grad_()
    w = R.make_torch((4,), "float64", 2, 0.5, 1.0).requires_grad_()
    b = R.make_torch((4,), "float64", 3).requires_grad_()
    rm, rv = rand_stats(4, "float64", 4)
    training = mode.startswith("train")
    if mode == "train":
        fn = lambda x, w, b: F.batch_norm(x, None, None, w, b, True, 0.1, EPS)  # noqa: E731
    else:
        rm_, rv_ = (rm, rv) if not training else (rm.clone(), rv.clone())
        fn = lambda x, w, b: F.batch_norm(x, rm_, rv_, w, b, training, 0.1, EPS)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b), eps=1e-6, atol=1e-7, rtol=1e-5)
    if not training:
        R.assert_close("running stats in eval", rm, rand_stats(4, "float64", 4)[0], 0.0, 0.0)


# ----------------------------------------------------------------------------------------------------
# normkit.numpy layers
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", R.NUMPY_DTYPES)
@pytest.mark.parametrize(
    "dims,shape,fmt,kwargs",
    [
        (1, (6, 5), "nc", {}),
        (1, (3, 4, 7), "nc", {"momentum": None}),
        (2, (4, 3, 5, 2), "nc", {}),
        (2, (4, 3, 5, 2), "cl", {"momentum": 0.25}),
        (2, (2, 16, 3, 3), "cl", {"affine": False, "momentum": None}),
        (3, (2, 3, 2, 3, 4), "cl", {}),
        (2, (3, 4, 2, 2), "nc", {"track_running_stats": False}),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else "-".join(f"{k}={x}" for k, x in v.items()) or "default",
)
def test_numpy_layer(dims, shape, fmt, kwargs, dtype):
    c = shape[1]
    layer = getattr(nknp(), f"BatchNorm{dims}d")(c, dtype=np.dtype(dtype), **kwargs)
    torch_layer = getattr(torch.nn, f"BatchNorm{dims}d")(c, dtype=torch.float64, **kwargs)
    assert list(layer.state_dict().keys()) == list(torch_layer.state_dict().keys())
    affine = kwargs.get("affine", True)
    track = kwargs.get("track_running_stats", True)
    momentum = kwargs.get("momentum", 0.1)
    if affine:
        layer.weight[...] = R.make_numpy((c,), dtype, 1, 0.7, 1.0)
        layer.bias[...] = R.make_numpy((c,), dtype, 2)
        assert layer.weight.dtype == np.dtype(dtype)
    else:
        assert layer.weight is None and layer.bias is None
    if track:
        rm, rv = rand_stats(c, dtype, 3, lib="numpy")
        layer.running_mean[...] = rm
        layer.running_var[...] = rv
        assert layer.num_batches_tracked.dtype == np.int64 and layer.num_batches_tracked.shape == ()
    else:
        assert getattr(layer, "running_mean", None) is None
    tol = R.TOL[dtype]
    nbt = 0
    for step, mode in enumerate(("train", "train", "eval", "train")):
        layer.train(mode == "train")
        x = R.make_numpy(shape, dtype, 10 + step)
        dy = R.make_numpy(shape, dtype, 20 + step, 1.0, 0.0)
        if fmt == "cl":
            x, dy = CR.to_channels_last_numpy(x), CR.to_channels_last_numpy(dy)
        batch_stats = mode == "train" or not track
        rm0 = None if not track else R.to_f64(layer.running_mean)
        rv0 = None if not track else R.to_f64(layer.running_var)
        if mode == "train" and track:
            nbt += 1
        eff = (1.0 / nbt) if momentum is None and track else (momentum or 0.0)
        w = layer.weight.copy() if affine else None
        b = layer.bias.copy() if affine else None
        ref = CR.batch_norm_forward(x, rm0, rv0, w, b, batch_stats, eff, EPS)
        y = layer(x)
        assert isinstance(y, np.ndarray) and y.dtype == np.dtype(dtype) and y.shape == shape
        if fmt == "cl":
            assert CR.is_channels_last_numpy(y), y.strides
        tag = f"step {step} ({mode}): "
        R.assert_close(tag + "y", y, ref["y"], tol, CR.y_scale(ref["xmag"], w, b))
        if track:
            assert int(layer.num_batches_tracked) == nbt
            assert layer.num_batches_tracked.dtype == np.int64
            xmax = np.abs(R.to_f64(x)).max()
            R.assert_close(tag + "running_mean", layer.running_mean, ref["running_mean"], tol, xmax + np.abs(rm0).max())
            R.assert_close(tag + "running_var", layer.running_var, ref["running_var"], tol, 0.0)
            assert layer.running_mean.dtype == np.dtype(dtype)
        dx = layer.backward(dy)
        assert isinstance(dx, np.ndarray) and dx.dtype == np.dtype(dtype) and dx.shape == shape
        dxr, dwr, dbr = CR.batch_norm_backward(dy, x, w, batch_stats, rm0, rv0, EPS)
        R.assert_close(tag + "dx", dx, dxr, tol,
                       CR.dx_scale(dy, x, w, c, False, ref["save_rstd"].reshape(1, c)))
        if affine:
            assert set(layer.grads) == {"weight", "bias"}
            assert layer.grads["weight"].dtype == np.dtype(dtype)
            R.assert_close(tag + "dweight", layer.grads["weight"], dwr, tol, CR.dweight_scale(dy, ref["xmag"]))
            R.assert_close(tag + "dbias", layer.grads["bias"], dbr, tol, CR.dbias_scale(dy))
        else:
            assert "weight" not in layer.grads and "bias" not in layer.grads

    # state_dict round trip with torch.nn (keys, values, num_batches_tracked)
    sd = layer.state_dict()
    torch_layer.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()})
    back = getattr(nknp(), f"BatchNorm{dims}d")(c, dtype=np.dtype(dtype), **kwargs)
    back.load_state_dict({k: v.numpy() for k, v in torch_layer.state_dict().items()})
    for k, v in back.state_dict().items():
        assert np.array_equal(v, sd[k]), k
        assert v.dtype == sd[k].dtype, k


def test_numpy_layer_matches_torch_module_multistep():
    """The NumPy layer and torch.nn.BatchNorm2d (float32) on the same data: outputs and buffers."""
    c = 5
    layer = nknp().BatchNorm2d(c, momentum=None)
    t = torch.nn.BatchNorm2d(c, momentum=None)
    layer.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    for step in range(3):
        x = R.make_numpy((4, c, 3, 3), "float32", 300 + step)
        t.train(step != 1)
        layer.train(step != 1)
        y = layer(x)
        yt = t(torch.from_numpy(x))
        R.assert_close(f"step {step}: y", y, yt.detach(), 2e-5, 4.0)
        for k, v in t.state_dict().items():
            R.assert_close(f"step {step}: {k}", layer.state_dict()[k], v, 2e-5, 1.0)


# ----------------------------------------------------------------------------------------------------
# Determinism: 1 vs 2 threads, bitwise
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ("float32", "bfloat16"))
@pytest.mark.parametrize("fmt", ("nc", "cl"))
@pytest.mark.parametrize("shape", [
    (16, 48, 24, 25),  # ~460k elements: ~14 parallel tasks of 32k elements in the core
    # Channels first, 3 channels: on 1 thread a task per channel takes its moments and normalizes it
    # (sums, then dx); on 2 threads too few channels for that, unfused passes. A forward over 24 KB
    # channels (float32) goes a channel at a time; channels of 2 planes of 2 chunks each, the second
    # ending in a short block, pipelined (the next channel's moments or sums between the blocks of
    # this one's output).
    (3, 3, 40, 50), (2, 3, 200, 201),
    # 7x7 planes (fewer than 64 values): statistics and outputs per group of channels, the outputs in
    # runs of planes; 16 channels a group on 1 thread, 10 on 2 (runs ending mid-vector, value by value).
    (33, 40, 7, 7)], ids=("short-planes", "fused", "fused-pipelined", "plane-runs"))
def test_threads_bitwise_identical(shape, fmt, dtype):
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
            assert normkit.get_num_threads() == threads
            rm, rv = torch.zeros(c, dtype=w.dtype), torch.ones(c, dtype=w.dtype)
            y, sm, sr = nkF.batch_norm_forward(x, rm, rv, w, b, True, 0.1, EPS)
            dx, dw, db = nkF.batch_norm_backward(dy, x, sm, sr, w, True)
            results.append({"y": y, "save_mean": sm, "save_rstd": sr, "running_mean": rm, "running_var": rv,
                            "dx": dx, "dweight": dw, "dbias": db})
    finally:
        normkit.set_num_threads(before)
    assert normkit.get_num_threads() == before
    for other in results[1:]:
        for k in results[0]:
            R.assert_bitwise_equal(f"{k} (1 vs 2 threads)", results[0][k], other[k])


# ----------------------------------------------------------------------------------------------------
# The references themselves: channel_reference against torch.nn.functional + autograd in float64
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ((6, 4), (3, 4, 5), (2, 4, 3, 5), (2, 4, 2, 3, 2)), ids=str)
def test_channel_reference_matches_torch_autograd(shape):
    """Forward, running statistics and the analytic backward of the float64 references equal torch's
    float64 forward and autograd gradients to 1e-12 (float64 rounding only)."""
    c = shape[1]
    x64 = R.make_torch(shape, "float64", 1)
    dy = R.make_torch(shape, "float64", 2, 1.0, 0.0)
    w0 = R.make_torch((c,), "float64", 3, 0.7, 1.0)
    b0 = R.make_torch((c,), "float64", 4)
    rm0, rv0 = rand_stats(c, "float64", 5)
    tol = 1e-12

    def run(fn):
        x = x64.clone().requires_grad_()
        w = w0.clone().requires_grad_()
        b = b0.clone().requires_grad_()
        y = fn(x, w, b)
        y.backward(dy)
        return y.detach(), x.grad, w.grad, b.grad

    def check(tag, out, ref_fwd, ref_bwd, groups, per_sample):
        y, dx, dw, db = out
        R.assert_close(tag + " y", ref_fwd["y"], y, tol, CR.y_scale(ref_fwd["xmag"], w0, b0))
        rstd = np.broadcast_to(ref_fwd.get("save_rstd", ref_fwd.get("rstd")),
                               (shape[0] if per_sample else 1, groups))
        R.assert_close(tag + " dx", ref_bwd[0], dx, tol, CR.dx_scale(dy, x64, w0, groups, per_sample, rstd))
        R.assert_close(tag + " dweight", ref_bwd[1], dw, tol, CR.dweight_scale(dy, ref_fwd["xmag"]))
        R.assert_close(tag + " dbias", ref_bwd[2], db, tol, CR.dbias_scale(dy))

    for training in (True, False):
        rm, rv = rm0.clone(), rv0.clone()
        out = run(lambda x, w, b, rm=rm, rv=rv, tr=training: TF.batch_norm(x, rm, rv, w, b, tr, 0.3, EPS))
        fwd = CR.batch_norm_forward(x64, rm0, rv0, w0, b0, training, 0.3, EPS)
        bwd = CR.batch_norm_backward(dy, x64, w0, training, rm0, rv0, EPS)
        check(f"batch_norm(training={training})", out, fwd, bwd, c, False)
        R.assert_close("running_mean", fwd["running_mean"], rm, tol, 10.0)
        R.assert_close("running_var", fwd["running_var"], rv, tol, 10.0)
    if len(shape) >= 3:
        for use_input in (True, False):
            rm, rv = rm0.clone(), rv0.clone()
            out = run(lambda x, w, b, rm=rm, rv=rv, ui=use_input: TF.instance_norm(x, rm, rv, w, b, ui, 0.3, EPS))
            fwd = CR.instance_norm_forward(x64, rm0, rv0, w0, b0, use_input, 0.3, EPS)
            bwd = CR.instance_norm_backward(dy, x64, w0, use_input, rm0, rv0, EPS)
            check(f"instance_norm(use_input_stats={use_input})", out, fwd, bwd, c, use_input)
            R.assert_close("running_mean", fwd["running_mean"], rm, tol, 10.0)
            R.assert_close("running_var", fwd["running_var"], rv, tol, 10.0)
    for g in (1, 2, 4):
        out = run(lambda x, w, b, g=g: TF.group_norm(x, g, w, b, EPS))
        fwd = CR.group_norm_forward(x64, g, w0, b0, EPS)
        bwd = CR.group_norm_backward(dy, x64, g, w0, EPS)
        check(f"group_norm(groups={g})", out, fwd, bwd, g, True)


@pytest.mark.parametrize("seed", range(24))
def test_randomized_module_configurations(seed):
    """Random shapes / layouts / dtypes / options (channel_reference.random_module_config): the twin
    against torch.nn in float64, step by step."""
    cfg = CR.run_random_module_config(seed, "batch", "BatchNorm{dims}d", nt())
    assert cfg["shape"][1] >= 1


# ----------------------------------------------------------------------------------------------------
# Twins with only some inputs requiring grad, and under no_grad (BatchNorm, InstanceNorm, GroupNorm)
# ----------------------------------------------------------------------------------------------------

TWINS = {
    "BatchNorm2d": lambda: (torch.nn.BatchNorm2d(6), nt().BatchNorm2d(6)),
    "InstanceNorm2d": lambda: (torch.nn.InstanceNorm2d(6, affine=True, track_running_stats=True),
                               nt().InstanceNorm2d(6, affine=True, track_running_stats=True)),
    "GroupNorm": lambda: (torch.nn.GroupNorm(3, 6), nt().GroupNorm(3, 6)),
}


@pytest.mark.parametrize("needs", ("x-only", "params-only", "none-no_grad"))
@pytest.mark.parametrize("layer", TWINS)
def test_twin_partial_requires_grad(layer, needs):
    t, a = TWINS[layer]()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in t.parameters():
            p.copy_(torch.randn_like(p) * 0.5 + 1.0)
    a.load_state_dict(t.state_dict())
    x = CR.to_channels_last_torch(R.make_torch((3, 6, 4, 5), "float32", 7))
    dy = R.make_torch((3, 6, 4, 5), "float32", 8, 1.0, 0.0)
    for m in (t, a):
        for p in m.parameters():
            p.requires_grad_(needs == "params-only")
    if needs == "none-no_grad":
        with torch.no_grad():
            yt, ya = t(x), a(x)
        assert not ya.requires_grad
        R.assert_close("y", ya, yt, 2e-5, 4.0)
    else:
        # the torch.nn reference always gets an x that requires grad: torch 2.13's CPU GroupNorm backward
        # segfaults for a channels-last x that does not (torch.nn alone, checked); its dx is unused here
        xt = x.clone().requires_grad_(True)
        xa = x.clone().requires_grad_(needs == "x-only")
        yt, ya = t(xt), a(xa)
        assert ya.requires_grad
        yt.backward(dy)
        ya.backward(dy)
        R.assert_close("y", ya, yt, 2e-5, 4.0)
        if needs == "x-only":
            R.assert_close("dx", xa.grad, xt.grad, 2e-5, float(xt.grad.abs().max()))
            assert all(p.grad is None for p in a.parameters())
        else:
            assert xa.grad is None
            for (k, pa), (_, pt) in zip(a.named_parameters(), t.named_parameters()):
                R.assert_close("grad " + k, pa.grad, pt.grad, 2e-5, float(pt.grad.abs().max()) + 1.0)
    for (k, ba), (_, bt) in zip(a.named_buffers(), t.named_buffers()):
        R.assert_close(k, ba, bt, 2e-5, 4.0)


# ----------------------------------------------------------------------------------------------------
# Long reductions (many values per channel, sizes that are not multiples of any block or chunk size)
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ("bfloat16", "float32", "float64"))
@pytest.mark.parametrize("case", [((3, 2, 129, 131), "nc"), ((2, 3, 1, 40000), "nc"), ((64, 3, 17, 19), "cl"),
                                  ((5, 67, 33, 31), "cl"), ((2, 5, 11, 13, 17), "cl"), ((1000, 7), "nc")],
                         ids=shape_id)
def test_long_reductions(case, dtype):
    """float32: up to ~8e4 values per channel; blocked/pairwise sums stay ~log2(n) u ~ 1e-6 <= 1e-5."""
    shape, fmt = case
    c = shape[1]
    x = layout(R.make_torch(shape, dtype, 61), fmt)
    dy = layout(R.make_torch(shape, dtype, 62, 1.0, 0.0), fmt)
    w = R.make_torch((c,), dtype, 63, 0.7, 1.0)
    b = R.make_torch((c,), dtype, 64)
    rm, rv = rand_stats(c, dtype, 65)
    before = CR.f64_copies(rm, rv)
    tol = R.TOL[dtype]
    y, sm, sr = nkF.batch_norm_forward(x, rm, rv, w, b, True, 0.1, EPS)
    ref = CR.batch_norm_forward(x, before[0], before[1], w, b, True, 0.1, EPS)
    xmax = float(np.abs(R.to_f64(x)).max())
    R.assert_close("y", y, ref["y"], tol, CR.y_scale(ref["xmag"], w, b))
    R.assert_close("save_mean", sm, ref["save_mean"], R.TOL[R.ACC_DTYPE[dtype]], xmax)
    R.assert_close("save_rstd", sr, ref["save_rstd"], R.TOL[R.ACC_DTYPE[dtype]], 0.0)
    R.assert_close("running_var", rv, ref["running_var"], tol, 0.0)
    dx, dw, db = nkF.batch_norm_backward(dy, x, sm, sr, w, True)
    dxr, dwr, dbr = CR.batch_norm_backward(dy, x, w, True)
    R.assert_close("dx", dx, dxr, tol, CR.dx_scale(dy, x, w, c, False, ref["save_rstd"].reshape(1, c)))
    R.assert_close("dweight", dw, dwr, tol, CR.dweight_scale(dy, ref["xmag"]))
    R.assert_close("dbias", db, dbr, tol, CR.dbias_scale(dy))


@pytest.mark.parametrize("fmt", ("nc", "cl"))
@pytest.mark.parametrize("layer", TWINS)
def test_twin_broadcast_dy(layer, fmt):
    """y.sum().backward() and (y * v).sum().backward() hand backward a dy with zero strides (an expanded
    tensor): the gradients must equal torch.nn's."""
    t, a = TWINS[layer]()
    torch.manual_seed(2)
    with torch.no_grad():
        for p in t.parameters():
            p.copy_(torch.randn_like(p) * 0.5 + 1.0)
    a.load_state_dict(t.state_dict())
    x = layout(R.make_torch((3, 6, 4, 5), "float32", 9), fmt)
    v = torch.linspace(-1.0, 2.0, 5)
    for loss in (lambda y: y.sum(), lambda y: (y * v).sum()):
        xt, xa = x.clone().requires_grad_(), x.clone().requires_grad_()
        t.zero_grad(set_to_none=True)
        a.zero_grad(set_to_none=True)
        loss(t(xt)).backward()
        loss(a(xa)).backward()
        # dx of y.sum() is exactly 0 for these layers (each normalized group sums to a constant): the
        # scale is the size of the terms that cancel, r * |w * dy| <= ~4 for these inputs
        R.assert_close("dx", xa.grad, xt.grad, 2e-5, 4.0)
        for (k, pa), (_, pt) in zip(a.named_parameters(), t.named_parameters()):
            R.assert_close("grad " + k, pa.grad, pt.grad, 2e-5, float(pt.grad.abs().max()) + 60.0)


@pytest.mark.parametrize("layer", TWINS)
def test_twin_empty_batch(layer):
    """N = 0: an empty output of the right shape (no crash, no error), in eval. (torch.nn's own
    InstanceNorm2d with running statistics raises IndexError here; BatchNorm2d / GroupNorm give the
    empty output.)"""
    t, a = TWINS[layer]()
    a.eval()
    t.eval()
    x = torch.zeros(0, 6, 4, 5)
    assert a(x).shape == (0, 6, 4, 5)
    if layer != "InstanceNorm2d":
        assert t(x).shape == (0, 6, 4, 5)


@pytest.mark.parametrize("fmt", ("nc", "cl"))
@pytest.mark.parametrize("dtype", HALF)
def test_mixed_precision_half_input_float32_params(dtype, fmt):
    """Half x with float32 weight, bias and running statistics (what torch.nn.functional.batch_norm
    accepts on CPU, e.g. a float32 module fed half activations): y / dx within the half tolerance; the
    statistics, the running statistics and dweight / dbias (float32 results of float32 sums) within
    float32's 1e-5."""
    shape, c = (4, 6, 5, 3), 6
    x = layout(R.make_torch(shape, dtype, 71), fmt)
    dy = layout(R.make_torch(shape, dtype, 72, 1.0, 0.0), fmt)
    w = R.make_torch((c,), "float32", 73, 0.7, 1.0)
    b = R.make_torch((c,), "float32", 74)
    rm, rv = rand_stats(c, "float32", 75)
    before = CR.f64_copies(rm, rv)
    y, sm, sr = nkF.batch_norm_forward(x, rm, rv, w, b, True, 0.1, EPS)
    assert y.dtype == x.dtype and rm.dtype == torch.float32
    ref = CR.batch_norm_forward(x, before[0], before[1], w, b, True, 0.1, EPS)
    tol, f32 = R.TOL[dtype], R.TOL["float32"]
    xmax = float(np.abs(R.to_f64(x)).max())
    R.assert_close("y", y, ref["y"], tol, CR.y_scale(ref["xmag"], w, b))
    R.assert_close("save_rstd", sr, ref["save_rstd"], f32, 0.0)
    R.assert_close("running_mean", rm, ref["running_mean"], f32, xmax + 1.0)
    R.assert_close("running_var", rv, ref["running_var"], f32, 0.0)
    dx, dw, db = nkF.batch_norm_backward(dy, x, sm, sr, w, True, bias_dtype="float32")
    assert dx.dtype == x.dtype and dw.dtype == torch.float32 and db.dtype == torch.float32
    dxr, dwr, dbr = CR.batch_norm_backward(dy, x, w, True)
    R.assert_close("dx", dx, dxr, tol, CR.dx_scale(dy, x, w, c, False, ref["save_rstd"].reshape(1, c)))
    R.assert_close("dweight", dw, dwr, f32, CR.dweight_scale(dy, ref["xmag"]))
    R.assert_close("dbias", db, dbr, f32, CR.dbias_scale(dy))
    # the float32 module fed half input: same as torch.nn (its output is half too)
    t, a = torch.nn.BatchNorm2d(c), nt().BatchNorm2d(c)
    ya, yt = a(x), t(x)
    assert ya.dtype == yt.dtype == x.dtype
    R.assert_close("module y vs torch", ya, yt, 2 * tol, 4.0)
    R.assert_close("module running_var vs torch", a.running_var, t.running_var, 2 * f32, 1.0)


@pytest.mark.parametrize("dtype", ("float32", "float64", "bfloat16"))
def test_channels_last_sums_same_in_register_tile_and_remainder(dtype):
    # The channels-last sums keep whole tiles of channels in registers and the channels past the last
    # whole tile in memory (cpu/column_sums.h); both must add the same terms in the same order. Channel
    # 0 (in the first tile) and channel C - 1 (past it for C = 41) get the same values, weight and bias,
    # so every per-channel result must be bitwise equal between them. With 280 rows (256 or more) the
    # shifts are the means of the first rows, taken a vector of channels at a time, and value by value
    # for the channels past the last whole vector: they must agree too.
    c = 41
    x = R.make_torch((8, c, 5, 7), dtype, 5, 3.0, 2.0)
    dy = R.make_torch((8, c, 5, 7), dtype, 6, 1.0, 0.0)
    x[:, c - 1], dy[:, c - 1] = x[:, 0], dy[:, 0]
    x, dy = CR.to_channels_last_torch(x), CR.to_channels_last_torch(dy)
    acc = torch.float64 if dtype == "float64" else torch.float32
    w = torch.linspace(0.5, 1.5, c, dtype=acc)
    b = torch.linspace(-1.0, 1.0, c, dtype=acc)
    w[c - 1], b[c - 1] = w[0], b[0]
    y, mean, rstd = nkF.batch_norm_forward(x, None, None, w, b, True, 0.1, EPS)
    dx, dw, db = nkF.batch_norm_backward(dy, x, mean, rstd, w, True)
    for name, t in (("mean", mean), ("rstd", rstd), ("dweight", dw), ("dbias", db)):
        R.assert_bitwise_equal(f"{name}: channel {c - 1} vs channel 0", t[c - 1:], t[:1])
    for name, t in (("y", y), ("dx", dx)):
        R.assert_bitwise_equal(f"{name}: channel {c - 1} vs channel 0", t[:, c - 1], t[:, 0])


@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_strided_running_statistics_are_updated_in_place_as_torch(kind):
    """torch updates strided views of running statistics (stats[:, 0]) in place; so does normkit (through
    a compact copy written back after the op), and a rejected call leaves them untouched."""
    import normkit.torch.functional as ntF

    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    expected = torch.stack([torch.zeros(3), torch.ones(3)], 1).double()
    TF.batch_norm(x, expected[:, 0], expected[:, 1], training=True, momentum=0.3)
    stats = torch.stack([torch.zeros(3), torch.ones(3)], 1).double()
    if kind == "numpy":
        x, stats = x.numpy(), stats.numpy()
    op = nkF.batch_norm if kind == "numpy" else ntF.batch_norm
    op(x, stats[:, 0], stats[:, 1], training=True, momentum=0.3)
    torch.testing.assert_close(torch.as_tensor(stats), expected, rtol=1e-12, atol=1e-12)
    before = stats.copy() if kind == "numpy" else stats.clone()
    with pytest.raises(ValueError, match="x: expected more than 1 value per channel"):
        op(x[:1, :, :1], stats[:, 0], stats[:, 1], training=True)
    torch.testing.assert_close(torch.as_tensor(stats), torch.as_tensor(before), rtol=0, atol=0)
    if kind == "torch":  # evaluation only reads them: no write, no version bump (a later backward works)
        version = stats._version
        op(x, stats[:, 0], stats[:, 1], training=False)
        assert stats._version == version


def test_strided_running_statistics_of_the_other_ops():
    import normkit.torch.functional as ntF

    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    for op, args in ((ntF.instance_norm, {"use_input_stats": True}), (ntF.sync_batch_norm, {})):
        stats = torch.stack([torch.zeros(3), torch.ones(3)], 1).double()
        compact = [torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)]
        y1 = op(x, stats[:, 0], stats[:, 1], momentum=0.3, **args)
        y2 = op(x, *compact, momentum=0.3, **args)
        torch.testing.assert_close(y1, y2, rtol=0, atol=0)
        torch.testing.assert_close(stats, torch.stack(compact, 1), rtol=0, atol=0)
    stats = torch.zeros(3, 2, dtype=torch.float64)
    compact = torch.zeros(3, dtype=torch.float64)
    ntF.mean_only_batch_norm(x, stats[:, 1], training=True, momentum=0.3)
    ntF.mean_only_batch_norm(x, compact, training=True, momentum=0.3)
    torch.testing.assert_close(stats[:, 1], compact, rtol=0, atol=0)
    assert not stats[:, 0].any()
