"""What every communicator's allreduce takes (a writable, contiguous float32/float64 array; an empty one
is left alone) and the errors for anything else, the same for the MPI and the local communicator;
communicators that cannot be used any more (a freed mpi4py communicator) raise instead of crashing.
Runs at any world size (plain pytest: one process)."""

from __future__ import annotations

import copy
import pickle

import normkit.functional as F
import normkit.numpy as nkn
import numpy as np
import pytest
from normkit.distributed import LocalCommunicator, as_communicator
from world import COMM, HAVE_MPI, RANK, SIZE

COMMS = [pytest.param(lambda: LocalCommunicator(), id="local")]
if HAVE_MPI:
    COMMS.append(pytest.param(lambda: COMM, id="mpi"))


@pytest.mark.parametrize("make", COMMS)
def test_allreduce_sums_in_place_and_returns_the_array(make):
    comm = make()
    a = np.full(3, float(RANK + 1))
    assert comm.allreduce(a) is a
    # (the ranks' values 1 .. size summed; alone, a process keeps its own)
    np.testing.assert_array_equal(a, np.full(3, comm.size * (comm.size + 1) / 2 if comm.size > 1 else RANK + 1.0))
    empty = np.zeros((0, 4))
    assert comm.allreduce(empty) is empty  # nothing to sum, on every process


@pytest.mark.parametrize("make", COMMS)
def test_allreduce_refuses_what_it_cannot_sum_in_place(make):
    comm = make()
    read_only = np.ones(3)
    read_only.flags.writeable = False
    cases = [
        (np.ones(3, np.int64), TypeError, "array: expected dtype float32 or float64, got int64"),
        ([1.0, 2.0], TypeError, "array: expected an array"),
        (np.ones((4, 3)).T, ValueError, "array: expected a contiguous array"),
        (read_only, ValueError, "array: expected a writable array"),
    ]
    for array, error, message in cases:
        with pytest.raises(error, match=message):
            comm.allreduce(array)
    assert read_only.tolist() == [1.0, 1.0, 1.0]


def test_a_non_communicator_is_named():
    with pytest.raises(TypeError, match=r"comm: expected a communicator \(rank, size, allreduce\(array\)\), got"):
        as_communicator(5)
    with pytest.raises(TypeError, match=r"comm: expected a communicator \(rank, size, allreduce\(array\)\), got"):
        F.sync_batch_norm_forward(np.ones((4, 3), np.float32), comm=object())


@pytest.mark.skipif(not HAVE_MPI, reason="normkit was built without its MPI module")
def test_mpi_communicator_arguments():
    from mpi4py import MPI
    from normkit.distributed import MPICommunicator

    with pytest.raises(TypeError, match="comm: expected an mpi4py communicator"):
        MPICommunicator(5)
    with pytest.raises(ValueError, match="comm: expected a live communicator, got MPI.COMM_NULL"):
        MPICommunicator(MPI.COMM_NULL)


@pytest.mark.skipif(not HAVE_MPI, reason="normkit was built without its MPI module")
def test_a_freed_mpi_communicator_raises_instead_of_crashing():
    from mpi4py import MPI
    from normkit.distributed import MPICommunicator

    sub = MPI.COMM_WORLD.Split(0, RANK)
    comm = MPICommunicator(sub)
    layer = nkn.SyncBatchNorm(3, comm=comm)
    x = np.random.default_rng(RANK).normal(size=(4, 3)).astype(np.float32)
    layer(x)
    sub.Free()
    with pytest.raises(ValueError, match=r"comm: the mpi4py communicator was freed"):
        layer(x)
    with pytest.raises(ValueError, match=r"comm: the mpi4py communicator was freed"):
        comm.allreduce(np.ones(3))


def test_numpy_layer_with_the_default_communicator_copies_and_pickles():
    layer = nkn.SyncBatchNorm(3)
    x = np.random.default_rng(7).normal(size=(4, 3)).astype(np.float32)
    for other in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        np.testing.assert_array_equal(other(x), layer(x))  # the same statistics and communicator kind
        assert type(other.comm) is type(layer.comm)
    with pytest.raises(TypeError, match="explicit comm cannot be copied"):
        copy.deepcopy(nkn.SyncBatchNorm(3, comm=LocalCommunicator()))


def test_world_is_what_mpirun_started():
    assert COMM.size == SIZE and 0 <= RANK < SIZE
