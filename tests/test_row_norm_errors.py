"""Bad input to the LayerNorm / RMSNorm entry points: exception type, message content, and the caller's
arrays left untouched."""

import re

import normkit.numpy as nknp
import numpy as np
import pytest
import reference as R
import torch
from normkit import functional as nkF

DTYPE_MSG = "expected dtype float16, bfloat16, float32 or float64"

NUMPY_BAD_DTYPES = (np.int32, np.int64, np.uint8, np.bool_, np.complex64, np.complex128)
TORCH_BAD_DTYPES = (torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64)


def names(msg, arg):
    """The message names `arg` as a word (so 'x' is not found inside 'expected')."""
    return re.search(r"(?<![A-Za-z0-9_])" + re.escape(arg) + r"(?![A-Za-z0-9_])", msg) is not None


def expect(exc_type, fn, *args, arg=None, contains=(), inputs=()):
    snap = R.snapshot(*inputs)
    with pytest.raises(exc_type) as info:
        fn(*args)
    msg = str(info.value)
    if arg is not None:
        assert names(msg, arg), f"{exc_type.__name__} message does not name {arg!r}: {msg!r}"
    for c in contains:
        assert c in msg, f"{exc_type.__name__} message lacks {c!r}: {msg!r}"
    R.assert_unchanged(inputs, snap)
    return msg


def bad_numpy(dtype, shape):
    a = np.arange(int(np.prod(shape))).reshape(shape) % 5
    return a.astype(dtype)


def bad_torch(dtype, shape):
    return (torch.arange(int(np.prod(shape))).reshape(shape) % 5).to(dtype)


# forward entry points as (name, fn(x, ns, w, b, eps))
FORWARDS = {
    "layer_norm": lambda x, ns, w=None, b=None, eps=1e-5: nkF.layer_norm(x, ns, w, b, eps),
    "layer_norm_forward": lambda x, ns, w=None, b=None, eps=1e-5: nkF.layer_norm_forward(x, ns, w, b, eps),
    "rms_norm": lambda x, ns, w=None, b=None, eps=None: nkF.rms_norm(x, ns, w, eps),
    "rms_norm_forward": lambda x, ns, w=None, b=None, eps=None: nkF.rms_norm_forward(x, ns, w, eps),
}
LN_FORWARDS = ("layer_norm", "layer_norm_forward")


# ----------------------------------------------------------------------------------------------------
# dtype errors
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", FORWARDS)
@pytest.mark.parametrize("dtype", NUMPY_BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_x_bad_dtype_numpy(fn, dtype):
    x = bad_numpy(dtype, (4, 8))
    expect(TypeError, FORWARDS[fn], x, (8,), arg="x", contains=(DTYPE_MSG,), inputs=(x,))


@pytest.mark.parametrize("fn", FORWARDS)
@pytest.mark.parametrize("dtype", TORCH_BAD_DTYPES, ids=str)
def test_x_bad_dtype_torch(fn, dtype):
    x = bad_torch(dtype, (4, 8))
    expect(TypeError, FORWARDS[fn], x, (8,), arg="x", contains=(DTYPE_MSG,), inputs=(x,))


@pytest.mark.parametrize("fn", FORWARDS)
@pytest.mark.parametrize("dtype", (np.int32, np.int64, np.bool_, np.complex64), ids=lambda d: np.dtype(d).name)
def test_weight_bad_dtype(fn, dtype):
    x = R.make_numpy((4, 8), "float32", 1)
    w = bad_numpy(dtype, (8,))
    expect(TypeError, FORWARDS[fn], x, (8,), w, arg="weight", contains=(DTYPE_MSG,), inputs=(x, w))


@pytest.mark.parametrize("fn", LN_FORWARDS)
@pytest.mark.parametrize("dtype", (np.int32, np.bool_, np.complex64), ids=lambda d: np.dtype(d).name)
def test_bias_bad_dtype(fn, dtype):
    x = R.make_numpy((4, 8), "float32", 1)
    w = R.make_numpy((8,), "float32", 2)
    b = bad_numpy(dtype, (8,))
    expect(TypeError, FORWARDS[fn], x, (8,), w, b, arg="bias", contains=(DTYPE_MSG,), inputs=(x, w, b))


@pytest.mark.parametrize("dtype", (np.int32, np.complex64, np.bool_), ids=lambda d: np.dtype(d).name)
def test_backward_dy_bad_dtype(dtype):
    x = R.make_numpy((4, 8), "float32", 1)
    w = R.make_numpy((8,), "float32", 2)
    _, mean, rstd = nkF.layer_norm_forward(x, (8,), w, None)
    dy = bad_numpy(dtype, (4, 8))
    inputs = (x, w, mean, rstd, dy)
    expect(
        TypeError, nkF.layer_norm_backward, dy, x, (8,), mean, rstd, w, arg="dy", contains=(DTYPE_MSG,), inputs=inputs
    )
    _, rstd2 = nkF.rms_norm_forward(x, (8,), w)
    expect(
        TypeError,
        nkF.rms_norm_backward,
        dy,
        x,
        (8,),
        rstd2,
        w,
        arg="dy",
        contains=(DTYPE_MSG,),
        inputs=(x, w, rstd2, dy),
    )


@pytest.mark.parametrize("dtype", (torch.int64, torch.bool), ids=str)
def test_backward_x_bad_dtype_torch(dtype):
    x = bad_torch(dtype, (3, 5))
    dy = R.make_torch((3, 5), "float32", 3)
    mean = torch.zeros(3)
    rstd = torch.ones(3)
    expect(
        TypeError,
        nkF.layer_norm_backward,
        dy,
        x,
        (5,),
        mean,
        rstd,
        arg="x",
        contains=(DTYPE_MSG,),
        inputs=(x, dy, mean, rstd),
    )
    expect(TypeError, nkF.rms_norm_backward, dy, x, (5,), rstd, arg="x", contains=(DTYPE_MSG,), inputs=(x, dy, rstd))


# ----------------------------------------------------------------------------------------------------
# shape errors
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", FORWARDS)
@pytest.mark.parametrize(
    "x_shape,ns",
    [
        ((4, 8), (7,)),  # trailing dim differs
        ((4, 8), (9,)),
        ((2, 3, 4), (2, 4)),  # second-to-last differs
        ((2, 3, 4), (4, 3)),  # same numel, wrong order
        ((2, 3, 4), (12,)),  # same numel, flattened
        ((8,), (1, 8)),  # longer than x.ndim
    ],
)
def test_normalized_shape_mismatch(fn, x_shape, ns):
    x = R.make_numpy(x_shape, "float32", 1)
    expect(ValueError, FORWARDS[fn], x, ns, arg="normalized_shape", inputs=(x,))
    xt = R.make_torch(x_shape, "bfloat16", 1)
    expect(ValueError, FORWARDS[fn], xt, ns, arg="normalized_shape", inputs=(xt,))


@pytest.mark.parametrize("fn", FORWARDS)
def test_empty_normalized_shape(fn):
    x = R.make_numpy((4, 8), "float32", 1)
    expect(ValueError, FORWARDS[fn], x, (), arg="normalized_shape", inputs=(x,))


@pytest.mark.parametrize("fn", FORWARDS)
@pytest.mark.parametrize("w_shape", [(7,), (9,), (1, 8), (8, 1), (2, 8), ()], ids=str)
def test_weight_wrong_shape(fn, w_shape):
    x = R.make_numpy((4, 8), "float32", 1)
    w = R.make_numpy(w_shape, "float32", 2)
    expect(ValueError, FORWARDS[fn], x, (8,), w, arg="weight", inputs=(x, w))


@pytest.mark.parametrize("fn", LN_FORWARDS)
@pytest.mark.parametrize("b_shape", [(7,), (1, 8), ()], ids=str)
def test_bias_wrong_shape(fn, b_shape):
    x = R.make_numpy((4, 8), "float32", 1)
    w = R.make_numpy((8,), "float32", 2)
    b = R.make_numpy(b_shape, "float32", 3)
    expect(ValueError, FORWARDS[fn], x, (8,), w, b, arg="bias", inputs=(x, w, b))
    expect(ValueError, FORWARDS[fn], x, (8,), None, b, arg="bias", inputs=(x, b))


def test_weight_wrong_shape_multidim_normalized_shape():
    x = R.make_torch((2, 3, 4), "float32", 1)
    w = R.make_torch((4, 3), "float32", 2)
    expect(ValueError, nkF.layer_norm, x, (3, 4), w, arg="weight", inputs=(x, w))
    expect(ValueError, nkF.rms_norm, x, (3, 4), w, arg="weight", inputs=(x, w))


def test_backward_shape_errors():
    x = R.make_numpy((4, 8), "float32", 1)
    w = R.make_numpy((8,), "float32", 2)
    dy = R.make_numpy((4, 8), "float32", 3)
    _, mean, rstd = nkF.layer_norm_forward(x, (8,), w, None)
    bad_dy = R.make_numpy((4, 7), "float32", 4)
    bad_stat = np.ones(5, np.float32)
    ins = (x, w, dy, mean, rstd, bad_dy, bad_stat)
    expect(ValueError, nkF.layer_norm_backward, bad_dy, x, (8,), mean, rstd, w, arg="dy", inputs=ins)
    expect(ValueError, nkF.layer_norm_backward, dy, x, (8,), bad_stat, rstd, w, arg="mean", inputs=ins)
    expect(ValueError, nkF.layer_norm_backward, dy, x, (8,), mean, bad_stat, w, arg="rstd", inputs=ins)
    expect(ValueError, nkF.layer_norm_backward, dy, x, (7,), mean, rstd, w, arg="normalized_shape", inputs=ins)
    expect(ValueError, nkF.layer_norm_backward, dy, x, (8,), mean, rstd, w[:7], arg="weight", inputs=ins)
    _, rstd2 = nkF.rms_norm_forward(x, (8,), w)
    ins = (x, w, dy, rstd2, bad_dy, bad_stat)
    expect(ValueError, nkF.rms_norm_backward, bad_dy, x, (8,), rstd2, w, arg="dy", inputs=ins)
    expect(ValueError, nkF.rms_norm_backward, dy, x, (8,), bad_stat, w, arg="rstd", inputs=ins)
    expect(ValueError, nkF.rms_norm_backward, dy, x, (7,), rstd2, w, arg="normalized_shape", inputs=ins)
    expect(ValueError, nkF.rms_norm_backward, dy, x, (8,), rstd2, w[:7], arg="weight", inputs=ins)


# ----------------------------------------------------------------------------------------------------
# eps
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", FORWARDS)
@pytest.mark.parametrize("eps", (-1e-5, -1.0, -1e-300))
def test_negative_eps(fn, eps):
    x = R.make_numpy((4, 8), "float32", 1)
    w = R.make_numpy((8,), "float32", 2)
    expect(ValueError, FORWARDS[fn], x, (8,), w, None, eps, arg="eps", inputs=(x, w))
    xt = R.make_torch((4, 8), "float16", 1)
    expect(ValueError, FORWARDS[fn], xt, (8,), None, None, eps, arg="eps", inputs=(xt,))


@pytest.mark.parametrize("fn", FORWARDS)
def test_zero_eps_is_allowed(fn):
    x = R.make_numpy((4, 8), "float64", 1)
    out = FORWARDS[fn](x, (8,), None, None, 0.0)
    y = out[0] if isinstance(out, tuple) else out
    ref = R.layer_norm(x, (8,), eps=0.0) if fn.startswith("layer") else R.rms_norm(x, (8,), eps=0.0)
    R.assert_close("y (eps=0)", y, ref, R.TOL["float64"], np.abs(ref).max())


# ----------------------------------------------------------------------------------------------------
# Errors raised after a partially valid call must leave everything untouched (all arguments at once)
# ----------------------------------------------------------------------------------------------------


def test_error_does_not_touch_valid_torch_inputs():
    x = R.make_torch((3, 6), "float32", 1)
    w = R.make_torch((6,), "float32", 2)
    b = R.make_torch((6,), "float32", 3)
    xb = torch.zeros(3, 6, dtype=torch.int32)
    expect(TypeError, nkF.layer_norm, xb, (6,), w, b, arg="x", contains=(DTYPE_MSG,), inputs=(xb, w, b))
    expect(ValueError, nkF.layer_norm, x, (6,), w, b, -1.0, arg="eps", inputs=(x, w, b))
    expect(ValueError, nkF.layer_norm, x, (6,), w, b[:5], arg="bias", inputs=(x, w, b))


# ----------------------------------------------------------------------------------------------------
# The NumPy layers surface the same errors
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ("LayerNorm", "RMSNorm"))
def test_numpy_layer_errors(cls):
    layer = getattr(nknp, cls)(8)
    w_before = layer.weight.copy()
    xi = bad_numpy(np.int64, (3, 8))
    expect(TypeError, layer, xi, contains=(DTYPE_MSG,), inputs=(xi,))
    xs = R.make_numpy((3, 7), "float32", 1)
    expect(ValueError, layer, xs, arg="normalized_shape", inputs=(xs,))
    np.testing.assert_array_equal(layer.weight, w_before)


@pytest.mark.parametrize("eps, text", [(-0.5, "-0.5"), (-1e-5, "-1e-05"), (-123456789.0, "-1.23457e+08"),
                                       (float("-inf"), "-inf"), (float("nan"), "nan")])
def test_numbers_in_messages_read_as_python_would_print_them_rounded(eps, text):
    # The core writes numbers with to_chars (6 significant digits, "%g"), independent of any locale.
    with pytest.raises(ValueError, match=rf"^eps: expected a finite number >= 0, got {re.escape(text)}$"):
        nkF.layer_norm(np.ones((2, 4), np.float32), 4, eps=eps)
