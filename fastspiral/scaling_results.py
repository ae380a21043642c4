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

from ._files import replace_text
from ._measure import format_seconds

#: Columns of results.csv, in order; every record has these keys.
FIELDS = ("backend", "dtype", "n_samples", "hidden", "iters", "repeats", "thread_limit",
          "seconds_per_iter", "seconds_min", "seconds_max", "spread", "others_cpu", "gflops",
          "peak_mem_mib", "estimated_mem_mib", "final_loss", "accuracy", "host", "cpu", "cores",
          "worker", "threads", "threading_layer", "blas", "started", "finished", "status")
#: Beyond this spread ((max - min) / median of the repeats) or share of the CPUs taken by
#: other programs, the summary warns that the figure is not to be trusted as it stands.
NOISY_SPREAD, BUSY_SHARE = 0.25, 0.2

# --------------------------------------------------------------------------
# Results on disk
# --------------------------------------------------------------------------

def record_key(record: dict[str, Any]) -> tuple:
    """What identifies a configuration: backend, dtype, N, H, iterations, repeats, thread limit."""
    limit = record.get("thread_limit")
    return (record["backend"], record["dtype"], int(record["n_samples"]), int(record["hidden"]),
            int(record["iters"]), int(record["repeats"]), None if limit is None else int(limit))


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
    doc = {"format": "fastspiral-scaling", "version": 1, "machine": machine, "records": list(records)}
    replace_text(os.path.join(out, "results.json"), json.dumps(doc, indent=1) + "\n", "results file")
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
            (math.log(r["n_samples"]), math.log(r["seconds_per_iter"])))
    out = {}
    for key, pts in sorted(groups.items()):
        if len({p[0] for p in pts}) >= 2:
            xs, ys = zip(*pts)
            out[key] = float(np.polyfit(xs, ys, 1)[0])
    return out


def speedups(records: Iterable[dict[str, Any]]) -> dict[tuple[str, int, int], float]:
    """NumPy time / Numba time for each (dtype, N, H) where both ran."""
    times = {(r["backend"], r["dtype"], r["n_samples"], r["hidden"]): r["seconds_per_iter"]
             for r in ok_records(records)}
    return {(d, n, h): t / times[("numba", d, n, h)]
            for (b, d, n, h), t in sorted(times.items())
            if b == "numpy" and ("numba", d, n, h) in times}


def summary_markdown(records: Sequence[dict[str, Any]], machine: dict[str, Any] | None = None) -> str:
    """The results as a Markdown table, with fitted exponents and speed-ups."""
    lines = ["| backend | dtype | N | H | time/iter | GFLOP/s | peak MiB | loss | accuracy | status |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    order = sorted(records, key=lambda r: (r["hidden"], r["n_samples"], r["backend"], r["dtype"]))
    for r in order:
        ok = r.get("status") == "ok"
        lines.append(
            f"| {r['backend']} | {r['dtype']} | {r['n_samples']:,} | {r['hidden']:,} | "
            + (f"{format_seconds(r['seconds_per_iter'])} | {r['gflops']:.1f} | "
               + (f"{r['peak_mem_mib']:.2f}" if r.get("peak_mem_mib") is not None else "n/a")
               + f" | {r['final_loss']:.4f} | {r['accuracy']:.3f} | ok |" if ok else
               f" | | | | | {r['status']} |")
        )
    exps = fit_exponents(records)
    if exps:
        lines += ["", "Fitted exponent of time per iteration vs N (time ~ N^k):", ""]
        lines += [f"- {b} {d}, H={h:,}: k = {k:.2f}" for (b, d, h), k in exps.items()]
    ups = speedups(records)
    if ups:
        lines += ["", "Speed-up of numba over numpy (numpy time / numba time):", ""]
        lines += [f"- {d}, N={n:,}, H={h:,}: {s:.1f}x" for (d, n, h), s in ups.items()]
    if machine:
        lines += ["", f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores; "
                  f"NumPy 2048x2048 matmul {machine.get('matmul_gflops', 'n/a')} GFLOP/s; "
                  f"Python {machine.get('python')}, NumPy {machine.get('numpy')}, "
                  f"Numba {machine.get('numba')}."]
    return "\n".join(lines)
