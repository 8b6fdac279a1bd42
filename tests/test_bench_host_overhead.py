"""bench/host_overhead.py (host time per call on tiny tensors, normkit's torch adapters against
torch.nn.functional): every case runs on both sides and the report and profile are complete."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
host_overhead = pytest.importorskip("bench.host_overhead")


def test_every_case_is_timed_on_both_sides():
    rows = host_overhead.run("cpu", n=20, reps=2)
    assert [r["name"] for r in rows] == list(host_overhead.cases("cpu"))
    for r in rows:
        assert math.isfinite(r["normkit_s"]) and r["normkit_s"] > 0, r
        assert math.isfinite(r["torch_s"]) and r["torch_s"] > 0, r


def test_both_sides_compute_the_same_thing():
    import torch

    torch.manual_seed(0)
    for name, (nk, th) in host_overhead.cases("cpu").items():
        if "bwd" in name:
            continue
        with torch.no_grad():
            torch.testing.assert_close(nk(), th(), msg=name)


def test_the_report_and_profile_print(capsys):
    assert host_overhead.main(["--calls", "10", "--reps", "1", "--profile", "LayerNorm fwd"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n| ") == 1 + len(host_overhead.cases("cpu"))
    assert "layer_norm" in out  # the profile names the adapter's functions
