"""float16 through BatchNorm, InstanceNorm, GroupNorm, LayerNorm and RMSNorm on the CPU: the result
must be the float32 result on the same values, rounded once to float16, bit for bit.

Why it must hold: half types compute in float32. Where the kernels are built with F16C (the AVX2 and
AVX-512 builds), float16 converts by the hardware (cpu/vector_convert.h), and the reductions widen
each block of values into a float buffer first and then run the float32 code on it: the same terms
in the same order, so the same statistics and sums. The baseline build converts in software and has
no fused multiply-add, so its float16 and float32 loops round alike too. A conversion that rounds
wrongly, a lane order mixed up between the two halves of an AVX2 vector, or a widened block that
misses values fails here. (bfloat16 has no such promise: its loops are compiled on their own, and
the compiler may fuse a product into a sum differently there.)"""

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


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels_last", (False, True))
@pytest.mark.parametrize("op,train", [("batch_norm", True), ("batch_norm", False), ("instance_norm", True),
                                      ("group_norm", True)])
def test_float16_is_float32_rounded_once(op, train, shape, channels_last):
    g = torch.Generator().manual_seed(hash((op, train, shape, channels_last)) % 2**31)
    x = (torch.randn(shape, generator=g) * 2 + 3).half()
    dy = torch.randn(shape, generator=g).half()
    if channels_last:
        x, dy = (t.contiguous(memory_format=torch.channels_last) for t in (x, dy))
    c = shape[1]
    w, b = torch.randn(c, generator=g), torch.randn(c, generator=g)
    y16, dx16, dw16, db16 = run(op, x, dy, w, b, train)
    y32, dx32, dw32, db32 = run(op, x.float(), dy.float(), w, b, train)
    assert same_bits(y16, y32.half())
    assert same_bits(dx16, dx32.half())
    # (Parameter gradients are float32 sums of the same terms.)
    assert torch.equal(dw16, dw32) and torch.equal(db16, db32)


def test_float16_streamed_output_is_float32_rounded_once():
    """An output past the streaming threshold (24 MB) goes through a cache-resident stage."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn((2, 64, 320, 320), generator=g).half()
    w, b = torch.randn(64, generator=g), torch.randn(64, generator=g)
    y16 = nkF.batch_norm(x, None, None, w, b, training=True)
    y32 = nkF.batch_norm(x.float(), None, None, w, b, training=True)
    assert same_bits(y16, y32.half())


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


@pytest.mark.parametrize("shape", ROWS)
@pytest.mark.parametrize("op", ("layer_norm", "rms_norm"))
def test_float16_rows_are_float32_rounded_once(op, shape):
    """Rows of 1..9000 values: vector bodies and tails, several lane blocks of 4096, the grouped
    forward of long rows, rows in pairs and a last single row in the backward."""
    g = torch.Generator().manual_seed(hash((op, shape)) % 2**31)
    x = (torch.randn(shape, generator=g) * 2 + 3).half()
    dy = torch.randn(shape, generator=g).half()
    w, b = torch.randn(shape[-1], generator=g), torch.randn(shape[-1], generator=g)
    y16, dx16, dw16, db16 = run_row(op, x, dy, w, b)
    y32, dx32, dw32, db32 = run_row(op, x.float(), dy.float(), w, b)
    assert same_bits(y16, y32.half())
    assert same_bits(dx16, dx32.half())
    assert torch.equal(dw16, dw32)
    assert db16 is None or torch.equal(db16, db32)
