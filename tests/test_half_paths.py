"""float16 and bfloat16 through BatchNorm, InstanceNorm, GroupNorm, LayerNorm and RMSNorm on the CPU:
the result must be the float32 result on the same values, rounded once to the half type, bit for bit.

Why it must hold: half types compute in float32, and the CPU kernels are compiled without
floating-point contraction (-ffp-contract=off), so a half-type loop performs exactly the float32
loop's operations on the same values, whatever the compiler and its inlining. Where the kernels are
built with F16C (the AVX2 and AVX-512 builds), float16 converts by the hardware
(cpu/vector_convert.h), and the reductions widen each block of values into a float buffer first and
then run the float32 code on it: the same terms in the same order. A conversion that rounds wrongly,
a lane order mixed up between the two halves of an AVX2 vector, a widened block that misses values,
or a product fused into a sum in one loop and not in its twin (GCC 13 did so under contraction)
fails here."""

import zlib

import normkit.torch.functional as nkF
import pytest
import torch

SHAPES = [(4, 6, 7, 9), (2, 40, 3, 5), (3, 16, 33, 17), (2, 8, 64, 64), (1, 3, 1, 70)]


def run(op, x, dy, w, b, train):
    x = x.clone().requires_grad_()
    wg, bg = w.clone().requires_grad_(), b.clone().requires_grad_()
    c = x.shape[1]
    if op == "batch_norm":
        rm, rv = torch.linspace(-1, 1, c), torch.linspace(0.5, 2, c)
        y = nkF.batch_norm(x, rm, rv, wg, bg, training=train)
    elif op == "instance_norm":
        y = nkF.instance_norm(x, weight=wg, bias=bg)
    else:
        y = nkF.group_norm(x, 2 if c % 2 == 0 else 1, wg, bg)
    y.backward(dy)
    return y.detach(), x.grad, wg.grad, bg.grad


def same_bits(a, b):
    return torch.equal(a.view(torch.int16), b.view(torch.int16))


def seed_of(*case):
    # (hash() of a string changes from run to run: a failure must be reproducible.)
    return zlib.crc32(repr(case).encode())


HALF = (torch.float16, torch.bfloat16)
HALF_IDS = ("float16", "bfloat16")


@pytest.mark.parametrize("half", HALF, ids=HALF_IDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels_last", (False, True))
@pytest.mark.parametrize("op,train", [("batch_norm", True), ("batch_norm", False), ("instance_norm", True),
                                      ("group_norm", True)])
def test_half_is_float32_rounded_once(op, train, shape, channels_last, half):
    g = torch.Generator().manual_seed(seed_of(op, train, shape, channels_last, half))
    x = (torch.randn(shape, generator=g) * 2 + 3).to(half)
    dy = torch.randn(shape, generator=g).to(half)
    if channels_last:
        x, dy = (t.contiguous(memory_format=torch.channels_last) for t in (x, dy))
    c = shape[1]
    w, b = torch.randn(c, generator=g), torch.randn(c, generator=g)
    y16, dx16, dw16, db16 = run(op, x, dy, w, b, train)
    y32, dx32, dw32, db32 = run(op, x.float(), dy.float(), w, b, train)
    assert same_bits(y16, y32.to(half))
    assert same_bits(dx16, dx32.to(half))
    # (Parameter gradients are float32 sums of the same terms.)
    assert torch.equal(dw16, dw32) and torch.equal(db16, db32)


@pytest.mark.parametrize("half", HALF, ids=HALF_IDS)
def test_half_streamed_output_is_float32_rounded_once(half):
    """An output past the streaming threshold (24 MB) goes through a cache-resident stage."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn((2, 64, 320, 320), generator=g).to(half)
    w, b = torch.randn(64, generator=g), torch.randn(64, generator=g)
    y16 = nkF.batch_norm(x, None, None, w, b, training=True)
    y32 = nkF.batch_norm(x.float(), None, None, w, b, training=True)
    assert same_bits(y16, y32.to(half))


ROWS = [(1, 5), (3, 17), (5, 64), (7, 1000), (2, 3000), (3, 4100), (9, 9000)]


def run_row(op, x, dy, w, b):
    x = x.clone().requires_grad_()
    wg = w.clone().requires_grad_()
    n = x.shape[-1]
    if op == "layer_norm":
        bg = b.clone().requires_grad_()
        y = nkF.layer_norm(x, (n,), wg, bg)
    else:
        bg = None
        y = nkF.rms_norm(x, (n,), wg)
    y.backward(dy)
    return y.detach(), x.grad, wg.grad, None if bg is None else bg.grad


@pytest.mark.parametrize("half", HALF, ids=HALF_IDS)
@pytest.mark.parametrize("shape", ROWS)
@pytest.mark.parametrize("op", ("layer_norm", "rms_norm"))
def test_half_rows_are_float32_rounded_once(op, shape, half):
    """Rows of 1..9000 values: vector bodies and tails, several lane blocks of 4096, the grouped
    forward of long rows, rows in pairs and a last single row in the backward."""
    g = torch.Generator().manual_seed(seed_of(op, shape, half))
    x = (torch.randn(shape, generator=g) * 2 + 3).to(half)
    dy = torch.randn(shape, generator=g).to(half)
    w, b = torch.randn(shape[-1], generator=g), torch.randn(shape[-1], generator=g)
    y16, dx16, dw16, db16 = run_row(op, x, dy, w, b)
    y32, dx32, dw32, db32 = run_row(op, x.float(), dy.float(), w, b)
    assert same_bits(y16, y32.to(half))
    assert same_bits(dx16, dx32.to(half))
    assert torch.equal(dw16, dw32)
    assert db16 is None or torch.equal(db16, db32)
