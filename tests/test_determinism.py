"""Results are bitwise identical for 1 and 2 threads and across repeated runs, forward and backward
(the backward's dweight/dbias reduction across rows is where a thread-dependent order would show)."""

import normkit
import numpy as np
import pytest
import reference as R
from normkit import functional as nkF

CASES = [
    ((512, 1024), (1024,)),  # many rows: row-parallel forward, cross-row dweight reduction
    ((4096, 64), (64,)),  # very many short rows
    ((3, 50000), (50000,)),  # few long rows: any intra-row splitting must not depend on threads
    ((23, 3000), (3000,)),  # long rows normalized in groups: the groups follow the tasks' row ranges
    ((8, 16, 96), (16, 96)),
]


def case_id(c):
    return "x".join(map(str, c[0])) + "-ns" + "x".join(map(str, c[1]))


def run_layer_norm(x, ns, w, b, dy):
    y, mean, rstd = nkF.layer_norm_forward(x, ns, w, b, 1e-5)
    y2 = nkF.layer_norm(x, ns, w, b, 1e-5)
    dx, dw, db = nkF.layer_norm_backward(dy, x, ns, mean, rstd, w)
    return {"y": y, "y(layer_norm)": y2, "mean": mean, "rstd": rstd, "dx": dx, "dweight": dw, "dbias": db}


def run_rms_norm(x, ns, w, b, dy):
    y, rstd = nkF.rms_norm_forward(x, ns, w)
    y2 = nkF.rms_norm(x, ns, w)
    dx, dw = nkF.rms_norm_backward(dy, x, ns, rstd, w)
    return {"y": y, "y(rms_norm)": y2, "rstd": rstd, "dx": dx, "dweight": dw}


OPS = {"layer_norm": run_layer_norm, "rms_norm": run_rms_norm}


def inputs(case, dtype):
    x_shape, ns = case
    x = R.make_torch(x_shape, dtype, 1)
    w = R.make_torch(ns, dtype, 2, 0.5, 1.0)
    b = R.make_torch(ns, dtype, 3)
    dy = R.make_torch(x_shape, dtype, 4, 1.0, 0.0)
    return x, ns, w, b, dy


def assert_same(tag, a, b):
    assert a.keys() == b.keys()
    for k in a:
        R.assert_bitwise_equal(f"{tag}: {k}", a[k], b[k])


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", R.DTYPES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_one_vs_two_threads_and_repeat(case, dtype, op):
    args = inputs(case, dtype)
    normkit.set_num_threads(1)
    assert normkit.get_num_threads() == 1
    r1 = OPS[op](*args)
    r1_again = OPS[op](*args)
    normkit.set_num_threads(2)
    assert normkit.get_num_threads() == 2
    r2 = OPS[op](*args)
    r2_again = OPS[op](*args)
    assert_same("1 thread, repeated", r1, r1_again)
    assert_same("2 threads, repeated", r2, r2_again)
    assert_same("1 vs 2 threads", r1, r2)


@pytest.mark.parametrize("op", OPS)
def test_numpy_one_vs_two_threads(op):
    x = R.make_numpy((512, 1024), "float32", 5)
    w = R.make_numpy((1024,), "float32", 6, 0.5, 1.0)
    b = R.make_numpy((1024,), "float32", 7)
    dy = R.make_numpy((512, 1024), "float32", 8, 1.0, 0.0)
    normkit.set_num_threads(1)
    r1 = OPS[op](x, (1024,), w, b, dy)
    normkit.set_num_threads(2)
    r2 = OPS[op](x, (1024,), w, b, dy)
    assert_same("numpy, 1 vs 2 threads", r1, r2)


@pytest.mark.parametrize("threads", (1, 2))
def test_large_batch_still_correct(threads):
    """The deterministic reduction is also the right one: 512 x 1024 float32 against the reference."""
    normkit.set_num_threads(threads)
    x, ns, w, b, dy = inputs(((512, 1024), (1024,)), "float32")
    r = run_layer_norm(x, ns, w, b, dy)
    tol = R.TOL["float32"]
    yr, _, rr = R.layer_norm_forward(x, ns, w, b, 1e-5)
    dxr, dwr, dbr = R.layer_norm_backward(dy, x, ns, w, 1e-5)
    R.assert_close("y", r["y"], yr, tol, np.abs(yr).max())
    R.assert_close("dx", r["dx"], dxr, tol, R.layer_norm_dx_scale(dy, x, ns, w, 1e-5))
    R.assert_close("dweight", r["dweight"], dwr, tol, R.layer_norm_dweight_scale(dy, x, ns, 1e-5))
    R.assert_close("dbias", r["dbias"], dbr, tol, R.dbias_scale(dy, ns))
    r = run_rms_norm(x, ns, w, None, dy)
    e = R.default_rms_eps("float32")
    yr, rr = R.rms_norm_forward(x, ns, w, e)
    dxr, dwr = R.rms_norm_backward(dy, x, ns, w, e)
    R.assert_close("rms y", r["y"], yr, tol, np.abs(yr).max())
    R.assert_close("rms dx", r["dx"], dxr, tol, R.dx_scale(dy, x, ns, w, rr))
    R.assert_close("rms dweight", r["dweight"], dwr, tol, R.dweight_scale(dy, x, ns, R.rms_norm_xhat(x, ns, e)))


def test_thread_count_is_restored_by_fixture_contract():
    # set_num_threads/get_num_threads round-trip; the autouse fixture in conftest.py restores it.
    before = normkit.get_num_threads()
    normkit.set_num_threads(2)
    assert normkit.get_num_threads() == 2
    normkit.set_num_threads(1)
    assert normkit.get_num_threads() == 1
    normkit.set_num_threads(before)
    assert normkit.get_num_threads() == before
