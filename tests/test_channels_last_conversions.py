"""The channel norms convert float16 and bfloat16 a whole vector at a time: channels last in the maps
of cpu/channel_map.h, channels first (float16) in map_run, both through cpu/vector_convert.h, with
the bit operations of normkit/dtype.h or, float16 in the AVX2 and AVX-512 builds, the hardware's
conversion, and bfloat16 in the AVX-512 build in even/odd pairs of vectors (channels first, and
channels last with a multiple of 32 channels). BatchNorm in eval mode with mean 0, variance 1 and eps 0 computes
y = (x - 0) * 1 * w + 0, exact in float32 for the weights below: every value of the type, converted
to float and back, must match torch's float32 computation rounded to the type bit for bit. w = 1:
each value comes back (-0 as +0); w = 0.5: the halved subnormals round, ties to even; w = 1.5: the
normal values with an odd last mantissa bit land on exact ties (ties to even must round them up,
away from their odd neighbour), and the largest overflow to infinity. A bfloat16 NaN stays the same
NaN, quieted (the scalar rule: its high half with the quiet bit set)."""

import normkit.torch.functional as nkF
import pytest
import torch

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


# [N, C, H, W] holding the 65536 values: 16 channels of short planes (one loop over the planes),
# 32 channels (whole pairs of bfloat16 vectors per channels-last row), planes of 2048 values (a map
# per plane run).
SHAPES = ((64, 16, 8, 8), (32, 32, 8, 8), (2, 16, 32, 64))


def every_value(dtype, channels_last, shape):
    """All 65536 bit patterns, as a tensor of `shape` [N, C, H, W] in memory order, channels last or first."""
    bits = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    n, c, h, w = shape
    if not channels_last:
        return bits.view(dtype).reshape(shape)
    x = bits.view(dtype).reshape(n, h, w, c)  # N, H, W, C in memory
    return x.permute(0, 3, 1, 2)  # a channels-last view [N, C, H, W]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels_last", (True, False))
@pytest.mark.parametrize("w", (1.0, 0.5, 1.5))
@pytest.mark.parametrize("name", DTYPES)
def test_every_value_converts_as_the_scalar_rounding(name, w, channels_last, shape):
    dtype = DTYPES[name]
    x = every_value(dtype, channels_last, shape)
    assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
    c = x.shape[1]
    ones = torch.ones(c)
    y = nkF.batch_norm(x, torch.zeros(c), ones, ones * w, torch.zeros(c), training=False, eps=0.0)
    want = ((x.float() - 0.0) * 1.0 * w + 0.0).to(dtype)
    nan = torch.isnan(x)
    assert torch.equal(torch.isnan(y), nan)
    assert torch.equal(y[~nan].view(torch.int16), want[~nan].view(torch.int16))
    if dtype == torch.bfloat16:
        quiet = x[nan].view(torch.int16) | 0x40
        assert torch.equal(y[nan].view(torch.int16), quiet)
