"""Property-based: BatchNorm (train and eval), InstanceNorm and GroupNorm on random shapes, channel
counts, group counts and memory layouts (channels-first, channels-last, and any strided view: permuted
dims, steps, negative steps), NumPy arrays in float32 and float64, against the float64 references of
tests/channel_reference.py: y, the saved statistics, running statistics, dx, dweight and dbias.

Each layout takes its own code path in the core (channels-first planes, channels-last rows, a copy
for other strides), each with fused and unfused variants chosen by size; random shapes reach all of
them and the combinations of channel counts with the SIMD tiles of the channels-last sums.

Tolerances: R.TOL per dtype (1e-5 for float32 reductions of at most a few thousand values, 1e-12 for
float64), absolute parts scaled by the magnitude of the terms (CR.*_scale).
"""

import os

import channel_reference as CR
import numpy as np
import reference as R
from hypothesis import given, settings
from hypothesis import strategies as st
from normkit import functional as nkF
from strided_rows import strided_view

# small and fast by default; NORMKIT_HYPOTHESIS_EXAMPLES=2000 for a long randomized local search
HYPOTHESIS_EXAMPLES = 3 * int(os.environ.get("NORMKIT_HYPOTHESIS_EXAMPLES", "40"))

OPS = ("batch_train", "batch_eval", "instance", "group")


@st.composite
def channel_cases(draw):
    op = draw(st.sampled_from(OPS))
    spatial = draw(st.lists(st.integers(1, 9), min_size=0 if op.startswith("batch") else 1, max_size=3))
    n = draw(st.integers(1, 4))
    c = draw(st.sampled_from([1, 2, 3, 5, 8, 16, 17, 33, 64, 70]))
    if op == "batch_train" and n * int(np.prod(spatial)) < 2:
        n = 2  # one value per channel cannot give a training variance (torch raises too)
    if op == "instance" and int(np.prod(spatial)) < 2:
        spatial[0] = 2  # the same, per sample
    shape = (n, c, *spatial)
    divisors = [d for d in range(1, c + 1) if c % d == 0]
    layout = draw(st.sampled_from(["nc", "cl", "strided"]))
    steps = tuple(draw(st.lists(st.sampled_from([1, 2, -1, -2]), min_size=len(shape), max_size=len(shape))))
    perm = tuple(draw(st.permutations(range(len(shape)))))
    return dict(
        op=op, shape=shape, layout=layout, steps=steps, perm=perm,
        groups=draw(st.sampled_from(divisors)),
        affine=draw(st.booleans()),
        dtype=draw(st.sampled_from(["float32", "float64"])),
        eps=draw(st.sampled_from([1e-5, 1e-2])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def view(case, seed):
    shape, dtype = case["shape"], case["dtype"]
    if case["layout"] == "strided":
        return strided_view(shape, case["steps"], case["perm"], dtype, seed)
    a = R.make_numpy(shape, dtype, seed)
    return CR.to_channels_last_numpy(a) if case["layout"] == "cl" else a


def run_op(case, x, dy, w, b, rm, rv):
    """normkit's forward and backward: y, the saved statistics, dx, dweight, dbias."""
    op, eps = case["op"], case["eps"]
    if op.startswith("batch"):
        training = op == "batch_train"
        y, sm, sr = nkF.batch_norm_forward(x, rm, rv, w, b, training, 0.1, eps)
        grads = nkF.batch_norm_backward(dy, x, sm, sr, w, training)
    elif op == "instance":
        y, sm, sr = nkF.instance_norm_forward(x, rm, rv, w, b, True, 0.1, eps)
        grads = nkF.instance_norm_backward(dy, x, sm, sr, w, True)
    else:
        y, sm, sr = nkF.group_norm_forward(x, case["groups"], w, b, eps)
        grads = nkF.group_norm_backward(dy, x, case["groups"], sm, sr, w)
    return (y, sm, sr, *grads)


def reference(case, x, dy, w, b, rm, rv):
    op, eps = case["op"], case["eps"]
    if op.startswith("batch"):
        training = op == "batch_train"
        ref = CR.batch_norm_forward(x, rm, rv, w, b, training, 0.1, eps)
        grads = CR.batch_norm_backward(dy, x, w, training, rm, rv, eps)
        return ref, grads, case["shape"][1], False
    if op == "instance":
        ref = CR.instance_norm_forward(x, rm, rv, w, b, True, 0.1, eps)
        grads = CR.instance_norm_backward(dy, x, w, True, rm, rv, eps)
        return ref, grads, case["shape"][1], True
    ref = CR.group_norm_forward(x, case["groups"], w, b, eps)
    grads = CR.group_norm_backward(dy, x, case["groups"], w, eps)
    return ref, grads, case["groups"], True


@settings(max_examples=HYPOTHESIS_EXAMPLES, deadline=None)
@given(case=channel_cases())
def test_hypothesis_channel_norms(case):
    c, dtype, seed = case["shape"][1], case["dtype"], case["seed"]
    x = view(case, seed)
    dy = view(case, seed + 1)
    w = R.make_numpy((c,), dtype, seed + 2, 0.7, 1.0) if case["affine"] else None
    b = R.make_numpy((c,), dtype, seed + 3) if case["affine"] else None
    # Running statistics: BatchNorm and InstanceNorm track them here (eval mode uses them).
    tracks = case["op"] != "group"
    rm = R.make_numpy((c,), dtype, seed + 4, 0.5, 0.0) if tracks else None
    rv = np.abs(R.make_numpy((c,), dtype, seed + 5, 0.5, 0.0)) + np.asarray(0.5, dtype) if tracks else None
    rm0, rv0 = (None, None) if not tracks else (rm.copy(), rv.copy())
    snap = R.snapshot(x, dy, w, b)

    y, sm, sr, dx, dw, db = run_op(case, x, dy, w, b, rm, rv)
    R.assert_unchanged((x, dy, w, b), snap)
    ref, (dxr, dwr, dbr), groups, per_sample = reference(case, x, dy, w, b, rm0, rv0)

    tol = R.TOL[dtype]
    assert y.shape == x.shape and dx.shape == x.shape and y.dtype == x.dtype
    if case["layout"] == "cl" and len(case["shape"]) > 2:
        assert CR.is_channels_last_numpy(y), y.strides
        assert CR.is_channels_last_numpy(dx), dx.strides
    R.assert_close("y", y, ref["y"], tol, CR.y_scale(ref["xmag"], w, b))
    xmax = float(np.abs(R.to_f64(x)).max())
    if case["op"] != "batch_eval":  # (eval saves nothing new: the running statistics are used)
        R.assert_close("saved mean", np.ravel(sm), np.ravel(ref.get("save_mean", ref.get("mean"))), tol, xmax)
        R.assert_close("saved rstd", np.ravel(sr), np.ravel(ref.get("save_rstd", ref.get("rstd"))), tol, 0.0)
    if tracks:
        R.assert_close("running_mean", rm, ref["running_mean"], tol, xmax)
        R.assert_close("running_var", rv, ref["running_var"], tol, 0.0)
    rstd_ref = np.ravel(ref["save_rstd"] if "save_rstd" in ref else ref["rstd"])
    R.assert_close("dx", dx, dxr, tol, CR.dx_scale(dy, x, w, groups, per_sample, rstd_ref))
    if case["affine"]:
        R.assert_close("dweight", dw, dwr, tol, CR.dweight_scale(dy, ref["xmag"]))
    else:
        assert dw is None
    R.assert_close("dbias", db, dbr, tol, CR.dbias_scale(dy))
