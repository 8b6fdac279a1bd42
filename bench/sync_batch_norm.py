"""SyncBatchNorm over MPI against local BatchNorm on the same per-process input.

Run under MPI (2 processes, one thread each on this 2-core machine)::

    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -n 2 --bind-to none python -m bench.sync_batch_norm

Open MPI busy-polls while a process waits in a collective; on this small VM that polling slowed the
other process's memory-bound work so much that one 1.5 KB all-reduce per step doubled the step time.
The benchmark therefore sets ``OMPI_MCA_mpi_yield_when_idle=1`` (waiting processes yield the CPU) unless
the environment sets it; pass ``--busy-poll`` to measure Open MPI's default instead.

Per process: x = [16, 64, 56, 56] float32, training mode, forward and forward+backward. Three sides,
interleaved repetition by repetition (the order rotates): normkit SyncBatchNorm (MPI), normkit
BatchNorm2d (local statistics), torch BatchNorm2d (local). Every process runs the same fixed number of
calls per repetition (rank 0 calibrates, the others follow), a barrier starts each repetition, and a
repetition's time is the slowest process's. Reported: median per call, SyncBN's overhead over local
normkit BatchNorm, the bytes each process sends per step (the all-reduce payloads, counted), and the
fraction of the memory-bandwidth roofline measured in the same run by the same processes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import normkit
import normkit.torch as nkt
import torch
from normkit.distributed import MPICommunicator

from .bandwidth import measure_bandwidth


class _Counting:
    def __init__(self, inner):
        self.inner, self.bytes, self.calls = inner, 0, 0
        self.rank, self.size = inner.rank, inner.size

    def allreduce(self, array):
        self.bytes += array.nbytes
        self.calls += 1
        return self.inner.allreduce(array)


def _step(layer, x, dy, backward):
    if not backward:
        with torch.no_grad():
            layer(x)
        return
    x.grad = None
    layer(x).backward(dy)


def main(argv=None):
    p = argparse.ArgumentParser(prog="mpirun -n 2 python -m bench.sync_batch_norm")
    p.add_argument("--shape", default="16,64,56,56", help="per-process input shape")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--min-time", type=float, default=0.2, help="seconds per repetition (rank 0 calibrates)")
    p.add_argument("--threads", type=int, default=1, help="threads per process")
    p.add_argument("--json", default="bench/results/sync_batch_norm.json")
    p.add_argument("--busy-poll", action="store_true", help="keep Open MPI's busy polling (see above)")
    args = p.parse_args(argv)
    if not args.busy_poll:
        os.environ.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")  # read by MPI_Init, below

    from mpi4py import MPI

    world = MPI.COMM_WORLD
    comm = MPICommunicator(world)
    rank, size = comm.rank, comm.size
    torch.set_num_threads(args.threads)
    normkit.set_num_threads(args.threads)
    shape = tuple(int(s) for s in args.shape.split(","))
    C = shape[1]
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(shape, generator=g).requires_grad_()
    dy = torch.randn(shape, generator=g)
    sides = {
        "SyncBatchNorm (normkit, MPI)": nkt.SyncBatchNorm(C, comm=comm),
        "BatchNorm2d (normkit, local)": nkt.BatchNorm2d(C),
        "BatchNorm2d (torch, local)": torch.nn.BatchNorm2d(C),
    }

    # Bytes per step, counted through a wrapping communicator.
    counting = _Counting(comm)
    _step(nkt.SyncBatchNorm(C, comm=counting), x, dy, backward=True)
    bytes_per_step = counting.bytes

    bw = measure_bandwidth(reps=5)  # all processes at once: the bandwidth they share
    tensor_bytes = x.numel() * 4
    results = {}
    for mode, backward, min_bytes in (("fwd", False, 2 * tensor_bytes), ("fwd+bwd", True, 5 * tensor_bytes)):
        for layer in sides.values():
            for _ in range(3):
                _step(layer, x, dy, backward)
        n = 1
        if rank == 0:
            layer = sides["BatchNorm2d (normkit, local)"]
            while True:
                t0 = time.perf_counter()
                for _ in range(n):
                    _step(layer, x, dy, backward)
                if time.perf_counter() - t0 >= args.min_time or n >= 1 << 16:
                    break
                n *= 2
        n = world.bcast(n, root=0)
        samples = {name: [] for name in sides}
        names = list(sides)
        for r in range(args.reps):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                world.Barrier()
                t0 = time.perf_counter()
                for _ in range(n):
                    _step(sides[name], x, dy, backward)
                t = (time.perf_counter() - t0) / n
                samples[name].append(world.allreduce(t, op=MPI.MAX))
        med = {name: statistics.median(s) for name, s in samples.items()}
        local = med["BatchNorm2d (normkit, local)"]
        results[mode] = {
            name: {"median_s": m, "samples_s": samples[name],
                   "roofline_fraction": min_bytes / m / (bw.median / size) if bw.median else None}
            for name, m in med.items()
        }
        results[mode]["overhead_vs_local"] = med["SyncBatchNorm (normkit, MPI)"] / local - 1

    if rank == 0:
        out = {"processes": size, "yield_when_idle": os.environ.get("OMPI_MCA_mpi_yield_when_idle"),
               "threads_per_process": args.threads, "shape_per_process": shape,
               "bandwidth_Bps_all_processes": bw.median, "bytes_per_step_per_process": bytes_per_step,
               "normkit": normkit.build_info(), "results": results}
        print(f"SyncBatchNorm over MPI: {size} processes x {args.threads} thread(s), x = {list(shape)} float32 "
              f"per process; memory bandwidth {bw.median / 1e9:.1f} GB/s (all processes together)")
        print(f"bytes sent per step and process: {bytes_per_step} (forward {8 * (1 + 3 * C)}, backward "
              f"{8 * (1 + 2 * C)}: independent of the number of processes)\n")
        print("| mode | side | median ms | vs normkit local | roofline |")
        print("|---|---|---:|---:|---:|")
        for mode, r in results.items():
            local = r["BatchNorm2d (normkit, local)"]["median_s"]
            for name in sides:
                m = r[name]["median_s"]
                print(f"| {mode} | {name} | {m * 1e3:.2f} | {m / local:.2f}x | {r[name]['roofline_fraction']:.0%} |")
            print(f"| {mode} | **SyncBN overhead** | | **{r['overhead_vs_local']:+.1%}** | |")
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1))
        print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
