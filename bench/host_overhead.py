"""Host time per call of normkit's torch adapters against torch.nn.functional: ``python -m
bench.host_overhead [--device cuda]``.

The tensors are tiny, so the kernels take next to nothing and a loop of calls measures what the host
spends per call: argument checks, output allocations, the autograd.Function, launches. On the H100
machine this, not the kernels, set most of bench.cuda's loop times (a LayerNorm forward+backward: 571
us of host time against torch's 173 us). ``--profile`` adds the Python functions that took the most
time (cProfile over one case; time spent inside the extension counts to the Python function that
called it, since nanobind's functions are not Python builtins).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys

import torch
import torch.nn.functional as TF

from bench.cuda import _loop


def per_call(fn, device: str, n: int, reps: int) -> float:
    """Median seconds per call over `reps` loops of `n` calls (bench.cuda's timed loop), after a warm-up."""
    _loop(fn, max(1, n // 10), device)
    return statistics.median(_loop(fn, n, device) / n for _ in range(reps))


def cases(device: str) -> dict:
    """name -> (normkit call, torch call): forward under no_grad, forward+backward with gradients."""
    import normkit.torch.functional as F

    g = torch.Generator().manual_seed(0)

    def t(*shape, grad=False):
        return torch.randn(*shape, generator=g).to(device).requires_grad_(grad)

    x, w, b = t(8, 64), t(64), t(64)
    xg, wg, bg, dy = t(8, 64, grad=True), t(64, grad=True), t(64, grad=True), t(8, 64)
    xb, wb, bb = t(4, 8, 3, 3), t(8), t(8)
    rm, rv = torch.zeros(8, device=device), torch.ones(8, device=device)
    xbg, wbg, bbg, dyb = t(4, 8, 3, 3, grad=True), t(8, grad=True), t(8, grad=True), t(4, 8, 3, 3)

    def backward(y, grad):
        y.backward(grad)

    return {
        "LayerNorm fwd": (lambda: F.layer_norm(x, (64,), w, b), lambda: TF.layer_norm(x, (64,), w, b)),
        "LayerNorm fwd+bwd": (lambda: backward(F.layer_norm(xg, (64,), wg, bg), dy),
                              lambda: backward(TF.layer_norm(xg, (64,), wg, bg), dy)),
        "BatchNorm2d train fwd": (lambda: F.batch_norm(xb, rm, rv, wb, bb, True),
                                  lambda: TF.batch_norm(xb, rm, rv, wb, bb, True)),
        "BatchNorm2d train fwd+bwd": (lambda: backward(F.batch_norm(xbg, rm, rv, wbg, bbg, True), dyb),
                                      lambda: backward(TF.batch_norm(xbg, rm, rv, wbg, bbg, True), dyb)),
    }


def run(device: str, n: int, reps: int) -> list[dict]:
    rows = []
    for name, (nk, th) in cases(device).items():
        with torch.enable_grad() if "bwd" in name else torch.no_grad():
            # Interleaved, each side first every other repetition.
            a, b = [], []
            for r in range(reps):
                for fn, out in ((nk, a), (th, b)) if r % 2 == 0 else ((th, b), (nk, a)):
                    out.append(per_call(fn, device, n, 1))
        rows.append({"name": name, "normkit_s": statistics.median(a), "torch_s": statistics.median(b)})
    return rows


def profile(device: str, name: str, n: int, top: int) -> str:
    nk = cases(device)[name][0]
    with torch.enable_grad() if "bwd" in name else torch.no_grad():
        nk()
        prof = cProfile.Profile()
        prof.runcall(_loop, nk, n, device)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.host_overhead", description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--calls", type=int, default=2000, help="calls per timed loop")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--profile", default=None, help="a case name to profile with cProfile")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench.host_overhead: torch sees no CUDA device", file=sys.stderr)
        return 2
    print(f"host time per call, {args.device}, torch {torch.__version__} (tiny tensors)\n")
    print("| case | normkit | torch | normkit / torch |\n|---|---:|---:|---:|")
    for r in run(args.device, args.calls, args.reps):
        print(f"| {r['name']} | {r['normkit_s'] * 1e6:.1f} µs | {r['torch_s'] * 1e6:.1f} µs | "
              f"{r['normkit_s'] / r['torch_s']:.2f} |")
    if args.profile:
        print(profile(args.device, args.profile, args.calls, 25))
    return 0


if __name__ == "__main__":
    sys.exit(main())
