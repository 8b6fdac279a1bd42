"""CUDA kernels against the CPU kernels (which the rest of the suite checks against torch and float64
references). Skipped where normkit has no usable CUDA device or torch has no CUDA."""

import normkit
import normkit.torch as nt
import pytest
import torch

pytestmark = pytest.mark.skipif(
    not (normkit.cuda_available() and torch.cuda.is_available()), reason="needs a CUDA device"
)

# Both sides accumulate in float32 (float64 for float64) but in different orders.
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}
DTYPES = list(TOL)


def _close(got, want, dtype):
    tol = TOL[dtype]
    torch.testing.assert_close(got.cpu().double(), want.cpu().double(), atol=tol, rtol=tol)


def _run(fn, x, params, dy):
    """Forward and backward of fn on copies of x and params; returns (y, grads)."""
    leaves = [t.detach().clone().requires_grad_() for t in [x, *params]]
    y = fn(*leaves)
    y.backward(dy.to(y.device))
    return y.detach(), [t.grad for t in leaves]


def _compare(fn, x, params, dtype):
    dy = torch.randn(x.shape, dtype=dtype)
    y_cpu, g_cpu = _run(fn, x, params, dy)
    y_gpu, g_gpu = _run(fn, x.cuda(), [p.cuda() for p in params], dy.cuda())
    _close(y_gpu, y_cpu, dtype)
    for a, b in zip(g_gpu, g_cpu):
        _close(a, b, dtype)
    return y_gpu


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 1), (33, 100), (64, 1024), (9, 1500), (5, 3, 4097), (2, 8192), (3, 9000)])
def test_layer_norm_matches_cpu(shape, dtype):
    x = torch.randn(shape, dtype=dtype) * 2 + 1
    w, b = torch.randn(shape[-1], dtype=dtype), torch.randn(shape[-1], dtype=dtype)
    _compare(lambda x, w, b: nt.functional.layer_norm(x, shape[-1:], w, b), x, [w, b], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 1), (33, 100), (64, 1024), (9, 1500), (2, 8192), (3, 9000)])
def test_rms_norm_matches_cpu(shape, dtype):
    x = torch.randn(shape, dtype=dtype)
    w = torch.randn(shape[-1], dtype=dtype)
    _compare(lambda x, w: nt.functional.rms_norm(x, shape[-1:], w), x, [w], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", [64, 1000, 1024, 4096])
@pytest.mark.parametrize("op", ["layer", "rms"])
def test_row_norms_give_the_same_bits_on_unaligned_rows(op, cols, dtype):
    """Rows that fit in registers are read as 16-byte vectors where every row starts aligned, else
    element by element with the same columns per thread and order of sums: the same bits either way.
    Here x starts one element past an aligned address, which takes the element-by-element form."""
    rows = 37
    buf = torch.randn(rows * cols + 1, dtype=dtype, device="cuda")
    unaligned = buf[1:].view(rows, cols)
    aligned = unaligned.clone()
    assert unaligned.data_ptr() % 16 and aligned.data_ptr() % 16 == 0
    params = [torch.randn(cols, dtype=dtype, device="cuda") for _ in range(2 if op == "layer" else 1)]
    dy = torch.randn(rows, cols, dtype=dtype, device="cuda")
    if op == "layer":
        fn = lambda x, w, b: nt.functional.layer_norm(x, (cols,), w, b)  # noqa: E731
    else:
        fn = lambda x, w: nt.functional.rms_norm(x, (cols,), w)  # noqa: E731
    y_a, g_a = _run(fn, aligned, params, dy)
    leaves = [t.detach().clone().requires_grad_() for t in params]
    x_u = unaligned.detach().requires_grad_()  # the view itself, so the core sees the odd address
    y_u = fn(x_u, *leaves)
    y_u.backward(dy)
    assert torch.equal(y_u, y_a)
    for got, want in zip([x_u.grad, *(t.grad for t in leaves)], g_a):
        assert torch.equal(got, want)


def test_layer_norm_stable_variance():
    x = (torch.randn(4, 4096, dtype=torch.float64) * 0.1 + 1e4).float()
    _, _, rstd = normkit.functional.layer_norm_forward(x.cuda(), 4096)
    var = 1 / rstd.double().cpu() ** 2 - 1e-5
    want = x.double().var(-1, unbiased=False)
    torch.testing.assert_close(var, want, rtol=1e-4, atol=0)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", ["batch", "instance", "group"])
def test_channel_norms_match_cpu(layer, dtype, channels_last):
    x = torch.randn(4, 16, 9, 7, dtype=dtype) * 3 + 2
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    w, b = torch.randn(16, dtype=dtype), torch.randn(16, dtype=dtype)
    if layer == "batch":
        fn = lambda x, w, b: nt.functional.batch_norm(x, None, None, w, b, True)  # noqa: E731
    elif layer == "instance":
        fn = lambda x, w, b: nt.functional.instance_norm(x, None, None, w, b)  # noqa: E731
    else:
        fn = lambda x, w, b: nt.functional.group_norm(x, 4, w, b)  # noqa: E731
    y = _compare(fn, x, [w, b], dtype)
    # torch.nn.functional.instance_norm returns a contiguous output whatever the input's format (so do
    # the twins); batch and group norm keep channels-last.
    keeps_format = channels_last and layer != "instance"
    assert y.is_contiguous(memory_format=torch.channels_last if keeps_format else torch.contiguous_format)


def test_batch_norm_running_stats_and_eval_match_cpu():
    cpu, gpu = nt.BatchNorm2d(8), nt.BatchNorm2d(8).cuda()
    for _ in range(3):
        x = torch.randn(5, 8, 6, 6) * 2 + 1
        cpu(x)
        gpu(x.cuda())
    _close(gpu.running_mean, cpu.running_mean, torch.float32)
    _close(gpu.running_var, cpu.running_var, torch.float32)
    cpu.eval(), gpu.eval()
    x = torch.randn(2, 8, 3, 3)
    _close(gpu(x.cuda()), cpu(x), torch.float32)


def test_cuda_results_are_deterministic():
    x = torch.randn(512, 1024, device="cuda", requires_grad=True)
    w = torch.randn(1024, device="cuda", requires_grad=True)
    outs = []
    for _ in range(2):
        x.grad = w.grad = None
        y = nt.functional.layer_norm(x, (1024,), w)
        y.square().sum().backward()
        outs.append((y.detach().clone(), x.grad.clone(), w.grad.clone()))
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_mixing_cpu_and_cuda_is_a_type_error():
    x = torch.randn(4, 8, device="cuda")
    with pytest.raises(TypeError, match="weight: expected device cuda:0"):
        normkit.functional.layer_norm(x, 8, torch.ones(8))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_sync_batch_norm_matches_cpu(dtype, channels_last):
    """SyncBatchNorm's CUDA steps (local moments, payload, global statistics, dx coefficients) against
    the CPU path, one process; the payload stays on the device (no host synchronisation)."""
    from normkit.distributed import LocalCommunicator

    comm = LocalCommunicator()
    x = (torch.randn(6, 5, 7, 3) * 3 + 50).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w, b = torch.rand(5, dtype=dtype) + 0.5, torch.randn(5, dtype=dtype)
    rm, rv = torch.zeros(5, dtype=dtype), torch.ones(5, dtype=dtype)
    rm_gpu, rv_gpu = rm.cuda(), rv.cuda()

    def fn_cpu(x, w, b):
        return nt.functional.sync_batch_norm(x, rm, rv, w, b, 0.1, 1e-5, comm)

    def fn_gpu(x, w, b):
        return nt.functional.sync_batch_norm(x, rm_gpu, rv_gpu, w, b, 0.1, 1e-5, comm)

    dy = torch.randn(x.shape, dtype=dtype)
    y_cpu, g_cpu = _run(fn_cpu, x, [w, b], dy)
    y_gpu, g_gpu = _run(fn_gpu, x.cuda(), [w.cuda(), b.cuda()], dy.cuda())
    _close(y_gpu, y_cpu, dtype)
    for a, c in zip(g_gpu, g_cpu):
        _close(a, c, dtype)
    _close(rm_gpu, rm, dtype)
    _close(rv_gpu, rv, dtype)


def test_sync_batch_norm_global_count_error_on_cuda():
    from normkit.distributed import LocalCommunicator

    with pytest.raises(ValueError, match="more than 1 value per channel"):
        normkit.functional.sync_batch_norm_forward(torch.ones(1, 3, device="cuda"), comm=LocalCommunicator())


def test_sync_batch_norm_failing_global_check_leaves_caller_buffers_untouched_on_cuda():
    """As the CPU test in test_sync_batch_norm_local.py: the local phase writes nothing of the caller's."""
    from normkit import _core
    from normkit._arrays import to_core
    from normkit.distributed import LocalCommunicator

    x = torch.full((1, 3), 2.0, device="cuda")
    bufs = [torch.full(s, v, device="cuda") for s, v in (((3,), 0.5), ((3,), 3.0), ((1, 3), 7.0), ((3,), 9.0),
                                                         ((3,), 11.0))]
    before = [b.clone() for b in bufs]
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        _core.sync_batch_norm_forward(to_core(x), to_core(bufs[0]), to_core(bufs[1]), None, None, 0.1, 1e-5,
                                      LocalCommunicator(), None, to_core(bufs[2]), to_core(bufs[3]),
                                      to_core(bufs[4]), torch.cuda.current_stream().cuda_stream)
    for got, want in zip(bufs, before):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("layer", ["batch", "group"])
def test_channel_norm_stable_variance(layer, channels_last):
    """float32 statistics with mean 1e4 and std 0.1: variance within 1e-4 of float64 (the CPU's
    shifted moments give ~1e-6; unshifted ones ~1e-4 to 1e-3)."""
    x = (torch.randn(8, 16, 32, 32, dtype=torch.float64) * 0.1 + 1e4).float()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xg = x.cuda()
    if layer == "batch":
        _, _, rstd = normkit.functional.batch_norm_forward(xg, None, None, training=True)
        want = x.double().transpose(0, 1).reshape(16, -1).var(-1, unbiased=False)
    else:
        _, _, rstd = normkit.functional.group_norm_forward(xg, 4)
        want = x.double().reshape(8, 4, -1).var(-1, unbiased=False).reshape(-1)
    var = 1 / rstd.double().cpu().reshape(-1) ** 2 - 1e-5
    torch.testing.assert_close(var, want, rtol=1e-4, atol=0)


@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 3, 0)])
def test_empty_batch_instance_and_switchable_norm_on_cuda(shape):
    """The CPU tests' empty-input contract on the device (ops::fill): saved statistics of nothing
    (mean 0, variance/rstd NaN) and zero gradients."""
    x = torch.zeros(shape, device="cuda")
    ones, zeros = torch.ones(3, device="cuda"), torch.zeros(3, device="cuda")
    _, mb, sb, mi, si = normkit.functional.batch_instance_norm_forward(x, ones, zeros.clone(), ones.clone(), ones,
                                                                       zeros, training=True)
    assert (mb.cpu() == 0).all() and sb.isnan().all() and (mi.cpu() == 0).all() and si.isnan().all()
    for g in normkit.functional.batch_instance_norm_backward(x, x, ones, mb, sb, mi, si, ones, training=True)[1:]:
        torch.testing.assert_close(g.cpu(), torch.zeros(3), rtol=0, atol=0)
    _, saved = normkit.functional.switchable_norm_forward(x, zeros, zeros, zeros.clone(), ones.clone(), ones, zeros,
                                                          training=True)
    n = shape[0]
    assert (saved[: 3 * n].cpu() == 0).all() and saved[3 * n: 6 * n].isnan().all()
    for g in normkit.functional.switchable_norm_backward(x, x, zeros, zeros, saved, ones, training=True)[1:]:
        torch.testing.assert_close(g.cpu(), torch.zeros(3), rtol=0, atol=0)
