"""SyncBatchNorm on CUDA tensors over NCCL, one GPU per process (bootstrapped from MPI): the result
equals torch.nn.BatchNorm on the global batch. Runs where every process has a GPU, torch has CUDA and
normkit has its NCCL and MPI modules; skips elsewhere."""

from __future__ import annotations

import normkit
import normkit.torch as nkt
import pytest
import torch
from world import HAVE_MPI, RANK, SIZE, local_part, seed_for, uneven_counts

_ready = (HAVE_MPI and normkit.build_info()["nccl"] and normkit.cuda_available() and torch.cuda.is_available()
          and torch.cuda.device_count() >= 1)
pytestmark = pytest.mark.skipif(not _ready, reason="needs a CUDA device per process, CUDA torch, NCCL and MPI")


@pytest.mark.parametrize("channels_last", [False, True])
def test_nccl_sync_batch_norm_equals_batch_norm_on_the_global_batch(channels_last):
    from mpi4py import MPI
    from normkit.distributed import NCCLCommunicator

    device = torch.device("cuda", RANK % torch.cuda.device_count())
    torch.cuda.set_device(device)
    comm = NCCLCommunicator.from_mpi(MPI.COMM_WORLD, device.index)
    counts, C = uneven_counts(), 6
    g = torch.Generator().manual_seed(seed_for("nccl"))
    x = torch.randn(sum(counts), C, 5, 4, generator=g) * 2 + 3
    dy = torch.randn(x.shape, generator=g)
    ref = torch.nn.BatchNorm2d(C)
    xr = x.clone().requires_grad_()
    y_ref = ref(xr)
    (y_ref * dy).sum().backward()
    layer = nkt.SyncBatchNorm(C, comm=comm).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xl = local_part(x, counts).to(device).contiguous(memory_format=fmt).requires_grad_()
    y = layer(xl)
    (y * local_part(dy, counts).to(device)).sum().backward()
    torch.testing.assert_close(y.cpu(), local_part(y_ref.detach(), counts), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xl.grad.cpu(), local_part(xr.grad, counts), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.running_var.cpu(), ref.running_var, rtol=1e-5, atol=1e-6)
    assert SIZE == comm.size
