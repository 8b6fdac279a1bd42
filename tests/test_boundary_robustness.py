"""Inputs that once crashed the process, hung it or gave silently wrong values: absurd sizes and counts,
a fake communicator handle, non-integer counts, aliased outputs, read-only in-place arguments, a
thread pool that cannot start. Each must be a clear exception naming what is wrong."""

from __future__ import annotations

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


@pytest.mark.parametrize("framework", ["numpy", "torch"])
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
F.layer_norm(x, (4096,))  # the default pool starts
used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + (512 << 20), resource.getrlimit(resource.RLIMIT_AS)[1]))
normkit.set_num_threads(1000)  # 999 workers' stacks do not fit in 512 MB more address space
try:
    F.layer_norm(x, (4096,))
    print("no error")
except RuntimeError as e:
    print("RuntimeError:", e)
normkit.set_num_threads(2)
print("after:", bool(np.isfinite(F.layer_norm(x, (4096,))).all()))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and RLIMIT_AS")
def test_a_pool_that_cannot_start_its_threads_raises_and_the_old_one_still_works():
    """Thread creation failing (here: no address space for the stacks) used to hang the process while
    the half-built pool unwound; now the call raises and the previous pool keeps working."""
    done = subprocess.run([sys.executable, "-c", _THREADS_THAT_CANNOT_START], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "RuntimeError: cannot start 999 worker threads" in done.stdout
    assert "after: True" in done.stdout
