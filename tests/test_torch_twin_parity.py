"""Behaviours of the torch twins that users meet outside a plain forward/backward: copying and pickling,
activation checkpointing, switching track_running_stats, torch's constructor signatures, mixed
weight/input dtypes, and convert_model's independence from the replaced layer."""

from __future__ import annotations

import copy
import pickle
import warnings

import normkit.torch as nt
import pytest
import torch
from normkit.torch import convert_model
from torch.utils.checkpoint import checkpoint


def test_sync_batch_norm_copies_and_pickles_after_training():
    layer = nt.SyncBatchNorm(3)
    layer(torch.randn(4, 3))  # resolves the default communicator
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        torch.testing.assert_close(clone.running_mean, layer.running_mean, rtol=0, atol=0)
        clone(torch.randn(4, 3))
        assert int(clone.num_batches_tracked) == 2


def test_sync_batch_norm_signature_and_classmethod_as_torch():
    layer = nt.SyncBatchNorm(3, 1e-3, 0.2, True, True, None, "cpu", torch.float64)
    assert layer.weight.dtype == torch.float64 and layer.eps == 1e-3 and layer.momentum == 0.2
    model = nt.SyncBatchNorm.convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(3)))
    assert isinstance(model[0], nt.SyncBatchNorm)


@pytest.mark.parametrize("cls", [nt.BatchNorm1d, nt.SyncBatchNorm])
def test_running_stats_follow_track_running_stats_switched_later(cls):
    ours, theirs = cls(3), torch.nn.BatchNorm1d(3)
    ours.track_running_stats = theirs.track_running_stats = False
    x = torch.randn(8, 3) * 2 + 1
    torch.testing.assert_close(ours(x), theirs(x))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(theirs, name), rtol=0, atol=0)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_under_activation_checkpointing_counts_as_torch(momentum):
    """Non-reentrant checkpointing recomputes the forward (torch's counts the batch again there, and
    updates its running statistics again): the twin must end in the same state."""
    g = torch.Generator().manual_seed(0)
    ours, theirs = nt.BatchNorm2d(3, momentum=momentum), torch.nn.BatchNorm2d(3, momentum=momentum)
    for _ in range(3):
        x = (torch.randn(4, 3, 5, 5, generator=g) * 2 + 1).requires_grad_()
        for layer in (ours, theirs):
            checkpoint(layer, x, use_reentrant=False).sum().backward()
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(theirs, name), rtol=1e-6, atol=1e-6)


def test_rejected_batch_leaves_the_count_alone():
    layer = nt.BatchNorm1d(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(torch.randn(1, 3))
    assert int(layer.num_batches_tracked) == 0


@pytest.mark.parametrize("module_dtype,input_dtype", [(torch.float32, torch.float64), (torch.float16, torch.float32),
                                                      (torch.bfloat16, torch.float16), (torch.float64, torch.float32)])
def test_rms_norm_mixed_weight_and_input_dtypes_as_torch(module_dtype, input_dtype):
    ours, theirs = nt.RMSNorm(8).to(module_dtype), torch.nn.RMSNorm(8).to(module_dtype)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        theirs.weight.copy_(ours.weight)
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1)).to(input_dtype)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about the mismatch
        ya, yb = ours(xa), theirs(xb)
        ya.sum().backward()
        yb.sum().backward()
    assert ya.dtype == yb.dtype == input_dtype
    half = {torch.float16, torch.bfloat16} & {module_dtype, input_dtype}
    tol = 1e-2 if half else 1e-6
    torch.testing.assert_close(ya, yb, rtol=tol, atol=tol)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=tol, atol=tol)
    assert ours.weight.grad.dtype == module_dtype
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, rtol=tol, atol=tol)


def test_switchable_norm_rejects_momentum_none():
    with pytest.raises(ValueError, match="momentum: expected a number"):
        nt.SwitchableNorm2d(3, momentum=None)


def test_convert_model_twin_is_independent_of_the_old_layer():
    old = torch.nn.BatchNorm1d(3)
    twin = convert_model(old)
    assert twin.weight is old.weight  # the same Parameter objects are kept
    old.weight = torch.nn.Parameter(torch.zeros(3))
    old.register_buffer("extra", torch.ones(1))
    assert twin.weight is not old.weight and "extra" not in dict(twin.named_buffers())


# ---- found by a review of the twins in training loops ---------------------------------------------------


@pytest.mark.parametrize("layer,args", [("BatchNorm1d", (4,)), ("GroupNorm", (2, 4)), ("InstanceNorm1d", (4,))])
def test_nlc_input_gives_torch_layouts(layer, args):
    """bn(h.transpose(1, 2)) on [N, L, C] data: torch returns a contiguous output (it has no NLC
    format), so a later .view() works; the input gradient keeps the input's layout."""
    results = []
    for lib in (torch.nn, nt):
        h = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(0)).transpose(1, 2).requires_grad_()
        y = getattr(lib, layer)(*args)(h)
        y.backward(torch.ones_like(y))
        y.view(2, -1)
        results.append((y.stride(), h.grad.stride(), y.detach()))
    assert results[1][:2] == results[0][:2]
    torch.testing.assert_close(results[1][2], results[0][2], rtol=1e-5, atol=1e-5)


def test_instance_norm_of_channels_last_input_is_contiguous_as_torch():
    for lib in (torch.nn, nt):
        x = torch.randn(2, 4, 3, 3).to(memory_format=torch.channels_last).requires_grad_()
        y = lib.InstanceNorm2d(4, affine=True)(x)
        y.backward(torch.ones_like(y))
        assert y.is_contiguous() and x.grad.is_contiguous(memory_format=torch.channels_last), lib
        y.view(2, -1)


def test_rms_norm_takes_an_inference_tensor_in_training():
    with torch.inference_mode():
        x = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    grads = []
    for lib in (torch.nn, nt):
        m = lib.RMSNorm(8)
        m(x).square().sum().backward()
        grads.append(m.weight.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 8, 4, 4), (2, 8, 5)], ids=["4d", "3d"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_local_response_norm_under_autocast_computes_as_torch(dtype, shape):
    """torch's local_response_norm under autocast: float32 from 4 dims on (its avg_pool3d is on autocast's
    float32 list), the input's half type for 3-D inputs (avg_pool2d)."""
    outs = []
    for lib in (torch.nn, nt):
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(2)).to(dtype).requires_grad_()
        with torch.autocast("cpu", dtype=dtype):
            y = lib.LocalResponseNorm(3)(x)
        y.sum().backward()
        outs.append((y.dtype, x.grad.dtype, y.detach().float()))
    assert outs[1][:2] == outs[0][:2] == ((torch.float32 if len(shape) > 3 else dtype), dtype)
    # (3-D: torch rounds each of its ops to the half type, normkit once: 4 units in the last place)
    tol = 1e-5 if len(shape) > 3 else 4 * torch.finfo(dtype).eps
    torch.testing.assert_close(outs[1][2], outs[0][2], rtol=tol, atol=tol)

