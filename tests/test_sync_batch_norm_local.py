"""SyncBatchNorm in one process (LocalCommunicator): gradients checked numerically in float64, bitwise
agreement with BatchNorm's statistics pass, determinism over thread counts, and that the MPI module was
built where the test command asks for it. The multi-process behaviour is tests/distributed/."""

from __future__ import annotations

import os

import normkit
import normkit.torch as nkt
import numpy as np
import pytest
import torch
from bare_dlpack import BareDLPack
from hypothesis import given, settings
from hypothesis import strategies as st
from normkit import functional as F
from normkit.distributed import LocalCommunicator


@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck_float64(channels_last):
    comm = LocalCommunicator()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 3, 2, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w = torch.rand(4, generator=g, dtype=torch.float64).add_(0.5).requires_grad_()
    b = torch.randn(4, generator=g, dtype=torch.float64).requires_grad_()

    def fn(x, w, b):
        return nkt.functional.sync_batch_norm(x, None, None, w, b, comm=comm)

    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_statistics_equal_batch_norm_to_the_last_bit_in_float64():
    x = np.random.default_rng(0).normal(size=(7, 5, 11)) * 3 + 100
    y, mean, rstd = F.sync_batch_norm_forward(x, comm=LocalCommunicator())
    y_bn, mean_bn, rstd_bn = F.batch_norm_forward(x, None, None, training=True)
    np.testing.assert_allclose(mean, mean_bn, rtol=1e-15)
    np.testing.assert_allclose(rstd, rstd_bn, rtol=1e-13)
    np.testing.assert_allclose(y, y_bn, rtol=1e-12, atol=1e-12)


def test_results_do_not_depend_on_the_thread_count():
    x = np.random.default_rng(1).normal(size=(16, 8, 40, 30)).astype(np.float32)
    dy = np.random.default_rng(2).normal(size=x.shape).astype(np.float32)
    w = np.linspace(0.5, 1.5, 8, dtype=np.float32)
    runs = []
    for threads in (1, 2, 3):
        normkit.set_num_threads(threads)
        y, m, r = F.sync_batch_norm_forward(x, weight=w, comm=LocalCommunicator())
        grads = F.sync_batch_norm_backward(dy, x, m, r, w, comm=LocalCommunicator())
        runs.append([y, m, r, *grads])
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert np.array_equal(a, b)


@pytest.mark.skipif(os.environ.get("NORMKIT_REQUIRE_MPI") != "1", reason="the test command sets NORMKIT_REQUIRE_MPI=1")
def test_the_mpi_module_is_built():
    assert normkit.build_info()["mpi"]
    from normkit import _mpi

    assert "Open MPI" in _mpi.library_version() or "MPICH" in _mpi.library_version()


@pytest.mark.parametrize("view", ["sliced", "transposed", "channels_last_3d"])
def test_strided_inputs_equal_their_contiguous_copies(view):
    base = torch.randn(6, 4, 5, 6, 3, dtype=torch.float64)
    x = {"sliced": base[::2], "transposed": base.transpose(2, 3),
         "channels_last_3d": base.contiguous(memory_format=torch.channels_last_3d)}[view]
    comm = LocalCommunicator()
    a = x.detach().requires_grad_()
    b = x.detach().contiguous().requires_grad_()
    dy = torch.randn(x.shape, dtype=torch.float64)
    ya = nkt.functional.sync_batch_norm(a, None, None, comm=comm)
    yb = nkt.functional.sync_batch_norm(b, None, None, comm=comm)
    ya.backward(dy)
    yb.backward(dy)
    torch.testing.assert_close(ya, yb, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)


@settings(max_examples=25)
@given(
    n=st.integers(0, 5),
    c=st.integers(1, 6),
    spatial=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    channels_last=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_one_process_equals_batch_norm_for_any_shape(n, c, spatial, channels_last, dtype):
    """With one process, SyncBatchNorm is BatchNorm: same outputs, gradients and running statistics
    (through the float64 payload), for any shape, layout and empty batches."""
    shape = (n, c, *spatial)
    count = n * int(np.prod(spatial))
    rng = np.random.default_rng(n * 100 + c)
    x = (rng.normal(size=shape) * 3 + 5).astype(dtype)
    if channels_last and len(shape) >= 3:
        x = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1)
    dy = rng.normal(size=shape).astype(dtype)
    w, b = rng.uniform(0.5, 1.5, c).astype(dtype), rng.normal(size=c).astype(dtype)
    rm_s, rv_s = np.zeros(c, dtype), np.ones(c, dtype)
    rm_b, rv_b = np.zeros(c, dtype), np.ones(c, dtype)
    if count <= 1:
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            F.sync_batch_norm_forward(x, rm_s, rv_s, w, b, comm=LocalCommunicator())
        return
    y_s, m_s, r_s = F.sync_batch_norm_forward(x, rm_s, rv_s, w, b, comm=LocalCommunicator())
    y_b, m_b, r_b = F.batch_norm_forward(x, rm_b, rv_b, w, b, training=True)
    g_s = F.sync_batch_norm_backward(dy, x, m_s, r_s, w, comm=LocalCommunicator())
    g_b = F.batch_norm_backward(dy, x, m_b, r_b, w, training=True)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    for got, want in [(y_s, y_b), (m_s, m_b), (r_s, r_b), (rm_s, rm_b), (rv_s, rv_b), *zip(g_s, g_b)]:
        np.testing.assert_allclose(got, want, **tol)
    assert y_s.strides == x.strides or not channels_last


def _core_forward_into(x, rm, rv, y, save_mean, save_rstd):
    """sync_batch_norm_forward of the core into the caller's buffers (the functional form allocates
    its own, so this is how a failing call's writes can be seen)."""
    from normkit import _core
    from normkit._arrays import to_core

    _core.sync_batch_norm_forward(to_core(x), to_core(rm), to_core(rv), None, None, 0.1, 1e-5, LocalCommunicator(),
                                  None, to_core(y), to_core(save_mean), to_core(save_rstd), 0)


def test_failing_global_check_leaves_every_caller_buffer_untouched():
    """One value per channel over all processes raises after the local phase; nothing of the
    caller's (outputs, saved statistics, running statistics) may have been written by then."""
    x = np.full((1, 3), 2.0, np.float32)
    bufs = {k: np.full(3 if k != "y" else (1, 3), v, np.float32)
            for k, v in (("rm", 0.5), ("rv", 3.0), ("y", 7.0), ("save_mean", 9.0), ("save_rstd", 11.0))}
    before = {k: v.copy() for k, v in bufs.items()}
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        _core_forward_into(x, bufs["rm"], bufs["rv"], bufs["y"], bufs["save_mean"], bufs["save_rstd"])
    for k, v in bufs.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


@pytest.mark.parametrize("alias", ("running_var is running_mean", "running_mean in x"))
def test_running_statistics_that_overlap_another_argument_are_refused_untouched(alias):
    """The running statistics are updated in place before x is normalized: running_mean sharing
    memory with running_var or with x is a ValueError, as for BatchNorm, and nothing is written."""
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(6, 4)) + 5).astype(np.float32)
    rv = np.ones(4, np.float32)
    rm = rv if alias == "running_var is running_mean" else x[0]
    x_before, rv_before = x.copy(), rv.copy()
    other = "running_var" if rm is rv else "x"
    with pytest.raises(ValueError, match=f"running_mean: expected an output that shares no memory with {other}"):
        F.sync_batch_norm_forward(x, rm, rv, momentum=0.5, comm=LocalCommunicator())
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(rv, rv_before)


@pytest.mark.parametrize("alias", ("dx is dy", "dweight is weight"))
def test_gradients_that_overlap_an_input_are_refused_before_anything_is_written(alias):
    """dweight and dbias are written after the all-reduce, before the dx pass reads dy, x and weight:
    an output sharing memory with an input is a ValueError naming both, and no output is written."""
    from normkit import _core
    from normkit._arrays import to_core
    from normkit.functional import _communicator

    rng = np.random.default_rng(4)
    x = rng.normal(size=(8, 4, 5))
    w = np.linspace(0.5, 1.5, 4)
    _, sm, sr = F.sync_batch_norm_forward(x, weight=w, comm=LocalCommunicator())
    dy = rng.normal(size=x.shape)
    dx = dy if alias == "dx is dy" else np.full_like(x, 5.0)
    dw = w if alias == "dweight is weight" else np.full(4, 123.0)
    db = np.full(4, 456.0)
    before = {k: v.copy() for k, v in (("dy", dy), ("w", w), ("dx", dx), ("dw", dw), ("db", db))}
    out, inp = ("dx", "dy") if alias == "dx is dy" else ("dweight", "weight")
    with pytest.raises(ValueError, match=f"{out}: expected an output that shares no memory with {inp}"):
        _core.sync_batch_norm_backward(to_core(dy, "dy"), to_core(x), to_core(sm), to_core(sr), to_core(w),
                                       _communicator(LocalCommunicator()), None, to_core(dx), to_core(dw),
                                       to_core(db), 0)
    for k, v in (("dy", dy), ("w", w), ("dx", dx), ("dw", dw), ("db", db)):
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_shapes_are_checked_before_an_input_is_copied_into_the_output_layout():
    """A wrong-shaped broadcast dy (2^40 values) used to be copied first: "out of host memory"."""
    x = np.random.default_rng(0).random((4, 6, 5)).astype(np.float32)
    dy = np.broadcast_to(np.float32(1), (4, 6, 2**40))
    with pytest.raises(ValueError, match=r"dy: expected shape \[4, 6, 5\], got \[4, 6, 1099511627776\]"):
        F.sync_batch_norm_backward(dy, x, np.zeros(6, np.float32), np.ones(6, np.float32), comm=LocalCommunicator())
    # forward: x (a valid broadcast of 2^40 values) is copied into y's layout only once y is known good
    big = np.broadcast_to(np.float32(1), (4, 6, 2**40))
    y, sm, sr = np.empty((4, 6, 5), np.float32), np.empty(6, np.float32), np.empty(6, np.float32)
    with pytest.raises(ValueError, match=r"y: expected shape \[4, 6, 1099511627776\], got \[4, 6, 5\]"):
        normkit._core.sync_batch_norm_forward(big, None, None, None, None, 0.1, 1e-5, LocalCommunicator(), None,
                                              y, sm, sr, 0)


class _RecordingCommunicator:
    """A user's communicator (rank, size, allreduce): records what SyncBatchNorm hands its allreduce."""

    rank, size = 0, 1

    def __init__(self):
        self.seen = []

    def allreduce(self, array):
        self.seen.append((type(array), str(array.dtype), tuple(array.shape), array.__dlpack_device__()))
        return LocalCommunicator().allreduce(array)  # the checks every communicator makes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_a_python_communicator_receives_a_typed_array(framework, dtype):
    """The buffer a Python communicator receives has dtype, shape and a DLPack device (a NumPy array on
    the CPU; tests/test_cuda_coverage.py checks the CUDA kind), forward and backward."""
    if framework == "numpy" and dtype == torch.float16:
        pytest.skip("float16 through torch covers the float32 payload")
    comm = _RecordingCommunicator()
    x = (torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(0)) * 2 + 1).to(dtype)
    if framework == "numpy":
        y, mean, rstd = F.sync_batch_norm_forward(x.numpy(), comm=comm)
        F.sync_batch_norm_backward(x.numpy(), x.numpy(), mean, rstd, comm=comm)
    else:
        xg = x.clone().requires_grad_()
        nkt.functional.sync_batch_norm(xg, None, None, None, None, comm=comm).sum().backward()
    assert len(comm.seen) >= 2
    acc = "float64" if dtype == torch.float64 else "float32"
    for kind, dt, shape, device in comm.seen:
        assert kind is np.ndarray and len(shape) == 1 and shape[0] > 0 and device == (1, 0)
        assert dt in (acc, "float64")  # (the payload of counts and moments is float64)


def test_communicators_check_a_dlpack_object_without_dtype_or_shape():
    """_check_allreduce_array reads such an object through a DLPack view instead of failing on its
    missing dtype (an AttributeError made SyncBatchNorm on CUDA unusable with Python communicators)."""
    from normkit.distributed import _check_allreduce_array

    a = np.ones(6)
    assert _check_allreduce_array(BareDLPack(a)) == 6
    assert LocalCommunicator().allreduce(BareDLPack(a)) is not None
    with pytest.raises(TypeError, match="array: expected dtype float32 or float64, got int64"):
        _check_allreduce_array(BareDLPack(np.ones(3, np.int64)))
    with pytest.raises(ValueError, match="array: expected a contiguous array"):
        _check_allreduce_array(BareDLPack(np.ones((4, 3))[:, 0]))
