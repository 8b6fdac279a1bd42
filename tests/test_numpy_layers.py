"""normkit.numpy.LayerNorm / RMSNorm: forward/backward against the float64 references, grads dict,
state_dict compatibility with torch.nn, strict load_state_dict, train/eval."""

import normkit.numpy as nknp
import numpy as np
import pytest
import reference as R
import torch

LN_CONFIGS = [
    ((8,), {}),
    ((3, 5), {}),
    ((16,), {"bias": False}),
    ((16,), {"elementwise_affine": False}),
    ((7,), {"eps": 1e-3}),
    ((1,), {}),
    ((1000,), {}),
]
RMS_CONFIGS = [
    ((8,), {}),
    ((3, 5), {}),
    ((16,), {"eps": 1e-6}),
    ((16,), {"elementwise_affine": False}),
    ((1,), {}),
    ((1000,), {"eps": 0.1}),
]
KINDS = {
    "LayerNorm": (nknp.LayerNorm, torch.nn.LayerNorm, LN_CONFIGS),
    "RMSNorm": (nknp.RMSNorm, torch.nn.RMSNorm, RMS_CONFIGS),
}
ALL = [(kind, i) for kind, (_, _, cfgs) in KINDS.items() for i in range(len(cfgs))]


def cfg_id(p):
    kind, i = p
    ns, kw = KINDS[kind][2][i]
    return f"{kind}-{'x'.join(map(str, ns))}-" + ",".join(f"{k}={v}" for k, v in kw.items())


def torch_state_as_numpy(module, dtype):
    return {k: v.detach().to(torch.float64).numpy().astype(dtype) for k, v in module.state_dict().items()}


def randomized_torch(kind, ns, kw, seed):
    m = KINDS[kind][1](ns, **kw, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5 + 1.0)
    return m


def expected_affine(kind, kw):
    affine = kw.get("elementwise_affine", True)
    has_bias = kind == "LayerNorm" and affine and kw.get("bias", True)
    return affine, has_bias


# ----------------------------------------------------------------------------------------------------
# Construction
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", ALL, ids=cfg_id)
@pytest.mark.parametrize("dtype", R.NUMPY_DTYPES)
def test_initial_parameters(p, dtype):
    kind, i = p
    ns, kw = KINDS[kind][2][i]
    layer = KINDS[kind][0](ns, **kw, dtype=getattr(np, dtype))
    affine, has_bias = expected_affine(kind, kw)
    if affine:
        assert isinstance(layer.weight, np.ndarray)
        assert layer.weight.shape == ns and layer.weight.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(layer.weight, np.ones(ns))
    else:
        assert layer.weight is None
    bias = getattr(layer, "bias", None)
    if has_bias:
        assert isinstance(bias, np.ndarray) and bias.shape == ns and bias.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(bias, np.zeros(ns))
    else:
        assert bias is None


@pytest.mark.parametrize("kind", KINDS)
def test_default_dtype_and_int_normalized_shape(kind):
    layer = KINDS[kind][0](6)
    assert layer.weight.dtype == np.float32 and layer.weight.shape == (6,)
    layer = KINDS[kind][0]([2, 6])
    assert layer.weight.shape == (2, 6)


@pytest.mark.parametrize("kind", KINDS)
def test_train_eval(kind):
    layer = KINDS[kind][0](10)
    assert layer.training is True
    x = R.make_numpy((3, 10), "float32", 1)
    y_train = layer(x)
    layer.eval()
    assert layer.training is False
    R.assert_bitwise_equal("eval output vs train output", layer(x), y_train)
    layer.train()
    assert layer.training is True


# ----------------------------------------------------------------------------------------------------
# Forward / backward / grads
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", ALL, ids=cfg_id)
@pytest.mark.parametrize("dtype", R.NUMPY_DTYPES)
def test_forward_backward_grads_vs_reference(p, dtype):
    kind, i = p
    ns, kw = KINDS[kind][2][i]
    layer = KINDS[kind][0](ns, **kw, dtype=getattr(np, dtype))
    src = randomized_torch(kind, ns, kw, 100 + i)
    layer.load_state_dict(torch_state_as_numpy(src, dtype))
    affine, has_bias = expected_affine(kind, kw)
    w = layer.weight
    b = getattr(layer, "bias", None)

    x_shape = (4, 3) + ns
    x = R.make_numpy(x_shape, dtype, 200 + i)
    dy = R.make_numpy(x_shape, dtype, 300 + i, 1.0, 0.0)
    snap = R.snapshot(x, dy)
    y = layer(x)
    assert type(y) is np.ndarray and y.dtype == x.dtype and y.shape == x_shape
    dx = layer.backward(dy)
    assert type(dx) is np.ndarray and dx.dtype == x.dtype and dx.shape == x_shape
    R.assert_unchanged((x, dy), snap)

    tol = R.TOL[dtype]
    if kind == "LayerNorm":
        eps = kw.get("eps", 1e-5)
        yr, _, _ = R.layer_norm_forward(x, ns, w, b, eps)
        dxr, dwr, dbr = R.layer_norm_backward(dy, x, ns, w, eps, has_bias=b is not None)
        dx_scale, dw_scale = R.layer_norm_dx_scale(dy, x, ns, w, eps), R.layer_norm_dweight_scale(dy, x, ns, eps)
    else:
        eps = kw.get("eps") or R.default_rms_eps(dtype)
        yr, rstd = R.rms_norm_forward(x, ns, w, eps)
        dxr, dwr = R.rms_norm_backward(dy, x, ns, w, eps)
        dbr = None
        dx_scale = R.dx_scale(dy, x, ns, w, rstd)
        dw_scale = R.dweight_scale(dy, x, ns, R.rms_norm_xhat(x, ns, eps))
    R.assert_close("y", y, yr, tol, np.abs(yr).max())
    R.assert_close("dx", dx, dxr, tol, dx_scale)

    grads = layer.grads
    assert isinstance(grads, dict)
    if affine:
        gw = grads["weight"]
        assert isinstance(gw, np.ndarray) and gw.shape == ns and gw.dtype == w.dtype
        R.assert_close("grads['weight']", gw, dwr, tol, dw_scale)
    else:
        assert grads.get("weight") is None
    if has_bias:
        gb = grads["bias"]
        assert isinstance(gb, np.ndarray) and gb.shape == ns and gb.dtype == b.dtype
        R.assert_close("grads['bias']", gb, dbr, tol, R.dbias_scale(dy, ns))
    else:
        assert grads.get("bias") is None

    # the parameters are not changed by forward/backward
    if affine:
        np.testing.assert_array_equal(layer.weight, torch_state_as_numpy(src, dtype)["weight"])


@pytest.mark.parametrize("kind", KINDS)
def test_non_contiguous_input(kind):
    layer = KINDS[kind][0](9, dtype=np.float64)
    base = R.make_numpy((9, 6), "float64", 1)
    x = base.T[::-1]  # transposed and reversed
    dy = R.make_numpy((6, 9), "float64", 2, 1.0, 0.0)
    y = layer(x)
    dx = layer.backward(dy)
    xc = np.ascontiguousarray(x)
    if kind == "LayerNorm":
        yr, _, _ = R.layer_norm_forward(xc, (9,), None, None, 1e-5)
        dxr, _, _ = R.layer_norm_backward(dy, xc, (9,), np.ones(9), 1e-5)
        dx_scale = R.layer_norm_dx_scale(dy, xc, (9,), None, 1e-5)
    else:
        e = R.default_rms_eps("float64")
        yr, rstd = R.rms_norm_forward(xc, (9,), None, e)
        dxr, _ = R.rms_norm_backward(dy, xc, (9,), np.ones(9), e)
        dx_scale = R.dx_scale(dy, xc, (9,), None, rstd)
    R.assert_close("y", y, yr, R.TOL["float64"], np.abs(yr).max())
    R.assert_close("dx", dx, dxr, R.TOL["float64"], dx_scale)


def test_rms_default_eps_is_float32_machine_epsilon():
    # mean square ~1e-7, comparable to float32 eps: the default must be torch's (finfo(float32).eps)
    layer = nknp.RMSNorm(40)
    x = R.make_numpy((5, 40), "float32", 3, 3e-4, 0.0)
    y = layer(x)
    yr = R.rms_norm(x, (40,), None, R.default_rms_eps("float32"))
    R.assert_close("y", y, yr, R.TOL["float32"], np.abs(yr).max())
    y_torch = torch.nn.RMSNorm(40)(torch.from_numpy(x)).detach()
    R.assert_close("y vs torch.nn.RMSNorm", y, y_torch, R.TOL["float32"], np.abs(yr).max())


# ----------------------------------------------------------------------------------------------------
# state_dict / load_state_dict
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", ALL, ids=cfg_id)
def test_state_dict_keys_match_torch(p):
    kind, i = p
    ns, kw = KINDS[kind][2][i]
    layer = KINDS[kind][0](ns, **kw)
    ref = KINDS[kind][1](ns, **kw)
    sd = layer.state_dict()
    assert isinstance(sd, dict)
    assert set(sd.keys()) == set(ref.state_dict().keys())
    for k, v in sd.items():
        assert isinstance(v, np.ndarray) and v.shape == tuple(ref.state_dict()[k].shape)


@pytest.mark.parametrize("p", ALL, ids=cfg_id)
def test_load_state_dict_roundtrip_with_torch(p):
    kind, i = p
    ns, kw = KINDS[kind][2][i]
    src = randomized_torch(kind, ns, kw, 7 + i)
    sd = torch_state_as_numpy(src, np.float64)
    sd_copy = {k: v.copy() for k, v in sd.items()}
    layer = KINDS[kind][0](ns, **kw, dtype=np.float64)
    layer.load_state_dict(sd)
    for k in sd:
        np.testing.assert_array_equal(sd[k], sd_copy[k])  # the caller's arrays are untouched
    back = layer.state_dict()
    assert back.keys() == sd.keys()
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])
    # same outputs as the torch module
    x = R.make_numpy((5,) + ns, "float64", 9)
    y = layer(x)
    y_ref = src(torch.from_numpy(x)).detach()
    R.assert_close("y vs torch", y, y_ref, R.TOL["float64"], y_ref.abs().max().item())
    # and back into a fresh torch module, strictly
    fresh = KINDS[kind][1](ns, **kw, dtype=torch.float64)
    res = fresh.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in back.items()}, strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    R.assert_close(
        "y of torch loaded from numpy",
        fresh(torch.from_numpy(x)).detach(),
        y_ref,
        R.TOL["float64"],
        y_ref.abs().max().item(),
    )


@pytest.mark.parametrize("kind", KINDS)
def test_load_state_dict_is_strict(kind):
    cls = KINDS[kind][0]
    layer = cls(8)
    good = layer.state_dict()
    with pytest.raises(RuntimeError):
        layer.load_state_dict({})  # missing weight
    with pytest.raises(RuntimeError):
        layer.load_state_dict({**good, "unexpected": np.zeros(8, np.float32)})
    with pytest.raises(RuntimeError):
        layer.load_state_dict({k: np.ones(9, np.float32) for k in good})  # wrong shape
    with pytest.raises(RuntimeError):
        layer.load_state_dict({k: np.ones((1, 8), np.float32) for k in good})  # same size, wrong shape
    with pytest.raises(RuntimeError):
        cls(8, elementwise_affine=False).load_state_dict(good)  # unexpected for a non-affine layer
    if kind == "LayerNorm":
        with pytest.raises(RuntimeError):
            layer.load_state_dict({"weight": good["weight"]})  # missing bias
        with pytest.raises(RuntimeError):
            cls(8, bias=False).load_state_dict(good)  # unexpected bias
    # a non-affine layer loads the empty dict
    cls(8, elementwise_affine=False).load_state_dict({})


# ----------------------------------------------------------------------------------------------------
# Module conventions shared with torch.nn.Module (found by a review against torch)
# ----------------------------------------------------------------------------------------------------


def test_load_state_dict_follows_torch():
    sd = {k: v.numpy() for k, v in torch.nn.BatchNorm1d(3).state_dict().items()}
    # a checkpoint from before num_batches_tracked: the count is kept, as torch does
    layer = nknp.BatchNorm1d(3)
    layer.num_batches_tracked[...] = 5
    old = {k: v for k, v in sd.items() if k != "num_batches_tracked"}
    assert layer.load_state_dict(old) == ([], [])
    assert int(layer.num_batches_tracked) == 5
    # strict=False reports what did not match, as torch's _IncompatibleKeys
    res = nknp.BatchNorm1d(3).load_state_dict({"weight": sd["weight"], "extra": sd["bias"]}, strict=False)
    assert res.missing_keys == ["bias", "running_mean", "running_var"] and res.unexpected_keys == ["extra"]
    with pytest.raises(TypeError, match="state_dict: expected a mapping"):
        nknp.BatchNorm1d(3).load_state_dict([("weight", sd["weight"])])
    # a shape mismatch is an error even when not strict, and nothing is copied
    layer = nknp.BatchNorm1d(3)
    with pytest.raises(RuntimeError, match=r"size mismatch for weight: .*\(4,\).*\(3,\)"):
        layer.load_state_dict({**sd, "bias": np.full(3, 9.0, np.float32), "weight": np.ones(4, np.float32)},
                              strict=False)
    assert (layer.bias == 0).all()


def test_train_takes_a_bool_and_call_passes_its_arguments():
    with pytest.raises(ValueError, match="training mode is expected to be boolean, got str"):
        nknp.BatchNorm1d(3).train("no")
    w = np.ones((2, 3), np.float32)
    layer = nknp.WeightNorm(w)
    np.testing.assert_array_equal(layer(), layer.forward())  # forward(x=None): the weight only


@pytest.mark.parametrize("bad", [[2.5], "45", 2.5])
def test_normalized_shape_must_be_ints(bad):
    with pytest.raises(TypeError, match="normalized_shape: expected an int"):
        nknp.LayerNorm(bad)


def test_dims_must_be_ints():
    with pytest.raises(TypeError, match="dim: expected an int, got float 1.7"):
        nknp.WeightNorm(np.ones((2, 3), np.float32), dim=1.7)
    with pytest.raises(TypeError, match="dim: expected an int, got float 0.9"):
        nknp.SpectralNorm(np.ones((2, 3), np.float32), dim=0.9)


def test_arrays_in_foreign_byte_order_or_read_only_subclasses_are_named(tmp_path):
    with pytest.raises(TypeError, match="x: expected an array in the machine's byte order, got dtype >f4"):
        nknp.LayerNorm(3)(np.ones((2, 3), ">f4"))
    layer = nknp.BatchNorm1d(3)
    np.save(tmp_path / "rm.npy", np.zeros(3, np.float32))
    layer.running_mean = np.load(tmp_path / "rm.npy", mmap_mode="r")  # a read-only np.memmap
    with pytest.raises(ValueError, match="running_mean: expected a writable array"):
        layer(np.ones((2, 3), np.float32))


def test_mean_only_batch_norm_gradients_take_the_bias_dtype_and_check_dy():
    layer = nknp.MeanOnlyBatchNorm1d(3)
    layer(np.zeros((4096, 3), np.float16))
    layer.backward(np.full((4096, 3), 20, np.float16))
    assert layer.grads["bias"].dtype == np.float32
    np.testing.assert_array_equal(layer.grads["bias"], np.full(3, 81920.0, np.float32))  # float16 would be inf
    layer(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"dy: expected shape \(4, 3\)"):
        layer.backward(np.ones((7, 5), np.float32))
    with pytest.raises(TypeError, match="dy: expected dtype float32"):
        layer.backward(np.ones((4, 3), np.float64))


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")
@pytest.mark.parametrize("x_dtype,w_dtype", [("float64", "float32"), ("float32", "float64"), ("float16", "float64")])
def test_rms_norm_weight_of_another_dtype_as_torch(x_dtype, w_dtype):
    """torch.nn.RMSNorm takes a weight of any float dtype: y and dx in x's dtype, dweight in the weight's."""
    layer = nknp.RMSNorm(4, dtype=w_dtype)
    layer.weight[...] = np.array([0.5, 1.0, 2.0, 3.0])
    x = R.make_numpy((3, 4), x_dtype, 7)
    y = layer(x)
    dx = layer.backward(np.ones_like(x))
    ref = torch.nn.RMSNorm(4, dtype=getattr(torch, w_dtype))
    ref.weight.data = torch.from_numpy(layer.weight.copy())
    xt = torch.from_numpy(x).requires_grad_()
    yt = ref(xt)
    yt.backward(torch.ones_like(yt))
    assert y.dtype == x.dtype and dx.dtype == x.dtype and layer.grads["weight"].dtype == np.dtype(w_dtype)
    tol = R.TOL[x_dtype] if x_dtype != "float64" else 1e-6
    R.assert_close("y", y, yt.detach(), tol, 4.0)
    R.assert_close("dx", dx, xt.grad, tol, 4.0)
    R.assert_close("dweight", layer.grads["weight"], ref.weight.grad, max(tol, 1e-6), 4.0)


@pytest.mark.parametrize("bad", [np.array(list("abc")), np.array([1 + 2j, 3, 4]), np.array([None, 1.0, 2.0])],
                         ids=["str", "complex", "object"])
def test_load_state_dict_checks_every_value_before_copying_any(bad):
    layer = nknp.BatchNorm1d(3)
    state = {"weight": np.full(3, 7.0), "bias": np.full(3, 7.0), "running_mean": np.full(3, 7.0),
             "running_var": bad, "num_batches_tracked": np.array(5)}
    with pytest.raises(RuntimeError, match='parameter named "running_var": expected an array of real numbers'):
        layer.load_state_dict(state)
    # nothing was copied, not even the keys before it (a complex value is not truncated either)
    np.testing.assert_array_equal(layer.weight, np.ones(3))
    np.testing.assert_array_equal(layer.bias, np.zeros(3))
    np.testing.assert_array_equal(layer.running_mean, np.zeros(3))
    np.testing.assert_array_equal(layer.running_var, np.ones(3))
    assert int(layer.num_batches_tracked) == 0
