"""``python -m normkit``: a self-check. Normalizes NumPy and PyTorch tensors, compares them with
float64 references written from the formulas and with torch.nn, prints the build and a short speed
comparison against PyTorch."""

from __future__ import annotations

import json
import os
import sys

# The speed comparison runs torch with huge pages for its large outputs, as normkit's host cache does
# (see bench/__main__.py); set before torch allocates anything.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import numpy as np  # noqa: E402

import normkit  # noqa: E402
from normkit import functional as F  # noqa: E402


def _f64(a):
    return a.detach().double().numpy() if hasattr(a, "detach") else np.asarray(a, np.float64)


def _check(name, got, want, tol):
    err = float(np.max(np.abs(_f64(got) - _f64(want))))
    ok = err <= tol
    print(f"  {'ok  ' if ok else 'FAIL'} {name:<44} max|err| = {err:.2e} (tol {tol:.0e})")
    return ok


def _layer_norm_ref(x, w, b, eps):
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _rms_norm_ref(x, w, eps):
    x = x.astype(np.float64)
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def main() -> int:
    print("normkit", normkit.__version__)
    print(json.dumps(normkit.build_info(), indent=2))
    print("cuda_available:", normkit.cuda_available())

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((256, 1024)) * 3 + 5).astype(np.float32)
    w = rng.standard_normal(1024).astype(np.float32)
    b = rng.standard_normal(1024).astype(np.float32)
    ok = True
    print("NumPy:")
    ok &= _check("LayerNorm float32 [256,1024] vs float64 ref", F.layer_norm(x, 1024, w, b),
                 _layer_norm_ref(x, w, b, 1e-5), 1e-4)
    ok &= _check("RMSNorm float32 [256,1024] vs float64 ref", F.rms_norm(x, 1024, w, 1e-6),
                 _rms_norm_ref(x, w, 1e-6), 1e-4)
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed: skipping the torch checks and the speed comparison.")
        return 0 if ok else 1

    import normkit.torch as nt

    print("PyTorch:")
    xt = torch.from_numpy(x).to(torch.bfloat16)
    ln_t, ln_n = torch.nn.LayerNorm(1024, dtype=torch.bfloat16), nt.LayerNorm(1024, dtype=torch.bfloat16)
    ln_n.load_state_dict(ln_t.state_dict())
    # bfloat16 keeps 8 bits: outputs of magnitude ~4 round to within 2^-6; the two differ by one rounding.
    ok &= _check("LayerNorm bfloat16 twin vs torch.nn", ln_n(xt), ln_t(xt), 0.07)
    xg = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    rms_t, rms_n = torch.nn.RMSNorm(1024, dtype=torch.float64), nt.RMSNorm(1024, dtype=torch.float64)
    rms_t(xg).square().sum().backward()
    want = xg.grad.clone()
    xg.grad = None
    rms_n(xg).square().sum().backward()
    ok &= _check("RMSNorm float64 dx twin vs torch.nn", xg.grad, want, 1e-10)
    xi = torch.randn(8, 32, 14, 14).to(memory_format=torch.channels_last)
    for nk_layer, th_layer in ((nt.BatchNorm2d(32), torch.nn.BatchNorm2d(32)),
                               (nt.GroupNorm(8, 32), torch.nn.GroupNorm(8, 32))):
        name = f"{type(th_layer).__name__} float32 channels-last vs torch.nn"
        ok &= _check(name, nk_layer(xi), th_layer(xi), 1e-5)
    # SyncBatchNorm in one process (LocalCommunicator) through the same path as over MPI/NCCL: the
    # statistics go through the float64 payload and back.
    from normkit.distributed import LocalCommunicator

    sync = nt.SyncBatchNorm(32, comm=LocalCommunicator())
    ok &= _check("SyncBatchNorm (local) float32 vs torch.nn.BatchNorm2d", sync(xi), torch.nn.BatchNorm2d(32)(xi), 1e-5)
    print("  communicator modules:", ", ".join(f"{m} {'built' if normkit.build_info()[m] else 'absent'}"
                                             for m in ("mpi", "nccl")))

    try:
        from bench import run_quick  # present when run from a checkout of the repository
    except ImportError:
        print("Speed comparison: run `python -m bench` from a checkout of normkit.")
    else:
        print("Speed against PyTorch (quick run; full numbers: python -m bench):")
        run_quick()
    print("self-check", "passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
