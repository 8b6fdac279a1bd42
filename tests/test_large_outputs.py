"""Outputs larger than the caches take other code paths: streaming (non-temporal) stores from a
staging row, and huge-page advice on the fresh output. Check them against torch, with row lengths
that leave the rows unaligned to the vector width."""

import pathlib

import normkit
import normkit.torch as nt
import pytest
import torch

# Outputs from this size on are streamed (cpu::streaming_output_bytes, cpp/src/cpu/stream_store.h): a
# quarter of the last-level cache, at most 24 MiB, so every shape below streams on every machine.
STREAMING_BYTES = 24 << 20
# Just above it in float32; 1023 makes every row start at a different alignment.
SHAPES = [(6200, 1024), (6201, 1023)]
CHANNEL_SHAPE = (16, 64, 96, 65)
# Channels first, 3 channels of 8.6 MB: past the fused passes' cache budget (and too few channels for
# two threads' tasks), so the unfused passes, streamed.
UNFUSED_SHAPE = (16, 3, 384, 350)
# BatchNorm channels first with planes shorter than 64 values (kRunPlane): its statistics and sums per
# block of planes, its y and dx in runs of planes per group of channels, streamed a stage at a time;
# 3x3 planes of 36 bytes start at every alignment.
SHORT_PLANE_SHAPE = (2048, 512, 3, 3)
# bfloat16 past the streaming size: long planes (channels first) and rows of 64 channels (channels
# last) go through the AVX-512 and AVX2 builds' even/odd vector pairs and the staged streaming copy.
BF16_SHAPE = (16, 64, 96, 130)


def level3_cache_bytes():
    """cpu0's level-3 cache size as Linux describes it, or 0."""
    base = pathlib.Path("/sys/devices/system/cpu/cpu0/cache")
    for index in sorted(base.glob("index*")):
        try:
            if (index / "level").read_text().strip() != "3":
                continue
            size = (index / "size").read_text().strip()
        except OSError:
            return 0
        scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:].upper(), 1)
        return int(size.rstrip("KkMm")) * scale
    return 0


def test_streaming_threshold_is_a_quarter_of_the_cache_at_most_24_mib():
    l3 = level3_cache_bytes()
    expected = STREAMING_BYTES if l3 == 0 else min(max(l3 // 4, 1 << 20), STREAMING_BYTES)
    assert normkit.build_info()["streaming_output_bytes"] == expected, l3


def test_shapes_take_the_streaming_path():
    for shape in SHAPES + [CHANNEL_SHAPE, UNFUSED_SHAPE, SHORT_PLANE_SHAPE]:
        assert 4 * torch.Size(shape).numel() >= STREAMING_BYTES, shape
    assert 2 * torch.Size(BF16_SHAPE).numel() >= STREAMING_BYTES


@pytest.mark.parametrize("shape", SHAPES)
def test_large_layer_norm_matches_torch(shape):
    torch.manual_seed(0)
    x = (torch.randn(shape) * 2 + 3).requires_grad_()
    w = torch.randn(shape[-1], requires_grad=True)
    b = torch.randn(shape[-1], requires_grad=True)
    dy = torch.randn(shape)
    y = nt.functional.layer_norm(x, shape[-1:], w, b)
    got = torch.autograd.grad(y, (x, w, b), dy)
    y_ref = torch.nn.functional.layer_norm(x, shape[-1:], w, b)
    want = torch.autograd.grad(y_ref, (x, w, b), dy)
    # float32, rows of ~1e3: both sides round each element a few times (about 1e-6 relative);
    # the parameter gradients sum 4e3 rows in different orders.
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[0], want[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got[1], want[1], atol=2e-3, rtol=1e-4)
    torch.testing.assert_close(got[2], want[2], atol=2e-3, rtol=1e-4)


@pytest.mark.parametrize("shape", SHAPES)
def test_large_rms_norm_matches_torch(shape):
    torch.manual_seed(1)
    x = torch.randn(shape, requires_grad=True)
    w = torch.randn(shape[-1], requires_grad=True)
    dy = torch.randn(shape)
    y = nt.functional.rms_norm(x, shape[-1:], w)
    got = torch.autograd.grad(y, (x, w), dy)
    y_ref = torch.nn.functional.rms_norm(x, shape[-1:], w)
    want = torch.autograd.grad(y_ref, (x, w), dy)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[0], want[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got[1], want[1], atol=2e-3, rtol=1e-4)


# CHANNEL_SHAPE float32 is 26 MB: streaming stores for y and dx in both layouts; channels first, the
# statistics that fit the cache budget take the fused passes, UNFUSED_SHAPE's the unfused ones.
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("layer", ["batch_train", "batch_eval", "group", "instance", "batch_train_unfused"])
def test_large_channel_norms_match_torch(layer, channels_last):
    torch.manual_seed(2)
    shape = UNFUSED_SHAPE if layer == "batch_train_unfused" else CHANNEL_SHAPE
    make = {
        "batch_train": lambda cls: cls.BatchNorm2d(64),
        "batch_train_unfused": lambda cls: cls.BatchNorm2d(3),
        "batch_eval": lambda cls: cls.BatchNorm2d(64),
        "group": lambda cls: cls.GroupNorm(8, 64),
        "instance": lambda cls: cls.InstanceNorm2d(64, affine=True),
    }[layer]
    ours, ref = make(nt), make(torch.nn)
    with torch.no_grad():
        for p in ref.parameters():
            p.uniform_(0.5, 1.5)
        if layer == "batch_eval":
            ref.running_mean.uniform_(-1, 1)
            ref.running_var.uniform_(0.5, 2)
            ref.eval()
    ours.load_state_dict(ref.state_dict())
    ours.train(ref.training)
    # The 3-channel reference in float64: torch's own float32 channels-last BatchNorm over 2.2e6 values
    # per channel is 1.4e-3 off in y (ours 4.6e-7).
    ref_dtype = torch.float64 if layer == "batch_train_unfused" else torch.float32
    ref.to(ref_dtype)
    x = torch.randn(shape) * 2 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    dy = torch.randn_like(x)
    xa, xb = x.clone().requires_grad_(), x.to(ref_dtype).requires_grad_()
    ya, yb = ours(xa), ref(xb)
    ya.backward(dy)
    yb.backward(dy.to(ref_dtype))
    # torch.nn's memory format (InstanceNorm gives a contiguous output whatever its input's)
    assert ya.is_contiguous(memory_format=torch.channels_last) == yb.is_contiguous(memory_format=torch.channels_last)
    assert ya.is_contiguous() == yb.is_contiguous()
    # float32; statistics over 4e5 (BatchNorm; 2.2e6 with 3 channels) or 5e4 values summed in different orders
    torch.testing.assert_close(ya.to(ref_dtype), yb, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(xa.grad.to(ref_dtype), xb.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.weight.grad.to(ref_dtype), ref.weight.grad, atol=5e-2, rtol=1e-4)
    torch.testing.assert_close(ours.bias.grad.to(ref_dtype), ref.bias.grad, atol=5e-2, rtol=1e-4)


# Mean-only BatchNorm (Salimans & Kingma): y = x - mean_c(x) + b_c, dx = dy - mean_c(dy), db = sum_c(dy),
# with y and dx streamed, checked against the formula in float64. Channels first, CHANNEL_SHAPE's 64
# channels of 400 KB take the fused passes (cpu/fused_channels.h), UNFUSED_SHAPE's the unfused ones.
@pytest.mark.parametrize("shape", [CHANNEL_SHAPE, UNFUSED_SHAPE], ids=["64-channels", "3-channels"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_large_mean_only_batch_norm_matches_the_formula(channels_last, shape):
    torch.manual_seed(5)
    layer = nt.MeanOnlyBatchNorm2d(shape[1])
    with torch.no_grad():
        layer.bias.uniform_(-1, 1)
    x = torch.randn(shape) * 2 + 1
    dy = torch.randn_like(x)
    if channels_last:
        x, dy = (t.contiguous(memory_format=torch.channels_last) for t in (x, dy))
    xa = x.clone().requires_grad_()
    y = layer(xa)
    y.backward(dy)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    x64, dy64, b64 = x.double(), dy.double(), layer.bias.detach().double().view(1, -1, 1, 1)
    y_ref = x64 - x64.mean(dim=(0, 2, 3), keepdim=True) + b64
    dx_ref = dy64 - dy64.mean(dim=(0, 2, 3), keepdim=True)
    # float32 sums over 4e5 (2.2e6) values per channel, measured: y 1.0e-6 on values up to ~12, dx 2.4e-7,
    # dbias 1.5e-4 on sums up to ~860 (8.3e-4 on sums up to ~2900)
    torch.testing.assert_close(y.double(), y_ref, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(xa.grad.double(), dx_ref, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(layer.bias.grad.double(), dy64.sum(dim=(0, 2, 3)), atol=1e-3, rtol=1e-6)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_large_short_plane_batch_norm_matches_torch(training):
    torch.manual_seed(3)
    ours, ref = nt.BatchNorm2d(512), torch.nn.BatchNorm2d(512)
    with torch.no_grad():
        for p in ref.parameters():
            p.uniform_(0.5, 1.5)
        ref.running_mean.uniform_(-1, 1)
        ref.running_var.uniform_(0.5, 2)
    ours.load_state_dict(ref.state_dict())
    ours.train(training)
    ref.train(training)
    x = torch.randn(SHORT_PLANE_SHAPE) * 2 + 1
    dy = torch.randn_like(x)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), ref(xb)
    ya.backward(dy)
    yb.backward(dy)
    # float32; statistics over 18432 values per channel summed in different orders (measured: y 1.4e-6,
    # dx 7e-7, dweight and dbias ~1e-4 on values of ~450)
    torch.testing.assert_close(ya, yb, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, atol=2e-3, rtol=1e-5)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, atol=2e-3, rtol=1e-5)
    torch.testing.assert_close(ours.running_mean, ref.running_mean, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours.running_var, ref.running_var, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_large_bfloat16_maps_round_as_torch(channels_last):
    """BatchNorm in eval mode with mean 0, variance 1, eps 0 and weight 1.5 gives y = x * 1.5 and
    dx = dy * 1.5, exact in float32: y and dx must be torch's float32 products rounded to bfloat16,
    bit for bit, across the stages of the streamed output."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(BF16_SHAPE, generator=g).to(torch.bfloat16)
    dy = torch.randn(BF16_SHAPE, generator=g).to(torch.bfloat16)
    if channels_last:
        x, dy = (t.contiguous(memory_format=torch.channels_last) for t in (x, dy))
    layer = nt.BatchNorm2d(64, eps=0.0).eval()
    with torch.no_grad():
        layer.weight.fill_(1.5)
    xa = x.clone().requires_grad_()
    y = layer(xa)
    y.backward(dy)
    assert torch.equal(y.detach().view(torch.int16), (x.float() * 1.5).to(torch.bfloat16).view(torch.int16))
    assert torch.equal(xa.grad.view(torch.int16), (dy.float() * 1.5).to(torch.bfloat16).view(torch.int16))
