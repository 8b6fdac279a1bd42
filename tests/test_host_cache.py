"""CPU outputs of a few hundred KB and more come from normkit's host cache: buffers return to it only when the last view
dies, are reused for the next output of that size, and the cache honours its limit."""

import gc
import threading

import normkit
import numpy as np
import pytest
import torch
from normkit import _arrays, _core
from normkit import functional as F

ROWS = _arrays.CACHED_OUTPUT_BYTES // (4 * 1024) + 8  # a float32 [ROWS, 1024] output is "large"


@pytest.fixture(autouse=True)
def empty_cache():
    gc.collect()
    normkit.empty_host_cache()
    yield
    gc.collect()
    normkit.empty_host_cache()


def test_large_torch_output_is_reused_after_release():
    x = torch.randn(ROWS, 1024)
    y = F.layer_norm(x, 1024)
    ptr = y.data_ptr()
    assert _core.host_cache_idle_bytes() == 0
    del y
    gc.collect()
    assert _core.host_cache_idle_bytes() >= ROWS * 1024 * 4
    y2 = F.layer_norm(x, 1024)
    assert y2.data_ptr() == ptr
    torch.testing.assert_close(y2, torch.nn.functional.layer_norm(x, (1024,)), atol=1e-5, rtol=1e-5)


def test_a_view_keeps_the_buffer_alive():
    x = np.random.default_rng(0).standard_normal((ROWS, 1024)).astype(np.float32)
    y = F.layer_norm(x, 1024)
    tail = y[-3:].copy()
    view = y[-3:]
    del y
    gc.collect()
    assert _core.host_cache_idle_bytes() == 0  # still referenced through the view
    F.layer_norm(x + 1, 1024)  # another output of the same size must not reuse it
    np.testing.assert_array_equal(view, tail)
    del view
    gc.collect()
    assert _core.host_cache_idle_bytes() > 0


def test_small_outputs_do_not_use_the_cache():
    y = F.layer_norm(torch.randn(4, 1024), 1024)
    del y
    gc.collect()
    assert _core.host_cache_idle_bytes() == 0


def test_limit_frees_instead_of_keeping():
    old = _core.host_cache_limit()
    try:
        _core.host_cache_set_limit(0)
        y = F.rms_norm(torch.randn(ROWS, 1024), 1024)
        del y
        gc.collect()
        assert _core.host_cache_idle_bytes() == 0
    finally:
        _core.host_cache_set_limit(old)


def test_release_from_another_thread():
    outs = [F.layer_norm(torch.randn(ROWS, 1024), 1024) for _ in range(2)]

    def drop():
        outs.clear()
        gc.collect()

    t = threading.Thread(target=drop)
    t.start()
    t.join()
    assert _core.host_cache_idle_bytes() >= 2 * ROWS * 1024 * 4


def test_autograd_outputs_from_the_cache():
    x = torch.randn(ROWS, 1024, requires_grad=True)
    w = torch.randn(1024, requires_grad=True)
    import normkit.torch as nt

    y = nt.functional.layer_norm(x, (1024,), w)
    y.square().sum().backward()
    xr = x.detach().clone().requires_grad_()
    wr = w.detach().clone().requires_grad_()
    torch.nn.functional.layer_norm(xr, (1024,), wr).square().sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(w.grad, wr.grad, atol=1e-2, rtol=1e-4)


def test_medium_outputs_take_64k_steps_not_huge_pages():
    # A 300 KB output (kept alive by autograd in training, so malloc cannot reuse it in place) comes
    # from the cache, in a buffer rounded up to 64 KB, not to a 2 MB huge page.
    rows = 75  # float32 [75, 1024]: 300 KB
    assert rows * 1024 * 4 >= _arrays.CACHED_OUTPUT_BYTES
    y = F.layer_norm(torch.randn(rows, 1024), 1024)
    page = y.data_ptr() // 4096  # (the buffer starts on a page; its data up to 4 KB in, see below)
    del y
    gc.collect()
    assert _core.host_cache_idle_bytes() == 320 << 10
    assert F.layer_norm(torch.randn(rows, 1024), 1024).data_ptr() // 4096 == page


@pytest.mark.parametrize("kind", ("torch", "numpy"))
@pytest.mark.parametrize("offset", (0, 16, 64, 2048, 2112, 4032))
def test_outputs_start_3k_past_the_input(kind, offset):
    # A store and a later load whose addresses agree modulo 4 KB stall the load (4K aliasing): a
    # cached output's data start 3 KB past the input's, modulo 4 KB, in whole 64-byte lines.
    n = ROWS * 1024
    base = np.random.default_rng(1).standard_normal(n + 2048).astype(np.float32)
    start = (-base.ctypes.data % 4096 + offset) // 4
    x = base[start:start + n].reshape(ROWS, 1024)
    if kind == "torch":
        x = torch.from_numpy(x)
        x_address, y = x.data_ptr(), F.layer_norm(x, 1024)
        y_address = y.data_ptr()
    else:
        x_address, y = x.ctypes.data, F.layer_norm(x, 1024)
        y_address = y.ctypes.data
    assert x_address % 4096 == offset
    assert y_address % 4096 == (offset // 64 * 64 + 3072) % 4096
    np.testing.assert_allclose(np.asarray(y), torch.nn.functional.layer_norm(torch.as_tensor(x), (1024,)).numpy(),
                               atol=1e-5, rtol=1e-5)
