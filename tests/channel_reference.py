"""Float64 NumPy references for BatchNorm, InstanceNorm and GroupNorm, written from the defining
formulas, plus the tolerance scales and input helpers the channel-norm test modules share.

Everything is computed in float64 whatever the input dtype (inputs are converted first), so a test
compares the library, run on some (possibly rounded) inputs, with the exact-as-possible answer for
those same inputs. Only the logical shape matters here: a channels-last array is read by index.

Notation: x has shape [N, C, *spatial]; S = prod(spatial) (1 for [N, C]). The three layers normalize
x by the mean and the biased variance of groups of elements ("statistic groups"):

    layer         one statistic per     reduced over            count per statistic K
    BatchNorm     channel c             n, s                    N * S
    InstanceNorm  (n, c)                s                       S
    GroupNorm     (n, group g)          channels of g, s        (C / G) * S

Per statistic group:
    mu   = mean(x)
    var  = mean((x - mu)^2)                 (biased)
    r    = 1 / sqrt(var + eps)              ("rstd")
    xhat = (x - mu) * r
    y    = xhat * w[c] + b[c]               (the affine parameters are per channel in all three)

Backward with the statistics computed from x (g = dy * w[c], means over the statistic group):
    dx = r * (g - mean(g) - xhat * mean(g * xhat))
  (d mu / d x_j = 1/K; d var / d x_j = 2 (x_j - mu) / K; d r / d var = -r^3 / 2; so
   d xhat_i / d x_j = r (delta_ij - 1/K - xhat_i xhat_j / K), contracted with g.)
Backward with fixed statistics (BatchNorm eval, InstanceNorm with use_input_stats=False):
    dx = dy * w[c] * r,  r = 1 / sqrt(running_var[c] + eps), xhat = (x - running_mean[c]) * r
Parameter gradients (both cases): dweight[c] = sum_{n,s} dy * xhat, dbias[c] = sum_{n,s} dy.

Running statistics (training, BatchNorm; InstanceNorm with track_running_stats), per channel:
    running_mean <- (1 - m) * running_mean + m * batch_mean
    running_var  <- (1 - m) * running_var  + m * batch_var_unbiased
  batch_var_unbiased = var * K / (K - 1). For InstanceNorm, batch_mean / batch_var_unbiased are the
  averages over n of the per-instance values (what torch does: it runs batch norm on [1, N*C, *]
  and averages the N running-stat copies).
"""

from __future__ import annotations

import numpy as np
import reference as R

f64 = R.to_f64


def f64_copies(*arrays):
    """float64 NumPy copies (None stays None) of arrays that a call may then modify in place."""
    return [None if a is None else f64(a) for a in arrays]


# ----------------------------------------------------------------------------------------------------
# Reshaping between x = [N, C, *] and statistic groups [P, G, K]
# ----------------------------------------------------------------------------------------------------


def _ncs(x):
    x = f64(x)
    assert x.ndim >= 2, x.shape
    return x.reshape(x.shape[0], x.shape[1], -1)


def _to_groups(a3, groups, per_sample):
    """[N, C, S] -> [P, G, K]: P = N (per sample) or 1; the last axis is one statistic group."""
    n, c, s = a3.shape
    if per_sample:
        return a3.reshape(n, groups, (c // groups) * s)
    assert groups == c
    return a3.transpose(1, 0, 2).reshape(1, c, n * s)


def _from_groups(g3, shape3, groups, per_sample):
    n, c, s = shape3
    if per_sample:
        return g3.reshape(n, c, s)
    return g3.reshape(c, n, s).transpose(1, 0, 2)


def _per_channel(p, c):
    """A per-channel parameter as [1, C, 1] (ones / zeros when None)."""
    return f64(p).reshape(1, c, 1)


def _stats(x3, groups, per_sample, eps):
    g = _to_groups(x3, groups, per_sample)
    k = g.shape[2]
    mu = g.sum(axis=2, keepdims=True) / k
    cen = g - mu
    var = (cen * cen).sum(axis=2, keepdims=True) / k
    r = 1.0 / np.sqrt(var + eps)
    xhat = _from_groups(cen * r, x3.shape, groups, per_sample)
    return mu[..., 0], var[..., 0], r[..., 0], xhat, k


def _xmag(x3, groups, per_sample, mu, r):
    """(|x| + |mu|) * r: the size of the two terms whose difference is xhat (what its rounding error
    is relative to; xhat itself can cancel to ~0, e.g. a group of one element)."""
    g = _to_groups(np.abs(x3), groups, per_sample)
    mag = (g + np.abs(mu)[..., None]) * r[..., None]
    return _from_groups(mag, x3.shape, groups, per_sample)


def _affine(xhat3, weight, bias):
    c = xhat3.shape[1]
    y = xhat3
    if weight is not None:
        y = y * _per_channel(weight, c)
    if bias is not None:
        y = y + _per_channel(bias, c)
    return y


def _backward_batch_stats(dy3, x3, groups, per_sample, weight, eps):
    c = x3.shape[1]
    _, _, r, xhat, k = _stats(x3, groups, per_sample, eps)
    w = np.ones((1, c, 1)) if weight is None else _per_channel(weight, c)
    g = _to_groups(dy3 * w, groups, per_sample)
    xh = _to_groups(xhat, groups, per_sample)
    mean_g = g.sum(axis=2, keepdims=True) / k
    mean_gx = (g * xh).sum(axis=2, keepdims=True) / k
    dx = r[..., None] * (g - mean_g - xh * mean_gx)
    return _from_groups(dx, x3.shape, groups, per_sample), xhat


def _param_grads(dy3, xhat3, weight, has_bias):
    dw = None if weight is None else (dy3 * xhat3).sum(axis=(0, 2))
    db = dy3.sum(axis=(0, 2)) if has_bias else None
    return dw, db


# ----------------------------------------------------------------------------------------------------
# BatchNorm
# ----------------------------------------------------------------------------------------------------


def batch_norm_forward(x, running_mean=None, running_var=None, weight=None, bias=None, training=False,
                       momentum=0.1, eps=1e-5):
    """Returns a dict: y, save_mean, save_rstd (per channel), running_mean, running_var (the updated
    values, or the given ones when not training; None when not given), var (the biased batch variance
    when training). Nothing passed in is modified."""
    x3 = _ncs(x)
    c = x3.shape[1]
    rm = None if running_mean is None else f64(running_mean).reshape(c)
    rv = None if running_var is None else f64(running_var).reshape(c)
    out = {"running_mean": rm, "running_var": rv, "var": None}
    if training:
        mu, var, r, xhat, k = _stats(x3, c, False, eps)
        xmag = _xmag(x3, c, False, mu, r)
        mu, var, r = mu[0], var[0], r[0]
        out["var"] = var
        if rm is not None:
            out["running_mean"] = (1 - momentum) * rm + momentum * mu
        if rv is not None:
            out["running_var"] = (1 - momentum) * rv + momentum * var * k / (k - 1)
    else:
        mu = rm
        r = 1.0 / np.sqrt(rv + eps)
        xhat = (x3 - mu.reshape(1, c, 1)) * r.reshape(1, c, 1)
        xmag = (np.abs(x3) + np.abs(mu).reshape(1, c, 1)) * r.reshape(1, c, 1)
    out["y"] = _affine(xhat, weight, bias).reshape(x3.shape[:2] + f64(x).shape[2:])
    out["save_mean"], out["save_rstd"], out["xhat"] = mu, r, xhat.reshape(out["y"].shape)
    out["xmag"] = xmag.reshape(out["y"].shape)
    return out


def batch_norm_backward(dy, x, weight=None, training=True, running_mean=None, running_var=None, eps=1e-5,
                        has_bias=True):
    """(dx, dweight, dbias) in float64; with training=False the running statistics are held fixed."""
    x3, dy3 = _ncs(x), _ncs(dy)
    c = x3.shape[1]
    if training:
        dx, xhat = _backward_batch_stats(dy3, x3, c, False, weight, eps)
    else:
        r = (1.0 / np.sqrt(f64(running_var) + eps)).reshape(1, c, 1)
        xhat = (x3 - f64(running_mean).reshape(1, c, 1)) * r
        w = np.ones((1, c, 1)) if weight is None else _per_channel(weight, c)
        dx = dy3 * w * r
    dw, db = _param_grads(dy3, xhat, weight, has_bias)
    return dx.reshape(f64(x).shape), dw, db


# ----------------------------------------------------------------------------------------------------
# InstanceNorm
# ----------------------------------------------------------------------------------------------------


def instance_norm_forward(x, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                          momentum=0.1, eps=1e-5):
    """Dict like batch_norm_forward's; save_mean / save_rstd are [N, C] with use_input_stats."""
    x3 = _ncs(x)
    n, c, _ = x3.shape
    if not use_input_stats:
        out = batch_norm_forward(x, running_mean, running_var, weight, bias, False, momentum, eps)
        return out
    rm = None if running_mean is None else f64(running_mean).reshape(c)
    rv = None if running_var is None else f64(running_var).reshape(c)
    mu, var, r, xhat, k = _stats(x3, c, True, eps)  # [N, C]
    out = {"running_mean": rm, "running_var": rv, "var": var, "save_mean": mu, "save_rstd": r}
    if rm is not None:
        out["running_mean"] = (1 - momentum) * rm + momentum * mu.mean(axis=0)
    if rv is not None:
        out["running_var"] = (1 - momentum) * rv + momentum * (var * k / (k - 1)).mean(axis=0)
    out["y"] = _affine(xhat, weight, bias).reshape(f64(x).shape)
    out["xhat"] = xhat.reshape(out["y"].shape)
    out["xmag"] = _xmag(x3, c, True, mu, r).reshape(out["y"].shape)
    return out


def instance_norm_backward(dy, x, weight=None, use_input_stats=True, running_mean=None, running_var=None,
                           eps=1e-5, has_bias=True):
    if not use_input_stats:
        return batch_norm_backward(dy, x, weight, False, running_mean, running_var, eps, has_bias)
    x3, dy3 = _ncs(x), _ncs(dy)
    dx, xhat = _backward_batch_stats(dy3, x3, x3.shape[1], True, weight, eps)
    dw, db = _param_grads(dy3, xhat, weight, has_bias)
    return dx.reshape(f64(x).shape), dw, db


# ----------------------------------------------------------------------------------------------------
# GroupNorm
# ----------------------------------------------------------------------------------------------------


def group_norm_forward(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Dict: y, mean [N, G], rstd [N, G], var [N, G], xhat."""
    x3 = _ncs(x)
    mu, var, r, xhat, _ = _stats(x3, num_groups, True, eps)
    y = _affine(xhat, weight, bias).reshape(f64(x).shape)
    return {"y": y, "mean": mu, "rstd": r, "var": var, "xhat": xhat.reshape(y.shape),
            "xmag": _xmag(x3, num_groups, True, mu, r).reshape(y.shape)}


def group_norm_backward(dy, x, num_groups, weight=None, eps=1e-5, has_bias=True):
    x3, dy3 = _ncs(x), _ncs(dy)
    dx, xhat = _backward_batch_stats(dy3, x3, num_groups, True, weight, eps)
    dw, db = _param_grads(dy3, xhat, weight, has_bias)
    return dx.reshape(f64(x).shape), dw, db


# ----------------------------------------------------------------------------------------------------
# Tolerance scales for R.assert_close (the magnitude of the terms combined into each value, so that
# cancellation does not make a correct result look wrong)
# ----------------------------------------------------------------------------------------------------


def y_scale(xhat, weight, bias):
    """y = xhat * w + b: max |xhat| * max |w| + max |b|. Pass the forward's "xmag" ((|x| + |mu|) * r)
    as xhat: the magnitude of what xhat is computed from."""
    xh = np.abs(f64(xhat)).max(initial=0.0)
    w = 1.0 if weight is None else np.abs(f64(weight)).max(initial=0.0)
    b = 0.0 if bias is None else np.abs(f64(bias)).max(initial=0.0)
    return xh * w + b


def dx_scale(dy, x, weight, groups, per_sample, rstd):
    """dx = r * (g - mean(g) - xhat * mean(g xhat)): per statistic group, r * max |g| (times a few for
    the three terms, which the tolerance's 4u margin already covers)."""
    x3, dy3 = _ncs(x), _ncs(dy)
    c = x3.shape[1]
    w = np.ones((1, c, 1)) if weight is None else _per_channel(weight, c)
    g = np.abs(_to_groups(dy3 * w, groups, per_sample))
    r = np.asarray(rstd, dtype=np.float64).reshape(g.shape[:2])
    per = (r * g.max(axis=2, initial=0.0))[..., None] * np.ones_like(g)
    return _from_groups(per, x3.shape, groups, per_sample).reshape(f64(x).shape)


def dweight_scale(dy, xhat):
    """dweight = sum dy * xhat: sum of |dy| * xmag (pass the forward's "xmag", see y_scale)."""
    return np.abs(_ncs(dy) * _ncs(xhat)).sum(axis=(0, 2))


def dbias_scale(dy):
    return np.abs(_ncs(dy)).sum(axis=(0, 2))


# ----------------------------------------------------------------------------------------------------
# Layouts
# ----------------------------------------------------------------------------------------------------


def channels_last_perm(ndim):
    """Axis order of the channels-last memory layout of an [N, C, *spatial] array: (0, 2, .., 1)."""
    return (0,) + tuple(range(2, ndim)) + (1,)


def to_channels_last_numpy(a):
    """The same logical array, stored channels-last (NHWC / NDHWC / NLC strides)."""
    perm = channels_last_perm(a.ndim)
    inv = np.argsort(perm)
    return np.ascontiguousarray(np.transpose(a, perm)).transpose(inv)


def is_channels_last_numpy(a):
    return a.ndim >= 3 and np.transpose(a, channels_last_perm(a.ndim)).flags.c_contiguous


def to_channels_last_torch(t):
    """channels_last (4-D), channels_last_3d (5-D), or for 3-D [N, C, L] the NLC strides (torch has no
    named format for it)."""
    import torch

    if t.dim() == 3:
        return t.transpose(1, 2).contiguous().transpose(1, 2)
    if t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if t.dim() == 5:
        return t.contiguous(memory_format=torch.channels_last_3d)
    raise ValueError(f"channels-last needs a 3-D, 4-D or 5-D tensor, got {t.dim()}-D")


def keeps_channels_last_torch(t):
    """Whether torch keeps t's channels-last layout in a layer's output: only its channels_last (4-D)
    and channels_last_3d (5-D) formats; a 3-D tensor stored as NLC gives a contiguous output."""
    return t.dim() in (4, 5) and is_channels_last_torch(t)


def is_channels_last_torch(t):
    import torch

    if t.dim() == 4:
        return t.is_contiguous(memory_format=torch.channels_last)
    if t.dim() == 5:
        return t.is_contiguous(memory_format=torch.channels_last_3d)
    if t.dim() == 3:
        return t.transpose(1, 2).is_contiguous()
    return False


# ----------------------------------------------------------------------------------------------------
# torch twin vs torch.nn: one step (forward + backward) of a normkit module and of the float64 torch.nn
# reference module holding the same (rounded) parameters and buffers
# ----------------------------------------------------------------------------------------------------


def make_module_pair(torch_cls, nk_cls, args, kwargs, dtype, seed):
    """(twin in `dtype`, torch.nn reference in float64) with equal random parameters and running
    statistics (the twin's rounded values, loaded into the reference)."""
    import torch

    tdt = R.torch_dtype(dtype)
    twin = nk_cls(*args, **kwargs, dtype=tdt)
    ref = torch_cls(*args, **kwargs, dtype=torch.float64)
    assert isinstance(twin, torch_cls), f"{type(twin)} is not a subclass of {torch_cls}"
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, p in twin.named_parameters():
            scale, offset = (0.7, 1.0) if name == "weight" else (1.0, 0.0)
            p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape)) * scale + offset))
        for name, b in twin.named_buffers():
            if name == "running_mean":
                b.copy_(torch.from_numpy(rng.standard_normal(tuple(b.shape)) * 0.5))
            elif name == "running_var":
                b.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, size=tuple(b.shape))))
    ref.load_state_dict(twin.state_dict())
    ref.train(twin.training)
    return twin, ref


def _batched(t, expected_dim):
    return t.unsqueeze(0) if t.dim() == expected_dim - 1 else t


def twin_step(twin, ref, x, dy, kind, tag="", same=None, batched_rank=None):
    """Runs one forward/backward of `twin` on x (its dtype) and of the float64 reference `ref` on the same
    values; compares y, dx, dweight, dbias, the running statistics and num_batches_tracked; then
    copies the twin's buffers into the reference (so that the next step starts from equal state and
    rounding of half-precision buffers does not accumulate in the comparison).

    kind: "batch" | "instance" | "group". `same`: optional torch.nn module in x's dtype (float32) that
    is compared too, at twice the tolerance (both it and normkit are within tol of float64).
    batched_rank: the rank of a batched input (InstanceNorm accepts unbatched [C, *] inputs too)."""
    import torch

    dtype = R.dtype_name(x)
    tol = R.TOL[dtype]
    buffers_before = {k: v.detach().clone() for k, v in twin.named_buffers()}
    for m in (twin, ref) + ((same,) if same is not None else ()):
        for p in m.parameters():
            p.grad = None

    xt = x.detach().clone().requires_grad_()
    y = twin(xt)
    y.backward(dy)
    xr = x.detach().to(torch.float64).requires_grad_()
    yr = ref(xr)
    yr.backward(dy.to(torch.float64).contiguous())  # NCHW dy: torch's CPU instance_norm backward is
    # wrong for channels-last dy with N == 1 (torch 2.13); the gradient does not depend on dy's layout

    assert isinstance(y, torch.Tensor) and y.dtype == x.dtype and y.shape == x.shape, (y.dtype, y.shape)
    # The output's memory format is torch.nn's (channels-last for channels_last/channels_last_3d inputs,
    # except InstanceNorm's; contiguous for a 3-D input stored as NLC).
    if is_channels_last_torch(yr) and not yr.is_contiguous():
        assert is_channels_last_torch(y), f"{tag}: torch.nn gives channels-last, twin gives strides {y.stride()}"
    elif yr.is_contiguous():
        assert y.is_contiguous(), f"{tag}: torch.nn gives a contiguous output, twin gives strides {y.stride()}"
    assert xt.grad is not None and xt.grad.dtype == x.dtype and xt.grad.shape == x.shape

    # statistic grouping and the float64 statistics, for the tolerance scales
    full_dim = x.dim() if batched_rank is None else batched_rank
    xb, dyb = _batched(x, full_dim), _batched(dy, full_dim)
    c = xb.shape[1]
    w = twin.weight.detach() if getattr(twin, "weight", None) is not None else None
    b = twin.bias.detach() if getattr(twin, "bias", None) is not None else None
    if kind == "group":
        groups, per_sample = twin.num_groups, True
        fw = group_norm_forward(xb, groups, w, b, twin.eps)
        rstd = fw["rstd"]
    else:
        batch_stats = twin.training or not twin.track_running_stats
        groups, per_sample = c, kind == "instance"
        if batch_stats:
            fwd = batch_norm_forward if kind == "batch" else instance_norm_forward
            fw = fwd(xb, None, None, w, b, True, 0.1, twin.eps)
            rstd = fw["save_rstd"]
        else:
            fw = batch_norm_forward(xb, buffers_before["running_mean"], buffers_before["running_var"], w, b, False,
                                    0.1, twin.eps)
            rstd = np.broadcast_to(fw["save_rstd"], (xb.shape[0] if per_sample else 1, c))
    xhat = fw["xmag"]
    ys = y_scale(xhat, w, b)
    R.assert_close(tag + "y", y, yr, tol, ys)
    dxs = dx_scale(dyb, xb, w, groups, per_sample, np.broadcast_to(rstd, (xb.shape[0] if per_sample else 1, groups)))
    R.assert_close(tag + "dx", xt.grad, xr.grad, tol, dxs.reshape(tuple(x.shape)))
    if w is not None:
        assert twin.weight.grad is not None and twin.weight.grad.dtype == twin.weight.dtype
        R.assert_close(tag + "dweight", twin.weight.grad, ref.weight.grad, tol, dweight_scale(dyb, xhat))
    if b is not None:
        assert twin.bias.grad is not None and twin.bias.grad.dtype == twin.bias.dtype
        R.assert_close(tag + "dbias", twin.bias.grad, ref.bias.grad, tol, dbias_scale(dyb))

    if same is not None:
        xs_ = x.detach().clone().requires_grad_()
        ysame = same(xs_)
        ysame.backward(dy.contiguous())
        R.assert_close(tag + "y vs torch.nn same dtype", y, ysame, 2 * tol, ys)
        R.assert_close(tag + "dx vs torch.nn same dtype", xt.grad, xs_.grad, 2 * tol, dxs.reshape(tuple(x.shape)))
        if w is not None:
            R.assert_close(tag + "dweight vs torch.nn same dtype", twin.weight.grad, same.weight.grad, 2 * tol,
                           dweight_scale(dyb, xhat))
            R.assert_close(tag + "dbias vs torch.nn same dtype", twin.bias.grad, same.bias.grad, 2 * tol,
                           dbias_scale(dyb))

    # buffers: same names; running statistics within tol; num_batches_tracked exact
    tb, rb = dict(twin.named_buffers()), dict(ref.named_buffers())
    assert tb.keys() == rb.keys(), (tb.keys(), rb.keys())
    xmax = float(np.abs(f64(x)).max(initial=0.0))
    for name in tb:
        if name == "num_batches_tracked":
            assert tb[name].dtype == torch.int64 and tb[name].dim() == 0
            assert int(tb[name]) == int(rb[name]), f"{tag}num_batches_tracked {int(tb[name])} != {int(rb[name])}"
            continue
        assert tb[name].dtype == buffers_before[name].dtype, f"{tag}{name} dtype changed to {tb[name].dtype}"
        scale = float(np.abs(f64(buffers_before[name])).max(initial=0.0))
        scale += xmax if name == "running_mean" else float(np.abs(f64(rb[name])).max(initial=0.0))
        R.assert_close(tag + name, tb[name], rb[name], R.TOL[R.dtype_name(tb[name])], scale)
    with torch.no_grad():
        for name in rb:
            rb[name].copy_(tb[name])
        if same is not None:
            for name, sb in same.named_buffers():
                sb.copy_(tb[name])
    return y



# ----------------------------------------------------------------------------------------------------
# Randomized module configurations (reproducible: one numpy Generator per seed)
# ----------------------------------------------------------------------------------------------------


def random_module_config(seed, kind):
    """A random (shape, layout, dtype, constructor args/kwargs, modes) for "batch" | "instance" | "group".

    Covers N = 1, C = 1, odd and unit spatial sizes, large C, channels-last, every dtype, affine or not,
    track_running_stats or not, momentum 0.1 / 0.3 / None, and a sequence of train / eval steps."""
    rng = np.random.default_rng(10_000 + seed)
    dims = int(rng.integers(1, 4))
    n = int(rng.choice([1, 2, 3, 4, 5]))
    c = int(rng.choice([1, 2, 3, 5, 8, 16, 24, 64, 512], p=[.12, .12, .12, .12, .12, .12, .1, .1, .08]))
    if kind == "batch" and dims == 1 and rng.random() < 0.4:
        spatial = ()
    else:
        spatial = tuple(int(s) for s in rng.choice([1, 2, 3, 4, 5, 7], size=dims))
    if c >= 64:  # keep the test fast
        spatial = tuple(min(s, 3) for s in spatial)
    fmt = "cl" if len(spatial) in (2, 3) and rng.random() < 0.5 else "nc"
    dtype = str(rng.choice(list(R.DTYPES)))
    kwargs = {}
    if rng.random() < 0.3:
        kwargs["eps"] = float(rng.choice([1e-3, 1e-6]))
    s = int(np.prod(spatial)) if spatial else 1
    if kind == "group":
        divisors = [g for g in range(1, c + 1) if c % g == 0]
        args = (int(rng.choice(divisors)), c)
        kwargs["affine"] = bool(rng.random() < 0.7)
        modes = ("train", "eval")
    else:
        args = (c,)
        kwargs["affine"] = bool(rng.random() < 0.6)
        kwargs["track_running_stats"] = bool(rng.random() < 0.6)
        if kind == "batch":
            kwargs["momentum"] = [0.1, 0.3, None][int(rng.integers(0, 3))]
        else:
            kwargs["momentum"] = [0.1, 0.3][int(rng.integers(0, 2))]
        modes = tuple(str(m) for m in rng.choice(["train", "eval"], size=3, p=[0.65, 0.35]))
        per_stat = s if kind == "instance" else n * s
        if per_stat == 1:  # training (or eval without running stats) would be an error: make it valid
            if kind == "instance":
                spatial = spatial[:-1] + (2,) if spatial else (2,)
            else:
                kwargs["track_running_stats"] = True
                modes = ("eval", "eval")
    return {"dims": dims, "shape": (n, c) + spatial, "fmt": fmt, "dtype": dtype, "args": args, "kwargs": kwargs,
            "modes": modes}


def run_random_module_config(seed, kind, torch_cls_name, nk_module):
    """Builds the twin and torch.nn modules for random_module_config(seed, kind) and runs twin_step
    over its modes (the float32 cases are also compared with torch.nn in float32)."""
    import torch

    cfg = random_module_config(seed, kind)
    name = torch_cls_name.format(dims=cfg["dims"])
    torch_cls = getattr(torch.nn, name)
    nk_cls = getattr(nk_module, name)
    twin, ref = make_module_pair(torch_cls, nk_cls, cfg["args"], cfg["kwargs"], cfg["dtype"], seed)
    same = None
    if cfg["dtype"] == "float32":
        same = torch_cls(*cfg["args"], **cfg["kwargs"])
        same.load_state_dict(twin.state_dict())
    for step, mode in enumerate(cfg["modes"]):
        for m in (twin, ref) + ((same,) if same is not None else ()):
            m.train(mode == "train")
        x = R.make_torch(cfg["shape"], cfg["dtype"], 50 * seed + 2 * step)
        dy = R.make_torch(cfg["shape"], cfg["dtype"], 50 * seed + 2 * step + 1, 1.0, 0.0)
        if cfg["fmt"] == "cl":
            x, dy = to_channels_last_torch(x), to_channels_last_torch(dy)
        twin_step(twin, ref, x, dy, kind, tag=f"{cfg} step {step} ({mode}): ", same=same)
    return cfg
