"""The CUDA stream each array kind's ops are queued on (normkit._arrays): torch's current stream for
torch tensors, CuPy's for CuPy arrays, the legacy default stream (0) for anything else. Runs without a
GPU (a stand-in CuPy module); the torch CUDA case is covered by the GPU tests."""

from __future__ import annotations

import sys
import types

import numpy as np
import torch
from bare_dlpack import BareDLPack
from normkit._arrays import kind_of


def test_cupy_arrays_run_on_cupys_current_stream_of_their_device(monkeypatch):
    entered = []

    class Device:
        def __enter__(self):
            entered.append("in")

        def __exit__(self, *exc):
            entered.append("out")

    class ndarray:  # (cupy.ndarray)
        device = Device()

        def __dlpack__(self, **kwargs):
            raise NotImplementedError

        def __dlpack_device__(self):
            return (2, 0)

    cupy = types.ModuleType("cupy")
    cupy.ndarray = ndarray
    cupy.cuda = types.SimpleNamespace(get_current_stream=lambda: types.SimpleNamespace(ptr=1234))
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    x = ndarray()
    assert kind_of(x).stream(x) == 1234
    assert entered == ["in", "out"]  # asked with x's device current
    bare = BareDLPack(np.ones(3))
    assert kind_of(bare).stream(bare) == 0


def test_host_arrays_and_other_dlpack_arrays_use_stream_0():
    for x in (np.ones(3), torch.ones(3), BareDLPack(np.ones(3))):
        assert kind_of(x).stream(x) == 0
