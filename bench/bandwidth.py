"""Measure the machine's achievable memory bandwidth in-process.

Kernel: ``torch.add(a, 1, out=b)`` on large float32 arrays (256 MiB each by
default, far larger than any cache).  It uses torch's intra-op thread pool,
so call it after ``torch.set_num_threads`` has been set to the benchmark's
thread count.  Bandwidth is counted as bytes read + bytes written
(2 x array bytes) per second -- the same accounting convention as the cases'
minimum-bytes figures (write-allocate traffic is not counted on either side).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch


@dataclass
class Bandwidth:
    array_bytes: int
    threads: int
    samples: list = field(default_factory=list)  # bytes/s, one per repetition

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        return max(self.samples)

    def extend(self, other: Bandwidth) -> Bandwidth:
        return Bandwidth(self.array_bytes, self.threads, self.samples + other.samples)

    def as_dict(self) -> dict:
        return {"kernel": "torch.add(a, 1, out=b) float32", "array_bytes": self.array_bytes,
                "bytes_per_rep": 2 * self.array_bytes, "threads": self.threads,
                "median_Bps": self.median, "best_Bps": self.best, "samples_Bps": list(self.samples)}


def measure_bandwidth(array_bytes: int = 256 << 20, reps: int = 7, warmup: int = 2) -> Bandwidth:
    n = array_bytes // 4
    a = torch.empty(n, dtype=torch.float32)
    b = torch.empty(n, dtype=torch.float32)
    a.fill_(1.0)  # first touch: fault the pages in outside the timed region
    b.fill_(0.0)
    for _ in range(warmup):
        torch.add(a, 1, out=b)
    res = Bandwidth(n * 4, torch.get_num_threads())
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.add(a, 1, out=b)
        dt = time.perf_counter() - t0
        res.samples.append(2 * n * 4 / dt)
    del a, b
    return res
