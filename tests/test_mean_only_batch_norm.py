"""Mean-only Batch Normalization (Salimans & Kingma, 2016, section 3): normkit.functional,
normkit.numpy and normkit.torch against a float64 NumPy reference written from the paper's formula.

Reference (x = [N, C, *spatial]):
    mu_c  = mean over n and the spatial dims of x[:, c]       (training; eval: running_mean_c)
    y     = x - mu_c + b_c
    running_mean = (1 - momentum) * running_mean + momentum * mu_c     (training)
    dx    = dy - mean_{n,s}(dy)  (training: mu depends on x),  dx = dy (eval)
    dbias = sum over n and the spatial dims of dy

Tolerances. Every dtype computes in its accumulation type and rounds each output once, so against the
float64 answer on the same rounded inputs the error is about half an ulp of the output dtype plus a few
accumulation ulps of the terms combined: R.TOL relative to |x| + |mu| + |b| for y, |dy| + |mean(dy)|
for dx and sum |dy| for dbias.
"""

import normkit
import numpy as np
import pytest
import reference as R
import torch
from normkit import functional as nkF
from normkit import numpy as nknp
from normkit import torch as nkt
from normkit.torch import _torch_composite as composite

# (C = 40: channels-last sums in register tiles plus a remainder)
SHAPES = [(4, 3), (2, 3, 5), (3, 2, 4, 3), (2, 4, 3, 2, 2), (4, 5, 7, 6), (2, 3, 1, 1), (3, 40, 2, 3)]


def shape_id(s):
    return "x".join(map(str, s))


def channels_last(t):
    """The same values stored channels-last ([N, *spatial, C] in memory), for any rank >= 3."""
    nd = t.dim()
    if nd <= 2:
        return t
    stored = t.permute(0, *range(2, nd), 1).contiguous()
    return stored.permute(0, nd - 1, *range(1, nd - 1))


def is_channels_last(t):
    nd = t.dim()
    return nd > 2 and t.stride(1) == 1 and t.shape[1] > 1 and t.stride(nd - 1) == t.shape[1]


def make_params(C, dtype, seed):
    rng = np.random.default_rng(seed)
    td = R.torch_dtype(dtype)
    b = torch.from_numpy(rng.uniform(-0.5, 0.5, C)).to(td)
    rm = torch.from_numpy(rng.uniform(-0.3, 0.3, C)).to(td)
    return b, rm


# ---- the float64 reference -------------------------------------------------------------------------


def _axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _bshape(x):
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def ref_forward(x, bias, running_mean, training, momentum):
    """(y, mean, new running_mean, scale of y's terms) in float64."""
    x = R.to_f64(x)
    b = np.zeros(x.shape[1]) if bias is None else R.to_f64(bias)
    rm = R.to_f64(running_mean)
    mu = x.mean(axis=_axes(x)) if training else rm
    new_rm = (1 - momentum) * rm + momentum * mu if training else rm
    y = x - mu.reshape(_bshape(x)) + b.reshape(_bshape(x))
    scale = np.abs(x) + np.abs(mu).reshape(_bshape(x)) + np.abs(b).reshape(_bshape(x))
    return y, mu, new_rm, scale


def ref_backward(dy, training):
    """(dx, dbias, dx scale, dbias scale) in float64."""
    dy = R.to_f64(dy)
    m = dy.mean(axis=_axes(dy), keepdims=True) if training else np.zeros(_bshape(dy))
    return dy - m, dy.sum(axis=_axes(dy)), np.abs(dy) + np.abs(m), np.abs(dy).sum(axis=_axes(dy))


# ---- tests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", (True, False), ids=("train", "eval"))
@pytest.mark.parametrize("cl", (False, True), ids=("ncs", "channels_last"))
@pytest.mark.parametrize("dtype", R.DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_forward_backward(shape, dtype, cl, training):
    seed = 7 + sum(shape) + len(dtype)
    x = R.make_torch(shape, dtype, seed)
    dy = R.make_torch(shape, dtype, seed + 1, scale=1.0, offset=0.3)
    if cl:
        x, dy = channels_last(x), channels_last(dy)
    b, rm = make_params(shape[1], dtype, seed + 2)
    rm0 = rm.clone()
    tol = R.TOL[dtype]
    mom = 0.3
    snap = R.snapshot(x, b)

    y, save_mean = nkF.mean_only_batch_norm_forward(x, rm, b, training, mom)
    R.assert_unchanged([x, b], snap)
    assert y.dtype == x.dtype and y.shape == x.shape
    # (torch tensors keep channels-last in channels_last / channels_last_3d only, as torch's layers)
    assert is_channels_last(y) == (is_channels_last(x) and x.dim() in (4, 5)), "y: memory format does not follow x"
    assert save_mean.dtype == R.torch_dtype(R.ACC_DTYPE[dtype]) and save_mean.shape == (shape[1],)
    yr, mu, rmr, scale = ref_forward(x, b, rm0, training, mom)
    R.assert_close("y", y, yr, tol, scale)
    R.assert_close("save_mean", save_mean, mu, 1e-5 if dtype != "float64" else 1e-12, np.abs(R.to_f64(x)).max())
    R.assert_close("running_mean", rm, rmr, tol, 1.0)
    if not training:
        R.assert_bitwise_equal("eval running_mean unchanged", rm, rm0)

    dx, db = nkF.mean_only_batch_norm_backward(dy, training)
    assert dx.dtype == x.dtype and db.dtype == x.dtype
    assert is_channels_last(dx) == is_channels_last(dy), "dx: memory format does not follow dy"
    dxr, dbr, sx, sb = ref_backward(dy, training)
    R.assert_close("dx", dx, dxr, tol, sx)
    R.assert_close("dbias", db, dbr, tol, sb)

    # normkit.torch through autograd: the same numbers as the functional form, dx in x's format
    rm2 = rm0.clone()
    ba = b.clone().requires_grad_(True)
    xa = x.clone(memory_format=torch.preserve_format).requires_grad_(True)
    ya = nkt.functional.mean_only_batch_norm(xa, rm2, ba, training, mom)
    ya.backward(dy.contiguous())  # a channels-first dy: dx still follows x
    R.assert_bitwise_equal("autograd y", ya.detach(), y)
    R.assert_bitwise_equal("autograd running_mean", rm2, rm)
    assert is_channels_last(xa.grad) == is_channels_last(x)
    R.assert_bitwise_equal("autograd dx", xa.grad, dx)
    R.assert_bitwise_equal("autograd dbias", ba.grad, db)


@pytest.mark.parametrize("dtype", ("float16", "bfloat16"))
def test_mixed_precision_params(dtype):
    """Half inputs with float32 bias and running mean."""
    shape = (3, 4, 5, 2)
    x = R.make_torch(shape, dtype, 5)
    b, rm = make_params(4, "float32", 7)
    rm0 = rm.clone()
    y, _ = nkF.mean_only_batch_norm_forward(x, rm, b, True, 0.1)
    yr, _, rmr, scale = ref_forward(x, b, rm0, True, 0.1)
    R.assert_close("y", y, yr, R.TOL[dtype], scale)
    R.assert_close("running_mean", rm, rmr, 1e-6, 1.0)
    dy = R.make_torch(shape, dtype, 8, 1.0, 0.0)
    dx, db = nkF.mean_only_batch_norm_backward(dy, True, bias_dtype="float32")
    assert db.dtype == torch.float32
    dxr, dbr, sx, sb = ref_backward(dy, True)
    R.assert_close("dx", dx, dxr, R.TOL[dtype], sx)
    R.assert_close("dbias", db, dbr, 1e-5, sb)


@pytest.mark.parametrize("dtype", R.NUMPY_DTYPES)
def test_numpy_arrays_and_strided_views(dtype):
    x = R.make_numpy((3, 4, 6, 5), dtype, 9)[:, :, ::2, 1:]  # a sliced view: copied, not misread
    b = np.linspace(-1, 1, 4).astype(dtype)
    rm = np.zeros(4, dtype)
    y, _ = nkF.mean_only_batch_norm_forward(x, rm, b, True, 0.5)
    assert isinstance(y, np.ndarray) and y.shape == x.shape
    yr, _, rmr, scale = ref_forward(x, b, np.zeros(4), True, 0.5)
    R.assert_close("y", y, yr, R.TOL[dtype], scale)
    R.assert_close("running_mean", rm, rmr, R.TOL[dtype], 1.0)


@pytest.mark.parametrize("training", (True, False))
@pytest.mark.parametrize("cl", (False, True))
@pytest.mark.parametrize("shape", ((4, 3), (3, 2, 3, 2)), ids=shape_id)
def test_gradcheck(shape, cl, training):
    x = R.make_torch(shape, "float64", 21)
    if cl:
        x = channels_last(x)
    b, rm = make_params(shape[1], "float64", 22)
    leaves = [a.clone(memory_format=torch.preserve_format).requires_grad_(True) for a in (x, b)]

    def f(x, b):
        return nkt.functional.mean_only_batch_norm(x, rm.clone(), b, training, 0.1)

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-8)


def test_layouts_agree_exactly():
    x = R.make_torch((3, 5, 4, 3), "float32", 11)
    b, rm = make_params(5, "float32", 12)
    a = nkF.mean_only_batch_norm(x, rm.clone(), b, True)
    c = nkF.mean_only_batch_norm(channels_last(x), rm.clone(), b, True)
    R.assert_close("layouts", c, a, 1e-6, 3.0)


def test_defaults_and_no_bias():
    x = R.make_torch((2, 3, 4), "float32", 41)
    rm = torch.tensor([0.5, -1.0, 2.0])
    y = nkF.mean_only_batch_norm(x, rm)  # eval by default: running mean subtracted, untouched
    R.assert_close("y", y, ref_forward(x, None, rm, False, 0.1)[0], 1e-6, 3.0)
    assert torch.equal(rm, torch.tensor([0.5, -1.0, 2.0]))
    y = nkF.mean_only_batch_norm(x, None, None, training=True)
    R.assert_close("y", y, ref_forward(x, None, torch.zeros(3), True, 0.1)[0], 1e-6, 3.0)
    dx, db = nkF.mean_only_batch_norm_backward(x, True, output_mask=(True, False))
    assert db is None and dx is not None


@pytest.mark.parametrize("cls_dims", ((1, 2), (1, 3), (2, 4), (3, 5)))
def test_numpy_layer(cls_dims):
    d, nd = cls_dims
    layer = getattr(nknp, f"MeanOnlyBatchNorm{d}d")(3, momentum=None)
    assert f"MeanOnlyBatchNorm{d}d" in nknp.__all__
    assert repr(layer) == f"MeanOnlyBatchNorm{d}d(3, momentum=None, affine=True)"
    assert np.all(layer.bias == 0)
    layer.bias[...] = [0.1, -0.2, 0.3]
    shape = (4, 3) + (3,) * (nd - 2)
    rng = np.random.default_rng(d)
    xs = [rng.standard_normal(shape).astype(np.float32) + 1 for _ in range(3)]
    for x in xs:
        y = layer(x)
    R.assert_close("y", y, ref_forward(xs[-1], layer.bias, np.zeros(3), True, 0.0)[0], 1e-5, 5.0)
    # momentum=None: the cumulative average of the batch means
    red = _axes(xs[0])
    np.testing.assert_allclose(layer.running_mean, np.mean([x.mean(axis=red) for x in xs], axis=0), atol=1e-6)
    assert int(layer.num_batches_tracked) == 3
    dy = rng.standard_normal(shape).astype(np.float32)
    dx = layer.backward(dy)
    dxr, dbr, sx, sb = ref_backward(dy, True)
    R.assert_close("dx", dx, dxr, 1e-5, sx)
    R.assert_close("dbias", layer.grads["bias"], dbr, 1e-5, sb)
    layer.eval()
    ye = layer(xs[0])
    R.assert_close("eval y", ye, ref_forward(xs[0], layer.bias, layer.running_mean, False, 0.0)[0], 1e-5, 5.0)
    R.assert_close("eval dx", layer.backward(dy), dy, 0.0)
    assert int(layer.num_batches_tracked) == 3
    with pytest.raises(ValueError, match="expected"):
        layer(np.zeros((2, 3) + (3,) * (d + 1), np.float32))
    assert set(layer.state_dict()) == {"bias", "running_mean", "num_batches_tracked"}
    plain = getattr(nknp, f"MeanOnlyBatchNorm{d}d")(3, affine=False)
    plain(xs[0])
    plain.backward(dy)
    assert plain.bias is None and plain.grads == {} and set(plain.state_dict()) == {"running_mean",
                                                                                    "num_batches_tracked"}


def test_numpy_layer_channels_last():
    layer = nknp.MeanOnlyBatchNorm2d(3)
    x = np.ascontiguousarray(R.make_numpy((2, 4, 5, 3), "float32", 3)).transpose(0, 3, 1, 2)
    y = layer(x)
    assert y.strides[1] == y.itemsize, "y: channels-last in, channels-last out"
    dx = layer.backward(np.ascontiguousarray(R.make_numpy(x.shape, "float32", 4)))
    assert dx.strides[1] == dx.itemsize, "dx follows x's memory format"


@pytest.mark.parametrize("cl", (False, True))
@pytest.mark.parametrize("d", (1, 2, 3))
def test_module_twin(d, cl):
    cls = getattr(nkt, f"MeanOnlyBatchNorm{d}d")
    layer = cls(4, momentum=0.2).double()
    assert isinstance(layer, torch.nn.Module)
    assert repr(layer) == f"MeanOnlyBatchNorm{d}d(4, momentum=0.2, affine=True)"
    assert {n for n, _ in layer.named_parameters()} == {"bias"}
    assert set(dict(layer.named_buffers())) == {"running_mean", "num_batches_tracked"}
    assert torch.all(layer.bias == 0)
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([1.0, 0.5, -2.0, 1.5]))
    shape = (3, 4) + (3,) * d
    x = R.make_torch(shape, "float64", 50 + d)
    if cl:
        x = channels_last(x)
    xa = x.clone(memory_format=torch.preserve_format).requires_grad_(True)
    y = layer(xa)
    assert is_channels_last(y) == (is_channels_last(x) and x.dim() in (4, 5))
    dy = R.make_torch(shape, "float64", 60 + d)
    y.backward(dy)
    assert int(layer.num_batches_tracked) == 1
    # the same function written with torch ops, differentiated by torch
    red = (0,) + tuple(range(2, x.dim()))
    xc = x.clone().requires_grad_(True)
    bc = layer.bias.detach().clone().requires_grad_(True)
    bshape = (1, 4) + (1,) * d
    yc = xc - xc.mean(red, keepdim=True) + bc.reshape(bshape)
    yc.backward(dy)
    torch.testing.assert_close(y, yc, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(xa.grad, xc.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.bias.grad, bc.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.running_mean, 0.2 * x.mean(red), rtol=1e-12, atol=1e-12)
    layer.eval()
    with torch.no_grad():
        ye = layer(x)
    torch.testing.assert_close(ye, x - layer.running_mean.reshape(bshape) + layer.bias.reshape(bshape),
                               rtol=1e-12, atol=1e-12)
    assert int(layer.num_batches_tracked) == 1
    sd = layer.state_dict()
    other = cls(4, momentum=0.2).double()
    other.load_state_dict(sd)
    torch.testing.assert_close(other.running_mean, layer.running_mean, rtol=0, atol=0)
    layer.reset_parameters()
    assert torch.all(layer.bias == 0) and torch.all(layer.running_mean == 0) and int(layer.num_batches_tracked) == 0
    with pytest.raises(ValueError, match="expected"):
        layer(torch.zeros((2, 4) + (3,) * (d + 1)))


def test_module_momentum_none_and_no_affine():
    layer = nkt.MeanOnlyBatchNorm2d(3, momentum=None, affine=False)
    assert layer.bias is None and list(layer.parameters()) == []
    xs = [R.make_torch((2, 3, 4, 4), "float32", 70 + i) for i in range(3)]
    for x in xs:
        layer(x)
    torch.testing.assert_close(layer.running_mean, torch.stack([x.mean((0, 2, 3)) for x in xs]).mean(0),
                               rtol=1e-5, atol=1e-6)
    x = xs[0].clone().requires_grad_(True)
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.zeros_like(x), rtol=0, atol=1e-6)  # the mean removes a constant dy


def test_weight_norm_then_mean_only_batch_norm():
    """The paper's combination: a weight-normalized layer followed by mean-only BatchNorm trains end to end."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(nkt.weight_norm(torch.nn.Conv2d(3, 6, 3, bias=False)), nkt.MeanOnlyBatchNorm2d(6))
    x = torch.randn(4, 3, 8, 8)
    y = model(x)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(6), rtol=0, atol=1e-5)
    y.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def _x(shape=(2, 3, 4), dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype)


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        ({"bias": torch.ones(2)}, ValueError, r"bias: expected shape \[3\] \(the channels of x\), got \[2\]"),
        ({"running_mean": torch.zeros(5)}, ValueError, r"running_mean: expected shape \[3\].*got \[5\]"),
        # (a strided running_mean goes through a compact copy, as torch updates views: with a bad x it is
        # left untouched)
        ({"running_mean": torch.zeros(6)[::2], "x": torch.zeros(3)}, ValueError, r"x: expected at least 2 dimensions"),
        ({"x": torch.zeros((2, 3, 4), dtype=torch.int32)}, TypeError, "x: expected dtype float16.*got int32"),
        ({"x": torch.zeros(3)}, ValueError, r"x: expected at least 2 dimensions \[N, C, \*spatial\], got shape \[3\]"),
        ({"bias": torch.ones(3, dtype=torch.int64)}, TypeError, "bias: expected dtype .*got int64"),
        ({"bias": torch.ones(3, dtype=torch.float64)}, TypeError, r"bias: expected dtype float32 \(for x of dtype"),
        ({"momentum": float("nan")}, ValueError, "momentum: expected a finite number, got nan"),
        ({"running_mean": None, "training": False}, ValueError, r"running_mean: expected an array in evaluation mode"),
    ],
)
def test_bad_inputs(kwargs, exc, message):
    args = {"x": _x(), "running_mean": torch.zeros(3), "bias": torch.ones(3), "training": True, "momentum": 0.1}
    args.update(kwargs)
    rm_before = None if args["running_mean"] is None else args["running_mean"].clone()
    with pytest.raises(exc, match=message):
        nkF.mean_only_batch_norm(args["x"], args["running_mean"], args["bias"], args["training"], args["momentum"])
    if rm_before is not None:
        assert torch.equal(args["running_mean"], rm_before), "a rejected call must not touch the buffers"


def test_bad_backward_inputs():
    with pytest.raises(ValueError, match=r"dy: expected at least 2 dimensions"):
        nkF.mean_only_batch_norm_backward(torch.zeros(3))
    with pytest.raises(TypeError, match=r"dy: expected dtype float16"):
        nkF.mean_only_batch_norm_backward(torch.zeros((2, 3), dtype=torch.int64))


# Channels first, (9, 3, 33, 17): on 1 thread tasks of channels {0, 1} and {2} sum and map them (the
# sums of channel 1 plane by plane between the maps of channel 0's planes), on 2 threads too few
# channels for that: a pass of sums, then one of maps. Nine planes per channel, so that a sum in
# another order shows. (4, 6, 33, 17) takes the fused passes on both.
@pytest.mark.parametrize("cl", (False, True))
@pytest.mark.parametrize("dtype", ("float32", "bfloat16"))
@pytest.mark.parametrize("shape", ((4, 6, 33, 17), (9, 3, 33, 17), (512, 70)), ids=shape_id)
def test_thread_count_determinism(shape, dtype, cl):
    x = R.make_torch(shape, dtype, 90)
    dy = R.make_torch(shape, dtype, 91)
    if cl:
        x, dy = channels_last(x), channels_last(dy)
    b, rm = make_params(shape[1], dtype, 92)
    outs = []
    for threads in (1, 2, 2):
        normkit.set_num_threads(threads)
        rm2 = rm.clone()
        y, sm = nkF.mean_only_batch_norm_forward(x, rm2, b, True, 0.1)
        outs.append((y, rm2, sm, *nkF.mean_only_batch_norm_backward(dy, True)))
    for other in outs[1:]:
        for i, (a, c) in enumerate(zip(outs[0], other)):
            R.assert_bitwise_equal(f"output #{i}", a, c)


@pytest.mark.parametrize("cl", (False, True))
@pytest.mark.parametrize("shape", ((0, 3, 4), (2, 3, 0), (0, 3, 2, 2)))
def test_empty_batch_in_training(shape, cl):
    """As torch's BatchNorm on an empty batch: an empty output, the running mean left as it is (no
    batch mean to move it by), a saved mean of 0 (normkit's BatchNorm saves 0 too), a zero dbias."""
    x = torch.zeros(shape)
    if cl:
        x = channels_last(x)
    rm = torch.tensor([1.0, 2.0, 3.0])
    y, sm = nkF.mean_only_batch_norm_forward(x, rm, torch.ones(3), True, 0.5)
    assert y.shape == x.shape
    torch.testing.assert_close(rm, torch.tensor([1.0, 2.0, 3.0]), rtol=0, atol=0)
    torch.testing.assert_close(sm, torch.zeros(3), rtol=0, atol=0)
    _, bn_mean, _ = nkF.batch_norm_forward(x, None, None, None, None, True)
    torch.testing.assert_close(sm, bn_mean, rtol=0, atol=0)
    dx, db = nkF.mean_only_batch_norm_backward(x, True)
    assert dx.shape == x.shape
    torch.testing.assert_close(db, torch.zeros(3), rtol=0, atol=0)
    # the differentiable form that double backward and torch.compile take agrees
    assert composite.mean_only_batch_norm(x, rm, torch.ones(3), True, 0.5).shape == x.shape
    torch.testing.assert_close(rm, torch.tensor([1.0, 2.0, 3.0]), rtol=0, atol=0)


@pytest.mark.parametrize("momentum", (0.1, None))
def test_module_empty_batch_like_batch_norm(momentum):
    """The twin on an empty training batch does what torch.nn.BatchNorm2d does with its running mean and
    batch count, and its bias gets a zero gradient; NumPy's layer the same."""
    layer, bn = nkt.MeanOnlyBatchNorm2d(3, momentum=momentum), torch.nn.BatchNorm2d(3, momentum=momentum)
    for m in (layer, bn):
        m.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = torch.zeros(0, 3, 4, 4, requires_grad=True)
    y, yb = layer(x), bn(x)
    assert y.shape == yb.shape == x.shape
    torch.testing.assert_close(layer.running_mean, bn.running_mean, rtol=0, atol=0)
    torch.testing.assert_close(layer.running_mean, torch.tensor([0.5, -1.0, 2.0]), rtol=0, atol=0)
    assert int(layer.num_batches_tracked) == int(bn.num_batches_tracked) == 1
    y.sum().backward()
    torch.testing.assert_close(layer.bias.grad, torch.zeros(3), rtol=0, atol=0)
    # then a real batch moves the running mean as after no batch at all, but for the count (momentum=None)
    xs = torch.randn(2, 3, 4, 4)
    layer(xs)
    mu = xs.mean(dim=(0, 2, 3))
    factor = 0.5 if momentum is None else momentum
    torch.testing.assert_close(layer.running_mean, (1 - factor) * torch.tensor([0.5, -1.0, 2.0]) + factor * mu)
    np_layer = nknp.MeanOnlyBatchNorm2d(3)
    np_layer.running_mean[...] = [0.5, -1.0, 2.0]
    assert np_layer(np.zeros((0, 3, 4, 4), np.float32)).shape == (0, 3, 4, 4)
    np.testing.assert_array_equal(np_layer.running_mean, np.float32([0.5, -1.0, 2.0]))
    np.testing.assert_array_equal(np_layer.backward(np.zeros((0, 3, 4, 4), np.float32)).shape, (0, 3, 4, 4))
    np.testing.assert_array_equal(np_layer.grads["bias"], np.zeros(3, np.float32))


def test_empty_batch_in_eval():
    x = torch.zeros((0, 3, 4))
    y, sm = nkF.mean_only_batch_norm_forward(x, torch.tensor([1.0, 2.0, 3.0]), training=False)
    assert y.shape == x.shape
    torch.testing.assert_close(sm, torch.tensor([1.0, 2.0, 3.0]))
    dx, db = nkF.mean_only_batch_norm_backward(x, True)
    assert dx.shape == x.shape
    torch.testing.assert_close(db, torch.zeros(3))


@pytest.mark.skipif(not (normkit.cuda_available() and torch.cuda.is_available()), reason="needs a CUDA device")
@pytest.mark.parametrize("training", (True, False))
@pytest.mark.parametrize("cl", (False, True))
@pytest.mark.parametrize("dtype", R.DTYPES)
def test_cuda_matches_reference(dtype, cl, training):
    shape = (5, 6, 9, 7)
    x = R.make_torch(shape, dtype, 100)
    dy = R.make_torch(shape, dtype, 101, 1.0, 0.2)
    if cl:
        x, dy = channels_last(x), channels_last(dy)
    b, rm = make_params(6, dtype, 102)
    rmc = rm.cuda()
    y, sm = nkF.mean_only_batch_norm_forward(x.cuda(), rmc, b.cuda(), training, 0.25)
    assert is_channels_last(y) == cl
    yr, mu, rmr, scale = ref_forward(x, b, rm, training, 0.25)
    tol = R.TOL[dtype]
    R.assert_close("y", y.cpu(), yr, tol, scale)
    R.assert_close("running_mean", rmc.cpu(), rmr, tol, 1.0)
    dx, db = nkF.mean_only_batch_norm_backward(dy.cuda(), training)
    dxr, dbr, sx, sb = ref_backward(dy, training)
    R.assert_close("dx", dx.cpu(), dxr, tol, sx)
    R.assert_close("dbias", db.cpu(), dbr, tol, sb)
