"""SyncBatchNorm inside an existing torch.distributed (gloo) process group: comm=None picks the default
group, and DDP training with converted layers equals single-process training on the whole batch.
Under mpirun the processes of the MPI job form the gloo group (rendezvous over TCP on localhost)."""

from __future__ import annotations

import copy
import socket

import normkit.torch as nkt
import pytest
import torch
import torch.distributed as dist
from bare_dlpack import BareDLPack
from normkit.distributed import TorchCommunicator, default_communicator
from test_sync_batch_norm_torch import _resnet_like, assert_trains_like_single_process
from world import COMM, HAVE_MPI, RANK, SIZE, local_part, seed_for, uneven_counts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gloo():
    port = _free_port() if RANK == 0 else 0
    if HAVE_MPI:
        from mpi4py import MPI

        port = MPI.COMM_WORLD.bcast(port, root=0)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=RANK, world_size=SIZE)
    yield dist.group.WORLD
    dist.destroy_process_group()


def test_comm_none_uses_the_default_group(gloo):
    comm = default_communicator()
    assert isinstance(comm, TorchCommunicator) and (comm.rank, comm.size) == (RANK, SIZE)
    a = torch.full((3,), float(RANK + 1), dtype=torch.float64)
    comm.allreduce(a)
    assert a.tolist() == [SIZE * (SIZE + 1) / 2] * 3

    counts, C = uneven_counts(), 4
    g = torch.Generator().manual_seed(seed_for("gloo_default"))
    x = torch.randn(sum(counts), C, 5, generator=g) * 3 + 2
    ref = torch.nn.BatchNorm1d(C)
    layer = nkt.SyncBatchNorm(C)  # comm resolved at the first training call: the gloo group
    xl = local_part(x, counts).requires_grad_()
    y = layer(xl)
    y.square().sum().backward()
    assert isinstance(layer.comm, TorchCommunicator)
    xr = x.clone().requires_grad_()
    ref(xr).square().sum().backward()
    torch.testing.assert_close(y, local_part(ref(x.clone()).detach(), counts), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xl.grad, local_part(xr.grad, counts), rtol=1e-4, atol=1e-5)


def test_ddp_training_with_converted_layers_equals_single_process_training(gloo):
    single = _resnet_like()
    model = nkt.convert_sync_batchnorm(copy.deepcopy(single), process_group=gloo)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    assert_trains_like_single_process(single, model, ddp, [3] * SIZE, seed_for("ddp"))
    # Every process holds the same parameters.
    for p in model.parameters():
        gathered = [torch.empty_like(p) for _ in range(SIZE)]
        dist.all_gather(gathered, p.detach())
        assert all(torch.equal(t, gathered[0]) for t in gathered)
    assert COMM.size == SIZE


def test_a_process_group_given_as_comm_is_wrapped(gloo):
    """torch's positional convert_sync_batchnorm(module, process_group) works: a ProcessGroup passed
    where normkit takes `comm` becomes a TorchCommunicator."""
    model = nkt.convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm1d(3)), gloo)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(RANK))
    y = model(x)
    assert isinstance(model[0].comm, TorchCommunicator)
    gathered = [torch.empty_like(x) for _ in range(SIZE)]
    dist.all_gather(gathered, x)
    ref = torch.nn.functional.batch_norm(torch.cat(gathered), None, None, training=True)
    torch.testing.assert_close(y, ref[4 * RANK:4 * RANK + 4], rtol=1e-5, atol=1e-5)


def test_torch_communicator_checks_its_array_as_the_others(gloo):
    import numpy as np

    comm = TorchCommunicator()
    read_only = np.ones(3)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="array: expected a writable array"):
        comm.allreduce(read_only)
    with pytest.raises(TypeError, match="array: expected dtype float32 or float64, got int64"):
        comm.allreduce(torch.ones(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="array: expected an array"):
        comm.allreduce([1.0])
    assert read_only.tolist() == [1.0, 1.0, 1.0]


def test_torch_communicator_sums_a_dlpack_object_without_dtype_or_shape(gloo):
    import numpy as np

    a = np.full(3, float(RANK + 1))
    TorchCommunicator().allreduce(BareDLPack(a))
    assert a.tolist() == [SIZE * (SIZE + 1) / 2] * 3
    with pytest.raises(TypeError, match="array: expected dtype float32 or float64, got int64"):
        TorchCommunicator().allreduce(BareDLPack(np.ones(3, np.int64)))
