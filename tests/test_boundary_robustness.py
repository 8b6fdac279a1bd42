"""Inputs that once crashed the process, hung it or gave silently wrong values: absurd sizes and counts,
a fake communicator handle, non-integer counts, aliased outputs, read-only in-place arguments, a
thread pool that cannot start. Each must be a clear exception naming what is wrong."""

from __future__ import annotations

import os
import subprocess
import sys

import normkit
import numpy as np
import pytest
import torch
from normkit import _core
from normkit import functional as F


def test_huge_num_groups_is_rejected_before_any_allocation():
    with pytest.raises(ValueError, match="num_groups: expected a divisor of the 8 channels"):
        F.group_norm_forward(torch.rand(4, 8, 3), 2**62)


@pytest.mark.parametrize("op", ["layer", "rms"])
def test_huge_normalized_shape_in_backward_is_rejected_before_any_allocation(op):
    x = torch.rand(4, 8)
    with pytest.raises(ValueError, match="normalized_shape: expected the trailing dimensions of x"):
        if op == "layer":
            _, m, r = F.layer_norm_forward(x, (8,))
            F.layer_norm_backward(x, x, [2**62], m, r)
        else:
            _, r = F.rms_norm_forward(x, (8,))
            F.rms_norm_backward(x, x, [2**62], r, torch.ones(8))


def _huge_broadcast(*shape, dtype=torch.float32):
    return torch.zeros(1, dtype=dtype).expand(*shape)  # stride 0: no memory behind it


@pytest.mark.parametrize("call", ["layer_norm", "mean_only", "batch_norm", "sync_batch_norm"])
def test_broadcast_views_past_2_62_bytes_are_a_value_error_not_a_crash(call):
    """2^62 float32 elements (2^64 bytes): the copy size used to wrap to a tiny buffer, then overrun."""
    comm = _core.LocalCommunicator()
    with pytest.raises(ValueError, match=r"dy: expected at most 2\^62 bytes, got shape \[.*\] of dtype float32"):
        if call == "layer_norm":
            x = _huge_broadcast(2, 2**61)
            F.layer_norm_backward(x, x, 2**61, torch.zeros(2), torch.ones(2), output_mask=(False, False, False))
        elif call == "mean_only":
            F.mean_only_batch_norm_backward(_huge_broadcast(2**59, 8, 1), True, output_mask=(False, True))
        elif call == "batch_norm":
            x = _huge_broadcast(2**59, 8, 1)
            F.batch_norm_backward(x, x, torch.zeros(8), torch.ones(8), output_mask=(False, True, True))
        else:
            x = _huge_broadcast(2**59, 8, 1)
            F.sync_batch_norm_backward(x, x, torch.zeros(8), torch.ones(8), comm=comm, output_mask=(False, True, True))


@pytest.mark.parametrize("framework", ["numpy", "dltensor"])
def test_host_cache_rejects_sizes_past_2_62_bytes(framework):
    with pytest.raises(ValueError, match="shape: expected an array of at most 2\\^62 bytes"):
        _core.empty_cached([2**62], "float32", framework)
    with pytest.raises(ValueError, match="shape: expected an array of at most 2\\^62 bytes"):
        _core.empty_cached([2**31, 2**31, 4], "float32", framework)


def test_an_object_with_a_stray_nk_handle_is_not_trusted_as_a_communicator():
    class Fake:
        _nk_handle = 0
        rank, size = 0, 1

        def allreduce(self, a):
            pass

    with pytest.raises(TypeError, match="comm: expected a normkit communicator"):
        F.sync_batch_norm_forward(torch.randn(4, 3), comm=Fake())


def test_a_communicator_with_a_non_int_size_is_a_type_error():
    class Odd:
        rank, size = 0, "one"

        def allreduce(self, a):
            pass

    with pytest.raises(TypeError, match="comm: expected an int size"):
        F.sync_batch_norm_forward(torch.randn(4, 3), comm=Odd())


_X3 = np.random.default_rng(0).random((4, 3, 5)).astype(np.float32)
_C3 = np.zeros(3, np.float32), np.ones(3, np.float32)


@pytest.mark.parametrize("op,n", [
    (lambda m: F.layer_norm_backward(_X3, _X3, 5, np.zeros((4, 3), np.float32), np.ones((4, 3), np.float32),
                                     output_mask=m), 3),
    (lambda m: F.rms_norm_backward(_X3, _X3, 5, np.ones((4, 3), np.float32), output_mask=m), 2),
    (lambda m: F.batch_norm_backward(_X3, _X3, *_C3, output_mask=m), 3),
    (lambda m: F.group_norm_backward(_X3, _X3, 1, np.zeros((4, 1), np.float32), np.ones((4, 1), np.float32),
                                     output_mask=m), 3),
    (lambda m: F.batch_instance_norm_backward(_X3, _X3, _C3[1], *_C3, np.zeros((4, 3), np.float32),
                                              np.ones((4, 3), np.float32), output_mask=m), 4),
    (lambda m: F.switchable_norm_backward(_X3, _X3, np.zeros(3, np.float32), np.zeros(3, np.float32),
                                          np.zeros(4 * 12 + 8 + 6, np.float32), output_mask=m), 5),
    (lambda m: F.mean_only_batch_norm_backward(_X3, output_mask=m), 2),
], ids=["layer", "rms", "batch", "group", "batch_instance", "switchable", "mean_only"])
def test_output_mask_of_the_wrong_length_is_a_value_error(op, n):
    for mask in ((True,), (True,) * (n + 1)):
        with pytest.raises(ValueError, match=f"output_mask: expected {n} entries, got {len(mask)}"):
            op(mask)
    with pytest.raises(TypeError, match=r"output_mask\[0\]: expected a bool, got str"):
        op(("False",) + (True,) * (n - 1))


def test_a_bad_parameter_is_named_in_the_message():
    with pytest.raises(TypeError, match="^weight: expected a NumPy array"):
        F.batch_norm_backward(_X3, _X3, *_C3, weight=[1.0, 1.0, 1.0])
    with pytest.raises(TypeError, match="^mean_weight: expected a NumPy array"):
        F.switchable_norm_backward(_X3, _X3, None, np.zeros(3, np.float32), np.zeros(1, np.float32))
    with pytest.raises(TypeError, match="^rho: expected a NumPy array"):
        F.batch_instance_norm_backward(_X3, _X3, "rho", *_C3, *_C3)


@pytest.mark.parametrize("value,error", [("1e-5", TypeError), (None, TypeError), ("abc", TypeError),
                                         (True, TypeError), (1 + 0j, TypeError)])
@pytest.mark.parametrize("arg", ["eps", "momentum"])
def test_float_arguments_take_only_real_numbers(arg, value, error):
    with pytest.raises(error, match=f"^{arg}: expected a real number, got"):
        F.batch_norm(_X3, None, None, training=True, **{arg: value})


def test_float_arguments_take_numpy_scalars_and_0d_arrays():
    y = F.batch_norm(_X3, None, None, training=True, eps=1e-5)
    for eps in (np.float32(1e-5), np.float64(1e-5), np.array(1e-5), torch.tensor(1e-5, dtype=torch.float64)):
        np.testing.assert_allclose(F.batch_norm(_X3, None, None, training=True, eps=eps), y, rtol=1e-6)
    for alpha in ("1e-4", None):
        with pytest.raises(TypeError, match="^alpha: expected a real number"):
            F.local_response_norm(_X3, 2, alpha=alpha)


@pytest.mark.parametrize("value", ["False", "True", 0, 1, None, 1.0])
@pytest.mark.parametrize("arg", ["training", "use_input_stats"])
def test_bool_arguments_take_only_bools(arg, value):
    op = F.batch_norm if arg == "training" else F.instance_norm
    with pytest.raises(TypeError, match=f"^{arg}: expected a bool, got"):
        op(_X3, None, None, **{arg: value})
    op(_X3, None, None, **{arg: np.bool_(True)})  # NumPy's bool is a bool


def test_check_sigma_takes_only_bools():
    w = np.random.default_rng(0).random((4, 3)).astype(np.float32)
    with pytest.raises(TypeError, match="^check_sigma: expected a bool, got str"):
        F.spectral_norm_forward(w, np.ones(4, np.float32), np.ones(3, np.float32), check_sigma="False")


@pytest.mark.parametrize("dim", [0.9, "0", True])
def test_dims_must_be_ints_in_functional(dim):
    v, g = _X3[0], np.ones((3, 1), np.float32)
    with pytest.raises(TypeError, match="^dim: expected an int, got"):
        F.weight_norm(v, g, dim=dim)
    with pytest.raises(TypeError, match="^dim: expected an int, got"):
        F.spectral_norm(v, np.ones(3, np.float32), np.ones(5, np.float32), dim=dim)


@pytest.mark.parametrize("call,arg", [
    (lambda: F.layer_norm_backward(_X3, _X3, 5, None, np.ones((4, 3), np.float32)), "mean"),
    (lambda: F.layer_norm_backward(None, _X3, 5, np.zeros((4, 3), np.float32), np.ones((4, 3), np.float32)), "dy"),
    (lambda: F.batch_norm_backward(_X3, _X3, None, _C3[1]), "save_mean"),
    (lambda: F.batch_norm_backward(_X3, _X3, _C3[0], None), "save_rstd"),
    (lambda: F.switchable_norm_backward(_X3, _X3, _C3[0], _C3[0], None), "saved"),
    (lambda: F.spectral_norm(_X3[0], None, np.ones(5, np.float32)), "u"),
    (lambda: F.spectral_norm(_X3[0], np.ones(3, np.float32), None, training=False), "v"),
    (lambda: F.weight_norm_backward(_X3[0], _X3[0], np.ones((3, 1), np.float32), None), "norms"),
], ids=["mean", "dy", "save_mean", "save_rstd", "saved", "u", "v", "norms"])
def test_a_missing_required_array_is_a_type_error_naming_it(call, arg):
    with pytest.raises(TypeError, match=f"^{arg}: expected an array, got None"):
        call()


@pytest.mark.parametrize("call,arg", [
    (lambda: F.group_norm(_X3, 2**64), "num_groups"),
    (lambda: F.local_response_norm(_X3, 2**63), "size"),
    (lambda: F.weight_norm(_X3[0], np.ones((3, 1), np.float32), dim=-(2**63) - 1), "dim"),
    (lambda: F.spectral_norm(_X3[0], np.ones(3, np.float32), np.ones(5, np.float32), 2**70), "n_power_iterations"),
    (lambda: F.layer_norm(_X3, 2**63), "normalized_shape"),
], ids=["num_groups", "size", "dim", "n_power_iterations", "normalized_shape"])
def test_ints_past_int64_are_a_value_error_naming_them(call, arg):
    with pytest.raises(ValueError, match=f"^{arg}: expected an int in the int64 range"):
        call()


@pytest.mark.parametrize("op", ["forward", "backward"])
def test_a_huge_g_in_weight_norm_is_rejected_before_any_allocation(op):
    v = np.random.default_rng(0).random((6, 8)).astype(np.float32)
    g = np.broadcast_to(np.float32(1), (6, 2**40))  # norms or dg of its shape: 24 TB
    with pytest.raises(ValueError, match=r"^g: expected shape \[6, 1\]"):
        if op == "forward":
            F.weight_norm_forward(v, g)
        else:
            F.weight_norm_backward(v, v, g, np.ones((6, 1), np.float32))


def test_thread_count_is_bounded():
    before = normkit.get_num_threads()
    with pytest.raises(ValueError, match="set_num_threads: expected 1 <= n <= 1024, got 2000"):
        normkit.set_num_threads(2000)
    assert normkit.get_num_threads() == before


@pytest.mark.parametrize("value", [2.7, True, "2"])
def test_counts_must_be_ints(value):
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype(np.float32)
    with pytest.raises(TypeError, match="num_groups: expected an int"):
        F.group_norm_forward(x, value)
    w, u, v = np.ones((3, 4)), np.ones(3), np.ones(4)
    with pytest.raises(TypeError, match="n_power_iterations: expected an int"):
        F.spectral_norm(w, u, v, n_power_iterations=value)


def test_read_only_running_statistics_are_a_value_error_naming_them():
    x = np.random.default_rng(0).normal(size=(4, 3, 5)).astype(np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    rm.flags.writeable = False
    with pytest.raises(ValueError, match="running_mean: expected a writable array"):
        F.batch_norm_forward(x, rm, rv, training=True)
    u = np.ones(3)
    u.flags.writeable = False
    with pytest.raises(ValueError, match="u: expected a writable array"):
        F.spectral_norm(np.ones((3, 4)), u, np.ones(4))


def test_outputs_that_alias_an_input_or_each_other_are_a_value_error():
    """An op reads its inputs while it writes its outputs: aliased arrays would give silently wrong
    values, so they are rejected before anything is written."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 5)).astype(np.float32)
    snap = x.copy()
    with pytest.raises(ValueError, match="y: expected an output that shares no memory with x"):
        _core.local_response_norm_forward(x, 3, 1e-4, 0.75, 1.0, x)
    s = np.empty(2, np.float32)
    with pytest.raises(ValueError, match="mean: expected an output that shares no memory with rstd"):
        _core.layer_norm_forward(x.reshape(2, 30), (30,), None, None, 1e-5, np.empty((2, 30), np.float32), s, s)
    buf = np.zeros(6, np.float32)
    with pytest.raises(ValueError, match="save_mean: expected an output that shares no memory with running_mean"):
        _core.batch_norm_forward(x, buf, np.ones(6, np.float32), None, None, True, 0.1, 1e-5,
                                 np.empty_like(x), buf, np.empty(6, np.float32))
    shifted = np.empty(x.size + 1, np.float32)
    with pytest.raises(ValueError, match="y: expected an output that shares no memory with x"):
        src = shifted[1:].reshape(x.shape)
        src[...] = x
        _core.batch_norm_forward(src, None, None, None, None, True, 0.1, 1e-5, shifted[:-1].reshape(x.shape),
                                 np.empty(6, np.float32), np.empty(6, np.float32))
    u = np.ones(3)
    with pytest.raises(ValueError, match="u: expected an output that shares no memory with v"):
        F.spectral_norm(np.ones((3, 3)), u, u)
    np.testing.assert_array_equal(x, snap)
    np.testing.assert_array_equal(buf, np.zeros(6, np.float32))


_THREADS_THAT_CANNOT_START = """
import resource
import numpy as np
import normkit
from normkit import functional as F
x = np.random.default_rng(0).normal(size=(64, 4096)).astype(np.float32)
F.layer_norm(x, (4096,))  # the default threads start
# 1000 chunks of one row: a team is never larger than its chunk count
wide = np.ones((1000, 32768), np.float32)
used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + (512 << 20), resource.getrlimit(resource.RLIMIT_AS)[1]))
normkit.set_num_threads(1000)  # 999 workers' stacks do not fit in 512 MB more address space
try:
    F.layer_norm(wide, (32768,))
    print("no error")
except RuntimeError as e:
    print("RuntimeError:", e)
normkit.set_num_threads(2)
print("after:", bool(np.isfinite(F.layer_norm(x, (4096,))).all()))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and RLIMIT_AS")
@pytest.mark.parametrize("threading", ["default", "pool"])
def test_a_pool_that_cannot_start_its_threads_raises_and_the_old_one_still_works(threading):
    """Thread creation failing (here: no address space for the stacks) used to hang the process while
    the half-built pool unwound, and the OpenMP runtime ends the process; now the call raises and the
    threads started before keep working, on either backend (threading_backend())."""
    env = dict(os.environ, NORMKIT_THREADING=threading)
    done = subprocess.run([sys.executable, "-c", _THREADS_THAT_CANNOT_START], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "RuntimeError: cannot start 999 worker threads" in done.stdout
    assert "after: True" in done.stdout
