"""normkit's CUDA kernels against PyTorch's, on one GPU: ``python -m bench.cuda``.

The method of the CPU benchmark: both sides go through their public torch API
(``normkit.torch.functional`` vs ``torch.nn.functional``), the repetitions alternate and flip which
side goes first, and each repetition is a loop of calls long enough that the synchronisations at its
two ends do not matter. Roofline = minimum bytes (2x the tensor forward, 5x forward+backward) /
device copy bandwidth measured in the same run (``b.copy_(a)`` on 1 GiB, bytes read + written) /
time. Beside the loop time, torch.profiler gives each side's device time per call (the kernels alone)
and how many kernels it launches: where a call's host work outlasts its kernels, the loop measures the
host. ``--device cpu`` runs the same cases on the CPU: a dry run of this script where there is no GPU
(tests/test_bench_cuda.py), not a CPU benchmark (that is ``python -m bench``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as TF

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
TRAFFIC = {"fwd": 2, "fwd+bwd": 5}


@dataclass(frozen=True)
class Case:
    family: str
    shape: tuple
    dtype: torch.dtype
    channels_last: bool
    params: str  # which parameters the op takes: "wb" (weight, bias), "w", "bn" (+ running stats), "none"
    call: object  # call(F, x, params) -> y, the same for both libraries' functional modules

    @property
    def name(self) -> str:
        layout = "-cl" if self.channels_last else ""
        dt = str(self.dtype).removeprefix("torch.")
        return f"{self.family}{layout}-{'x'.join(map(str, self.shape))}-{dt}"


def cases(quick: bool) -> list[Case]:
    rows = (256, 1024) if quick else (8192, 1024)
    img = (2, 64, 8, 8) if quick else (32, 64, 56, 56)
    gimg = (2, 256, 8, 8) if quick else (8, 256, 64, 64)
    f32, bf16 = torch.float32, torch.bfloat16
    ln = lambda F, x, p: F.layer_norm(x, x.shape[-1:], p[0], p[1], 1e-5)  # noqa: E731
    rms = lambda F, x, p: F.rms_norm(x, x.shape[-1:], p[0], 1e-6)  # noqa: E731
    bn_train = lambda F, x, p: F.batch_norm(x, p[2], p[3], p[0], p[1], True, 0.1, 1e-5)  # noqa: E731
    bn_eval = lambda F, x, p: F.batch_norm(x, p[2], p[3], p[0], p[1], False, 0.1, 1e-5)  # noqa: E731
    inorm = lambda F, x, p: F.instance_norm(x, None, None, p[0], p[1], True, 0.1, 1e-5)  # noqa: E731
    gn = lambda F, x, p: F.group_norm(x, 32, p[0], p[1], 1e-5)  # noqa: E731
    lrn = lambda F, x, p: F.local_response_norm(x, 5, 1e-4, 0.75, 1.0)  # noqa: E731
    return [
        Case("LayerNorm", rows, f32, False, "wb", ln),
        Case("LayerNorm", rows, bf16, False, "wb", ln),
        Case("RMSNorm", rows, f32, False, "w", rms),
        Case("RMSNorm", rows, bf16, False, "w", rms),
        Case("BatchNorm2d train", img, f32, False, "bn", bn_train),
        Case("BatchNorm2d train", img, f32, True, "bn", bn_train),
        Case("BatchNorm2d train", img, bf16, False, "bn", bn_train),
        Case("BatchNorm2d eval", img, f32, False, "bn", bn_eval),
        Case("InstanceNorm2d", img, f32, False, "wb", inorm),
        Case("GroupNorm", gimg, f32, False, "wb", gn),
        Case("GroupNorm", gimg, f32, True, "wb", gn),
        Case("LocalResponseNorm", img, f32, False, "none", lrn),
    ]


def make_inputs(case: Case, device: str, seed: int = 0):
    """x, dy and the parameters (float32 for half inputs, as in mixed precision), on `device`."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(case.shape, generator=g) * 2 + 0.5).to(case.dtype)
    dy = torch.randn(case.shape, generator=g).to(case.dtype)
    n = case.shape[-1] if case.family in ("LayerNorm", "RMSNorm") else case.shape[1]
    pdt = case.dtype if case.family in ("LayerNorm", "RMSNorm") else torch.float32
    w = (1 + 0.1 * torch.randn(n, generator=g)).to(pdt)
    b = (0.1 * torch.randn(n, generator=g)).to(pdt)
    params = {"wb": [w, b], "w": [w], "bn": [w, b, torch.zeros(n), torch.ones(n)], "none": []}[case.params]
    fmt = torch.channels_last if case.channels_last else torch.contiguous_format
    x, dy = (t.to(device).contiguous(memory_format=fmt) for t in (x, dy))
    return x, dy, [p.to(device) for p in params]


def side(case: Case, F, mode: str, device: str):
    """One zero-argument closure doing one repetition of the work with F's ops, on its own copies."""
    x0, dy, params = make_inputs(case, device)
    x = x0.clone()
    leaves = [p.clone() for p in params]
    if mode == "fwd":
        def fwd():
            with torch.no_grad():
                return {"y": case.call(F, x, leaves)}
        return fwd
    x.requires_grad_(True)
    grads = [x] + [p.requires_grad_(True) for p in leaves[:2]]  # weight and bias, not running stats

    def fwd_bwd():
        for t in grads:
            t.grad = None
        y = case.call(F, x, leaves)
        y.backward(dy)
        return {"y": y.detach(), **{f"d{i}": t.grad for i, t in enumerate(grads)}}
    return fwd_bwd


def _sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def _loop(fn, n: int, device: str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    return time.perf_counter() - t0


def _calibrate(fn, min_time: float, device: str) -> int:
    n = 1
    while _loop(fn, n, device) < min_time and n < (1 << 16):
        n *= 2
    return n


def time_pair(fa, fb, device: str, reps: int, min_time: float) -> tuple[list, list]:
    """Per-call seconds of fa and fb, one sample per repetition, the two interleaved."""
    for f in (fa, fb, fa, fb):
        f()
    na, nb = _calibrate(fa, min_time, device), _calibrate(fb, min_time, device)
    ta, tb = [], []
    for r in range(reps):
        order = ((fa, na, ta), (fb, nb, tb)) if r % 2 == 0 else ((fb, nb, tb), (fa, na, ta))
        for f, n, out in order:
            out.append(_loop(f, n, device) / n)
    return ta, tb


def device_time(fn, n: int, device: str) -> tuple[float, float]:
    """(seconds, activities) per call that the device itself spent, from torch.profiler: on CUDA the
    kernels, copies and memsets of the trace, i.e. the work without the host's launch overhead (on the
    H100 machine the host time per call, not the kernels, set most loop times); on the CPU dry run the
    self time of every event in a range around each call, i.e. the whole call (normkit's CPU kernels
    are no torch ops, and a call may run none: its outputs can come from normkit's host cache)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = device == "cuda"
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            if cuda:
                fn()
            else:
                with record_function("call"):
                    fn()
        _sync(device)
    if cuda:
        events = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
        total_us = sum(e.time_range.elapsed_us() for e in events)
    else:
        events = [e for e in prof.events() if e.device_type == DeviceType.CPU]
        total_us = sum(e.self_cpu_time_total for e in events)
    return total_us * 1e-6 / n, len(events) / n


def copy_bandwidth(device: str, nbytes: int, reps: int) -> float:
    """Median bytes/s of b.copy_(a), counting bytes read and written."""
    a = torch.ones(nbytes // 4, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    samples = []
    for _ in range(reps):
        t = _loop(lambda: b.copy_(a), 4, device)
        samples.append(2 * nbytes * 4 / t)
    return statistics.median(samples)


def max_rel_err(got: dict, want: dict) -> float:
    worst = 0.0
    for k, w in want.items():
        w64, g64 = w.detach().double().cpu(), got[k].detach().double().cpu()
        scale = float(w64.abs().max()) or 1.0
        worst = max(worst, float((g64 - w64).abs().max()) / scale)
    return worst


def _fmt_time(s: float) -> str:
    return f"{s * 1e6:.1f} µs" if s < 1e-3 else f"{s * 1e3:.3g} ms"


def run(device: str, quick: bool, only: str | None, reps: int, min_time: float) -> dict:
    import normkit
    import normkit.torch.functional as nkF

    bw = copy_bandwidth(device, (64 << 20) if quick else (1 << 30), 3 if quick else 10)
    rows = []
    for case in cases(quick):
        for mode in TRAFFIC:
            name = f"{case.name}-{mode}"
            if only and not any(s in name for s in only.split(",")):
                continue
            fa, fb = side(case, nkF, mode, device), side(case, TF, mode, device)
            err = max_rel_err(fa(), fb())
            ta, tb = time_pair(fa, fb, device, reps, min_time)
            nk, th = statistics.median(ta), statistics.median(tb)
            (nk_dev, nk_acts), (th_dev, th_acts) = (device_time(f, 20, device) for f in (fa, fb))
            min_bytes = TRAFFIC[mode] * math.prod(case.shape) * case.dtype.itemsize
            rows.append({"name": name, "family": case.family + (" NHWC" if case.channels_last else ""),
                         "shape": "x".join(map(str, case.shape)), "dtype": str(case.dtype).removeprefix("torch."),
                         "mode": mode, "normkit_s": nk, "torch_s": th, "speedup": th / nk,
                         "normkit_roofline": min_bytes / bw / nk, "torch_roofline": min_bytes / bw / th,
                         "normkit_device_s": nk_dev, "torch_device_s": th_dev, "device_speedup": th_dev / nk_dev,
                         "normkit_device_roofline": min_bytes / bw / nk_dev, "normkit_launches": nk_acts,
                         "torch_launches": th_acts, "max_rel_err": err, "samples_normkit_s": ta, "samples_torch_s": tb})
            print(f"[bench.cuda] {name}: normkit {_fmt_time(nk)}, torch {_fmt_time(th)}", file=sys.stderr)
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu (dry run)"
    return {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "device": gpu,
            "torch": torch.__version__, "normkit_build": dict(normkit.build_info()), "copy_bandwidth_Bps": bw,
            "reps": reps, "min_time_s": min_time, "rows": rows}


def markdown(res: dict) -> str:
    head = [f"- Date: {res['date']}", f"- Device: {res['device']}, torch {res['torch']}",
            f"- Copy bandwidth (b.copy_(a), read+write): {res['copy_bandwidth_Bps'] / 1e9:.0f} GB/s; roofline uses it",
            "- Loop: per call, host and device overlapping (what a training loop sees); device: the kernels"
            " alone (torch.profiler), and how many kernels, copies and memsets a call launches",
            "", "| family | shape | dtype | mode | normkit | torch | speed-up | normkit roofline | torch roofline"
            " | normkit device | torch device | device speed-up | device roofline | launches | max rel err |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    body = [f"| {r['family']} | {r['shape']} | {r['dtype']} | {r['mode']} | {_fmt_time(r['normkit_s'])} | "
            f"{_fmt_time(r['torch_s'])} | {r['speedup']:.2f}x | {r['normkit_roofline']:.0%} | "
            f"{r['torch_roofline']:.0%} | {_fmt_time(r['normkit_device_s'])} | {_fmt_time(r['torch_device_s'])} | "
            f"{r['device_speedup']:.2f}x | {r['normkit_device_roofline']:.0%} | "
            f"{r['normkit_launches']:.0f} / {r['torch_launches']:.0f} | {r['max_rel_err']:.1e} |" for r in res["rows"]]
    return "\n".join(head + body) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cuda", description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--quick", action="store_true", help="small shapes, few repetitions")
    ap.add_argument("--cases", default=None, help="only cases whose name contains one of these (comma-separated)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--name", default=None, help="result file stem (default: cuda-<timestamp>)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench.cuda: torch sees no CUDA device (use --device cpu for a dry run)", file=sys.stderr)
        return 2
    reps, min_time = (3, 0.005) if args.quick else (15, 0.05)
    res = run(args.device, args.quick, args.cases, reps, min_time)
    md = markdown(res)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.name or "cuda-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (args.out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    (args.out / f"{stem}.md").write_text(md)
    print(f"wrote {args.out / stem}.json and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
