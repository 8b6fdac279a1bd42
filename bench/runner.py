"""Orchestration: thread setup, bandwidth, cases, reporting, CLI."""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

from . import cases as _cases
from .bandwidth import measure_bandwidth
from .harness import compare_outputs, time_pair
from .report import _loadavg, environment, full_markdown, machine_busy, table_markdown, write_results

DEFAULT_OUT = Path(__file__).resolve().parent / "results"

# max_time caps the timed repetitions of one case (seconds), so a slow case
# (or a busy machine) cannot blow the run's time budget.
FULL = {"reps": 21, "min_time": 0.05, "warmup": 3, "bw_reps": 7, "max_time": 15.0}
QUICK = {"reps": 5, "min_time": 0.02, "warmup": 1, "bw_reps": 3, "max_time": 2.0}


def _setup_threads(threads: int | None) -> int:
    """Apply --threads to normkit and make torch use normkit's thread count."""
    import normkit
    import torch

    if threads:
        normkit.set_num_threads(int(threads))
    n = int(normkit.get_num_threads())
    torch.set_num_threads(n)
    return n


def _run_case(case, row, *, reps, min_time, warmup, max_time, first: bool):
    """One timed pass of ``case``; on the first pass also compare the two sides' outputs."""
    nk_fn = th_fn = None
    try:
        nk_fn, th_fn = case.factory()
        if first:
            cmp = compare_outputs(nk_fn(), th_fn())
            row["max_rel_err"], row["worst_output"] = cmp["max"], cmp["worst"]
            row["rel_err_per_output"] = cmp["per_output"]
        return time_pair(nk_fn, th_fn, reps=reps, min_time=min_time, warmup=warmup, max_time=max_time)
    finally:
        nk_fn = th_fn = None
        gc.collect()


def run_cases(case_list, *, threads=None, reps, min_time, warmup, bw_reps, max_time=None, measure_bw_after=True,
              progress=False, title="normkit benchmark", log=None, runs: int = 1) -> dict:
    """Run ``case_list`` and return the result dict (JSON-serialisable).

    ``runs`` > 1 goes over the whole list that many times and pools each case's repetitions: on a
    machine whose speed drifts over minutes (a shared VM), a case's statistics then span the run
    instead of the few seconds one pass at it takes."""
    import normkit
    from tqdm import tqdm

    n_threads = _setup_threads(threads)
    env = environment(normkit, n_threads)
    if log and machine_busy(env):
        log(f"[bench] WARNING: load average {env['loadavg_start'][0]:.2f} on {env['logical_cpus']} CPUs;"
            " other processes are running and timings will be noisy")
    t_start = time.perf_counter()

    bw = measure_bandwidth(reps=bw_reps)

    rows = [{"name": case.name, "family": case.family, "shape": case.shape_str,
             "dtype": case.dtype_name, "mode": case.mode, "tensor_bytes": case.tensor_bytes,
             "min_bytes": case.min_bytes, "error": None} for case in case_list]
    pooled = [None] * len(case_list)  # per case: the PairTiming with every pass's repetitions
    # progress: True = always, False = never, None = only when stderr is a TTY.
    disable = None if progress is None else not progress
    bar = tqdm(total=len(case_list) * runs, desc="bench", unit="case", file=sys.stderr, disable=disable,
               dynamic_ncols=True, leave=False)
    for run in range(runs):
        for i, case in enumerate(case_list):
            bar.set_postfix_str(case.name)
            bar.update(1)
            row = rows[i]
            if row["error"]:
                continue
            try:
                pt = _run_case(case, row, reps=reps, min_time=min_time, warmup=warmup, max_time=max_time,
                               first=run == 0)
            except Exception as e:  # noqa: BLE001  -- report and continue with other cases
                row["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
                if log:
                    log(f"[bench] {case.name}: {row['error']}")
                continue
            if pooled[i] is None:
                pooled[i] = pt
            else:
                pooled[i].normkit.samples.extend(pt.normkit.samples)
                pooled[i].torch.samples.extend(pt.torch.samples)
    bar.close()
    for row, pt in zip(rows, pooled):
        if row["error"] or pt is None:
            continue
        row["normkit"] = pt.normkit.as_dict()
        row["torch"] = pt.torch.as_dict()
        row["speedup"] = pt.speedup

    if measure_bw_after and case_list:
        # Pool a second bandwidth measurement taken after the cases, so the
        # roofline reference sees the same drift as the measurements.
        bw = bw.extend(measure_bandwidth(reps=bw_reps))

    env["loadavg_end"] = _loadavg()
    bw_ref = bw.median
    for row in rows:
        if row["error"]:
            continue
        for side in ("normkit", "torch"):
            t = row[side]["median_s"]
            row[f"roofline_{side}"] = (row["min_bytes"] / bw_ref) / t
            row[f"effective_Bps_{side}"] = row["min_bytes"] / t

    return {
        "title": title,
        "environment": env,
        "settings": {"reps": reps, "runs": runs, "min_time_s": min_time, "warmup": warmup,
                     "bandwidth_reps": bw_reps, "max_time_per_case_s": max_time,
                     "threads": n_threads, "interleaved": True, "statistic": "median"},
        "bandwidth": bw.as_dict(),
        "cases": rows,
        "wall_time_s": time.perf_counter() - t_start,
    }


def run_quick(print_fn=print) -> dict:
    """Short benchmark for the package self-check (``python -m normkit``).

    Times LayerNorm [8192,1024] float32 fwd and RMSNorm [8192,1024] float32
    fwd+bwd against torch (a few seconds), prints a short table via
    ``print_fn`` and returns the result dict.  Writes no files; restores
    torch's thread count afterwards.
    """
    import torch

    prev_threads = torch.get_num_threads()
    try:
        sel = [_cases.get(n) for n in _cases.QUICK_CASES]
        res = run_cases(sel, reps=QUICK["reps"], min_time=QUICK["min_time"], warmup=QUICK["warmup"],
                        bw_reps=QUICK["bw_reps"], max_time=QUICK["max_time"], measure_bw_after=False,
                        progress=False,
                        title="normkit quick benchmark")
    finally:
        torch.set_num_threads(prev_threads)
    bw = res["bandwidth"]
    print_fn(f"threads={res['settings']['threads']}  bandwidth={bw['median_Bps'] / 1e9:.1f} GB/s"
             f"  ({res['wall_time_s']:.1f} s)")
    print_fn(table_markdown(res["cases"]))
    return res


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m bench",
                                description="Benchmark normkit normalization ops against PyTorch CPU.")
    p.add_argument("--quick", action="store_true", help="fewer/shorter repetitions (self-check speed)")
    p.add_argument("--cases", default=None,
                   help="only cases whose name contains this substring (comma-separate several)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for both libraries (default: normkit's current setting)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output directory (default: bench/results)")
    p.add_argument("--name", default=None, help="result file stem (default: timestamp)")
    p.add_argument("--reps", type=int, default=None, help="repetitions per side (overrides preset)")
    p.add_argument("--min-time", type=float, default=None,
                   help="minimum seconds per repetition (overrides preset)")
    p.add_argument("--max-time", type=float, default=None,
                   help="cap on timed seconds per case, <= 0 for none (overrides preset)")
    p.add_argument("--runs", type=int, default=1,
                   help="passes over all the cases, repetitions pooled per case (default 1)")
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    p.add_argument("--list", action="store_true", help="list the selected cases and exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = _parse(argv)
    sel = _cases.select(args.cases)
    if args.list:
        for c in sel:
            print(f"{c.name:45s} {c.family:10s} {c.shape_str:>12s} {c.dtype_name:9s} {c.mode}")
        return 0
    if not sel:
        print(f"no case matches {args.cases!r}; use --list", file=sys.stderr)
        return 2

    preset = dict(QUICK if args.quick else FULL)
    if args.reps is not None:
        preset["reps"] = max(1, args.reps)
    if args.min_time is not None:
        preset["min_time"] = args.min_time
    if args.max_time is not None:
        preset["max_time"] = args.max_time if args.max_time > 0 else None
    name = args.name or time.strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else "")

    res = run_cases(sel, threads=args.threads, reps=preset["reps"], min_time=preset["min_time"],
                    warmup=preset["warmup"], bw_reps=preset["bw_reps"], max_time=preset["max_time"],
                    progress=False if (args.no_progress or args.quick) else None,
                    title=f"normkit benchmark: {name}", log=lambda m: print(m, file=sys.stderr),
                    runs=max(1, args.runs))
    res["name"] = name
    res["argv"] = sys.argv if argv is None else list(argv)
    jpath, mpath = write_results(res, args.out, name)
    print(full_markdown(res))
    print(f"wrote {jpath} and {mpath} ({res['wall_time_s']:.0f} s)")
    return 1 if any(r["error"] for r in res["cases"]) else 0
