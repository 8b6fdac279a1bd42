"""bench/cuda.py (normkit's CUDA kernels against torch's) runs on a GPU machine only when one is lent;
its dry run on the CPU checks here that every case is wired to the same op on both sides and that the
report is complete, so the script works the first time it meets a GPU."""

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
cuda_bench = pytest.importorskip("bench.cuda")

# Both sides compute the same function; they differ by rounding (bfloat16 outputs: a few ulp).
TOL = {"float32": 1e-4, "bfloat16": 5e-2}


def test_dry_run_on_cpu_reports_every_case(tmp_path, capsys):
    assert cuda_bench.main(["--device", "cpu", "--quick", "--out", str(tmp_path), "--name", "dry"]) == 0
    res = json.loads((tmp_path / "dry.json").read_text())
    expected = {f"{c.name}-{mode}" for c in cuda_bench.cases(quick=True) for mode in cuda_bench.TRAFFIC}
    assert {r["name"] for r in res["rows"]} == expected
    for r in res["rows"]:
        for key in ("normkit_s", "torch_s", "speedup", "normkit_roofline", "normkit_device_s", "torch_device_s",
                    "device_speedup", "normkit_launches", "torch_launches"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["name"], key, r[key])
        assert r["max_rel_err"] <= TOL[r["dtype"]], (r["name"], r["max_rel_err"])
    md = (tmp_path / "dry.md").read_text()
    assert md.count("\n| ") == len(expected) + 1  # header row + one row per case
    assert "cpu (dry run)" in md


def test_refuses_cuda_without_a_gpu(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert cuda_bench.main(["--device", "cuda", "--quick", "--out", str(tmp_path)]) == 2
