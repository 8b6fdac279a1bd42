"""Reductions over many values stay accurate: statistics and gradient sums are merged pairwise
(normkit/pairwise.h) and shifted by a sample mean, so their rounding grows with log2 of the number of
pieces instead of the number itself. Each case failed before (errors 10 to 1000 times torch's, whose
CPU kernels accumulate in float64); the bounds are a few times torch's error on the same inputs."""

import normkit.functional as nkF
import normkit.torch as nt
import pytest
import torch


def max_err(got, want):
    return (got.detach().double() - want).abs().max().item()


def batch_norm_reference(x, dy, dims):
    """float64 y, dweight, dbias of BatchNorm in training (no affine transform in y)."""
    xd, dyd = x.double(), dy.double()
    mean = xd.mean(dims, keepdim=True)
    var = xd.var(dims, unbiased=False, keepdim=True)
    xhat = (xd - mean) / torch.sqrt(var + 1e-5)
    return xhat, (dyd * xhat).sum(dims), dyd.sum(dims), mean.flatten()


@pytest.mark.parametrize("shape", [(8192, 64, 8), (65536, 4, 4)])
def test_batch_norm_many_small_planes(shape):
    """BatchNorm1d over thousands of short planes: the planes' moments and gradient sums are merged
    pairwise (a running merge gave y 20x, dweight 250x and dbias 65x torch's error)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    dy = torch.randn(shape, generator=g) + 1
    bn = nt.BatchNorm1d(shape[1])
    xr = x.clone().requires_grad_()
    y = bn(xr)
    y.backward(dy)
    xhat, dw, db, _ = batch_norm_reference(x, dy, [0, 2])
    scale = dy.double().abs().sum([0, 2]).max().item()  # the size of the terms summed
    assert max_err(y, xhat) < 2e-6
    assert max_err(bn.weight.grad, dw) < 4e-7 * scale
    assert max_err(bn.bias.grad, db) < 4e-7 * scale


def test_batch_norm_centred_mean():
    """A centred ResNet-like BatchNorm2d: the saved mean within a few ulp (the shift by the first value
    left it ~25 ulp off), and dweight, which sums dy * xhat over the batch, accurate with it."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 64, 28, 28, generator=g) + 0.2
    dy = torch.randn(32, 64, 28, 28, generator=g) + 1
    _, save_mean, _ = nkF.batch_norm_forward(x, None, None, None, None, True, 0.1, 1e-5)
    xhat, dw, _, mean = batch_norm_reference(x, dy, [0, 2, 3])
    assert max_err(save_mean, mean) < 1e-7
    bn = nt.BatchNorm2d(64)
    bn(x.clone().requires_grad_()).backward(dy)
    assert max_err(bn.weight.grad, dw) < 2e-6 * dy.double().abs().sum([0, 2, 3]).max().item()


def test_rms_norm_long_row():
    """The sum of squares of a 2^22-value row in blocks added pairwise (64 running lane sums gave y 70x
    torch's error)."""
    x = torch.randn(1, 2**22, generator=torch.Generator().manual_seed(2))
    xd = x.double()
    want = xd * torch.rsqrt((xd * xd).mean(-1, keepdim=True) + torch.finfo(torch.float32).eps)
    assert max_err(nkF.rms_norm(x, (2**22,)), want) < 1e-6


def test_layer_norm_long_rows():
    """A 2^22-value row's 1024 blocks merged pairwise (a running merge gave y 45x torch's error on 2^24)."""
    x = torch.randn(2, 2**22, generator=torch.Generator().manual_seed(3)) + 0.5
    xd = x.double()
    want = (xd - xd.mean(-1, keepdim=True)) / torch.sqrt(xd.var(-1, unbiased=False, keepdim=True) + 1e-5)
    assert max_err(nkF.layer_norm(x, (2**22,)), want) < 1e-6


def test_rms_norm_weight_gradient_over_many_rows():
    """dweight over 2^20 rows: at most 128 rows per block, the blocks added pairwise (16384 rows per
    block gave 13x torch's error)."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2**20, 16, generator=g)
    dy = torch.randn(2**20, 16, generator=g) + 1
    w = torch.ones(16)
    _, rstd = nkF.rms_norm_forward(x, (16,), w)
    _, dw = nkF.rms_norm_backward(dy, x, (16,), rstd, w)
    xd = x.double()
    want = (dy.double() * xd * torch.rsqrt((xd * xd).mean(-1, keepdim=True) + torch.finfo(torch.float32).eps)).sum(0)
    assert max_err(dw, want) < 2e-9 * dy.double().abs().sum(0).max().item()


def test_mean_only_batch_norm_many_planes():
    """Mean-only BatchNorm's channel sums over 2^20 planes added pairwise (670x torch's dbias error)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2**20, 1, 4, generator=g) + 3
    dy = torch.randn(2**20, 1, 4, generator=g) + 1
    y, mean = nkF.mean_only_batch_norm_forward(x, None, None, True, 0.1)
    xd = x.double()
    assert max_err(y, xd - xd.mean([0, 2], keepdim=True)) < 1e-6
    _, db = nkF.mean_only_batch_norm_backward(dy, True)
    assert max_err(db, dy.double().sum([0, 2])) < 1e-7 * dy.double().abs().sum().item()
