"""Scaling results: the records' columns, results.json and results.csv, and the summaries drawn from them."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .._files import replace_text
from .measure import format_seconds

#: Columns of results.csv, in order; every record has these keys.
FIELDS = (
    "backend",
    "dtype",
    "n_samples",
    "hidden",
    "iters",
    "repeats",
    "thread_limit",
    "seconds_per_iter",
    "seconds_min",
    "seconds_max",
    "spread",
    "others_cpu_before",
    "others_cpu",
    "gflops",
    "peak_mem_mib",
    "estimated_mem_mib",
    "final_loss",
    "accuracy",
    "host",
    "cpu",
    "cores",
    "worker",
    "threads",
    "threading_layer",
    "blas",
    "started",
    "finished",
    "status",
)
#: Beyond this spread ((max - min) / median of the repeats) or share of the CPUs taken by
#: other programs, the summary warns that the figure is not to be trusted as it stands.
NOISY_SPREAD, BUSY_SHARE = 0.25, 0.2

# --------------------------------------------------------------------------
# Results on disk
# --------------------------------------------------------------------------


def record_key(record: dict[str, Any]) -> tuple:
    """What identifies a configuration: backend, dtype, N, H, iterations, repeats, thread limit."""
    limit = record.get("thread_limit")
    return (
        record["backend"],
        record["dtype"],
        int(record["n_samples"]),
        int(record["hidden"]),
        int(record["iters"]),
        int(record["repeats"]),
        None if limit is None else int(limit),
    )


def load_results(out: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(machine, records) from DIR/results.json, or ({}, []) if there is none yet."""
    path = os.path.join(out, "results.json")
    if not os.path.exists(path):
        return {}, []
    try:
        with open(path) as fh:
            doc = json.load(fh)
        if not isinstance(doc, dict) or doc.get("format") != "fastspiral-scaling":
            raise ValueError("no fastspiral-scaling document")
        machine, records = doc.get("machine", {}), doc["records"]
        if not isinstance(machine, dict) or not isinstance(records, list):
            raise ValueError("machine must be an object and records a list")
        for record in records:
            if not isinstance(record, dict):
                raise ValueError(f"a record is a {type(record).__name__}, not an object")
            record_key(record)  # the fields that identify a configuration are there and numbers
        return machine, records
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ValueError(f"{path} exists but is not a fastspiral results file: {exc}") from exc


def save_results(out: str, machine: dict[str, Any], records: Sequence[dict[str, Any]]) -> None:
    """Write DIR/results.json and DIR/results.csv, each replaced atomically."""
    doc = {
        "format": "fastspiral-scaling",
        "version": 1,
        "machine": machine,
        "records": list(records),
    }
    replace_text(
        os.path.join(out, "results.json"), json.dumps(doc, indent=1) + "\n", "results file"
    )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    replace_text(os.path.join(out, "results.csv"), buf.getvalue(), "results file")


# --------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------


def ok_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status") == "ok" and r.get("seconds_per_iter")]


def fit_exponents(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str, int], float]:
    """Slope of log(time per iteration) against log(N), per (backend, dtype, hidden).

    1.0 means time grows linearly with N. Needs at least two sizes.
    """
    groups: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    for r in ok_records(records):
        groups.setdefault((r["backend"], r["dtype"], r["hidden"]), []).append(
            (math.log(r["n_samples"]), math.log(r["seconds_per_iter"]))
        )
    out = {}
    for key, pts in sorted(groups.items()):
        if len({p[0] for p in pts}) >= 2:
            xs, ys = zip(*pts)
            out[key] = float(np.polyfit(xs, ys, 1)[0])
    return out


def speedups(records: Iterable[dict[str, Any]]) -> dict[tuple[str, int, int], float]:
    """NumPy time / Numba time for each (dtype, N, H) where both ran (on the most threads a
    sweep over thread counts used, the machine's when unlimited)."""
    most = sorted(ok_records(records), key=lambda r: r.get("thread_limit") or math.inf)
    times = {
        (r["backend"], r["dtype"], r["n_samples"], r["hidden"]): r["seconds_per_iter"] for r in most
    }
    return {
        (d, n, h): t / times[("numba", d, n, h)]
        for (b, d, n, h), t in sorted(times.items())
        if b == "numpy" and ("numba", d, n, h) in times
    }


def _spread_text(r: dict[str, Any]) -> str:
    if r.get("seconds_min") is None or r.get("seconds_max") is None:
        return "n/a"
    return f"{format_seconds(r['seconds_min'])}-{format_seconds(r['seconds_max'])} ({100 * (r.get('spread') or 0):.0f}%)"


def noise_warnings(records: Iterable[dict[str, Any]]) -> list[str]:
    """One line per configuration whose repeats spread widely or that ran beside other work."""
    lines = []
    for r in ok_records(records):
        what = f"{r['backend']} {r['dtype']} N={r['n_samples']:,} H={r['hidden']:,}"
        if (r.get("spread") or 0) > NOISY_SPREAD:
            lines.append(f"- {what}: repeats spread {100 * r['spread']:.0f}% of the median")
        busy = max(r.get("others_cpu") or 0, r.get("others_cpu_before") or 0)
        if busy > BUSY_SHARE:
            lines.append(f"- {what}: other programs used {100 * busy:.0f}% of the CPUs")
    return lines


def summary_markdown(
    records: Sequence[dict[str, Any]], machine: dict[str, Any] | None = None
) -> str:
    """The results as a Markdown table (median and range of the repeats), with fitted exponents,
    speed-ups and a warning for each configuration that was noisy or ran on a busy machine."""
    lines = [
        "| backend | dtype | N | H | threads | time/iter | range (spread) | GFLOP/s | peak MiB | "
        "loss | accuracy | others' CPU | status |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    order = sorted(
        records,
        key=lambda r: (
            r["hidden"],
            r["n_samples"],
            r["backend"],
            r["dtype"],
            r.get("thread_limit") or 0,
        ),
    )
    for r in order:
        head = (
            f"| {r['backend']} | {r['dtype']} | {r['n_samples']:,} | {r['hidden']:,} | "
            f"{r.get('threads') or r.get('thread_limit') or ''} | "
        )
        if r.get("status") != "ok":
            lines.append(head + f" | | | | | | | {r['status']} |")
            continue
        mem = f"{r['peak_mem_mib']:.2f}" if r.get("peak_mem_mib") is not None else "n/a"
        seen = [v for v in (r.get("others_cpu_before"), r.get("others_cpu")) if v is not None]
        others = f"{100 * max(seen):.0f}%" if seen else "n/a"
        lines.append(
            head + f"{format_seconds(r['seconds_per_iter'])} | {_spread_text(r)} | "
            f"{r['gflops']:.1f} | {mem} | {r['final_loss']:.4f} | {r['accuracy']:.3f} | "
            f"{others} | ok |"
        )
    warn = noise_warnings(records)
    if warn:
        lines += [
            "",
            f"Warning: these timings are not to be trusted as they stand (spread over "
            f"{100 * NOISY_SPREAD:.0f}%, or other programs over {100 * BUSY_SHARE:.0f}% of "
            "the CPUs); rerun them on a quiet machine (--force):",
            "",
        ] + warn
    exps = fit_exponents(records)
    if exps:
        lines += ["", "Fitted exponent of time per iteration vs N (time ~ N^k):", ""]
        lines += [f"- {b} {d}, H={h:,}: k = {k:.2f}" for (b, d, h), k in exps.items()]
    ups = speedups(records)
    if ups:
        lines += ["", "Speed-up of numba over numpy (numpy time / numba time):", ""]
        lines += [f"- {d}, N={n:,}, H={h:,}: {s:.1f}x" for (d, n, h), s in ups.items()]
    if machine:
        lines += [
            "",
            f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores; BLAS "
            f"{machine.get('blas', 'n/a')}; NumPy 2048x2048 matmul "
            f"{machine.get('matmul_gflops', 'n/a')} GFLOP/s; Python {machine.get('python')}, "
            f"NumPy {machine.get('numpy')}, Numba {machine.get('numba')}, fastspiral "
            f"{machine.get('fastspiral', 'n/a')}; {machine.get('started', '')} to "
            f"{machine.get('finished', '')}.",
        ]
    return "\n".join(lines)


def compare_markdown(
    a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], label_a: str = "A", label_b: str = "B"
) -> str:
    """A table of B's time over A's for every configuration both hold.

    Configurations match on backend, dtype, N, H and iterations, and on the
    thread limit where either set has more than one. A ratio whose two
    ranges (fastest to slowest repeat) overlap is marked as noise.
    """
    multi = (
        len({r.get("thread_limit") for r in a}) > 1 or len({r.get("thread_limit") for r in b}) > 1
    )

    def key(r):
        return (r["backend"], r["dtype"], r["n_samples"], r["hidden"], r["iters"]) + (
            (r.get("thread_limit"),) if multi else ()
        )

    rows_a = {key(r): r for r in ok_records(a)}
    lines = [
        f"| backend | dtype | N | H | threads | {label_a} | {label_b} | {label_b} / {label_a} | |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    matched = 0
    for r in sorted(
        ok_records(b), key=lambda r: (r["hidden"], r["n_samples"], r["backend"], r["dtype"])
    ):
        other = rows_a.get(key(r))
        if other is None:
            continue
        matched += 1
        ratio = r["seconds_per_iter"] / other["seconds_per_iter"]
        lo_a, hi_a = (
            other.get("seconds_min") or other["seconds_per_iter"],
            other.get("seconds_max") or other["seconds_per_iter"],
        )
        lo_b, hi_b = (
            r.get("seconds_min") or r["seconds_per_iter"],
            r.get("seconds_max") or r["seconds_per_iter"],
        )
        verdict = (
            "noise (ranges overlap)"
            if lo_b <= hi_a and lo_a <= hi_b
            else ("slower" if ratio > 1 else "faster")
        )
        threads = f"{other.get('threads')} / {r.get('threads')}"
        lines.append(
            f"| {r['backend']} | {r['dtype']} | {r['n_samples']:,} | {r['hidden']:,} | {threads} | "
            f"{format_seconds(other['seconds_per_iter'])} | {format_seconds(r['seconds_per_iter'])} "
            f"| {ratio:.2f} | {verdict} |"
        )
    if not matched:
        return "No configuration is in both result sets."
    return "\n".join(lines)


def to_dataframe(records: Iterable[dict[str, Any]]):
    """The records as a pandas DataFrame (pandas is not a dependency: ImportError if it is missing)."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("to_dataframe needs pandas: pip install pandas") from None
    return pd.DataFrame(list(records))
