"""float -> bfloat16 rounding of the CPU kernels' outputs on the values where roundings differ: ties
(to the even neighbour), subnormals (kept: AVX512-BF16's conversion instructions flush them to zero,
so the kernels that use them must not let them through), NaNs (quieted, keeping their top bits),
infinities and floats that round up to infinity. Each output must be the float32 kernel's output on
the same values, rounded by normkit/dtype.h's formula, bit for bit -- whichever CPU build runs and
whether the rounding is done by AVX512-BF16 instructions or by integer operations (vector pairs
holding a subnormal take the integer rounding on every build)."""

import json
import os
import subprocess
import sys

import normkit
import normkit.functional as F
import numpy as np
import pytest
import torch

F32_MAX = float(np.finfo(np.float32).max)


def f32(bits):
    return float(np.array([bits], dtype=np.uint32).view(np.float32)[0])


# Floats whose rounding to bfloat16 is a corner: ties with an even and an odd lower neighbour, just
# above a tie, subnormals (the smallest, a tie among subnormals, negative), the tie at the largest
# bfloat16 (rounds to infinity), the largest float, NaNs with payloads (one signalling), infinities.
SPECIAL_F32 = [f32(b) for b in (
    0x3F808000, 0x3F818000, 0xBF828000, 0x3F808001, 0x00000001, 0x00018000, 0x807FFFFF, 0x00400000,
    0x7F7F8000, 0x7F7FFFFF, 0xFF7F7FFF, 0x7FC12345, 0x7FA00001, 0xFFE54321, 0x7F800000, 0xFF800000,
    0x00800000, 0x80000000, 0x00000000, 0x3F800000)]


def reference_bf16_bits(y32):
    """bits::float_to_bf16_bits: round to nearest even; a NaN keeps its top 16 bits, made quiet."""
    u = y32.contiguous().view(torch.int32).numpy().view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, (u >> 16) | 0x40, rounded).astype(np.uint16)


def bits(y16):
    return y16.contiguous().view(torch.int16).numpy().view(np.uint16)


def assert_rounded_once(y16, y32):
    expected, got = reference_bf16_bits(y32).ravel(), bits(y16).ravel()
    differ = np.flatnonzero(expected != got)
    assert differ.size == 0, (
        f"{differ.size} of {expected.size} values differ; first: float32 bits "
        f"{y32.contiguous().view(-1).view(torch.int32)[differ[0]].item() & 0xFFFFFFFF:#010x} -> "
        f"{got[differ[0]]:#06x}, expected {expected[differ[0]]:#06x}")


def special_bf16(shape, g):
    """Random bfloat16 values with zeros, infinities, NaNs, subnormals and the extremes among them."""
    x = (torch.randn(shape, generator=g) * 2).to(torch.bfloat16)
    specials = torch.tensor([0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC1, 0x7F81, 0xFFC5, 0x0001, 0x8003, 0x007F,
                             0x0080, 0x7F7F, 0xFF7F, 0x3F80], dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    flat = x.view(-1)
    where = torch.randperm(flat.numel(), generator=g)[: flat.numel() // 4]
    flat[where] = specials[torch.arange(where.numel()) % specials.numel()]
    return x


def per_channel(values, c):
    return torch.tensor([values[i % len(values)] for i in range(c)], dtype=torch.float32)


def coverage(y32):
    """The corners the float32 outputs reach (asserted, so that the test keeps testing them)."""
    u = y32.contiguous().view(-1).view(torch.int32).numpy().view(np.uint32)
    mag = u & 0x7FFFFFFF
    return {
        "tie": bool(np.any(((u & 0xFFFF) == 0x8000) & (mag < 0x7F800000))),
        "subnormal": bool(np.any((mag > 0) & (mag < 0x00800000))),
        "nan": bool(np.any(mag > 0x7F800000)),
        "rounds_to_inf": bool(np.any((mag >= 0x7F7F8000) & (mag < 0x7F800000))),
    }


SHAPES = [(2, 40, 4, 24), (2, 40, 5, 21), (3, 64, 3, 5)]


@pytest.mark.parametrize("channels_last", (False, True))
@pytest.mark.parametrize("shape", SHAPES)
def test_batch_norm_eval_outputs_round_like_float32(shape, channels_last):
    """y = x * weight (running mean 0, variance 1, eps 0) and dx = dy * weight: products of bfloat16
    corner values and float32 corner weights, in planes of whole vector pairs, with tails, and in
    channels-last rows."""
    g = torch.Generator().manual_seed(11)
    x, dy = special_bf16(shape, g), special_bf16(shape, g)
    if channels_last:
        x, dy = (t.contiguous(memory_format=torch.channels_last) for t in (x, dy))
    c = shape[1]
    # (No NaN weight: of two NaN operands, which one's payload a product keeps depends on the operand
    # order the compiler chose, which the float32 and bfloat16 loops need not share.)
    weights = [1 + 2**-8, 1 + 2**-8 + 2**-20, 2.0**-130, 1.5 * 2.0**-127, 3e38, F32_MAX, -1.0, 0.75,
               2.0**-120, *(1 + 0.1 * k for k in range(7))]
    w, b = per_channel(weights, c), torch.zeros(c)
    rm, rv = torch.zeros(c), torch.ones(c)
    outs = {}
    for dt in (torch.bfloat16, torch.float32):
        xs, dys = x.to(dt), dy.to(dt)
        y, sm, sr = F.batch_norm_forward(xs, rm, rv, w, b, training=False, eps=0.0)
        dx, _, _ = F.batch_norm_backward(dys, xs, sm, sr, w, training=False)
        outs[dt] = y, dx
    (y16, dx16), (y32, dx32) = outs[torch.bfloat16], outs[torch.float32]
    assert all(coverage(y32).values()), coverage(y32)
    assert all(coverage(dx32).values()), coverage(dx32)
    assert_rounded_once(y16, y32)
    assert_rounded_once(dx16, dx32)


@pytest.mark.parametrize("n", (1024, 1000, 96))
def test_layer_norm_outputs_round_like_float32(n):
    """Rows of one repeated value: x - mean is 0, so y is the bias, a float32 corner per column
    (rows of whole vector pairs, and rows with tails)."""
    g = torch.Generator().manual_seed(n)
    rows = torch.randn(6, 1, generator=g).to(torch.bfloat16).expand(6, n).contiguous()
    weight = torch.ones(n)
    bias = per_channel([*SPECIAL_F32, *torch.randn(12, generator=g).tolist()], n)
    y16, _, _ = F.layer_norm_forward(rows, (n,), weight, bias)
    y32, _, _ = F.layer_norm_forward(rows.float(), (n,), weight, bias)
    assert all(coverage(y32).values()), coverage(y32)
    assert_rounded_once(y16, y32)


def test_reference_rounding_is_torchs_on_numbers():
    """The reference above is torch's rounding wherever torch keeps the bits (torch makes every NaN
    the one canonical NaN)."""
    y32 = torch.tensor(SPECIAL_F32 + torch.randn(1000, generator=torch.Generator().manual_seed(3)).tolist())
    numbers = ~torch.isnan(y32)
    assert np.array_equal(reference_bf16_bits(y32[numbers]), bits(y32[numbers].to(torch.bfloat16)))


def bf16_instructions_with(mode):
    """build_info()["bf16_instructions"] in a new process with NORMKIT_CPU_BF16=`mode` (read when
    normkit loads)."""
    env = dict(os.environ, NORMKIT_CPU_BF16=mode)
    code = "import json, normkit; print(json.dumps(normkit.build_info()['bf16_instructions']))"
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def test_bf16_instructions_follow_the_processor_and_the_switch():
    """AVX512-BF16 rounding only in the AVX-512 build, and never with NORMKIT_CPU_BF16=emulate
    (test_isa_agreement compares the two roundings on whole layers)."""
    assert bf16_instructions_with("emulate") is False
    if normkit.build_info()["simd"] != "avx512":
        assert bf16_instructions_with("") is False
