"""InstanceNorm's output is channels first whatever x's memory format (as torch's). For a compact
channels-last x the CPU kernel transposes chunks of samples (a few MiB per thread) into a buffer that
stays in cache and normalizes each chunk channels first from there (cpu/channel_norm.cpp,
forward_transposed; the tiles in cpu/rows_to_planes.h); its backward, channels last like x, transposes
the channels-first dy the same way (backward_transposed). Per-sample statistics and gradient sums lie
within a sample, so the chunks change no arithmetic: outputs, statistics and gradients must equal, bit
for bit, those of the same data handed over in the kernel's layout, for any thread count (the chunk
size follows it). The shapes put samples below and past the chunk size (several chunks with a shorter
last one), tasks of 256 rows or columns with a partial tile at the end, and channel counts below, at and
past a tile."""

import normkit
import normkit.functional as _F
import normkit.torch as nkt
import pytest
import torch

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}
SHAPES = [(5, 64, 37, 41), (7, 3, 300, 97), (3, 33, 129, 65), (7, 48, 90, 91)]


def _bits(t):
    return t.contiguous().view(_BITS[t.dtype.itemsize])


def _twin(c, dtype, seed):
    m = nkt.InstanceNorm2d(c, affine=True, track_running_stats=True).to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.weight.copy_(torch.rand(c, generator=g) + 0.5)
        m.bias.copy_(torch.randn(c, generator=g))
    return m


@pytest.mark.parametrize("threads", (1, 2))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_chunks_equal_the_channels_first_input(shape, dtype, threads):
    normkit.set_num_threads(threads)
    g = torch.Generator().manual_seed(shape[1])
    x = (torch.randn(shape, generator=g) * 3 + 7).to(dtype)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    assert not x_cl.is_contiguous()
    outs = []
    for data in (x, x_cl):
        m = _twin(shape[1], dtype, seed=1)
        train_y = m(data)
        m.eval()
        eval_y = m(data)
        outs.append((train_y, eval_y, m.running_mean, m.running_var))
    for a, b in zip(*outs):
        assert b.is_contiguous()
        assert torch.equal(_bits(a), _bits(b))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_saved_statistics_equal_the_channels_first_input(dtype):
    """The saved mean and rstd (what the backward reads) come from the chunks too."""
    shape = SHAPES[-1]
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(shape, generator=g) * 2 - 1).to(dtype)
    w, b = torch.rand(shape[1], generator=g).to(dtype), torch.randn(shape[1], generator=g).to(dtype)
    outs = [_F._instance_norm_forward(data, None, None, w, b, True, 0.1, 1e-5, channels_first=True)
            for data in (x, x.contiguous(memory_format=torch.channels_last))]
    for a, b in zip(*outs):
        assert torch.equal(_bits(a), _bits(b))


@pytest.mark.parametrize("threads", (1, 2))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("use_input_stats", (True, False))
def test_backward_chunks_equal_the_channels_last_gradient(shape, dtype, threads, use_input_stats):
    """The backward of a channels-last x works channels last: a channels-first dy (the gradient of the
    channels-first y) against the same dy handed over channels last."""
    normkit.set_num_threads(threads)
    c = shape[1]
    g = torch.Generator().manual_seed(c + 1)
    x = (torch.randn(shape, generator=g) * 2 - 1).to(dtype).contiguous(memory_format=torch.channels_last)
    dy = torch.randn(shape, generator=g).to(dtype)
    w, b = (torch.rand(c, generator=g) + 0.5).to(dtype), torch.randn(c, generator=g).to(dtype)
    if use_input_stats:
        _, mean, rstd = _F.instance_norm_forward(x, None, None, w, b, True, 0.1, 1e-5)
    else:
        mean = torch.randn(c, generator=g).float()
        rstd = (torch.rand(c, generator=g) + 0.5).float()
    if dtype == torch.float64:
        mean, rstd = mean.double(), rstd.double()
    grads = [_F.instance_norm_backward(d, x, mean, rstd, w, use_input_stats)
             for d in (dy, dy.contiguous(memory_format=torch.channels_last))]
    for a, b in zip(*grads):
        assert torch.equal(_bits(a), _bits(b))
    assert grads[0][0].is_contiguous(memory_format=torch.channels_last)
