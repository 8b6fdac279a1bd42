"""normkit.torch.SyncBatchNorm over MPI: on every process the result equals torch.nn.BatchNorm on the
concatenated global batch -- outputs, dx, dweight/dbias summed over the processes, running statistics,
num_batches_tracked -- for NCHW and channels-last, float32 and bfloat16, momentum and momentum=None,
uneven and empty local batches. Runs at W = 1 in the plain suite and under mpirun."""

from __future__ import annotations

import copy

import normkit.torch as nkt
import pytest
import torch
from world import COMM, SIZE, local_part, seed_for, summed, uneven_counts

TOL = {torch.float32: dict(rtol=1e-5, atol=3e-5), torch.bfloat16: dict(rtol=2e-2, atol=3e-2),
       torch.float16: dict(rtol=3e-3, atol=5e-3)}


def _reference_step(ref, x, dy):
    """torch BatchNorm on the global batch (float32 math for bfloat16 data)."""
    xr = x.float().detach().requires_grad_()
    yr = ref(xr)
    (yr * dy.float()).sum().backward()
    return yr.detach(), xr.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("counts", ["even", "uneven"])
def test_module_equals_torch_batch_norm_on_the_global_batch(dtype, channels_last, momentum, counts):
    counts = [2] * SIZE if counts == "even" else uneven_counts()
    C = 5
    g = torch.Generator().manual_seed(seed_for("torch_module"))
    ref = torch.nn.BatchNorm2d(C, momentum=momentum)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5, generator=g)
        ref.bias.normal_(generator=g)
    layer = nkt.SyncBatchNorm(C, momentum=momentum, comm=COMM).to(dtype)
    layer.load_state_dict(ref.state_dict())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for _ in range(3):
        x = (torch.randn(sum(counts), C, 4, 3, generator=g) * 2 + 1).to(dtype)
        dy = torch.randn(x.shape, generator=g).to(dtype)
        y_ref, dx_ref = _reference_step(ref, x, dy)
        xl = local_part(x, counts).contiguous(memory_format=fmt).requires_grad_()
        layer.zero_grad()
        y = layer(xl)
        (y * local_part(dy, counts).to(memory_format=fmt)).sum().backward()
        assert y.dtype == dtype and y.shape == xl.shape
        if xl.numel():
            assert y.is_contiguous(memory_format=fmt) and xl.grad.is_contiguous(memory_format=fmt)
        torch.testing.assert_close(y.float(), local_part(y_ref, counts), **TOL[dtype])
        torch.testing.assert_close(xl.grad.float(), local_part(dx_ref, counts), **TOL[dtype])
        for name in ("weight", "bias"):
            total = torch.from_numpy(summed(COMM, getattr(layer, name).grad.float().numpy())).float()
            torch.testing.assert_close(total, getattr(ref, name).grad, **TOL[dtype])
        ref.weight.grad = ref.bias.grad = None
        torch.testing.assert_close(layer.running_mean.float(), ref.running_mean, **TOL[dtype])
        torch.testing.assert_close(layer.running_var.float(), ref.running_var, **TOL[dtype])
    assert int(layer.num_batches_tracked) == int(ref.num_batches_tracked) == 3


def test_state_dict_moves_between_torch_and_normkit_both_ways():
    theirs = torch.nn.SyncBatchNorm(4)
    with torch.no_grad():
        theirs.running_mean.uniform_()
        theirs.weight.uniform_()
    theirs.num_batches_tracked += 7
    ours = nkt.SyncBatchNorm(4, comm=COMM)
    ours.load_state_dict(theirs.state_dict())
    plain = torch.nn.BatchNorm2d(4)
    plain.load_state_dict(ours.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value) and torch.equal(plain.state_dict()[key], value)


def _resnet_like():
    torch.manual_seed(0)

    class Block(torch.nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1, self.bn1 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False), torch.nn.BatchNorm2d(c)
            self.conv2, self.bn2 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False), torch.nn.BatchNorm2d(c)

        def forward(self, x):
            return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))

    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               Block(8), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))


def test_convert_and_revert_keep_parameters_and_buffers():
    model = _resnet_like()
    params = {name: p for name, p in model.named_parameters()}
    buffers = {name: b for name, b in model.named_buffers()}
    synced = nkt.convert_sync_batchnorm(model, comm=COMM)
    kinds = [type(m) for m in synced.modules()]
    assert kinds.count(nkt.SyncBatchNorm) == 3 and torch.nn.BatchNorm2d not in kinds
    assert all(p is params[name] for name, p in synced.named_parameters())
    assert all(b is buffers[name] for name, b in synced.named_buffers())
    reverted = nkt.revert_sync_batchnorm(synced)
    assert [type(m) for m in reverted.modules()].count(nkt.BatchNormXd) == 3
    assert all(p is params[name] for name, p in reverted.named_parameters())
    assert set(reverted.state_dict()) == set(_resnet_like().state_dict())
    torch.nn.SyncBatchNorm.convert_sync_batchnorm  # noqa: B018 (torch's converter exists; ours mirrors it)
    from_torch_sync = nkt.revert_sync_batchnorm(torch.nn.SyncBatchNorm.convert_sync_batchnorm(_resnet_like()))
    assert [type(m) for m in from_torch_sync.modules()].count(nkt.BatchNormXd) == 3


def assert_trains_like_single_process(single, model, forward, counts, seed, sync_grads=None):
    """Three SGD steps of `model` -- `forward` on this process's part of each batch, then `sync_grads`
    (if given) -- end with the parameters and buffers of `single` trained on the whole batches."""
    opt_single = torch.optim.SGD(single.parameters(), lr=0.1, momentum=0.9)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    for _ in range(3):
        x = torch.randn(sum(counts), 3, 6, 6, generator=g)
        target = torch.randn(sum(counts), 4, generator=g)
        opt_single.zero_grad()
        torch.nn.functional.mse_loss(single(x), target).backward()
        opt_single.step()
        opt.zero_grad()
        torch.nn.functional.mse_loss(forward(local_part(x, counts)), local_part(target, counts)).backward()
        if sync_grads is not None:
            sync_grads()
        opt.step()
    for (name, p), q in zip(model.named_parameters(), single.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)
    for (name, b), c in zip(model.named_buffers(), single.buffers()):
        torch.testing.assert_close(b, c, rtol=1e-4, atol=1e-5, msg=name)


def test_training_with_averaged_gradients_equals_single_process_training():
    """Data-parallel steps (each process: its part of the batch, gradients averaged over processes as
    DDP does) with SyncBatchNorm give the parameters of single-process training on the whole batch."""
    single = _resnet_like()
    model = nkt.convert_sync_batchnorm(copy.deepcopy(single), comm=COMM)

    def average_grads():  # DDP's gradient averaging
        for p in model.parameters():
            p.grad.copy_(torch.from_numpy(summed(COMM, p.grad.numpy())).float() / SIZE)

    assert_trains_like_single_process(single, model, model, [2] * SIZE, seed_for("ddp_like"), average_grads)
