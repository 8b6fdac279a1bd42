"""Bad input to the BatchNorm / InstanceNorm / GroupNorm entry points (normkit.functional, normkit.numpy
layers, normkit.torch twins): exception type, message content, and the caller's arrays and buffers
left untouched (compared with copies taken before the call)."""

import re

import numpy as np
import pytest
import reference as R
import torch
from normkit import functional as nkF

# torch's wording ("Expected more than 1 value per channel when training, got input size ..."); the
# messages are compared ignoring case (normkit starts them with the argument name: "x: expected ...").
ONE_VALUE_MSG = "Expected more than 1 value per channel when training"


def nt():
    import normkit.torch as m

    return m


def nknp():
    import normkit.numpy as m

    return m


def names(msg, arg):
    """The message names `arg` as a word (so 'x' is not found inside 'expected')."""
    return re.search(r"(?<![A-Za-z0-9_])" + re.escape(arg) + r"(?![A-Za-z0-9_])", msg) is not None


def expect(exc_type, fn, arg=None, any_of=None, contains=(), icontains=(), inputs=()):
    """fn() raises exc_type whose message names `arg` (or one of `any_of`), contains `contains` and,
    ignoring case, `icontains`; every array in `inputs` is unchanged afterwards."""
    snap = R.snapshot(*inputs)
    with pytest.raises(exc_type) as info:
        fn()
    msg = str(info.value)
    if arg is not None:
        assert names(msg, arg), f"{exc_type.__name__} message does not name {arg!r}: {msg!r}"
    if any_of is not None:
        assert any(names(msg, a) for a in any_of), f"{exc_type.__name__} message names none of {any_of}: {msg!r}"
    for c in contains:
        assert c in msg, f"{exc_type.__name__} message lacks {c!r}: {msg!r}"
    for c in icontains:
        assert c.lower() in msg.lower(), f"{exc_type.__name__} message lacks {c!r} (any case): {msg!r}"
    R.assert_unchanged(inputs, snap)
    return msg


def arrays(lib, shape, c, dtype="float32"):
    """x, weight, bias, running_mean, running_var of `lib` ("numpy" / "torch")."""
    make = R.make_torch if lib == "torch" else R.make_numpy
    x = make(shape, dtype, 1)
    w = make((c,), dtype, 2, 0.5, 1.0)
    b = make((c,), dtype, 3)
    rm = make((c,), dtype, 4, 0.5, 0.0)
    rv = make((c,), dtype, 5, 0.1, 1.0)
    return x, w, b, rm, rv


LIBS = ("numpy", "torch")


# ----------------------------------------------------------------------------------------------------
# Wrong channel count: x.shape[1] != len(weight) / len(bias) / len(running_mean) / len(running_var)
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", (True, False), ids=("train", "eval"))
@pytest.mark.parametrize("bad", ("weight", "bias", "running_mean", "running_var"))
@pytest.mark.parametrize("lib", LIBS)
def test_batch_norm_channel_count(lib, bad, training):
    x, w, b, rm, rv = arrays(lib, (4, 3, 5, 5), 3)
    args = {"weight": w, "bias": b, "running_mean": rm, "running_var": rv}
    wrong = arrays(lib, (4, 4, 5, 5), 4)[1 + ("weight", "bias", "running_mean", "running_var").index(bad)]
    args[bad] = wrong
    for fn in (nkF.batch_norm, nkF.batch_norm_forward):
        expect(ValueError, lambda fn=fn: fn(x, args["running_mean"], args["running_var"], args["weight"], args["bias"],
                                      training, 0.1, 1e-5),
               arg=bad, inputs=(x, *args.values()))


@pytest.mark.parametrize("bad", ("weight", "bias", "running_mean", "running_var"))
@pytest.mark.parametrize("lib", LIBS)
def test_instance_norm_channel_count(lib, bad):
    x, w, b, rm, rv = arrays(lib, (2, 3, 4, 5), 3)
    args = {"weight": w, "bias": b, "running_mean": rm, "running_var": rv}
    args[bad] = arrays(lib, (2, 5, 4, 5), 5)[1 + ("weight", "bias", "running_mean", "running_var").index(bad)]
    for use_input in (True, False):
        expect(ValueError,
               lambda ui=use_input: nkF.instance_norm_forward(x, args["running_mean"], args["running_var"],
                                                              args["weight"], args["bias"], ui),
               arg=bad, inputs=(x, *args.values()))


@pytest.mark.parametrize("bad", ("weight", "bias"))
@pytest.mark.parametrize("lib", LIBS)
def test_group_norm_channel_count(lib, bad):
    x, w, b, _, _ = arrays(lib, (2, 6, 4), 6)
    args = {"weight": w, "bias": b}
    args[bad] = arrays(lib, (2, 4, 4), 4)[1 if bad == "weight" else 2]
    for fn in (nkF.group_norm, nkF.group_norm_forward):
        expect(ValueError, lambda fn=fn: fn(x, 3, args["weight"], args["bias"]), arg=bad, inputs=(x, *args.values()))


@pytest.mark.parametrize("lib", LIBS)
def test_backward_weight_channel_count(lib):
    x, w, b, rm, rv = arrays(lib, (4, 3, 5), 3)
    dy = arrays(lib, (4, 3, 5), 3)[0] * 0.5
    _, sm, sr = nkF.batch_norm_forward(x, None, None, w, b, True)
    w_bad = arrays(lib, (4, 2, 5), 2)[1]
    expect(ValueError, lambda: nkF.batch_norm_backward(dy, x, sm, sr, w_bad, True), arg="weight",
           inputs=(dy, x, sm, sr, w_bad))
    _, gm, gr = nkF.group_norm_forward(x, 3, w, b)
    expect(ValueError, lambda: nkF.group_norm_backward(dy, x, 3, gm, gr, w_bad), arg="weight",
           inputs=(dy, x, gm, gr, w_bad))


# ----------------------------------------------------------------------------------------------------
# Mismatched running-stat shapes
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("case", ("mean-2d", "var-2d", "mean-short", "var-long"))
def test_running_stat_shapes(lib, case):
    x, w, b, rm, rv = arrays(lib, (4, 3, 5), 3)
    if case == "mean-2d":
        rm, bad = rm.reshape(3, 1), "running_mean"
    elif case == "var-2d":
        rv, bad = rv.reshape(1, 3), "running_var"
    elif case == "mean-short":
        rm, bad = rm[:2], "running_mean"
    else:
        rv, bad = arrays(lib, (4, 4, 5), 4)[4], "running_var"
    expect(ValueError, lambda: nkF.batch_norm(x, rm, rv, w, b, True), arg=bad, inputs=(x, w, b, rm, rv))
    expect(ValueError, lambda: nkF.instance_norm(x, rm, rv, w, b, True), arg=bad, inputs=(x, w, b, rm, rv))


# ----------------------------------------------------------------------------------------------------
# num_groups not dividing the channels
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("groups", (4, 5, 0, 12))
@pytest.mark.parametrize("lib", LIBS)
def test_group_norm_num_groups(lib, groups):
    x, w, b, _, _ = arrays(lib, (2, 6, 3, 3), 6)
    for fn in (nkF.group_norm, nkF.group_norm_forward):
        expect(ValueError, lambda fn=fn: fn(x, groups, w, b), arg="num_groups", inputs=(x, w, b))
        expect(ValueError, lambda fn=fn: fn(x, groups), arg="num_groups", inputs=(x,))


def test_group_norm_num_groups_layers():
    x = R.make_numpy((2, 6, 3), "float32", 1)

    def numpy_layer():
        layer = nknp().GroupNorm(4, 6)
        layer(x)

    expect(ValueError, numpy_layer, arg="num_groups", inputs=(x,))
    # torch.nn.GroupNorm refuses at construction; the twin inherits that
    with pytest.raises(ValueError):
        nt().GroupNorm(4, 6)


# ----------------------------------------------------------------------------------------------------
# Integer (and other non-float) dtypes
# ----------------------------------------------------------------------------------------------------


def int_x(lib, shape, dtype):
    a = np.arange(int(np.prod(shape))).reshape(shape) % 7
    return torch.from_numpy(a).to(dtype) if lib == "torch" else a.astype(dtype)


FORWARDS = {
    "batch_norm(train)": lambda x, c: nkF.batch_norm(x, None, None, None, None, True),
    "batch_norm(eval)": lambda x, c: nkF.batch_norm(x, np.zeros(c, np.float32), np.ones(c, np.float32)),
    "batch_norm_forward": lambda x, c: nkF.batch_norm_forward(x, None, None, None, None, True),
    "instance_norm": lambda x, c: nkF.instance_norm(x),
    "instance_norm_forward": lambda x, c: nkF.instance_norm_forward(x),
    "group_norm": lambda x, c: nkF.group_norm(x, 1),
    "group_norm_forward": lambda x, c: nkF.group_norm_forward(x, 1),
}


@pytest.mark.parametrize("fn", FORWARDS)
@pytest.mark.parametrize("lib,dtype", [("numpy", np.int32), ("numpy", np.int64), ("numpy", np.uint8),
                                       ("numpy", np.bool_), ("torch", torch.int32), ("torch", torch.int64),
                                       ("torch", torch.uint8)], ids=str)
def test_int_dtype(fn, lib, dtype):
    x = int_x(lib, (3, 4, 5), dtype)
    if fn == "batch_norm(eval)" and lib == "torch":
        f = lambda: nkF.batch_norm(x, torch.zeros(4), torch.ones(4))  # noqa: E731
    else:
        f = lambda: FORWARDS[fn](x, 4)  # noqa: E731
    expect(TypeError, f, arg="x", inputs=(x,))


@pytest.mark.parametrize("lib", LIBS)
def test_int_dtype_modules(lib):
    if lib == "torch":
        x = int_x("torch", (2, 3, 4, 4), torch.int64)
        mods = [nt().BatchNorm2d(3), nt().InstanceNorm2d(3), nt().GroupNorm(3, 3)]
        for m in mods:
            state = {k: v.clone() for k, v in m.state_dict().items() if k != "num_batches_tracked"}
            expect(TypeError, lambda m=m: m(x), arg="x", inputs=(x,))
            for k, v in state.items():
                assert torch.equal(m.state_dict()[k], v), k
    else:
        x = int_x("numpy", (2, 3, 4, 4), np.int32)
        for m in (nknp().BatchNorm2d(3), nknp().InstanceNorm2d(3), nknp().GroupNorm(3, 3)):
            before = m.state_dict()
            expect(TypeError, lambda m=m: m(x), arg="x", inputs=(x,))
            for k, v in m.state_dict().items():
                assert np.array_equal(v, before[k]), k


# ----------------------------------------------------------------------------------------------------
# Training with one value per channel
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ((1, 5), (1, 5, 1), (1, 5, 1, 1), (1, 5, 1, 1, 1)))
@pytest.mark.parametrize("lib", LIBS)
def test_one_value_per_channel_functional(lib, shape):
    x, w, b, rm, rv = arrays(lib, shape, 5)
    for fn in (nkF.batch_norm, nkF.batch_norm_forward):
        expect(ValueError, lambda fn=fn: fn(x, rm, rv, w, b, True, 0.1, 1e-5), icontains=(ONE_VALUE_MSG,),
               inputs=(x, w, b, rm, rv))
    # eval with the running statistics is fine
    y = nkF.batch_norm(x, rm, rv, w, b, False)
    assert tuple(y.shape) == shape


@pytest.mark.parametrize("dims", (1, 2, 3))
def test_one_value_per_channel_modules(dims):
    shape = (1, 5) + (1,) * (dims if dims > 1 else 0)
    # torch twin
    m = getattr(nt(), f"BatchNorm{dims}d")(5)
    t = getattr(torch.nn, f"BatchNorm{dims}d")(5)
    x = R.make_torch(shape, "float32", 1)
    with pytest.raises(ValueError) as ref_info:
        t(x)
    assert ONE_VALUE_MSG in str(ref_info.value)
    expect(ValueError, lambda m=m: m(x), icontains=(ONE_VALUE_MSG,), inputs=(x, m.running_mean, m.running_var))
    m.eval()
    assert tuple(m(x).shape) == shape
    # numpy layer: buffers (including num_batches_tracked) untouched
    layer = getattr(nknp(), f"BatchNorm{dims}d")(5)
    xn = R.make_numpy(shape, "float32", 1)
    expect(ValueError, lambda layer=layer: layer(xn), icontains=(ONE_VALUE_MSG,),
           inputs=(xn, layer.running_mean, layer.running_var, layer.num_batches_tracked))
    layer.eval()
    assert layer(xn).shape == shape


# ----------------------------------------------------------------------------------------------------
# Wrong rank for the BatchNorm modules (torch.nn's messages)
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dims,shape,msg",
    [
        (2, (2, 3, 4), ("expected 4D input", "3D")),
        (2, (2, 3, 4, 4, 4), ("expected 4D input", "5D")),
        (1, (2, 3, 4, 4), ("expected 2D or 3D input", "4D")),
        (3, (2, 3, 4, 4), ("expected 5D input", "4D")),
    ],
)
def test_batch_norm_module_rank(dims, shape, msg):
    """torch.nn's wording: 'expected 4D input (got 3D input)'; the rank that was given must be named."""
    m = getattr(nt(), f"BatchNorm{dims}d")(3)
    x = R.make_torch(shape, "float32", 1)
    expect(ValueError, lambda m=m: m(x), contains=msg, inputs=(x, m.running_mean, m.running_var,
                                                            m.num_batches_tracked))
    layer = getattr(nknp(), f"BatchNorm{dims}d")(3)
    xn = R.make_numpy(shape, "float32", 1)
    expect(ValueError, lambda layer=layer: layer(xn), contains=msg,
           inputs=(xn, layer.running_mean, layer.running_var, layer.num_batches_tracked))


# ----------------------------------------------------------------------------------------------------
# Wrong channel count through the modules
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("train", (True, False), ids=("train", "eval"))
def test_module_channel_count(train):
    x = R.make_torch((2, 3, 4, 4), "float32", 1)
    xn = R.make_numpy((2, 3, 4, 4), "float32", 1)
    # the twins may also stop at torch.nn's own module check, which names num_features
    for m in (nt().BatchNorm2d(4), nt().InstanceNorm2d(4, affine=True, track_running_stats=True)):
        m.train(train)
        expect(ValueError, lambda m=m: m(x), any_of=("weight", "bias", "running_mean", "running_var", "num_features"),
               inputs=(x, m.weight, m.bias, m.running_mean, m.running_var))
    for layer in (nknp().BatchNorm2d(4), nknp().InstanceNorm2d(4, affine=True, track_running_stats=True)):
        layer.train(train)
        expect(ValueError, lambda layer=layer: layer(xn), any_of=("weight", "bias", "running_mean", "running_var"),
               inputs=(xn, layer.weight, layer.bias, layer.running_mean, layer.running_var,
                       layer.num_batches_tracked))
    g = nt().GroupNorm(2, 4)
    expect(ValueError, lambda: g(x), any_of=("weight", "bias", "num_groups"), inputs=(x, g.weight, g.bias))
