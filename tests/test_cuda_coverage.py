"""More CUDA kernels against the CPU kernels (test_cuda.py's method: the same normkit op on both, the
CPU side verified against references elsewhere, per-dtype tolerances): SyncBatchNorm with Python
communicators, LocalResponseNorm, BatchInstanceNorm, SwitchableNorm, MeanOnlyBatchNorm, the channel
norms' eval backward, running statistics, 2-D inputs, float32 parameters with half inputs, strided
inputs, and bitwise run-to-run determinism. Skipped where normkit has no usable CUDA device or torch
has no CUDA (tests/run_gpu.sh runs them on a GPU machine)."""

from __future__ import annotations

import math

import normkit
import normkit.torch as nt
import pytest
import torch
from test_cuda import DTYPES, TOL, _close, _run

pytestmark = pytest.mark.skipif(
    not (normkit.cuda_available() and torch.cuda.is_available()), reason="needs a CUDA device"
)

HALF = [torch.float16, torch.bfloat16]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---- helpers -----------------------------------------------------------------------------------------


def _near(got, want, dtype, what=""):
    """GPU against CPU: test_cuda.py's tolerances, the absolute one scaled by the largest value (sums
    over many terms round against that, not against each element)."""
    assert (got is None) == (want is None), what
    if want is None:
        return
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.shape, want.shape, got.dtype, want.dtype)
    got, want = got.detach().cpu().double(), want.detach().cpu().double()
    scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
    tol = TOL[dtype]
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * scale, equal_nan=True, msg=lambda m: f"{what}: {m}")


def _on(device, fn, inputs, buffers, dy, view):
    """fn(view(x), *params, *buffers) on `device` with fresh copies; returns y, the gradients of x and the
    params, and the buffers afterwards (running statistics are updated in place)."""
    leaves = [t.detach().to(device).clone().requires_grad_() for t in inputs]
    bufs = [b.detach().to(device).clone() for b in buffers]
    y = fn(view(leaves[0]) if view else leaves[0], *leaves[1:], *bufs)
    y.backward(dy.to(device))
    return [y.detach(), *(t.grad for t in leaves), *bufs]


def _matches_cpu(fn, inputs, dtype, buffers=(), view=None, seed=0):
    """fn on the GPU against fn on the CPU: output, every gradient and the buffers. `view` makes x's
    view on each device from the x given (strided inputs: a copy to the GPU would be compact)."""
    x = view(inputs[0]) if view else inputs[0]
    dy = torch.randn(x.shape, generator=_gen(seed + 1000)).to(dtype)
    cpu = _on("cpu", fn, inputs, buffers, dy, view)
    gpu = _on("cuda", fn, inputs, buffers, dy, view)
    names = ["y", "dx", *(f"dparam{i}" for i in range(1, len(inputs))), *(f"buffer{i}" for i in range(len(buffers)))]
    for name, g, c in zip(names, gpu, cpu):
        _near(g, c, dtype, name)
    return gpu


def _x(shape, dtype, seed=0, channels_last=False, scale=3.0, shift=2.0):
    x = (torch.randn(shape, generator=_gen(seed)) * scale + shift).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    return x


def _affine(C, dtype, seed=1):
    g = _gen(seed)
    return (torch.rand(C, generator=g) + 0.5).to(dtype), (torch.randn(C, generator=g) * 0.5).to(dtype)


def _running(C, dtype, seed=2):
    g = _gen(seed)
    return (torch.randn(C, generator=g) * 0.3).to(dtype), (torch.rand(C, generator=g) + 0.5).to(dtype)


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


# ---- LocalResponseNorm -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("size", [1, 3, 5, 12])
def test_local_response_norm_matches_cpu(size, channels_last, dtype):
    """forward_kernel, terms_kernel and dx_kernel (size 12 is wider than the 10 channels)."""
    x = _x((3, 10, 6, 5), dtype, channels_last=channels_last)
    y = _matches_cpu(lambda x: nt.functional.local_response_norm(x, size, 1e-2, 0.75, 2.0), [x], dtype)[0]
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(4, 7, 9), (2, 6, 3, 4, 5), (3, 1, 8)])
def test_local_response_norm_other_ranks_match_cpu(shape, dtype):
    _matches_cpu(lambda x: nt.functional.local_response_norm(x, 4, 1e-3, 0.5, 1.0), [_x(shape, dtype)], dtype)


# ---- BatchInstanceNorm, SwitchableNorm ---------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_instance_norm_matches_cpu(dtype, channels_last, training):
    """forward_kernel and backward_kernel with data (batch statistics or running ones), running stats."""
    x = _x((6, 8, 5, 7), dtype, channels_last=channels_last)
    rho = (torch.rand(8, generator=_gen(3)) * 0.8 + 0.1).to(dtype)  # inside (0, 1): no clipping
    w, b = _affine(8, dtype)

    def fn(x, rho, w, b, rm, rv):
        return nt.functional.batch_instance_norm(x, rho, rm, rv, w, b, training, 0.1, 1e-5)

    y = _matches_cpu(fn, [x, rho, w, b], dtype, buffers=_running(8, dtype))[0]
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_batch_instance_norm_many_planes_matches_cpu():
    """Many small planes per channel (the pairwise merge of plane moments over n)."""
    for shape in [(4099, 6, 2), (1500, 4, 3, 1)]:
        # Planes far from zero (the merge must not cancel) whose values spread by ~1 around each plane's
        # own mean: a plane of 2-3 random values that happen to lie within 0.01 of each other has an
        # instance rstd near 100, which multiplies the last-ulp difference of its float32 mean (summed
        # in another order on each device) into a 1e-3 difference of y: data, not the kernel.
        g = _gen(0)
        n, c, s = shape[0], shape[1], math.prod(shape[2:])
        spread = torch.linspace(-1, 1, s) * (1 + torch.rand(n, c, 1, generator=g))
        spread += 0.1 * torch.randn(n, c, s, generator=g)
        x = (100.0 + torch.randn(n, c, 1, generator=g) + spread).reshape(shape)
        rho, (w, b) = torch.full((shape[1],), 0.5), _affine(shape[1], torch.float32)
        _matches_cpu(lambda x, rho, w, b: nt.functional.batch_instance_norm(x, rho, None, None, w, b, True),
                     [x, rho, w, b], torch.float32)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_switchable_norm_matches_cpu(dtype, channels_last, training):
    """moments, group_stats, apply, plane_sums, group_sums, logits and dx kernels with data."""
    x = _x((5, 8, 6, 7), dtype, channels_last=channels_last)
    g = _gen(4)
    mw, vw = (torch.rand(3, generator=g) * 2 - 1).to(dtype), (torch.rand(3, generator=g) * 2 - 1).to(dtype)
    w, b = _affine(8, dtype)

    def fn(x, mw, vw, w, b, rm, rv):
        return nt.functional.switchable_norm(x, mw, vw, rm, rv, w, b, training, 0.1, 1e-5)

    y = _matches_cpu(fn, [x, mw, vw, w, b], dtype, buffers=_running(8, dtype))[0]
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.parametrize("shape", [(300, 40), (700, 3, 2), (2, 300, 3)])
def test_switchable_norm_many_planes_matches_cpu(shape):
    """Long group sums over n and over c (pairwise on both devices); a 2-D input (one value per plane)."""
    x = _x(shape, torch.float32)
    mw, vw = torch.tensor([0.3, -0.2, 0.1]), torch.tensor([-0.1, 0.2, 0.4])
    w, b = _affine(shape[1], torch.float32)
    _matches_cpu(lambda x, mw, vw, w, b: nt.functional.switchable_norm(x, mw, vw, None, None, w, b, True),
                 [x, mw, vw, w, b], torch.float32)


# ---- MeanOnlyBatchNorm (its channel sums: plane and chunk partials, then pairwise) -------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,channels_last", [
    ((4099, 37), False),       # [N, C]: rows of C in several chunks, a partial tile of channels
    ((3, 5, 2000), False),     # planes longer than a warp's share: a block per plane
    ((6, 7, 9), False),        # short planes: a warp per plane
    ((4, 40, 6, 6), True),     # channels last: rows of C
    ((2, 3, 1), False),        # S == 1
])
@pytest.mark.parametrize("training", [True, False])
def test_mean_only_batch_norm_matches_cpu(shape, channels_last, dtype, training):
    x = _x(shape, dtype, channels_last=channels_last, shift=50.0)
    b = torch.randn(shape[1], generator=_gen(5)).to(dtype)
    rm = (torch.randn(shape[1], generator=_gen(6)) * 10).to(dtype)
    y = _matches_cpu(lambda x, b, rm: nt.functional.mean_only_batch_norm(x, rm, b, training, 0.25), [x, b], dtype,
                     buffers=[rm])[0]
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    if training and (len(shape) == 2 or channels_last or shape[2] == 1):
        # Rows of C: the same chunks, runs and pairwise tree as the CPU's sums of plain additions, so the
        # same batch mean to the bit.
        _, mean_cpu = normkit.functional.mean_only_batch_norm_forward(x, None, None, True)
        _, mean_gpu = normkit.functional.mean_only_batch_norm_forward(x.cuda(), None, None, True)
        torch.testing.assert_close(mean_gpu.cpu(), mean_cpu, rtol=0, atol=0)


def test_mean_only_batch_norm_empty_batch_on_cuda():
    """N * S == 0, as on the CPU: in training an empty output, the running mean kept and a saved mean of
    0; a zero dbias; the running mean in eval."""
    x = torch.zeros(0, 3, device="cuda")
    rm = torch.tensor([1.0, 2.0, 3.0], device="cuda")
    y, mean = normkit.functional.mean_only_batch_norm_forward(x, rm, None, True, 0.5)
    assert y.shape == x.shape
    torch.testing.assert_close(mean.cpu(), torch.zeros(3), rtol=0, atol=0)
    torch.testing.assert_close(rm.cpu(), torch.tensor([1.0, 2.0, 3.0]), rtol=0, atol=0)
    dx, db = normkit.functional.mean_only_batch_norm_backward(x, True)
    assert dx.shape == x.shape
    torch.testing.assert_close(db.cpu(), torch.zeros(3), rtol=0, atol=0)
    rm = torch.tensor([1.0, 2.0, 3.0], device="cuda")
    y, mean = normkit.functional.mean_only_batch_norm_forward(x, rm, None, False)
    assert y.shape == x.shape
    torch.testing.assert_close(mean.cpu(), torch.tensor([1.0, 2.0, 3.0]), rtol=0, atol=0)


# ---- channel norms: eval backward, running statistics, shapes, mixed precision, strides --------------


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", ["batch_eval", "instance_running"])
def test_channel_norm_eval_backward_matches_cpu(layer, dtype, channels_last):
    """dx with statistics that are not the batch's (ncs_dx_kernel / nsc_dx_kernel, batch_stats false):
    BatchNorm in eval, InstanceNorm with use_input_stats=False."""
    x = _x((4, 6, 5, 7), dtype, channels_last=channels_last)
    w, b = _affine(6, dtype)
    if layer == "batch_eval":
        fn = lambda x, w, b, rm, rv: nt.functional.batch_norm(x, rm, rv, w, b, False)  # noqa: E731
    else:
        fn = lambda x, w, b, rm, rv: nt.functional.instance_norm(x, rm, rv, w, b, False)  # noqa: E731
    _matches_cpu(fn, [x, w, b], dtype, buffers=_running(6, dtype))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_instance_norm_running_stats_match_cpu(dtype, channels_last):
    """running_update_kernel with one statistic per (n, c) averaged over n (K = N)."""
    x = _x((5, 6, 4, 3), dtype, channels_last=channels_last)
    w, b = _affine(6, dtype)
    _matches_cpu(lambda x, w, b, rm, rv: nt.functional.instance_norm(x, rm, rv, w, b, True, 0.3), [x, w, b], dtype,
                 buffers=_running(6, dtype))


@pytest.mark.parametrize("shape, dtype", [*((s, d) for s in [(33, 12), (3000, 24)] for d in DTYPES),
                                          ((1025, 2, 2049), torch.float32)])  # (the large shape once)
def test_batch_norm_shapes_match_cpu(shape, dtype):
    """2-D [N, C] input (S == 1: rows of C); N > 1024 (merges and coefficients of more than 1024 terms);
    N > 1024 with S > 2048 (block teams, several chunks per plane)."""
    x = _x(shape, dtype)
    w, b = _affine(shape[1], dtype)
    _matches_cpu(lambda x, w, b, rm, rv: nt.functional.batch_norm(x, rm, rv, w, b, True), [x, w, b], dtype,
                 buffers=_running(shape[1], dtype))


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("layer", ["batch", "batch_eval", "instance", "group", "layer", "rms"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_float32_parameters_with_half_inputs_match_cpu(layer, dtype, channels_last):
    """The W = float32 instantiations: float16/bfloat16 x with float32 weight, bias and running stats."""
    x = _x((4, 8, 5, 6), dtype, channels_last=channels_last)
    w, b = _affine(8, torch.float32)
    rm, rv = _running(8, torch.float32)
    fns = {
        "batch": lambda x, w, b, rm, rv: nt.functional.batch_norm(x, rm, rv, w, b, True),
        "batch_eval": lambda x, w, b, rm, rv: nt.functional.batch_norm(x, rm, rv, w, b, False),
        "instance": lambda x, w, b, rm, rv: nt.functional.instance_norm(x, rm, rv, w, b, True),
        "group": lambda x, w, b, rm, rv: nt.functional.group_norm(x, 4, w, b),
        "layer": lambda x, w, b, rm, rv: nt.functional.layer_norm(x, (6,), w[:6], b[:6]),
        "rms": lambda x, w, b, rm, rv: nt.functional.rms_norm(x, (6,), w[:6]),
    }
    gpu = _matches_cpu(fns[layer], [x, w, b], dtype, buffers=[rm, rv])
    assert gpu[0].dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", ["batch_slice", "group_permuted", "instance_transposed", "layer_rows",
                                  "layer_inner", "rms_transposed"])
def test_strided_inputs_match_cpu(case, dtype):
    """Non-compact x on the GPU (copied or gathered by the core) against the same view on the CPU."""
    if case.startswith("layer") or case.startswith("rms"):
        base = _x((12, 10, 16), dtype)
        view = {"layer_rows": lambda t: t[::2], "layer_inner": lambda t: t[..., ::2],
                "rms_transposed": lambda t: t.transpose(0, 1)}[case]
        C = view(base).shape[-1]
        w, b = _affine(C, dtype)
        if case == "rms_transposed":
            fn = lambda x, w, b: nt.functional.rms_norm(x, (C,), w)  # noqa: E731
        else:
            fn = lambda x, w, b: nt.functional.layer_norm(x, (C,), w, b)  # noqa: E731
    else:
        base = _x((4, 8, 10, 6), dtype)
        view = {"batch_slice": lambda t: t[:, :, ::2], "group_permuted": lambda t: t.permute(0, 1, 3, 2),
                "instance_transposed": lambda t: t.transpose(0, 2).transpose(1, 2)[:, :8]}[case]
        C = view(base).shape[1]
        w, b = _affine(C, dtype)
        fn = {"batch_slice": lambda x, w, b: nt.functional.batch_norm(x, None, None, w, b, True),
              "group_permuted": lambda x, w, b: nt.functional.group_norm(x, 4, w, b),
              "instance_transposed": lambda x, w, b: nt.functional.instance_norm(x, None, None, w, b)}[case]
    x = view(base)
    assert not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))
    _matches_cpu(fn, [base, w, b], dtype, view=view)


# ---- determinism -------------------------------------------------------------------------------------


def _twice(fn, inputs):
    """fn's output and gradients, computed twice on the GPU from the same inputs."""
    runs = []
    for _ in range(2):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        y = fn(*leaves)
        (y.float() * torch.linspace(-1, 1, y.numel(), device="cuda").reshape(y.shape)).sum().backward()
        runs.append([y.detach(), *(t.grad for t in leaves)])
    return runs


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("layer", ["batch", "instance", "group", "batch_instance", "switchable", "mean_only",
                                   "local_response"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_results_are_bitwise_reproducible(layer, dtype, channels_last):
    """The same inputs give the same bits, run after run (no atomics; splits fixed by the shape), on
    shapes that take the multi-chunk and block-team paths of the channel norms."""
    C = 32
    x = _x((8, C, 48, 48), dtype, channels_last=channels_last).cuda()
    w, b = (t.cuda() for t in _affine(C, dtype))
    if layer == "batch":
        fn = lambda x, w, b: nt.functional.batch_norm(x, None, None, w, b, True)  # noqa: E731
    elif layer == "instance":
        fn = lambda x, w, b: nt.functional.instance_norm(x, None, None, w, b)  # noqa: E731
    elif layer == "group":
        fn = lambda x, w, b: nt.functional.group_norm(x, 8, w, b)  # noqa: E731
    elif layer == "batch_instance":
        rho = torch.full((C,), 0.5, dtype=dtype, device="cuda")
        fn = lambda x, w, b: nt.functional.batch_instance_norm(x, rho, None, None, w, b, True)  # noqa: E731
    elif layer == "switchable":
        mw = torch.tensor([0.2, -0.1, 0.3], dtype=dtype, device="cuda")
        fn = lambda x, w, b: nt.functional.switchable_norm(x, mw, -mw, None, None, w, b, True)  # noqa: E731
    elif layer == "mean_only":
        fn = lambda x, w, b: nt.functional.mean_only_batch_norm(x, None, b, True) * w.reshape(-1, 1, 1)  # noqa: E731
    else:
        fn = lambda x, w, b: nt.functional.local_response_norm(x, 5) * w.reshape(-1, 1, 1) + b.reshape(-1, 1, 1)  # noqa: E731
    first, second = _twice(fn, [x, w, b])
    for a, c in zip(first, second):
        assert torch.equal(a, c)
