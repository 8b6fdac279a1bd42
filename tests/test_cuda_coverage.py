"""More CUDA paths against the CPU (test_cuda.py's method: the same normkit op on both, the CPU side
verified against references elsewhere): SyncBatchNorm with Python communicators. Skipped where normkit
has no usable CUDA device or torch has no CUDA (tests/run_gpu.sh runs them on a GPU machine)."""

from __future__ import annotations

import normkit
import normkit.torch as nt
import pytest
import torch
from test_cuda import _close, _run

pytestmark = pytest.mark.skipif(
    not (normkit.cuda_available() and torch.cuda.is_available()), reason="needs a CUDA device"
)

def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---- SyncBatchNorm with Python communicators ---------------------------------------------------------


@pytest.fixture
def gloo_world_of_one(tmp_path):
    """A world-size-1 gloo default group (file store), destroyed afterwards."""
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a torch.distributed group is initialized already")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


class _Wrapper:
    """A user's communicator: checks what SyncBatchNorm hands it, then sums through torch.distributed."""

    rank, size = 0, 1

    def __init__(self):
        from normkit.distributed import TorchCommunicator

        self.inner, self.calls = TorchCommunicator(), 0

    def allreduce(self, array):
        self.calls += 1
        assert isinstance(array, torch.Tensor) and array.is_cuda, type(array)
        assert array.dtype in (torch.float32, torch.float64) and array.dim() == 1 and array.is_contiguous()
        return self.inner.allreduce(array)


@pytest.mark.parametrize("comm_kind", ["torch", "python"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_sync_batch_norm_on_cuda_with_python_communicators(gloo_world_of_one, comm_kind, dtype, channels_last):
    """A TorchCommunicator (gloo, world size 1) or a user's object: the CUDA buffer reaches Python as a
    torch tensor, and the results equal LocalCommunicator's to the bit (a sum over one process)."""
    from normkit.distributed import LocalCommunicator, TorchCommunicator

    comm = TorchCommunicator() if comm_kind == "torch" else _Wrapper()
    x = ((torch.randn(6, 5, 4, 3, generator=_gen()) * 3 + 2).to(dtype)).cuda()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w, b = torch.rand(5, dtype=dtype).add(0.5).cuda(), torch.randn(5, dtype=dtype).cuda()
    dy = torch.randn(x.shape, dtype=dtype).cuda()

    def run(c):
        rm, rv = torch.zeros(5, dtype=dtype, device="cuda"), torch.ones(5, dtype=dtype, device="cuda")
        y, grads = _run(lambda x, w, b: nt.functional.sync_batch_norm(x, rm, rv, w, b, 0.1, 1e-5, c), x, [w, b], dy)
        return [y, *grads, rm, rv]

    results = [run(comm), run(LocalCommunicator())]
    if comm_kind == "python":
        assert comm.calls >= 2  # forward and backward
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_sync_batch_norm_module_on_cuda_uses_the_initialized_group(gloo_world_of_one):
    """The failing scenario of the review: nkt.SyncBatchNorm(C).cuda() under an initialized
    torch.distributed resolves comm=None to a TorchCommunicator; it trains like BatchNorm2d."""
    from normkit.distributed import TorchCommunicator

    sync, ref = nt.SyncBatchNorm(5).cuda(), torch.nn.BatchNorm2d(5).cuda()
    x = (torch.randn(4, 5, 6, 6, generator=_gen(1)) * 2 + 3).cuda()
    xs, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    ys, yr = sync(xs), ref(xr)
    ys.square().sum().backward()
    yr.square().sum().backward()
    assert isinstance(sync.comm, TorchCommunicator)
    torch.testing.assert_close(ys, yr, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xs.grad, xr.grad, rtol=1e-4, atol=1e-5)
    _close(sync.running_mean, ref.running_mean, torch.float32)
    _close(sync.running_var, ref.running_var, torch.float32)
