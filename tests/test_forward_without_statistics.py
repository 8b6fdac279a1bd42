"""layer_norm / rms_norm (the forward that no backward follows) ask the core for y alone: no mean or
rstd array is allocated or written. y must be bitwise the y of the forward that saves its statistics,
on every kernel path (short rows, rows normalized in groups, strided rows, half types, empty shapes)."""

import normkit._core as core
import numpy as np
import pytest
import reference as R
import torch
from normkit import functional as nkF

CASES = [((7, 33), (33,)), ((3, 5, 8), (5, 8)), ((6, 4096), (4096,)), ((1, 1), (1,)), ((0, 8), (8,)),
         ((4, 0), (0,))]


def shape_id(case):
    return "x".join(map(str, case[0])) + "-over-" + "x".join(map(str, case[1]))


def same_bits(a, b):
    a, b = (t.view(torch.int16) if isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16 else t for t in (a, b))
    a, b = (t.numpy() if isinstance(t, torch.Tensor) else t for t in (a, b))
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


# (NumPy has no bfloat16)
LIB_DTYPES = [("numpy", d) for d in ("float32", "float64", "float16")] + [
    ("torch", d) for d in ("float32", "float64", "float16", "bfloat16")]


@pytest.mark.parametrize("lib, dtype", LIB_DTYPES)
@pytest.mark.parametrize("case", CASES, ids=shape_id)
def test_y_is_that_of_the_forward_with_statistics(case, lib, dtype):
    shape, ns = case
    make = R.make_torch if lib == "torch" else R.make_numpy
    x, w, b = make(shape, dtype, 1), make(ns, dtype, 2), make(ns, dtype, 3)
    same_bits(nkF.layer_norm(x, ns, w, b, 1e-5), nkF.layer_norm_forward(x, ns, w, b, 1e-5)[0])
    same_bits(nkF.rms_norm(x, ns, w), nkF.rms_norm_forward(x, ns, w)[0])
    same_bits(nkF.layer_norm(x, ns), nkF.layer_norm_forward(x, ns)[0])


def test_strided_rows():
    x = R.make_torch((9, 40), "float32", 4)[:, ::2]
    same_bits(nkF.layer_norm(x, (20,)), nkF.layer_norm_forward(x, (20,))[0])
    same_bits(nkF.rms_norm(x.t(), (9,)), nkF.rms_norm_forward(x.t(), (9,))[0])


def test_statistics_that_are_given_are_still_checked():
    x = torch.zeros(4, 8)
    with pytest.raises(ValueError, match="rstd: expected 4 contiguous values"):
        core.layer_norm_forward(x, (8,), None, None, 1e-5, torch.empty(4, 8), None, torch.empty(3))
    with pytest.raises(TypeError, match="mean: expected dtype float32"):
        core.layer_norm_forward(x, (8,), None, None, 1e-5, torch.empty(4, 8), torch.empty(4, dtype=torch.float64),
                                None)
    with pytest.raises(ValueError, match="rstd: expected 4 contiguous values"):
        core.rms_norm_forward(x, (8,), None, 1e-6, torch.empty(4, 8), torch.empty(5))
