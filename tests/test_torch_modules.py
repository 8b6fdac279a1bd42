"""normkit.torch.LayerNorm / RMSNorm as drop-in twins of torch.nn.LayerNorm / RMSNorm, and
normkit.torch.functional against torch.nn.functional (autograd included, gradcheck in float64)."""

import normkit.torch as nkt
import normkit.torch.functional as nktF
import numpy as np
import pytest
import reference as R
import torch
import torch.nn.functional as F

HALF = ("float16", "bfloat16")

LN_CONFIGS = [
    ((8,), {}),
    ((3, 5), {}),
    ((16,), {"bias": False}),
    ((16,), {"elementwise_affine": False}),
    ((7,), {"eps": 1e-3}),
    ((4, 6), {"elementwise_affine": False, "bias": False}),
    ((33,), {"eps": 0.0}),
]
RMS_CONFIGS = [
    ((8,), {}),
    ((3, 5), {}),
    ((16,), {"eps": 1e-6}),
    ((16,), {"elementwise_affine": False}),
    ((33,), {"eps": 0.1}),
]
KINDS = {
    "LayerNorm": (nkt.LayerNorm, torch.nn.LayerNorm, LN_CONFIGS),
    "RMSNorm": (nkt.RMSNorm, torch.nn.RMSNorm, RMS_CONFIGS),
}
ALL = [(kind, i) for kind, (_, _, cfgs) in KINDS.items() for i in range(len(cfgs))]


def cfg_id(p):
    kind, i = p
    ns, kw = KINDS[kind][2][i]
    return f"{kind}-{'x'.join(map(str, ns))}-" + ",".join(f"{k}={v}" for k, v in kw.items())


def build(kind, i, **extra):
    nk_cls, torch_cls, cfgs = KINDS[kind]
    ns, kw = cfgs[i]
    return nk_cls(ns, **kw, **extra), torch_cls(ns, **kw, **extra), ns, kw


def grad_scales(kind, dy, x, ns, w, eps):
    """(dx scale, dweight scale) for assert_close, see tests/reference.py."""
    if kind == "LayerNorm":
        return R.layer_norm_dx_scale(dy, x, ns, w, eps), R.layer_norm_dweight_scale(dy, x, ns, eps)
    _, rstd = R.rms_norm_forward(x, ns, w, eps)
    return R.dx_scale(dy, x, ns, w, rstd), R.dweight_scale(dy, x, ns, R.rms_norm_xhat(x, ns, eps))


def randomize_(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5 + 1.0)


# ----------------------------------------------------------------------------------------------------
# Construction: class, attributes, parameters, repr, state_dict keys
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", ALL, ids=cfg_id)
def test_construction_matches_torch(p):
    kind, i = p
    nk, ref, ns, kw = build(kind, i)
    assert isinstance(nk, KINDS[kind][1]) and type(nk) is not KINDS[kind][1]
    assert nk.extra_repr() == ref.extra_repr()
    assert nk.normalized_shape == ref.normalized_shape
    assert nk.eps == ref.eps
    assert nk.elementwise_affine == ref.elementwise_affine
    nk_params = dict(nk.named_parameters())
    ref_params = dict(ref.named_parameters())
    assert nk_params.keys() == ref_params.keys()
    for name in ref_params:
        a, b = nk_params[name], ref_params[name]
        assert isinstance(a, torch.nn.Parameter)
        assert a.shape == b.shape and a.dtype == b.dtype and a.requires_grad == b.requires_grad
        assert torch.equal(a, b), f"initial {name} differs from torch.nn's"
    assert list(nk.state_dict().keys()) == list(ref.state_dict().keys())
    assert dict(nk.named_buffers()).keys() == dict(ref.named_buffers()).keys()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("ns", (5, [5], (2, 5), torch.Size([2, 5])), ids=str)
def test_normalized_shape_forms(kind, ns):
    nk_cls, torch_cls, _ = KINDS[kind]
    nk, ref = nk_cls(ns), torch_cls(ns)
    assert nk.normalized_shape == ref.normalized_shape
    assert nk.extra_repr() == ref.extra_repr()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", R.DTYPES)
def test_dtype_argument(kind, dtype):
    nk_cls, torch_cls, _ = KINDS[kind]
    nk = nk_cls(6, dtype=R.torch_dtype(dtype), device="cpu")
    assert nk.weight.dtype == R.torch_dtype(dtype) and nk.weight.device.type == "cpu"


# ----------------------------------------------------------------------------------------------------
# Forward / backward parity with the same parameters
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", ALL, ids=cfg_id)
@pytest.mark.parametrize("dtype", ("float32", "float64"))
def test_module_parity(p, dtype):
    kind, i = p
    td = R.torch_dtype(dtype)
    nk, ref, ns, kw = build(kind, i, dtype=td)
    randomize_(ref, 7 + i)
    res = nk.load_state_dict(ref.state_dict(), strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    for k, v in ref.state_dict().items():
        assert torch.equal(nk.state_dict()[k], v)

    x_shape = (4, 3) + tuple(ns)
    x0 = R.make_torch(x_shape, dtype, 11 + i)
    dy = R.make_torch(x_shape, dtype, 12 + i, 1.0, 0.0)
    x_nk = x0.clone().requires_grad_()
    x_ref = x0.clone().requires_grad_()
    y_nk = nk(x_nk)
    y_ref = ref(x_ref)
    assert isinstance(y_nk.grad_fn, torch.autograd.function.BackwardCFunction), (
        f"output is not produced by a torch.autograd.Function: {type(y_nk.grad_fn).__name__}"
    )
    assert y_nk.dtype == y_ref.dtype and y_nk.shape == y_ref.shape
    y_nk.backward(dy)
    y_ref.backward(dy)
    tol = R.TOL[dtype]
    R.assert_close("y", y_nk, y_ref, tol, y_ref.abs().max().item())
    eps = ref.eps
    if eps is None:
        eps = R.default_rms_eps(dtype)
    w = ref.weight.detach() if ref.weight is not None else None
    dx_scale, dw_scale = grad_scales(kind, dy, x0, ns, w, eps)
    R.assert_close("x.grad", x_nk.grad, x_ref.grad, tol, dx_scale)
    for (name, a), (_, b) in zip(nk.named_parameters(), ref.named_parameters()):
        assert a.grad is not None and a.grad.dtype == b.grad.dtype, name
        scale = dw_scale if name == "weight" else R.dbias_scale(dy, ns)
        R.assert_close(f"{name}.grad", a.grad, b.grad, tol, scale)

    # and the reverse load: normkit's state_dict into a fresh torch.nn module, strictly
    fresh = KINDS[kind][1](ns, **kw, dtype=td)
    res = fresh.load_state_dict(nk.state_dict(), strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    with torch.no_grad():
        R.assert_close("y (torch module loaded from normkit)", nk(x0), fresh(x0), tol, y_ref.abs().max().item())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", HALF)
def test_module_parity_half(kind, dtype):
    nk_cls, torch_cls, _ = KINDS[kind]
    td = R.torch_dtype(dtype)
    nk, ref = nk_cls(40, dtype=td), torch_cls(40, dtype=td)
    randomize_(ref, 3)
    nk.load_state_dict(ref.state_dict())
    x0 = R.make_torch((6, 40), dtype, 4)
    dy = R.make_torch((6, 40), dtype, 5, 1.0, 0.0)
    x = x0.clone().requires_grad_()
    y = nk(x)
    y.backward(dy)
    assert y.dtype == td and x.grad.dtype == td
    tol = R.TOL[dtype]
    # torch natively in the half dtype (forward, parameter gradients) ...
    x_ref = x0.clone().requires_grad_()
    y_ref = ref(x_ref)
    y_ref.backward(dy)
    R.assert_close("y", y, y_ref, tol, y_ref.abs().max().item())
    eps = ref.eps if ref.eps is not None else R.default_rms_eps(dtype)
    w = ref.weight.detach()
    dx_scale, dw_scale = grad_scales(kind, dy, x0, (40,), w, eps)
    R.assert_close("weight.grad", nk.weight.grad, ref.weight.grad, tol, dw_scale)
    # ... and x.grad against torch in float32 on the same rounded values (see test_layer_norm.py)
    ref32 = torch_cls(40, dtype=torch.float32)
    ref32.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    x32 = x0.float().requires_grad_()
    ref32(x32).backward(dy.float())
    R.assert_close("x.grad", x.grad, x32.grad, tol, dx_scale)


@pytest.mark.parametrize("kind", KINDS)
def test_module_non_contiguous_input_and_no_grad(kind):
    nk_cls, torch_cls, _ = KINDS[kind]
    nk, ref = nk_cls(12), torch_cls(12)
    randomize_(ref, 9)
    nk.load_state_dict(ref.state_dict())
    base = R.make_torch((12, 5), "float32", 10)
    x_nk = base.clone().requires_grad_()
    x_ref = base.clone().requires_grad_()
    y_nk = nk(x_nk.t())  # non-contiguous view of a leaf
    y_ref = ref(x_ref.t())
    dy = R.make_torch((5, 12), "float32", 11, 1.0, 0.0)
    y_nk.backward(dy)
    y_ref.backward(dy)
    R.assert_close("y", y_nk, y_ref, 1e-5, y_ref.abs().max().item())
    R.assert_close("x.grad", x_nk.grad, x_ref.grad, 1e-5, x_ref.grad.abs().max().item())
    with torch.no_grad():
        y = nk(base.t())
        assert not y.requires_grad
        R.assert_close("y (no_grad)", y, ref(base.t()), 1e-5, y_ref.abs().max().item())
    # input that does not require grad, parameters that do: only parameter grads
    nk.zero_grad()
    y = nk(base.t())
    assert y.requires_grad
    y.sum().backward()
    assert nk.weight.grad is not None


@pytest.mark.parametrize("kind", KINDS)
def test_module_empty_batch(kind):
    """Zero-size batch: empty output, zero parameter gradients, as torch.nn."""
    nk_cls, torch_cls, _ = KINDS[kind]
    nk, ref = nk_cls(8), torch_cls(8)
    for m in (nk, ref):
        x = torch.zeros(0, 3, 8, requires_grad=True)
        y = m(x)
        assert y.shape == (0, 3, 8)
        y.sum().backward()
        assert x.grad.shape == (0, 3, 8)
    for (name, a), (_, b) in zip(nk.named_parameters(), ref.named_parameters()):
        assert a.grad is not None and torch.equal(a.grad, b.grad), name


@pytest.mark.parametrize("kind", KINDS)
def test_strict_load_state_dict_rejects_mismatches(kind):
    nk_cls, torch_cls, _ = KINDS[kind]
    nk = nk_cls(8)
    sd = torch_cls(8).state_dict()
    with pytest.raises(RuntimeError):
        nk.load_state_dict({}, strict=True)
    with pytest.raises(RuntimeError):
        nk.load_state_dict({**sd, "extra": torch.zeros(1)}, strict=True)
    with pytest.raises(RuntimeError):
        nk.load_state_dict({k: torch.zeros(9) for k in sd}, strict=True)
    # affine vs non-affine
    with pytest.raises(RuntimeError):
        nk_cls(8, elementwise_affine=False).load_state_dict(sd, strict=True)
    with pytest.raises(RuntimeError):
        torch_cls(8).load_state_dict(nk_cls(8, elementwise_affine=False).state_dict(), strict=True)
    if kind == "LayerNorm":
        with pytest.raises(RuntimeError):
            nk_cls(8, bias=False).load_state_dict(sd, strict=True)
        with pytest.raises(RuntimeError):
            torch_cls(8).load_state_dict(nk_cls(8, bias=False).state_dict(), strict=True)


# ----------------------------------------------------------------------------------------------------
# normkit.torch.functional
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("affine", ("none", "weight", "weight_bias", "bias"))
@pytest.mark.parametrize("dtype", ("float32", "float64"))
@pytest.mark.parametrize("case", [((4, 9), (9,)), ((2, 3, 4, 5), (4, 5)), ((3, 1000), (1000,))], ids=str)
def test_functional_layer_norm_autograd_vs_torch(case, dtype, affine):
    x_shape, ns = case
    x0 = R.make_torch(x_shape, dtype, 1)
    w0 = R.make_torch(ns, dtype, 2, 0.5, 1.0) if "weight" in affine else None
    b0 = R.make_torch(ns, dtype, 3) if "bias" in affine else None
    dy = R.make_torch(x_shape, dtype, 4, 1.0, 0.0)
    leaves = lambda: [None if t is None else t.clone().requires_grad_() for t in (x0, w0, b0)]  # noqa: E731
    a = leaves()
    c = leaves()
    ya = nktF.layer_norm(a[0], ns, a[1], a[2], 1e-5)
    yc = F.layer_norm(c[0], ns, c[1], c[2], 1e-5)
    ya.backward(dy)
    yc.backward(dy)
    tol = R.TOL[dtype]
    R.assert_close("y", ya, yc, tol, yc.abs().max().item())
    R.assert_close("x.grad", a[0].grad, c[0].grad, tol, R.layer_norm_dx_scale(dy, x0, ns, w0, 1e-5))
    if w0 is not None:
        R.assert_close("weight.grad", a[1].grad, c[1].grad, tol, R.layer_norm_dweight_scale(dy, x0, ns, 1e-5))
    if b0 is not None:
        R.assert_close("bias.grad", a[2].grad, c[2].grad, tol, R.dbias_scale(dy, ns))


@pytest.mark.parametrize("eps", (None, 1e-6))
@pytest.mark.parametrize("with_weight", (True, False))
@pytest.mark.parametrize("dtype", ("float32", "float64"))
@pytest.mark.parametrize("case", [((4, 9), (9,)), ((2, 3, 4, 5), (4, 5)), ((3, 1000), (1000,))], ids=str)
def test_functional_rms_norm_autograd_vs_torch(case, dtype, with_weight, eps):
    x_shape, ns = case
    x0 = R.make_torch(x_shape, dtype, 1)
    w0 = R.make_torch(ns, dtype, 2, 0.5, 1.0) if with_weight else None
    dy = R.make_torch(x_shape, dtype, 4, 1.0, 0.0)
    xa = x0.clone().requires_grad_()
    xc = x0.clone().requires_grad_()
    wa = None if w0 is None else w0.clone().requires_grad_()
    wc = None if w0 is None else w0.clone().requires_grad_()
    ya = nktF.rms_norm(xa, ns, wa, eps)
    yc = F.rms_norm(xc, ns, wc, eps)
    ya.backward(dy)
    yc.backward(dy)
    tol = R.TOL[dtype]
    e = R.default_rms_eps(dtype) if eps is None else eps
    _, rstd = R.rms_norm_forward(x0, ns, w0, e)
    R.assert_close("y", ya, yc, tol, yc.abs().max().item())
    R.assert_close("x.grad", xa.grad, xc.grad, tol, R.dx_scale(dy, x0, ns, w0, rstd))
    if w0 is not None:
        R.assert_close("weight.grad", wa.grad, wc.grad, tol, R.dweight_scale(dy, x0, ns, R.rms_norm_xhat(x0, ns, e)))


@pytest.mark.parametrize("dtype", R.DTYPES)
def test_functional_forward_all_dtypes(dtype):
    x = R.make_torch((5, 64), dtype, 1)
    w = R.make_torch((64,), dtype, 2, 0.5, 1.0)
    b = R.make_torch((64,), dtype, 3)
    tol = R.TOL[dtype]
    y = nktF.layer_norm(x, (64,), w, b)
    assert y.dtype == x.dtype
    yr = R.layer_norm(x, (64,), w, b, 1e-5)
    R.assert_close("layer_norm y", y, yr, tol, np.abs(yr).max())
    y = nktF.rms_norm(x, (64,), w)
    assert y.dtype == x.dtype
    yr = R.rms_norm(x, (64,), w, R.default_rms_eps(dtype))
    R.assert_close("rms_norm y", y, yr, tol, np.abs(yr).max())


# ----------------------------------------------------------------------------------------------------
# gradcheck in float64
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [((3, 5), (5,)), ((2, 3, 4), (3, 4)), ((4, 1), (1,)), ((6,), (6,))], ids=str)
def test_gradcheck_layer_norm(case):
    x_shape, ns = case
    x = R.make_torch(x_shape, "float64", 1).requires_grad_()
    w = R.make_torch(ns, "float64", 2, 0.5, 1.0).requires_grad_()
    b = R.make_torch(ns, "float64", 3).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w, b: nktF.layer_norm(x, ns, w, b, 1e-5), (x, w, b))
    assert torch.autograd.gradcheck(lambda x: nktF.layer_norm(x, ns, None, None, 1e-3), (x,))
    assert torch.autograd.gradcheck(lambda x, w: nktF.layer_norm(x, ns, w, None, 0.5), (x, w))


@pytest.mark.parametrize("case", [((3, 5), (5,)), ((2, 3, 4), (3, 4)), ((4, 1), (1,)), ((6,), (6,))], ids=str)
def test_gradcheck_rms_norm(case):
    x_shape, ns = case
    x = R.make_torch(x_shape, "float64", 1).requires_grad_()
    w = R.make_torch(ns, "float64", 2, 0.5, 1.0).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: nktF.rms_norm(x, ns, w, None), (x, w))
    assert torch.autograd.gradcheck(lambda x, w: nktF.rms_norm(x, ns, w, 1e-3), (x, w))
    assert torch.autograd.gradcheck(lambda x: nktF.rms_norm(x, ns, None, 0.5), (x,))


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_modules(kind):
    nk_cls = KINDS[kind][0]
    m = nk_cls((3, 4), dtype=torch.float64)
    randomize_(m, 1)
    x = R.make_torch((2, 3, 4), "float64", 5).requires_grad_()
    params = tuple(m.parameters())

    names = [n for n, _ in m.named_parameters()]

    def fn(x, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps)), (x,))

    inputs = (x,) + tuple(p.detach().clone().requires_grad_() for p in params)
    assert torch.autograd.gradcheck(fn, inputs)


# ----------------------------------------------------------------------------------------------------
# Unusual tensors and arguments: inference-mode inputs, the negative bit, non-tensors, meta/sparse
# ----------------------------------------------------------------------------------------------------

_RUNNING_TWINS = {
    "BatchNorm1d": (lambda m: m.BatchNorm1d(3), torch.nn),
    "BatchNorm1d-no-affine": (lambda m: m.BatchNorm1d(3, affine=False), torch.nn),
    "InstanceNorm1d": (lambda m: m.InstanceNorm1d(3, affine=True, track_running_stats=True), torch.nn),
    "SyncBatchNorm": (lambda m: m.SyncBatchNorm(3), torch.nn),
    "BatchInstanceNorm1d": (lambda m: m.BatchInstanceNorm1d(3), None),
    "SwitchableNorm1d": (lambda m: m.SwitchableNorm1d(3), None),
    "MeanOnlyBatchNorm1d": (lambda m: m.MeanOnlyBatchNorm1d(3), None),
}


def _buffers(m):
    return {n: b.clone() for n, b in m.named_buffers()}


@pytest.mark.parametrize("name", _RUNNING_TWINS)
def test_inference_mode_input_in_training_raises_as_torch_before_updating_anything(name):
    make, torch_nn = _RUNNING_TWINS[name]
    with torch.inference_mode():
        x = torch.randn(4, 3, 2) + 5
    ours = make(nkt)
    before = _buffers(ours)
    expected = None
    if torch_nn is not None:  # torch raises where its layer saves the input for backward (affine ones)
        try:
            make(torch_nn)(x)
        except RuntimeError as e:
            expected = e
    try:
        ours(x)
    except RuntimeError as e:
        assert "Inference tensors cannot be saved for backward" in str(e)
        assert torch_nn is None or expected is not None
        for n, b in _buffers(ours).items():  # neither the statistics nor the count moved
            torch.testing.assert_close(b, before[n], rtol=0, atol=0)
    else:
        assert expected is None
        assert not torch.equal(ours.running_mean, before["running_mean"])


def test_a_tensor_with_the_negative_bit_is_read_with_its_sign():
    x = torch.randn(4, 5, dtype=torch.complex64, generator=torch.Generator().manual_seed(0)).conj().imag
    assert x.is_neg()
    torch.testing.assert_close(nktF.layer_norm(x, (5,)), F.layer_norm(x, (5,)))
    torch.testing.assert_close(nkt.BatchNorm1d(5)(x), torch.nn.BatchNorm1d(5)(x))
    w = torch.randn(5, dtype=torch.complex64).conj().imag
    torch.testing.assert_close(nktF.layer_norm(x.resolve_neg(), (5,), w), F.layer_norm(x.resolve_neg(), (5,), w))


def test_a_written_tensor_with_the_negative_bit_is_refused_untouched():
    running_mean = torch.zeros(3, dtype=torch.complex64).conj().imag
    assert running_mean.is_neg()
    with pytest.raises(ValueError, match="running_mean: expected a tensor without the negative bit"):
        nktF.batch_norm(torch.randn(4, 3), running_mean, torch.ones(3), training=True)
    assert torch.equal(running_mean, torch.zeros(3))


@pytest.mark.parametrize("bad", [np.ones((2, 3), np.float32), [[1.0, 2.0, 3.0]], None], ids=["numpy", "list", "None"])
def test_functional_ops_refuse_non_tensors_naming_the_argument(bad):
    t = torch.ones(2, 3)
    with pytest.raises(TypeError, match="input: expected a torch.Tensor"):
        nktF.layer_norm(bad, (3,))
    with pytest.raises(TypeError, match="input: expected a torch.Tensor"):
        nktF.local_response_norm(bad, 2)
    with pytest.raises(TypeError, match="input: expected a torch.Tensor"):
        nktF.rms_norm(bad, (3,))
    if bad is not None:  # (None is a valid weight)
        with pytest.raises(TypeError, match="weight: expected a torch.Tensor"):
            nktF.layer_norm(t, (3,), weight=bad)
        with pytest.raises(TypeError, match="g: expected a torch.Tensor"):
            nktF.weight_norm(t, bad)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("make", [lambda: torch.empty(4, 3, device="meta"), lambda: torch.randn(4, 3).to_sparse(),
                                  lambda: torch.randn(4, 3).to_sparse_csr()], ids=["meta", "sparse_coo", "sparse_csr"])
@pytest.mark.parametrize("cls", [nkt.BatchNorm1d, nkt.SyncBatchNorm])
def test_meta_and_sparse_tensors_are_a_type_error_and_leave_the_count(make, cls):
    layer = cls(3)
    with pytest.raises(TypeError, match="x: expected a (CPU or CUDA|strided)"):
        layer(make())
    assert int(layer.num_batches_tracked) == 0


def test_any_failure_takes_the_count_back():
    """A failing communicator (any exception, not only a rejected input) leaves num_batches_tracked."""
    class Failing:
        rank, size = 0, 2

        def allreduce(self, a):
            raise RuntimeError("allreduce failed")

    layer = nkt.SyncBatchNorm(3, comm=Failing())
    with pytest.raises(RuntimeError, match="allreduce failed"):
        layer(torch.randn(4, 3))
    assert int(layer.num_batches_tracked) == 0


@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 3, 0)])
def test_sync_batch_norm_of_one_process_is_batch_norm_even_for_an_empty_batch(shape):
    """As torch: one process needs no collective, and an empty batch gives an empty output and leaves the
    running statistics (num_batches_tracked counts it, as BatchNorm's does)."""
    outs = []
    for layer in (torch.nn.BatchNorm1d(3), nkt.SyncBatchNorm(3)):
        x = torch.randn(shape, requires_grad=True)
        y = layer(x)
        y.sum().backward()
        outs.append((y.shape, x.grad.shape, layer.state_dict()))
    assert outs[0][:2] == outs[1][:2] == (shape, shape)
    for key, value in outs[0][2].items():
        torch.testing.assert_close(outs[1][2][key], value, msg=key)


@pytest.mark.parametrize("shape,groups", [((1, 4), 4), ((1, 4, 1), 4), ((2, 4), 4), ((1, 4, 2), 4)])
def test_group_norm_of_one_value_per_group_raises_as_torch(shape, groups):
    x = torch.randn(*shape)
    if shape[0] * shape[1] // groups * int(np.prod(shape[2:])) != 1:
        # (groups of one value per sample: 0 here, torch's rounding gives ~1e-5)
        torch.testing.assert_close(nkt.GroupNorm(groups, shape[1])(x), torch.nn.GroupNorm(groups, shape[1])(x),
                                   rtol=0, atol=1e-4)
        return
    with pytest.raises(ValueError) as theirs:
        torch.nn.GroupNorm(groups, shape[1])(x)
    with pytest.raises(ValueError) as ours:
        nkt.GroupNorm(groups, shape[1])(x)
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nktF.group_norm(x.requires_grad_(), groups)


@pytest.mark.parametrize("call", [
    lambda t: nktF.batch_norm(t, None, None, training="False"),
    lambda t: nktF.instance_norm(t.unsqueeze(-1).expand(4, 3, 2), use_input_stats="False"),
    lambda t: nktF.layer_norm(t, (3,), eps="1e-5"),
    lambda t: nktF.layer_norm(t, (3,), eps=None),
    lambda t: nktF.batch_norm(t, None, None, training=True, momentum="0.1"),
    lambda t: nktF.local_response_norm(t.unsqueeze(-1), 2, alpha=None),
    lambda t: nktF.weight_norm(t, torch.ones(4, 1), dim=0.9),
    lambda t: nktF.weight_norm(t, torch.ones(4, 1), dim="0"),
], ids=["training", "use_input_stats", "eps-str", "eps-None", "momentum", "alpha", "dim-float", "dim-str"])
def test_scalar_arguments_of_the_wrong_type_are_a_type_error_naming_them(call):
    with pytest.raises(TypeError, match=r"^(training|use_input_stats|eps|momentum|alpha|dim): expected"):
        call(torch.randn(4, 3))
