"""Interleaved timing of a (normkit_fn, torch_fn) pair.

Method:
  1. warm both closures up (interleaved);
  2. calibrate, per side, an inner loop count ``n`` so that one repetition
     (``n`` back-to-back calls) takes at least ``min_time`` seconds;
  3. run ``reps`` repetitions, alternating the two sides and flipping which
     side goes first every repetition, so that slow drift (frequency, other
     load, thermal) hits both equally;
  4. report per-call times: median (headline), min, and quartiles.

The garbage collector is disabled during the timed repetitions.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

Fn = Callable[[], object]

_perf = time.perf_counter


@dataclass
class SideTiming:
    inner: int                     # calls per repetition
    samples: list = field(default_factory=list)  # seconds per call, one per repetition

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def quartiles(self) -> tuple[float, float]:
        if len(self.samples) < 2:
            return self.samples[0], self.samples[0]
        q = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q[0], q[2]

    def as_dict(self) -> dict:
        q1, q3 = self.quartiles
        return {"median_s": self.median, "min_s": self.best, "q1_s": q1, "q3_s": q3,
                "inner_loops": self.inner, "samples_s": list(self.samples)}


@dataclass
class PairTiming:
    normkit: SideTiming
    torch: SideTiming

    @property
    def speedup(self) -> float:
        """torch time / normkit time (medians); > 1 means normkit is faster."""
        return self.torch.median / self.normkit.median


def _loop(fn: Fn, n: int) -> float:
    t0 = _perf()
    for _ in range(n):
        fn()
    return _perf() - t0


def calibrate(fn: Fn, min_time: float, max_inner: int = 1 << 20) -> int:
    """Smallest-ish loop count for which ``n`` calls take >= ``min_time``."""
    n = 1
    while True:
        t = _loop(fn, n)
        if t >= min_time:
            return n
        if n >= max_inner:
            return max_inner
        if t < min_time / 20:
            n *= 10 if t * 10 < min_time else 2
        else:
            # Predict with a 10% margin so we land above the threshold.
            return min(max_inner, max(n + 1, math.ceil(n * min_time * 1.1 / max(t, 1e-9))))


def time_pair(normkit_fn: Fn, torch_fn: Fn, *, reps: int = 15, min_time: float = 0.05,
              warmup: int = 3, max_time: float | None = None, min_reps: int = 3) -> PairTiming:
    """Time the pair; see the module docstring.

    ``max_time`` (seconds, optional) caps the timed repetitions: once it is
    exceeded, stop after the current repetition provided ``min_reps`` were done.
    """
    for _ in range(warmup):
        normkit_fn()
        torch_fn()
    nk = SideTiming(calibrate(normkit_fn, min_time))
    th = SideTiming(calibrate(torch_fn, min_time))
    sides = [(normkit_fn, nk), (torch_fn, th)]
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    t0 = _perf()
    try:
        for r in range(reps):
            order = sides if r % 2 == 0 else sides[::-1]
            for fn, st in order:
                st.samples.append(_loop(fn, st.inner) / st.inner)
            if max_time is not None and r + 1 >= min_reps and _perf() - t0 > max_time:
                break
    finally:
        if was_enabled:
            gc.enable()
    return PairTiming(nk, th)


def compare_outputs(a, b) -> dict:
    """Relative error of normkit's outputs ``a`` against torch's ``b``.

    Accepts tensors or dicts name -> tensor.  For each output returns
    max|a - b| / max|b|; the worst one is under key ``"max"`` and its name
    under ``"worst"``.  Note this is a *difference* between the libraries:
    for low-precision dtypes either side may be the less accurate one.
    """
    import torch  # noqa: PLC0415

    if isinstance(a, torch.Tensor):
        a, b = {"y": a}, {"y": b}
    if set(a) != set(b):
        raise ValueError(f"output mismatch: normkit {sorted(a)} vs torch {sorted(b)}")
    per = {}
    for k in a:
        x, y = a[k], b[k]
        if x is None or y is None:
            if (x is None) != (y is None):
                raise ValueError(f"only one side produced {k}")
            continue
        if tuple(x.shape) != tuple(y.shape):
            raise ValueError(f"{k}: shape mismatch {tuple(x.shape)} vs {tuple(y.shape)}")
        x = x.detach().float()
        y = y.detach().float()
        scale = y.abs().max().item() or 1.0
        per[k] = (x - y).abs().max().item() / scale
    worst = max(per, key=per.get) if per else None
    return {"per_output": per, "worst": worst, "max": per[worst] if per else 0.0}
