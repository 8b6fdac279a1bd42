"""bench/runner.py: with --runs N every case is timed in N passes over the whole list and its
repetitions are pooled, so the reported medians span the run; outputs are compared once."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch = pytest.importorskip("torch")
from bench import cases as bench_cases  # noqa: E402
from bench import runner  # noqa: E402
from bench.bandwidth import measure_bandwidth  # noqa: E402


@pytest.fixture(autouse=True)
def small_bandwidth_probe(monkeypatch):
    # The real probe streams 2 x 256 MiB; 1 MiB is enough to exercise the bookkeeping here.
    monkeypatch.setattr(runner, "measure_bandwidth", lambda reps: measure_bandwidth(1 << 20, reps=reps))


def _fake_case(name, calls):
    def factory():
        calls.append(name)
        y = torch.ones(8)
        return (lambda: y), (lambda: y * 1.0)

    return bench_cases.Case(name, "Fake", (8,), torch.float32, "fwd", factory)


def test_runs_pool_repetitions_of_every_pass():
    calls = []
    cases = [_fake_case("a", calls), _fake_case("b", calls)]
    res = runner.run_cases(cases, reps=3, min_time=1e-4, warmup=1, bw_reps=1, measure_bw_after=False,
                           progress=False, runs=2)
    assert calls == ["a", "b", "a", "b"]  # whole passes, in order, a fresh factory each time
    assert res["settings"]["runs"] == 2
    for row in res["cases"]:
        assert row["error"] is None
        assert len(row["normkit"]["samples_s"]) == len(row["torch"]["samples_s"]) == 6
        assert row["max_rel_err"] == 0.0
        assert row["speedup"] == pytest.approx(row["torch"]["median_s"] / row["normkit"]["median_s"])


def test_a_failing_case_is_reported_and_not_retried():
    calls = []

    def broken():
        calls.append("broken")
        raise RuntimeError("no such op")

    cases = [bench_cases.Case("broken", "Fake", (8,), torch.float32, "fwd", broken), _fake_case("ok", calls)]
    res = runner.run_cases(cases, reps=2, min_time=1e-4, warmup=1, bw_reps=1, measure_bw_after=False,
                           progress=False, runs=3)
    assert calls.count("broken") == 1
    by_name = {r["name"]: r for r in res["cases"]}
    assert by_name["broken"]["error"] == "RuntimeError: no such op"
    assert len(by_name["ok"]["normkit"]["samples_s"]) == 6
