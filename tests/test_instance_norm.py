"""InstanceNorm: normkit.functional (torch and NumPy arrays), normkit.torch twins (batched and unbatched
input, track_running_stats) and normkit.numpy layers, against the float64 references and torch.nn.

Tolerances: R.TOL per dtype (see test_batch_norm's docstring for the reasoning: half types 4 unit
roundoffs since the library rounds once after float32 math; float32 1e-5 for reductions over <= ~10^3
elements; float64 1e-12), with absolute parts scaled by the magnitude of the combined terms.
"""

import channel_reference as CR
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


def rand_stats(c, dtype, seed, lib="torch"):
    rng = np.random.default_rng(seed)
    rm = rng.standard_normal(c) * 0.5
    rv = rng.uniform(0.5, 2.0, size=c)
    if lib == "torch":
        return torch.from_numpy(rm).to(R.torch_dtype(dtype)), torch.from_numpy(rv).to(R.torch_dtype(dtype))
    return rm.astype(dtype), rv.astype(dtype)


FUNC_SHAPES = [
    ((2, 3, 7), "nc"),
    ((2, 3, 7), "cl"),  # NLC strides
    ((1, 4, 5, 3), "nc"),  # N = 1
    ((1, 4, 5, 3), "cl"),
    ((3, 1, 4, 4), "nc"),  # C = 1
    ((2, 512, 3, 3), "cl"),  # large C
    ((2, 40, 3, 2), "cl"),  # whole register tiles of channels plus a remainder
    ((2, 3, 3, 4, 5), "cl"),
    ((2, 5, 2, 1), "nc"),  # 2 spatial elements
    ((3, 6, 1, 9), "cl"),
]


def shape_id(case):
    return "x".join(map(str, case[0])) + "-" + case[1]


@pytest.mark.parametrize("stats", ("input", "input+running", "running"))
@pytest.mark.parametrize("dtype", R.DTYPES)
@pytest.mark.parametrize("case", FUNC_SHAPES, ids=shape_id)
def test_functional_torch_vs_reference(case, dtype, stats):
    shape, fmt = case
    n, c = shape[:2]
    seed = 31 + sum(shape)
    x = layout(R.make_torch(shape, dtype, seed), fmt)
    dy = layout(R.make_torch(shape, dtype, seed + 1, 1.0, 0.0), fmt)
    w = R.make_torch((c,), dtype, seed + 2, 0.7, 1.0)
    b = R.make_torch((c,), dtype, seed + 3)
    use_input = stats != "running"
    rm, rv = rand_stats(c, dtype, seed + 4) if stats != "input" else (None, None)
    before = CR.f64_copies(rm, rv)  # float64 values, for the references
    stats_snap = R.snapshot(rm, rv)
    snap = R.snapshot(x, dy, w, b)
    tol = R.TOL[dtype]
    acc_tol = R.TOL[R.ACC_DTYPE[dtype]]
    momentum = 0.3

    y, sm, sr = nkF.instance_norm_forward(x, rm, rv, w, b, use_input, momentum, EPS)
    ref = CR.instance_norm_forward(x, before[0], before[1], w, b, use_input, momentum, EPS)
    assert isinstance(y, torch.Tensor) and y.dtype == x.dtype and tuple(y.shape) == shape
    if CR.keeps_channels_last_torch(x):
        assert CR.is_channels_last_torch(y), f"channels-last input, output strides {y.stride()}"
    else:  # (channels-first, or a 3-D NLC input: contiguous, as torch)
        assert y.is_contiguous(), f"output strides {y.stride()}"
    acc = torch.float64 if dtype == "float64" else torch.float32
    if use_input:
        for name, s in (("save_mean", sm), ("save_rstd", sr)):
            assert tuple(s.shape) == (n, c) and s.dtype == acc, (name, s.shape, s.dtype)
        xmax = float(np.abs(R.to_f64(x)).max())
        R.assert_close("save_mean", sm, ref["save_mean"], acc_tol, xmax)
        R.assert_close("save_rstd", sr, ref["save_rstd"], acc_tol, 0.0)
    R.assert_unchanged((x, dy, w, b), snap)
    R.assert_close("y", y, ref["y"], tol, CR.y_scale(ref["xmag"], w, b))
    if stats == "input+running":
        xmax = float(np.abs(R.to_f64(x)).max())
        R.assert_close("running_mean", rm, ref["running_mean"], tol, xmax + np.abs(before[0]).max())
        R.assert_close("running_var", rv, ref["running_var"], tol, 0.0)
    elif stats == "running":
        R.assert_unchanged((rm, rv), stats_snap)

    dx, dw, db = nkF.instance_norm_backward(dy, x, sm, sr, w, use_input)
    assert dx.dtype == x.dtype and tuple(dx.shape) == shape
    if fmt == "cl":
        assert CR.is_channels_last_torch(dx), f"dx strides {dx.stride()}"
    dxr, dwr, dbr = CR.instance_norm_backward(dy, x, w, use_input, before[0], before[1], EPS)
    rstd = np.broadcast_to(ref["save_rstd"], (n, c))
    R.assert_close("dx", dx, dxr, tol, CR.dx_scale(dy, x, w, c, True, rstd))
    R.assert_close("dweight", dw, dwr, tol, CR.dweight_scale(dy, ref["xmag"]))
    R.assert_close("dbias", db, dbr, tol, CR.dbias_scale(dy))

    # torch.nn.functional.instance_norm (float32 compute for the half types)
    cdt = torch.float32 if dtype in HALF else x.dtype
    xt = x.to(cdt).requires_grad_()
    wt, bt = w.to(cdt).requires_grad_(), b.to(cdt).requires_grad_()
    rmt, rvt = (None, None) if stats == "input" else (torch.from_numpy(s.copy()).to(cdt) for s in before)
    yt = TF.instance_norm(xt, rmt, rvt, wt, bt, use_input, momentum, EPS)
    # dy in NCHW order for torch: torch 2.13's CPU instance_norm backward is wrong for a channels-last
    # dy when N == 1 (checked: dx differs from the NCHW-dy result by O(1)); the gradient does not
    # depend on dy's memory layout, so this only sidesteps torch's bug
    yt.backward(dy.to(cdt).contiguous())
    R.assert_close("y vs torch", y, yt, tol, CR.y_scale(ref["xmag"], w, b))
    R.assert_close("dx vs torch", dx, xt.grad, tol, CR.dx_scale(dy, x, w, c, True, rstd))
    R.assert_close("dweight vs torch", dw, wt.grad, tol, CR.dweight_scale(dy, ref["xmag"]))
    R.assert_close("dbias vs torch", db, bt.grad, tol, CR.dbias_scale(dy))
    if stats == "input+running":
        xmax = float(np.abs(R.to_f64(x)).max())
        R.assert_close("running_mean vs torch", rm, rmt, tol, xmax + np.abs(before[0]).max())
        R.assert_close("running_var vs torch", rv, rvt, tol, 0.0)


@pytest.mark.parametrize("dtype", R.NUMPY_DTYPES)
@pytest.mark.parametrize("case", [((2, 3, 7), "nc"), ((3, 4, 3, 5), "cl"), ((2, 3, 2, 3, 4), "cl")], ids=shape_id)
def test_functional_numpy(case, dtype):
    shape, fmt = case
    n, c = shape[:2]
    x = R.make_numpy(shape, dtype, 1)
    dy = R.make_numpy(shape, dtype, 2, 1.0, 0.0)
    if fmt == "cl":
        x, dy = CR.to_channels_last_numpy(x), CR.to_channels_last_numpy(dy)
    w = R.make_numpy((c,), dtype, 3, 0.7, 1.0)
    b = R.make_numpy((c,), dtype, 4)
    y, sm, sr = nkF.instance_norm_forward(x, None, None, w, b)
    assert isinstance(y, np.ndarray) and y.dtype == x.dtype and y.shape == shape
    if fmt == "cl":
        assert CR.is_channels_last_numpy(y), y.strides
    assert sm.shape == (n, c) and sr.shape == (n, c) and sm.dtype == np.dtype(R.ACC_DTYPE[dtype])
    ref = CR.instance_norm_forward(x, None, None, w, b)
    tol = R.TOL[dtype]
    R.assert_close("y", y, ref["y"], tol, CR.y_scale(ref["xmag"], w, b))
    dx, dw, db = nkF.instance_norm_backward(dy, x, sm, sr, w)
    assert isinstance(dx, np.ndarray) and dx.dtype == x.dtype
    if fmt == "cl":
        assert CR.is_channels_last_numpy(dx), dx.strides
    dxr, dwr, dbr = CR.instance_norm_backward(dy, x, w)
    R.assert_close("dx", dx, dxr, tol, CR.dx_scale(dy, x, w, c, True, ref["save_rstd"]))
    R.assert_close("dweight", dw, dwr, tol, CR.dweight_scale(dy, ref["xmag"]))
    R.assert_close("dbias", db, dbr, tol, CR.dbias_scale(dy))


# ----------------------------------------------------------------------------------------------------
# normkit.torch twins vs torch.nn
# ----------------------------------------------------------------------------------------------------

MODULE_CASES = [
    # (id, dims, N, C, spatial, layout, kwargs, modes)
    ("1d", 1, 3, 4, (7,), "nc", {}, ("train", "eval")),
    ("1d-affine-track", 1, 3, 4, (7,), "nc", {"affine": True, "track_running_stats": True},
     ("train", "train", "eval", "train")),
    ("2d", 2, 2, 3, (5, 4), "nc", {"affine": True}, ("train", "eval")),
    ("2d-cl-track", 2, 2, 3, (5, 4), "cl", {"affine": True, "track_running_stats": True, "momentum": 0.4},
     ("train", "train", "eval")),
    ("2d-N1-C1", 2, 1, 1, (3, 3), "nc", {"affine": True}, ("train",)),
    ("2d-C512-cl", 2, 2, 512, (2, 3), "cl", {"affine": True}, ("train",)),
    ("2d-track-noaffine-eval-first", 2, 3, 5, (1, 2), "cl", {"track_running_stats": True},
     ("eval", "train", "eval")),
    ("3d", 3, 2, 3, (2, 3, 2), "nc", {"affine": True, "track_running_stats": True}, ("train", "eval")),
    ("3d-cl", 3, 2, 3, (2, 3, 2), "cl", {"affine": True, "eps": 1e-3}, ("train",)),
]


@pytest.mark.parametrize("dtype", R.DTYPES)
@pytest.mark.parametrize("case", MODULE_CASES, ids=lambda c: c[0])
def test_module_parity_with_torch(case, dtype):
    cid, dims, n, c, spatial, fmt, kwargs, modes = case
    torch_cls = getattr(torch.nn, f"InstanceNorm{dims}d")
    nk_cls = getattr(nt(), f"InstanceNorm{dims}d")
    seed = 500 + len(cid) * 7 + c
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
        CR.twin_step(twin, ref, x, dy, "instance", tag=f"step {step} ({mode}): ", same=same)


@pytest.mark.parametrize("dtype", ("float32", "float64", "bfloat16"))
@pytest.mark.parametrize(
    "dims,shape,kwargs",
    [
        (1, (4, 9), {}),
        (1, (4, 9), {"affine": True, "track_running_stats": True}),
        (2, (3, 5, 4), {"affine": True}),
        (2, (3, 5, 4), {"track_running_stats": True, "momentum": 0.5}),
        (3, (2, 3, 2, 3), {"affine": True, "track_running_stats": True}),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else "-".join(f"{k}={x}" for k, x in v.items()) or "default",
)
def test_unbatched_input(dims, shape, kwargs, dtype):
    """[C, *] input (no batch dimension) through the twin equals torch.nn (which adds and removes a
    batch dimension of 1), in train and in eval."""
    c = shape[0]
    torch_cls = getattr(torch.nn, f"InstanceNorm{dims}d")
    nk_cls = getattr(nt(), f"InstanceNorm{dims}d")
    twin, ref = CR.make_module_pair(torch_cls, nk_cls, (c,), kwargs, dtype, 77)
    for step, mode in enumerate(("train", "eval", "train")):
        twin.train(mode == "train")
        ref.train(mode == "train")
        x = R.make_torch(shape, dtype, 80 + step)
        dy = R.make_torch(shape, dtype, 90 + step, 1.0, 0.0)
        y = CR.twin_step(twin, ref, x, dy, "instance", tag=f"unbatched step {step} ({mode}): ",
                         batched_rank=dims + 2)
        assert tuple(y.shape) == shape


@pytest.mark.parametrize("dtype", ("float32", "float64"))
def test_track_running_stats_train_then_eval(dtype):
    """InstanceNorm2d(track_running_stats=True): running statistics after training steps (averaged
    over the batch, unbiased variance) and the eval output that uses them, as torch.nn."""
    c = 6
    twin, ref = CR.make_module_pair(torch.nn.InstanceNorm2d, nt().InstanceNorm2d, (c,),
                                    {"affine": True, "track_running_stats": True, "momentum": 0.2}, dtype, 3)
    tdt = R.torch_dtype(dtype)
    t = torch.nn.InstanceNorm2d(c, affine=True, track_running_stats=True, momentum=0.2, dtype=tdt)
    t.load_state_dict(twin.state_dict())
    for step in range(3):
        x = R.make_torch((4, c, 5, 3), dtype, 10 + step, 3.0, 1.0 + step)
        twin.train()
        t.train()
        twin(x)
        t(x)
    tol = R.TOL[dtype]
    R.assert_close("running_mean", twin.running_mean, t.running_mean, 2 * tol, 10.0)
    R.assert_close("running_var", twin.running_var, t.running_var, 2 * tol, 0.0)
    twin.eval()
    t.eval()
    x = R.make_torch((2, c, 4, 4), dtype, 99)
    y, yt = twin(x), t(x)
    R.assert_close("eval y", y, yt, 2 * tol, float(yt.detach().abs().max()))
    # eval output normalizes by the running statistics, not by the input's
    ref = CR.batch_norm_forward(x, twin.running_mean, twin.running_var, twin.weight.detach(), twin.bias.detach(),
                                False, 0.0, EPS)
    R.assert_close("eval y vs reference", y, ref["y"], tol, CR.y_scale(ref["xmag"], twin.weight, twin.bias))


def test_module_structure_matches_torch():
    for dims in (1, 2, 3):
        for kwargs in ({}, {"affine": True}, {"track_running_stats": True}, {"eps": 1e-3, "momentum": 0.3}):
            a = getattr(nt(), f"InstanceNorm{dims}d")(5, **kwargs)
            t = getattr(torch.nn, f"InstanceNorm{dims}d")(5, **kwargs)
            assert isinstance(a, getattr(torch.nn, f"InstanceNorm{dims}d"))
            assert a.extra_repr() == t.extra_repr()
            assert list(a.state_dict().keys()) == list(t.state_dict().keys())
            a.load_state_dict(t.state_dict())


@pytest.mark.parametrize("fmt", ("nc", "cl"))
def test_large_mean_small_std_float32(fmt):
    """Instances with mean 1e4 and std 0.1 in float32: the variance read back from save_rstd
    (1/rstd^2 - eps) within 1e-4 relative of the float64 variance of the same data (see the BatchNorm
    test of the same name: a sum-of-squares formula in float32 loses every digit here)."""
    rng = np.random.default_rng(8)
    n, c = 3, 4
    base = rng.standard_normal((n, c, 16, 16)) * 0.1 + 1e4 * (1 + np.arange(n * c)).reshape(n, c, 1, 1) / 4
    x = torch.from_numpy(base.astype(np.float32))
    if fmt == "cl":
        x = CR.to_channels_last_torch(x)
    _, _, sr = nkF.instance_norm_forward(x)
    var_ref = CR.instance_norm_forward(x)["var"]
    var_got = 1.0 / R.to_f64(sr) ** 2 - EPS
    rel = np.abs(var_got - var_ref) / var_ref
    assert (rel <= 1e-4).all(), f"instance variance {var_got} vs float64 {var_ref}: relative error {rel}"


@pytest.mark.parametrize("mode", ("input", "running", "input-cl"))
def test_gradcheck(mode):
    F = nt().functional
    x = R.make_torch((2, 3, 4, 3), "float64", 1)
    if mode.endswith("cl"):
        x = CR.to_channels_last_torch(x)
    x.requires_grad_()
    w = R.make_torch((3,), "float64", 2, 0.5, 1.0).requires_grad_()
    b = R.make_torch((3,), "float64", 3).requires_grad_()
    rm, rv = rand_stats(3, "float64", 4)
    if mode == "running":
        fn = lambda x, w, b: F.instance_norm(x, rm, rv, w, b, False, 0.1, EPS)  # noqa: E731
    else:
        rm2, rv2 = rm.clone(), rv.clone()
        fn = lambda x, w, b: F.instance_norm(x, rm2, rv2, w, b, True, 0.1, EPS)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert torch.autograd.gradcheck(lambda x: F.instance_norm(x), (x,), eps=1e-6, atol=1e-7, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------
# normkit.numpy layers
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", R.NUMPY_DTYPES)
@pytest.mark.parametrize(
    "dims,shape,fmt,kwargs",
    [
        (1, (3, 4, 7), "nc", {}),
        (2, (2, 3, 5, 4), "cl", {"affine": True}),
        (2, (3, 4, 3, 3), "nc", {"affine": True, "track_running_stats": True, "momentum": 0.3}),
        (3, (2, 3, 2, 3, 2), "cl", {"track_running_stats": True}),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else "-".join(f"{k}={x}" for k, x in v.items()) or "default",
)
def test_numpy_layer(dims, shape, fmt, kwargs, dtype):
    n, c = shape[:2]
    layer = getattr(nknp(), f"InstanceNorm{dims}d")(c, dtype=np.dtype(dtype), **kwargs)
    torch_layer = getattr(torch.nn, f"InstanceNorm{dims}d")(c, **kwargs)
    assert list(layer.state_dict().keys()) == list(torch_layer.state_dict().keys())
    affine = kwargs.get("affine", False)
    track = kwargs.get("track_running_stats", False)
    momentum = kwargs.get("momentum", 0.1)
    if affine:
        layer.weight[...] = R.make_numpy((c,), dtype, 1, 0.7, 1.0)
        layer.bias[...] = R.make_numpy((c,), dtype, 2)
    else:
        assert getattr(layer, "weight", None) is None
    if track:
        rm, rv = rand_stats(c, dtype, 3, lib="numpy")
        layer.running_mean[...] = rm
        layer.running_var[...] = rv
    tol = R.TOL[dtype]
    for step, mode in enumerate(("train", "eval", "train")):
        layer.train(mode == "train")
        x = R.make_numpy(shape, dtype, 10 + step)
        dy = R.make_numpy(shape, dtype, 20 + step, 1.0, 0.0)
        if fmt == "cl":
            x, dy = CR.to_channels_last_numpy(x), CR.to_channels_last_numpy(dy)
        use_input = mode == "train" or not track
        rm0 = R.to_f64(layer.running_mean) if track else None
        rv0 = R.to_f64(layer.running_var) if track else None
        w = layer.weight.copy() if affine else None
        b = layer.bias.copy() if affine else None
        ref = CR.instance_norm_forward(x, rm0, rv0, w, b, use_input, momentum, EPS)
        y = layer(x)
        tag = f"step {step} ({mode}): "
        assert isinstance(y, np.ndarray) and y.dtype == np.dtype(dtype) and y.shape == shape
        if fmt == "cl":
            assert CR.is_channels_last_numpy(y), y.strides
        R.assert_close(tag + "y", y, ref["y"], tol, CR.y_scale(ref["xmag"], w, b))
        if track:
            xmax = np.abs(R.to_f64(x)).max()
            R.assert_close(tag + "running_mean", layer.running_mean, ref["running_mean"], tol, xmax + np.abs(rm0).max())
            R.assert_close(tag + "running_var", layer.running_var, ref["running_var"], tol, 0.0)
        dx = layer.backward(dy)
        dxr, dwr, dbr = CR.instance_norm_backward(dy, x, w, use_input, rm0, rv0, EPS)
        rstd = np.broadcast_to(ref["save_rstd"], (n, c))
        R.assert_close(tag + "dx", dx, dxr, tol, CR.dx_scale(dy, x, w, c, True, rstd))
        if affine:
            R.assert_close(tag + "dweight", layer.grads["weight"], dwr, tol, CR.dweight_scale(dy, ref["xmag"]))
            R.assert_close(tag + "dbias", layer.grads["bias"], dbr, tol, CR.dbias_scale(dy))


@pytest.mark.parametrize("seed", range(16))
def test_randomized_module_configurations(seed):
    CR.run_random_module_config(seed, "instance", "InstanceNorm{dims}d", nt())


@pytest.mark.parametrize("dtype", ("bfloat16", "float32", "float64"))
@pytest.mark.parametrize("case", [((2, 3, 129, 131), "nc"), ((2, 3, 129, 131), "cl"), ((3, 70, 13, 17), "cl"),
                                  ((2, 2, 50001), "nc")], ids=shape_id)
def test_long_reductions(case, dtype):
    """Many values per instance (up to 5e4), sizes off every block multiple."""
    shape, fmt = case
    c = shape[1]
    x = layout(R.make_torch(shape, dtype, 51), fmt)
    dy = layout(R.make_torch(shape, dtype, 52, 1.0, 0.0), fmt)
    w = R.make_torch((c,), dtype, 53, 0.7, 1.0)
    b = R.make_torch((c,), dtype, 54)
    tol = R.TOL[dtype]
    y, sm, sr = nkF.instance_norm_forward(x, None, None, w, b)
    ref = CR.instance_norm_forward(x, None, None, w, b)
    R.assert_close("y", y, ref["y"], tol, CR.y_scale(ref["xmag"], w, b))
    R.assert_close("save_rstd", sr, ref["save_rstd"], R.TOL[R.ACC_DTYPE[dtype]], 0.0)
    dx, dw, db = nkF.instance_norm_backward(dy, x, sm, sr, w)
    dxr, dwr, dbr = CR.instance_norm_backward(dy, x, w)
    R.assert_close("dx", dx, dxr, tol, CR.dx_scale(dy, x, w, c, True, ref["save_rstd"]))
    R.assert_close("dweight", dw, dwr, tol, CR.dweight_scale(dy, ref["xmag"]))
    R.assert_close("dbias", db, dbr, tol, CR.dbias_scale(dy))
