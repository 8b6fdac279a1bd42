"""SyncBatchNorm over NumPy arrays: on every process, the result equals single-process BatchNorm on the
concatenated global batch (float64 reference from the formulas). Runs at W = 1 in the plain suite and
under `mpirun -n 2` / `-n 4` (tests/run.sh)."""

from __future__ import annotations

import channel_reference as CR
import normkit.numpy as nkn
import numpy as np
import pytest
from normkit import functional as F
from numpy.testing import assert_allclose
from world import COMM, HAVE_MPI, RANK, SIZE, CountingCommunicator, local_part, seed_for, summed, uneven_counts

TOL = {np.float32: dict(rtol=1e-5, atol=3e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
multi_process = pytest.mark.skipif(SIZE < 2, reason="needs 2+ processes: runs under mpirun -n 2 / -n 4")


def _batches(rng, counts, C, spatial, dtype, steps):
    shape = (sum(counts), C, *spatial)
    for _ in range(steps):
        x = (rng.normal(size=shape) * 2.0 + rng.normal(size=(1, C) + (1,) * len(spatial)) * 3).astype(dtype)
        yield x, rng.normal(size=shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("counts", ["even", "uneven"])
@pytest.mark.parametrize("spatial", [(), (3,), (4, 5)])
def test_layer_equals_batch_norm_on_the_global_batch(dtype, counts, spatial):
    counts = [3] * SIZE if counts == "even" else uneven_counts()
    C = 6
    rng = np.random.default_rng(seed_for("layer" + str(spatial)))
    layer = nkn.SyncBatchNorm(C, momentum=0.3, comm=COMM, dtype=dtype)
    layer.weight[...] = rng.uniform(0.5, 1.5, C)
    layer.bias[...] = rng.normal(size=C)
    rm, rv = np.zeros(C), np.ones(C)
    for x, dy in _batches(rng, counts, C, spatial, dtype, steps=3):
        ref = CR.batch_norm_forward(x, rm, rv, layer.weight, layer.bias, training=True, momentum=0.3)
        dx_ref, dw_ref, db_ref = CR.batch_norm_backward(dy, x, layer.weight, training=True)
        y = layer(local_part(x, counts))
        dx = layer.backward(local_part(dy, counts))
        assert y.dtype == dtype and y.shape == local_part(x, counts).shape
        assert_allclose(y, local_part(ref["y"], counts), **TOL[dtype])
        assert_allclose(dx, local_part(dx_ref, counts), **TOL[dtype])
        # dweight/dbias are this process's sums: over the processes they are the global gradients.
        assert_allclose(summed(COMM, layer.grads["weight"]), dw_ref, **TOL[dtype])
        assert_allclose(summed(COMM, layer.grads["bias"]), db_ref, **TOL[dtype])
        rm, rv = ref["running_mean"], ref["running_var"]
        assert_allclose(layer.running_mean, rm, **TOL[dtype])
        assert_allclose(layer.running_var, rv, **TOL[dtype])
    assert int(layer.num_batches_tracked) == 3
    # Evaluation: the running statistics, the same on every process.
    layer.eval()
    x = np.ones((2, C, *spatial), dtype)
    ref = CR.batch_norm_forward(x, rm, rv, layer.weight, layer.bias, training=False)
    assert_allclose(layer(x), ref["y"], **TOL[dtype])


def test_momentum_none_is_the_cumulative_average_of_global_statistics():
    counts, C = uneven_counts(), 3
    rng = np.random.default_rng(seed_for("momentum_none"))
    layer = nkn.SyncBatchNorm(C, momentum=None, comm=COMM, dtype=np.float64)
    means, variances = [], []
    for x, _ in _batches(rng, counts, C, (4,), np.float64, steps=4):
        layer(local_part(x, counts))
        ref = CR.batch_norm_forward(x, training=True)
        k = x.size // C
        means.append(ref["save_mean"])
        variances.append(ref["var"] * k / (k - 1))
    assert_allclose(layer.running_mean, np.mean(means, axis=0), rtol=1e-12, atol=1e-14)
    assert_allclose(layer.running_var, np.mean(variances, axis=0), rtol=1e-12)


def test_one_all_reduce_per_direction_whose_size_does_not_depend_on_the_world_size():
    C = 5
    counting = CountingCommunicator(COMM)
    x = np.random.default_rng(seed_for("bytes")).normal(size=(local := 2 + RANK, C, 3)).astype(np.float32)
    y, mean, rstd = F.sync_batch_norm_forward(x, comm=counting)
    assert (counting.calls, counting.bytes) == (1, 8 * (1 + 3 * C))  # count, then 3 float64 per channel
    F.sync_batch_norm_backward(np.ones_like(x), x, mean, rstd, comm=counting)
    assert (counting.calls, counting.bytes) == (2, 8 * (1 + 3 * C) + 8 * (1 + 2 * C))
    # dweight/dbias alone (no dx) are local sums: no communication.
    F.sync_batch_norm_backward(np.ones_like(x), x, mean, rstd, np.ones(C, np.float32), comm=counting,
                               output_mask=(False, True, True))
    assert counting.calls == 2
    assert local == x.shape[0]


def test_evaluation_does_not_communicate():
    counting = CountingCommunicator(COMM)
    layer = nkn.SyncBatchNorm(4, comm=counting).eval()
    layer(np.ones((3, 4, 2), np.float32))
    assert counting.calls == 0


def test_variance_of_data_far_from_zero_survives_the_merge():
    # float32 values with mean 1e4 and std 0.1, spread over the processes: the global variance (running
    # variance with momentum 1) matches the float64 variance of the same values.
    counts, C = [4000 + 100 * r for r in range(SIZE)], 3
    rng = np.random.default_rng(seed_for("far_from_zero"))
    x = (1e4 + 0.1 * rng.normal(size=(sum(counts), C, 2))).astype(np.float32)
    layer = nkn.SyncBatchNorm(C, momentum=1.0, comm=COMM)
    layer(local_part(x, counts))
    exact = x.astype(np.float64).transpose(1, 0, 2).reshape(C, -1).var(axis=1, ddof=1)
    assert_allclose(layer.running_var, exact, rtol=1e-4)
    assert_allclose(layer.running_mean, x.astype(np.float64).mean(axis=(0, 2)), rtol=1e-7)


@pytest.mark.parametrize("shape", [(1, 3), (0, 3), (1, 3, 1)])
def test_a_global_batch_of_one_value_per_channel_raises_the_same_error_everywhere(shape):
    # Only rank 0 holds the (at most one) value: every process raises, nobody hangs, nothing changes.
    local = shape if RANK == 0 else (0,) + shape[1:]
    x = np.ones(local, np.float32)
    rm, rv = np.full(3, 5.0, np.float32), np.full(3, 7.0, np.float32)
    with pytest.raises(ValueError, match=f"more than 1 value per channel over the {SIZE} processes") as e:
        F.sync_batch_norm_forward(x, rm, rv, comm=COMM)
    assert str(e.value).endswith(f"got {int(np.prod(shape)) // 3}")
    assert (rm == 5).all() and (rv == 7).all()


def test_empty_local_batches_take_part_and_get_empty_results():
    counts, C = [0] * SIZE, 2
    counts[-1] = 3
    x = np.random.default_rng(seed_for("empty")).normal(size=(3, C, 2))
    layer = nkn.SyncBatchNorm(C, comm=COMM, dtype=np.float64)
    y = layer(local_part(x, counts))
    dx = layer.backward(np.ones_like(y))
    assert y.shape == local_part(x, counts).shape and dx.shape == y.shape
    assert np.isfinite(layer.running_mean).all() and np.isfinite(layer.running_var).all()
    assert np.isfinite(layer.grads["weight"]).all()
    ref = CR.batch_norm_forward(x, np.zeros(C), np.ones(C), training=True)
    assert_allclose(layer.running_var, ref["running_var"], rtol=1e-12)


@multi_process
def test_processes_calling_different_layers_all_raise():
    a = nkn.SyncBatchNorm(3, comm=COMM, sync_check=True)
    b = nkn.SyncBatchNorm(3, comm=COMM, sync_check=True)
    x = np.ones((2, 3), np.float32) + np.arange(2, dtype=np.float32)[:, None]
    a(x)  # same layer, same call: fine
    with pytest.raises(ValueError, match="disagree on the layer id"):
        (a if RANK == 0 else b)(x)  # rank 0 calls a again, the others b
    # Same layer, different call numbers (a call skipped on rank 0).
    c = nkn.SyncBatchNorm(3, comm=COMM, sync_check=True)
    if RANK != 0:
        c._identity.calls += 1
    with pytest.raises(ValueError, match="disagree on the call number"):
        c(x)


@multi_process
def test_processes_calling_layers_of_different_widths_all_raise():
    # Different channel counts mean different payload sizes: the check values go first, on their own.
    C = 3 if RANK == 0 else 4
    layer = nkn.SyncBatchNorm(C, comm=COMM, sync_check=True)
    layer._identity.layer_id = 1000  # the same id everywhere, to reach the channel-count check
    with pytest.raises(ValueError, match="disagree on the channel count"):
        layer(np.ones((2, C), np.float32) + np.arange(2, dtype=np.float32)[:, None])


def test_checked_calls_cost_one_more_small_all_reduce():
    counting = CountingCommunicator(COMM)
    x = np.ones((2, 3), np.float32) + np.arange(2, dtype=np.float32)[:, None]
    F.sync_batch_norm_forward(x, comm=counting, check=(1, 1))
    assert (counting.calls, counting.bytes) == (2, 8 * 6 + 8 * (1 + 3 * 3))


@multi_process
def test_mismatch_detection_from_the_environment(monkeypatch):
    monkeypatch.setenv("NORMKIT_SYNC_CHECK", "1")
    layers = [nkn.SyncBatchNorm(3, comm=COMM) for _ in range(2)]
    x = np.ones((2, 3), np.float32) + np.arange(2, dtype=np.float32)[:, None]
    with pytest.raises(ValueError, match="disagree on the layer id"):
        layers[RANK % 2 if RANK < 2 else 0](x)
    monkeypatch.setenv("NORMKIT_SYNC_CHECK", "0")
    unchecked = [nkn.SyncBatchNorm(3, comm=COMM) for _ in range(2)]
    unchecked[RANK % 2](x)  # without the check the statistics simply mix: no error


@multi_process
@pytest.mark.skipif(not HAVE_MPI, reason="needs normkit's MPI module")
def test_split_sub_communicators_compute_independent_statistics():
    from mpi4py import MPI
    from normkit.distributed import MPICommunicator

    color = RANK % 2
    sub = MPICommunicator(MPI.COMM_WORLD.Split(color, RANK))
    members = [r for r in range(SIZE) if r % 2 == color]
    counts = [2 + r for r in members]
    rng = np.random.default_rng(seed_for("split") + color)
    x = rng.normal(size=(sum(counts), 4, 3)) + 10 * color
    y, mean, _ = F.sync_batch_norm_forward(local_part(x, counts, sub.rank), comm=sub)
    ref = CR.batch_norm_forward(x, training=True)
    assert_allclose(y, local_part(ref["y"], counts, sub.rank), rtol=1e-12, atol=1e-12)
    assert_allclose(mean, ref["save_mean"], rtol=1e-12)


def test_bad_arguments_raise_before_any_communication():
    counting = CountingCommunicator(COMM)
    x = np.ones((2, 3, 4), np.float32)
    with pytest.raises(TypeError, match="comm: expected a communicator"):
        F.sync_batch_norm_forward(x, comm=object())
    with pytest.raises(ValueError, match="weight"):
        F.sync_batch_norm_forward(x, weight=np.ones(4, np.float32), comm=counting)
    with pytest.raises(ValueError, match="running_mean, running_var: expected both or neither"):
        F.sync_batch_norm_forward(x, np.zeros(3, np.float32), comm=counting)
    with pytest.raises(ValueError, match="x: expected at least 2 dimensions"):
        F.sync_batch_norm_forward(np.ones(3, np.float32), comm=counting)
    assert counting.calls == 0


def _x_and_stats():
    x = np.ones((2, 3), np.float32) + np.arange(2, dtype=np.float32)[:, None]
    _, mean, rstd = F.sync_batch_norm_forward(x, comm=COMM)
    return x, mean, rstd


@multi_process
def test_backward_mismatch_raises_everywhere_and_writes_no_gradient():
    """The gradients of a backward whose check fails are not written (they are cast from this
    process's sums only once the check has passed)."""
    from normkit import _core

    x, mean, rstd = _x_and_stats()
    dx, dw, db = (np.full(s, 7.0, np.float32) for s in (x.shape, 3, 3))
    with pytest.raises(ValueError, match="disagree on the call"):
        _core.sync_batch_norm_backward(x, x, mean, rstd, np.ones(3, np.float32), COMM, (5, 10 + RANK % 2), dx, dw, db)
    for g in (dx, dw, db):
        np.testing.assert_array_equal(g, np.full(g.shape, 7.0, np.float32))


def test_check_agrees_for_call_numbers_of_a_long_run():
    """Call numbers far past 2^26 (a long training run) agree on every process: no false mismatch."""
    x = np.ones((2, 3), np.float32) + np.arange(2, dtype=np.float32)[:, None]
    for call in (2**26 - 1, 3 * 2**26 + 5, 2**40 + 7):
        y, _, _ = F.sync_batch_norm_forward(x, comm=COMM, check=(2**33 + 1, call))
        assert np.isfinite(y).all()
        F.sync_batch_norm_backward(x, x, *F.sync_batch_norm_forward(x, comm=COMM, check=(7, call))[1:], comm=COMM,
                                   check=(7, call))
