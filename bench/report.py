"""Environment header, Markdown table and JSON output."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment(normkit_mod, threads: int) -> dict:
    import numpy
    import torch

    try:
        cap = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001
        cap = None
    try:
        build = dict(normkit_mod.build_info())
    except Exception as e:  # noqa: BLE001
        build = {"error": repr(e)}
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "threads": {"normkit": normkit_mod.get_num_threads(), "torch": torch.get_num_threads(),
                    "requested": threads},
        "torch_version": torch.__version__,
        "torch_cpu_capability": cap,
        "torch_thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE"),
        "numpy_version": numpy.__version__,
        "normkit_version": getattr(normkit_mod, "__version__", build.get("version")),
        "normkit_build_info": build,
        "loadavg_start": _loadavg(),
    }


def _loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


# ------------------------------ formatting --------------------------------

def fmt_time(s: float | None) -> str:
    if s is None:
        return "—"
    if s >= 1.0:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def fmt_pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def fmt_spread(side: dict) -> str:
    """Interquartile range relative to the median, e.g. '3%'."""
    return f"{100 * (side['q3_s'] - side['q1_s']) / side['median_s']:.0f}%"


def fmt_gbps(bps: float) -> str:
    return f"{bps / 1e9:.1f} GB/s"


def _fmt_build(build: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in build.items())


def machine_busy(env: dict) -> bool:
    """Heuristic: 1-minute load average above half the logical CPUs."""
    la = env.get("loadavg_start")
    return bool(la) and la[0] > 0.5 * (env.get("logical_cpus") or 1)


def header_markdown(title: str, env: dict, bw: dict | None) -> str:
    t = env["threads"]
    lines = [
        f"# {title}",
        "",
        f"- Date: {env['date']}",
        f"- CPU: {env['cpu_model']} ({env['logical_cpus']} logical CPUs)",
        f"- Threads: normkit {t['normkit']}, torch {t['torch']}",
        f"- torch {env['torch_version']} (CPU capability: {env['torch_cpu_capability']},"
        f" THP_MEM_ALLOC_ENABLE={env.get('torch_thp_mem_alloc')}), numpy {env['numpy_version']},"
        f" Python {env['python']}",
        f"- normkit build_info: {_fmt_build(env['normkit_build_info'])}",
    ]
    la0, la1 = env.get("loadavg_start"), env.get("loadavg_end")
    if la0 is not None:
        line = f"- Load average (1/5/15 min) at start: {la0[0]:.2f}/{la0[1]:.2f}/{la0[2]:.2f}"
        if la1 is not None:
            line += f", at end: {la1[0]:.2f}/{la1[1]:.2f}/{la1[2]:.2f}"
        if machine_busy(env):
            line += " -- WARNING: machine was busy at start, timings are unreliable"
        lines.append(line)
    if bw is not None:
        lines.append(
            f"- Memory bandwidth (read+write, {bw['kernel']} on 2 x {bw['array_bytes'] >> 20} MiB,"
            f" {bw['threads']} threads, {len(bw['samples_Bps'])} reps): median {fmt_gbps(bw['median_Bps'])},"
            f" best {fmt_gbps(bw['best_Bps'])}; roofline uses the median")
    return "\n".join(lines)


TABLE_COLUMNS = ("family", "shape", "dtype", "mode", "normkit", "torch", "speed-up",
                 "normkit roofline", "torch roofline", "IQR nk/torch", "max rel err")


def table_markdown(rows: list[dict]) -> str:
    out = ["| " + " | ".join(TABLE_COLUMNS) + " |",
           "|" + "|".join(["---"] * 4 + ["---:"] * (len(TABLE_COLUMNS) - 4)) + "|"]
    for r in rows:
        if r.get("error"):
            cells = [r["family"], r["shape"], r["dtype"], r["mode"],
                     f"ERROR: {r['error']}".replace("|", "/"), "", "", "", "", "", ""]
        else:
            cells = [r["family"], r["shape"], r["dtype"], r["mode"],
                     fmt_time(r["normkit"]["median_s"]), fmt_time(r["torch"]["median_s"]),
                     f"{r['speedup']:.2f}x", fmt_pct(r["roofline_normkit"]), fmt_pct(r["roofline_torch"]),
                     f"{fmt_spread(r['normkit'])}/{fmt_spread(r['torch'])}",
                     f"{r['max_rel_err']:.1e} ({r['worst_output']})"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


FOOTNOTE = (
    "Times are the median per call over interleaved repetitions (each repetition loops the op for"
    " at least the minimum repetition time). speed-up = torch / normkit. roofline = (minimum bytes /"
    " measured bandwidth) / time, with minimum bytes = 2x tensor bytes for fwd and 2x + 3x = 5x for"
    " fwd+bwd; above 100% means the working set is (partly) cache-resident. IQR = interquartile"
    " range of the repetitions / median (noise indicator). max rel err = max |normkit - torch| /"
    " max |torch| over the outputs (y; plus dx, dw, db for fwd+bwd), worst output in parentheses;"
    " it measures disagreement, and for bfloat16 either library may be the less accurate one."
)


def _reps_done(rows) -> str:
    n = sorted({len(r["normkit"]["samples_s"]) for r in rows if not r.get("error")})
    return "-".join(str(x) for x in (n[:1] + n[-1:] if len(n) > 1 else n)) or "n/a"


def full_markdown(result: dict) -> str:
    parts = [header_markdown(result["title"], result["environment"], result.get("bandwidth")),
             "",
             f"Settings: reps={result['settings']['reps']} per pass,"
             f" passes over all cases={result['settings'].get('runs', 1)} (repetitions pooled), min repetition time="
             f"{result['settings']['min_time_s'] * 1e3:.0f} ms, warmup={result['settings']['warmup']},"
             f" cap per case={result['settings'].get('max_time_per_case_s')} s"
             f" (reps actually done: {_reps_done(result['cases'])})",
             "",
             table_markdown(result["cases"]),
             "",
             FOOTNOTE,
             ""]
    return "\n".join(parts)


def write_results(result: dict, out_dir: str | os.PathLike, name: str) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / f"{name}.json"
    mpath = out / f"{name}.md"
    jpath.write_text(json.dumps(result, indent=2, default=str) + "\n")
    mpath.write_text(full_markdown(result))
    return jpath, mpath
