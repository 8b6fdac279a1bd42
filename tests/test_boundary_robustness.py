"""Inputs that once crashed the process or hung it: absurd sizes and counts, a fake communicator handle,
non-integer counts. Each must be a clear TypeError/ValueError naming the argument."""

from __future__ import annotations

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
