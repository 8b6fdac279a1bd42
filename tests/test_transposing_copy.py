"""An input in another memory order than the kernel's is copied into that order once (ops/common.cpp).
A view whose last dim is strided while another dim has unit stride (channels-last data read
channels-first, and the reverse) is copied in tiles (cpu/strided_copy.cpp): a cache line of the
output's last dim (8 float64, 16 float32, 32 half values) by up to 256 values along the unit-stride dim,
whole lines written at once, streamed where aligned. The sizes below put full and partial tiles,
aligned and unaligned lines, and more than one run of 256 on both sides of the transposition.
(A compact channels-last x under InstanceNorm's channels-first output is the exception: the CPU
kernel transposes it itself, a chunk of samples at a time; see test_instance_norm_transposition.py.)

A copy changes no value, so the results must equal, bit for bit, those of the same data handed over
already in the kernel's order (which takes no copy)."""

import normkit.torch.functional as nkF
import pytest
import torch

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
CL = torch.channels_last


def _data(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 3 + 1).to(dtype)


_BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _same_bits(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype
    bits = _BITS[a.dtype.itemsize]
    assert torch.equal(a.contiguous().view(bits), b.contiguous().view(bits))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("c", (5, 300))
@pytest.mark.parametrize("w", (7, 8, 16, 32, 33))
def test_channels_last_input_to_channels_first_kernel(dtype, c, w):
    """InstanceNorm returns a channels-first output, as torch's: the core normalizes channels first,
    transposing a compact channels-last x in register tiles (cpu/rows_to_planes.h): full and partial
    tiles of channels and of rows, aligned and unaligned planes."""
    x = _data((2, c, 3, w), dtype, seed=c * 100 + w)
    weight, bias = _data((c,), dtype, 1), _data((c,), dtype, 2)
    from_cl = nkF.instance_norm(x.contiguous(memory_format=CL), weight=weight, bias=bias)
    from_cf = nkF.instance_norm(x.contiguous(), weight=weight, bias=bias)
    assert from_cl.is_contiguous()
    _same_bits(from_cl, from_cf)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("c", (8, 16, 32, 33, 40))
@pytest.mark.parametrize("w", (5, 300))
def test_channels_first_gradient_to_channels_last_kernel(dtype, c, w):
    """BatchNorm's backward works in x's layout: a channels-first dy for a channels-last x is copied
    channels-last through the tiled copy ([N, H, W, C] planes W x C per (n, h))."""
    x = _data((2, c, 3, w), dtype, seed=c * 1000 + w).contiguous(memory_format=CL).requires_grad_(True)
    weight = _data((c,), dtype, 3).requires_grad_(True)
    bias = _data((c,), dtype, 4).requires_grad_(True)
    dy = _data((2, c, 3, w), dtype, seed=7)
    grads = []
    for dy_layout in (torch.contiguous_format, CL):
        y = nkF.batch_norm(x, None, None, weight, bias, training=True)
        grads.append(torch.autograd.grad(y, (x, weight, bias), dy.contiguous(memory_format=dy_layout)))
    for a, b in zip(*grads):
        _same_bits(a, b)


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64), ids=str)
def test_channels_last_3d_input(dtype):
    """5-D: [N, C, D, H, W] stored NDHWC, the planes C x W per (n, d, h)."""
    x = _data((2, 20, 3, 4, 17), dtype, seed=5)
    from_cl = nkF.instance_norm(x.contiguous(memory_format=torch.channels_last_3d))
    _same_bits(from_cl, nkF.instance_norm(x))


VIEWS = {
    # (Dims merge only where their strides line up: here H and W do not, every other row being skipped.)
    "every other row": lambda x: x.contiguous(memory_format=CL)[:, :, ::2, :],
    "flipped width": lambda x: x.contiguous(memory_format=CL).flip(3),
    "broadcast width": lambda x: x[:, :, :, :1].contiguous(memory_format=CL).expand(-1, -1, -1, 40),
    "size-1 height": lambda x: x[:, :, :1, :].contiguous(memory_format=CL),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("view", VIEWS)
def test_views_that_merge_no_or_some_dims(dtype, view):
    """Before choosing its tiles the copy merges the dims laid out as one (H and W of a channels-last
    tensor) and drops size-1 dims; sliced, flipped and broadcast views must not merge wrongly."""
    x = VIEWS[view](_data((2, 40, 6, 40), dtype, seed=11))
    _same_bits(nkF.instance_norm(x), nkF.instance_norm(x.contiguous()))
