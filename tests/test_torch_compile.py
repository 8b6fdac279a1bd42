"""torch.compile and torch.export with normkit's torch twins.

Under tracing the functional ops become torch.library custom ops (normkit/torch/_custom_ops.py): one
node each, so ``fullgraph=True`` and ``torch.export`` work, and the compiled code runs the same kernels
as eager mode (the results below are bitwise equal). The custom ops' fake implementations must give the
real outputs' shapes, dtypes and strides; torch.library.opcheck compares them, layouts included.
"""

from __future__ import annotations

import copy

import normkit.torch as nt
import normkit.torch.functional as nF
import pytest
import torch
from normkit.torch import _custom_ops

CL = torch.channels_last


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles its own modules: dynamo's caches (and recompile limits) start empty."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _layers():
    """(name, layer factory, input) for every op with a custom-op form, both layouts where they differ."""
    g = torch.Generator().manual_seed(0)

    def x(*shape, fmt=None):
        t = torch.randn(*shape, generator=g) * 2 + 0.5
        return t.contiguous(memory_format=fmt) if fmt is not None else t

    return [
        ("LayerNorm", lambda: nt.LayerNorm(12), x(4, 3, 12)),
        ("RMSNorm", lambda: nt.RMSNorm(12), x(4, 3, 12)),
        ("BatchNorm1d", lambda: nt.BatchNorm1d(6), x(5, 6, 7)),
        ("BatchNorm2d", lambda: nt.BatchNorm2d(6), x(4, 6, 5, 3)),
        ("BatchNorm2d-NHWC", lambda: nt.BatchNorm2d(6), x(4, 6, 5, 3, fmt=CL)),
        ("BatchNorm2d-cumulative", lambda: nt.BatchNorm2d(6, momentum=None), x(4, 6, 5, 3)),
        ("BatchNorm3d-NDHWC", lambda: nt.BatchNorm3d(6), x(2, 6, 3, 4, 3, fmt=torch.channels_last_3d)),
        ("InstanceNorm2d", lambda: nt.InstanceNorm2d(6, affine=True, track_running_stats=True), x(4, 6, 5, 3)),
        ("InstanceNorm1d-unbatched", lambda: nt.InstanceNorm1d(6), x(6, 9)),
        ("GroupNorm", lambda: nt.GroupNorm(3, 6), x(4, 6, 5, 3)),
        ("GroupNorm-NHWC", lambda: nt.GroupNorm(3, 6), x(4, 6, 5, 3, fmt=CL)),
        ("LocalResponseNorm", lambda: nt.LocalResponseNorm(3), x(4, 6, 5, 3)),
        ("MeanOnlyBatchNorm2d-NHWC", lambda: nt.MeanOnlyBatchNorm2d(6), x(4, 6, 5, 3, fmt=CL)),
        ("weight_norm", lambda: nt.weight_norm(torch.nn.Linear(7, 5)), x(3, 7)),
    ]


LAYERS = _layers()


def _train_steps(module, x, steps=2):
    """Outputs, input gradients and parameter gradients of a few training steps, then an eval output."""
    out = []
    module.train()
    for step in range(steps):
        xs = (x * (1 + step)).detach().requires_grad_()
        y = module(xs)
        y.square().mean().backward()
        out += [y.detach(), xs.grad]
        out += [p.grad.clone() for p in module.parameters()]
        module.zero_grad()
    module.eval()
    with torch.no_grad():
        out.append(module(x))
    return out


@pytest.mark.parametrize("name,make,x", LAYERS, ids=[layer[0] for layer in LAYERS])
def test_fullgraph_compile_equals_eager_bitwise(name, make, x):
    """One graph per module (fullgraph=True: no graph break), and the same values as eager mode: outputs,
    gradients, running statistics and num_batches_tracked. (momentum=None reads num_batches_tracked's
    value: a graph break, as with torch.nn.BatchNorm2d.)"""
    torch.manual_seed(0)
    eager = make()
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module, fullgraph="cumulative" not in name, backend="aot_eager")
    expected = _train_steps(eager, x)
    got = _train_steps(compiled, x)
    for i, (a, b) in enumerate(zip(expected, got)):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=f"{name}: value #{i}")
    for (key, a), (_, b) in zip(eager.state_dict().items(), compiled_module.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=f"{name}: {key}")


def test_inductor_model_trains_as_eager():
    """The default backend (inductor, which fuses the torch ops around the custom ops by their fake
    strides) over a model of twins, channels-last, a few SGD steps and dynamic batch sizes."""
    torch.manual_seed(0)
    model = nt.convert_model(torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.GroupNorm(2, 8),
        torch.nn.Flatten(), torch.nn.LayerNorm(8 * 6 * 6), torch.nn.Linear(8 * 6 * 6, 3))).to(memory_format=CL)
    compiled_model = copy.deepcopy(model)
    compiled = torch.compile(compiled_model, fullgraph=True, dynamic=True)
    opts = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.5) for m in (model, compiled_model)]
    for step in range(3):
        x = torch.randn(4 + step, 3, 6, 6, generator=torch.Generator().manual_seed(step)).contiguous(memory_format=CL)
        for m, opt in zip((model, compiled), opts):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
    for (name, a), (_, b) in zip(model.state_dict().items(), compiled_model.state_dict().items()):
        # (inductor computes the convolution's and the loss's gradients its own way: not bitwise)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("name,make,x", LAYERS, ids=[layer[0] for layer in LAYERS])
def test_export_in_eval_and_training(name, make, x):
    """torch.export: the exported program computes what the module does; in training mode it also
    updates the running statistics (buffer mutations of the exported graph)."""
    torch.manual_seed(0)
    for training in (False, True):
        if training and "cumulative" in name:
            # momentum=None reads num_batches_tracked's value, which export cannot trace: torch's own
            # BatchNorm2d fails the same way.
            for layer in (torch.nn.BatchNorm2d(6, momentum=None), make()):
                with pytest.raises(Exception, match="data-dependent"):
                    torch.export.export(layer, (x,))
            continue
        module = make().train(training)
        reference = copy.deepcopy(module)
        program = torch.export.export(copy.deepcopy(module), (x,))
        exported = program.module()
        torch.testing.assert_close(exported(x), reference(x), rtol=0, atol=0, msg=f"{name} training={training}")
        for (key, a), (_, b) in zip(reference.state_dict().items(), exported.state_dict().items()):
            torch.testing.assert_close(b, a, rtol=0, atol=0, msg=f"{name}: {key}")


def test_eager_calls_never_go_through_the_custom_ops(monkeypatch):
    """Eager mode keeps its adapters (the custom op dispatcher costs tens of microseconds per call)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a custom op ran in eager mode")

    for name in _custom_ops.TRACED:
        monkeypatch.setitem(_custom_ops.TRACED, name, refuse)
    x = torch.randn(4, 6, 5, requires_grad=True)
    nF.layer_norm(x, (5,)).sum().backward()
    nt.BatchNorm1d(6)(x).sum().backward()
    # The ops without a custom-op form stay compiler.disable'd: a graph break, never traced into.
    for name in set(nF.__all__) - set(_custom_ops.TRACED):
        assert getattr(getattr(nF, name), "_torchdynamo_disable", False), name


def test_eager_calls_with_and_without_a_dynamo_frame_hook_agree(monkeypatch):
    """Outside compiled code dynamo sets no frame hook and the adapters are called directly; with one
    set (code called from a compiled region) they run under torch.compiler.disable. Same bits."""
    assert nF._frame_hook() is None

    def run():
        g = torch.Generator().manual_seed(3)
        x = torch.randn(4, 6, 5, generator=g, requires_grad=True)
        w = torch.randn(5, generator=g, requires_grad=True)
        y = nF.layer_norm(x, (5,), w) + nt.BatchNorm1d(6)(x)
        y.backward(torch.randn(y.shape, generator=g))
        return y.detach(), x.grad, w.grad

    direct = run()
    monkeypatch.setattr(nF, "_frame_hook", lambda: object())
    for a, b in zip(direct, run()):
        assert torch.equal(a, b)


def _opcheck(op, *args):
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "nlc", "transposed"])
def test_opcheck_channel_ops(layout, dtype):
    """Schema, fake tensors (shapes, dtypes and strides against the real op), autograd registration and
    AOT dispatch with dynamic shapes, for each op and its backward, in each layout."""
    g = torch.Generator().manual_seed(1)
    if layout == "nlc":
        x = torch.randn(4, 5, 6, generator=g).transpose(1, 2)  # [4, 6, 5] stored N, L, C
    else:
        x = torch.randn(4, 6, 5, 3, generator=g)
        x = x.contiguous(memory_format=CL) if layout == "channels_last" else x
        x = x.transpose(2, 3) if layout == "transposed" else x
    x = x.to(dtype).requires_grad_()
    pdt = torch.float32 if dtype == torch.bfloat16 else dtype
    w = torch.randn(6, generator=g).to(pdt).requires_grad_()
    b = torch.randn(6, generator=g).to(pdt).requires_grad_()
    rm, rv = torch.zeros(6, dtype=pdt), torch.ones(6, dtype=pdt)
    dy = torch.randn(x.shape, generator=g).to(dtype)
    ops = torch.ops.normkit
    for training in (True, False):
        _opcheck(ops.batch_norm_forward, x, rm, rv, w, b, training, 0.1, 1e-5)
        y, m, r, _, _ = ops.batch_norm_forward(x, rm.clone(), rv.clone(), w, b, training, 0.1, 1e-5)
        _opcheck(ops.batch_norm_backward, dy, x.detach(), m, r, w.detach(), training, [True, True, True], "none")
        _opcheck(ops.instance_norm_forward, x, rm, rv, w, b, training, 0.1, 1e-5)
        _opcheck(ops.mean_only_batch_norm_forward, x, rm, b, training, 0.1)
        _opcheck(ops.mean_only_batch_norm_backward, dy, training, [True, True], "none", layout != "contiguous")
    _opcheck(ops.group_norm_forward, x, 3, w, b, 1e-5)
    y, m, r = ops.group_norm_forward(x, 3, w, b, 1e-5)
    _opcheck(ops.group_norm_backward, dy, x.detach(), 3, m, r, w.detach(), [True, False, True], "float64")
    _opcheck(ops.local_response_norm, x, 3, 1e-4, 0.75, 1.0)
    _opcheck(ops.local_response_norm_backward, dy, x.detach(), 3, 1e-4, 0.75, 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_opcheck_row_ops_and_weight_norm(dtype):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 8, generator=g).to(dtype).transpose(0, 1).requires_grad_()  # (a non-contiguous view)
    pdt = torch.float32 if dtype == torch.bfloat16 else dtype
    w = torch.randn(8, generator=g).to(pdt).requires_grad_()
    b = torch.randn(8, generator=g).to(pdt).requires_grad_()
    dy = torch.randn(x.shape, generator=g).to(dtype)
    ops = torch.ops.normkit
    _opcheck(ops.layer_norm_forward, x, [8], w, b, 1e-5)
    _opcheck(ops.layer_norm_forward, x, [3, 8], None, None, 1e-5)
    y, m, r = ops.layer_norm_forward(x, [8], w, b, 1e-5)
    _opcheck(ops.layer_norm_backward, dy, x.detach(), [8], m, r, w.detach(), [True, True, False], "none")
    _opcheck(ops.rms_norm_forward, x, [8], w, None)
    y, r = ops.rms_norm_forward(x, [8], w, None)
    _opcheck(ops.rms_norm_backward, dy, x.detach(), [8], r, w.detach(), [False, True])
    v = torch.randn(5, 3, 2, generator=g).to(dtype).requires_grad_()
    gain = torch.randn(1, 3, 1, generator=g).to(dtype).requires_grad_()
    _opcheck(ops.weight_norm_forward, v, gain, 1)
    w2, norms = ops.weight_norm_forward(v, gain, 1)
    _opcheck(ops.weight_norm_backward, torch.randn(v.shape, generator=g).to(dtype), v.detach(), gain.detach(),
             norms, 1)


@pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")
@pytest.mark.parametrize("name,make,x", LAYERS, ids=[layer[0] for layer in LAYERS])
def test_jit_trace_records_the_ops(name, make, x, tmp_path):
    """torch.jit.trace of an eval model (no_grad, the usual setup for tracing): the traced and the saved
    and reloaded model compute what the module does on a new batch. (The eager adapters call the core
    directly: a trace of them held only their output allocations and returned uninitialised memory.)"""
    torch.manual_seed(0)
    module = make().eval()
    x2 = torch.cat([x, x * 0.5 - 1]) if x.dim() > 2 else x * 0.5 - 1
    with torch.no_grad():
        traced = torch.jit.trace(module, (x,))
        path = tmp_path / "traced.pt"
        torch.jit.save(traced, path)
        for m in (traced, torch.jit.load(path)):
            torch.testing.assert_close(m(x2), module(x2), rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("make", [lambda: nt.BatchInstanceNorm2d(4), lambda: nt.SwitchableNorm2d(4),
                                  lambda: nt.spectral_norm(torch.nn.Conv2d(4, 4, 1))],
                         ids=["BatchInstanceNorm2d", "SwitchableNorm2d", "spectral_norm"])
@pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")
def test_jit_trace_refuses_ops_without_a_custom_op_form(make):
    with torch.no_grad(), pytest.raises(RuntimeError, match="cannot be recorded by torch.jit.trace"):
        torch.jit.trace(make().eval(), (torch.randn(2, 4, 3, 3),))


def test_dispatch_mode_tracers_record_the_ops():
    """make_fx (and any dispatch mode: FakeTensorMode, FlopCounterMode) sees the custom ops; the eager
    adapters made no dispatcher op but their output allocations, so a make_fx graph returned
    uninitialised memory."""
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.utils.flop_counter import FlopCounterMode

    layer = nt.LayerNorm(5).eval()
    x = torch.randn(3, 4, 5)
    graph = make_fx(lambda t: layer(t))(x)
    assert any("normkit" in str(node.target) for node in graph.graph.nodes)
    torch.testing.assert_close(graph(x * 2 - 1), layer(x * 2 - 1), rtol=0, atol=0)
    with FlopCounterMode(display=False):
        y = layer(x)
    torch.testing.assert_close(y, layer(x), rtol=0, atol=0)


def test_single_process_sync_batch_norm_compiles_as_batch_norm():
    """One process: plain BatchNorm (as torch's SyncBatchNorm), so fullgraph compilation works too."""
    layer = nt.SyncBatchNorm(4)
    reference = copy.deepcopy(layer)
    x = torch.randn(3, 4, 5)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), reference(x), rtol=0, atol=0)
    torch.testing.assert_close(layer.running_var, reference.running_var, rtol=0, atol=0)
