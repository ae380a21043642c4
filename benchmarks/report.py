"""Turn ``pytest --benchmark-only --benchmark-json FILE`` output into a Markdown table and a figure.

    python benchmarks/report.py FILE [FILE ...] [--figure docs/benchmarks.png] > docs/benchmarks.md

With several files (runs of the same suite), each benchmark is reported from
the run with its median time, with the range over the runs beside it.

For each "net N=.. H=.." group: time per iteration, speed-up over the NumPy
backend in the same group, useful GFLOP/s (4NDH + 6NHK per iteration) and the
share of NumPy's own matmul rate measured in the same run ("machine" group),
and the peak memory of the benchmark. Then thread scaling, other shapes, the
training lab's groups ("lab: ..."), the design constants, start-up and the
memory bound, and a footnote with the machine, versions and command.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from fastspiral.scaling.measure import format_seconds

GROUP = re.compile(r"net N=([\d,]+) H=([\d,]+)")


def _label(bench: dict) -> str:
    info = bench["extra_info"]
    return f"{info.get('backend', bench['name'])} {info.get('dtype', '')}".strip()


def _mem(info: dict) -> str:
    value = info.get("peak_mem_mib")
    return "n/a" if value is None else f"{value:,.1f}"


def load(path: str) -> dict:
    with open(path) as fh:
        return json.load(fh)


def merge(docs: list[dict]) -> dict:
    """One document from several runs: each benchmark from the run with its median time per
    iteration (or median time), with ``extra_info["range"]`` = (fastest, slowest) over the runs."""
    if len(docs) == 1:
        return docs[0]
    by_name: dict[str, list[dict]] = {}
    for doc in docs:
        for bench in doc["benchmarks"]:
            by_name.setdefault(bench["fullname"], []).append(bench)

    def seconds(bench):
        return bench["extra_info"].get("seconds_per_iter", bench["stats"]["median"])

    merged = []
    for runs in by_name.values():
        runs = sorted(runs, key=seconds)
        pick = dict(runs[(len(runs) - 1) // 2])
        pick["extra_info"] = dict(
            pick["extra_info"], range=(seconds(runs[0]), seconds(runs[-1])), runs=len(runs)
        )
        merged.append(pick)
    return dict(docs[0], benchmarks=merged)


def _range(info: dict) -> str:
    if "range" not in info:
        return ""
    low, high = info["range"]
    return f" ({format_seconds(low)}-{format_seconds(high)})"


def training_groups(doc: dict) -> dict[tuple[int, int], list[dict]]:
    groups: dict[tuple[int, int], list[dict]] = {}
    for bench in doc["benchmarks"]:
        match = GROUP.fullmatch(bench.get("group") or "")
        if match:
            key = tuple(int(g.replace(",", "")) for g in match.groups())
            groups.setdefault(key, []).append(bench)
    return dict(sorted(groups.items()))


def matmul_rate(doc: dict) -> float | None:
    for bench in doc["benchmarks"]:
        if bench.get("group") == "machine":
            return bench["extra_info"]["gflops"]
    return None


def markdown(doc: dict, command: str) -> str:
    rate = matmul_rate(doc)
    out = [
        "| N | H | implementation | time / iteration | vs NumPy | GFLOP/s | % of matmul "
        "| peak MiB |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (n, h), benches in training_groups(doc).items():
        base = next(
            (
                b["extra_info"]["seconds_per_iter"]
                for b in benches
                if b["extra_info"].get("backend") == "numpy"
            ),
            None,
        )
        for b in sorted(benches, key=lambda b: b["extra_info"]["seconds_per_iter"]):
            info = b["extra_info"]
            t = info["seconds_per_iter"]
            speedup = f"{base / t:.1f}x" if base else "n/a"
            share = f"{100 * info['gflops'] / rate:.0f}%" if rate else "n/a"
            out.append(
                f"| {n:,} | {h:,} | {_label(b)} | {format_seconds(t)}{_range(info)} | {speedup} | "
                f"{info['gflops']:.1f} | {share} | {_mem(info)} |"
            )
    sections = ["\n".join(out)] if training_groups(doc) else []

    threads = [b for b in doc["benchmarks"] if (b.get("group") or "").startswith("threads")]
    if threads:
        rows = sorted(threads, key=lambda b: b["extra_info"]["threads"])
        one = rows[0]["extra_info"]["seconds_per_iter"]
        lines = [
            f"Thread scaling ({threads[0]['group']}): "
            + ", ".join(
                f"{b['extra_info']['threads']} thread(s) "
                f"{format_seconds(b['extra_info']['seconds_per_iter'])}"
                f" ({one / b['extra_info']['seconds_per_iter']:.2f}x)"
                for b in rows
            )
        ]
        sections.append("\n".join(lines))
    sections.extend(_shapes(doc) + _busy(doc) + _lab(doc) + _design(doc))
    startup = [b for b in doc["benchmarks"] if b.get("group") == "start-up"]
    if startup:
        sections.append(
            "Start-up (fresh process: import, train 10 iterations): "
            + ", ".join(
                f"{b['extra_info']['cache']} cache {b['stats']['median']:.2f} s" for b in startup
            )
        )
    memory = [b for b in doc["benchmarks"] if (b.get("group") or "").startswith("memory")]
    for b in memory:
        sections.append(
            f"Peak memory, one iteration at {b['group'][len('memory ') :]}: "
            f"+{b['extra_info']['peak_mem_mib']:.1f} MiB over the process before training "
            f"({format_seconds(b['extra_info']['seconds_per_iter'])}, "
            f"{b['extra_info']['gflops']:.1f} GFLOP/s)."
        )

    m = doc.get("machine_info", {})
    cpu = m.get("cpu", {})
    rate_text = f"{rate:.1f} GFLOP/s" if rate else "not measured"
    sections.append(
        f"Machine: {cpu.get('brand_raw', m.get('processor', '?'))}, {cpu.get('count', '?')} cores; "
        f"NumPy 2048x2048 float64 matmul in the same run: {rate_text}. "
        f"Numba {m.get('numba_version', '?')} code for CPU {m.get('numba_cpu', '?')}; "
        f"BLAS: {m.get('blas', '?')}. "
        f"Python {m.get('python_version', '?')}; {doc.get('datetime', '')[:10]}. "
        f"Medians of {_rounds(doc)} rounds{_runs(doc)}. Peak MiB: rise of the process's peak "
        f"resident memory while the benchmark allocated and ran (for JAX it includes the JIT "
        f"compilation). "
        f"Command: `{command}`."
    )
    return "\n\n".join(sections) + "\n"


def _grouped(doc: dict, prefix: str) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for b in doc["benchmarks"]:
        if (b.get("group") or "").startswith(prefix):
            groups.setdefault(b["group"], []).append(b)
    return groups


def _shapes(doc: dict) -> list[str]:
    """Other data shapes: numba against NumPy per (D, K)."""
    rows = []
    for benches in _grouped(doc, "shape ").values():
        t = {b["extra_info"]["backend"]: b["extra_info"] for b in benches}
        if {"numba", "numpy"} <= set(t):
            n, k = t["numba"]["n_features"], t["numba"]["n_classes"]
            rows.append(
                (
                    n,
                    k,
                    f"| {n} | {k} | {t['numba']['hidden']} | "
                    f"{format_seconds(t['numba']['seconds_per_iter'])} | "
                    f"{format_seconds(t['numpy']['seconds_per_iter'])} | "
                    f"{t['numpy']['seconds_per_iter'] / t['numba']['seconds_per_iter']:.2f}x | "
                    f"{t['numba']['gflops']:.1f} |",
                )
            )
    if not rows:
        return []
    head = [
        "Other shapes (N=2,000, float64):",
        "",
        "| D | K | H | numba | NumPy | numba vs NumPy | numba GFLOP/s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    return ["\n".join(head + [r for _, _, r in sorted(rows)])]


def _busy(doc: dict) -> list[str]:
    """Quiet and busy machine, one thread and the default count."""
    lines = []
    for group, benches in sorted(_grouped(doc, "busy machine").items()):
        t = {}
        for b in benches:
            e = b["extra_info"]
            if (
                e["threads"] == "paired"
            ):  # one-thread and default rounds alternated in one benchmark
                t[e["machine"], "one"], t[e["machine"], "default"] = (
                    e["one_thread_seconds_per_iter"],
                    e["seconds_per_iter"],
                )
            else:  # older runs: the two counts in benchmarks of their own
                t[e["machine"], e["threads"]] = e["seconds_per_iter"]
        parts = []
        for machine in ("quiet", "busy"):
            one, default = t.get((machine, "one")), t.get((machine, "default"))
            if one and default:
                parts.append(
                    f"{machine}: one thread {format_seconds(one)}, "
                    f"default {format_seconds(default)} ({default / one:.2f}x one thread)"
                )
        if parts:
            lines.append(f"{group[0].upper()}{group[1:]}: " + "; ".join(parts))
    return ["\n".join(lines)] if lines else []


def _lab(doc: dict) -> list[str]:
    """The training lab's groups (benchmarks/test_training_lab.py), one line each: time to a
    result on digits against MLPClassifier, mini-batch epochs against a full-batch iteration,
    and Adam's full-batch iteration against gd's."""
    lines = []
    for group, benches in sorted(_grouped(doc, "lab: ").items()):
        infos = [b["extra_info"] for b in benches]
        if "digits" in group:
            mlp = min(
                (b["stats"]["median"] for i, b in zip(infos, benches) if i["library"] == "sklearn"),
                default=None,
            )  # scikit-learn's faster row, on its default threads or on one
            parts = []
            for info, b in sorted(zip(infos, benches), key=lambda p: p[1]["stats"]["median"]):
                t = b["stats"]["median"]
                vs = f", {mlp / t:.1f}x MLPClassifier's faster row" if mlp else ""
                parts.append(
                    f"{info['library']} on {info['threads']} thread(s) {format_seconds(t)}"
                    f"{_range(info)} (test accuracy {info['test_accuracy']:.4f}{vs})"
                )
            first = infos[0]
            lines.append(
                f"{group[len('lab: ') :]} ({first['n_samples']:,} training rows, "
                f"{first['epochs']} epochs of batches of 200): " + "; ".join(parts)
            )
            continue
        base = next(
            (i["seconds_per_iter"] for i in infos if i["optimizer"] == "gd"), None
        )  # a full-batch gd iteration
        parts = []
        for info in sorted(infos, key=lambda i: i["seconds_per_iter"]):
            batch = info["batch_size"]
            what = "full batch" if batch is None else f"batches of {batch}"
            unit = "iteration" if batch is None else "epoch"
            ratio = f", {info['seconds_per_iter'] / base:.2f}x gd" if base else ""
            parts.append(
                f"{info['optimizer']} on {what} {format_seconds(info['seconds_per_iter'])}"
                f"{_range(info)} per {unit} ({info['slots']} slot(s), {info['threads']} "
                f"thread(s){ratio})"
            )
        lines.append(f"{group[len('lab: ') :]}: " + "; ".join(parts))
    return ["Training lab:\n" + "\n".join(f"- {line}" for line in lines)] if lines else []


def _design(doc: dict) -> list[str]:
    """The design constants' groups, one line each."""
    lines = []
    for group, benches in sorted(_grouped(doc, "design: ").items()):
        key = "tile" if "tile" in group else "slots" if "slots" in group else "threads"
        parts = []
        for b in sorted(benches, key=lambda b: b["extra_info"][key]):
            info = b["extra_info"]
            chosen = " (chosen)" if info.get("chosen") == info[key] else ""
            parts.append(f"{info[key]}{chosen}: {format_seconds(info['seconds_per_iter'])}")
        unit = " per epoch" if key == "slots" else ""
        lines.append(f"{group[len('design: ') :]}{unit}: " + ", ".join(parts))
    return (
        ["Design constants (docs/design.md):\n" + "\n".join(f"- {line}" for line in lines)]
        if lines
        else []
    )


def _runs(doc: dict) -> str:
    runs = {b["extra_info"].get("runs", 1) for b in doc["benchmarks"]}
    return (
        f"; the median of {max(runs)} runs of the suite, with their range in brackets"
        if max(runs) > 1
        else ""
    )


def _rounds(doc: dict) -> str:
    benches = [b for b in doc["benchmarks"] if GROUP.fullmatch(b.get("group") or "")]
    counts = sorted({b["stats"]["rounds"] for b in benches or doc["benchmarks"]})
    return "/".join(map(str, counts)) or "?"


def figure(doc: dict, path: str) -> None:
    from matplotlib.figure import Figure

    rate = matmul_rate(doc)
    groups = training_groups(doc)
    hiddens = sorted({h for _, h in groups})
    fig = Figure(figsize=(6 * len(hiddens), 4.5), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(hiddens), squeeze=False)[0]
    for ax, hidden in zip(axes, hiddens):
        series: dict[str, list[tuple[int, float]]] = {}
        for (n, h), benches in groups.items():
            if h == hidden:
                for b in benches:
                    series.setdefault(_label(b), []).append((n, b["extra_info"]["gflops"]))
        for label, pts in sorted(series.items()):
            ax.plot(*zip(*sorted(pts)), marker="o", label=label)
        if rate:
            ax.axhline(rate, color="k", linestyle=":", label=f"NumPy matmul ({rate:.0f} GFLOP/s)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N (training samples)")
        ax.set_ylabel("useful GFLOP/s")
        ax.set_title(f"net training, H = {hidden:,}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "json", nargs="+", help="file(s) written by pytest --benchmark-json (runs of one suite)"
    )
    parser.add_argument("--figure", help="also write a PNG of GFLOP/s against N")
    parser.add_argument(
        "--command",
        default="pytest --benchmark-only --benchmark-json FILE",
        help="the command that produced the JSON, for the footnote",
    )
    args = parser.parse_args(argv)
    doc = merge([load(path) for path in args.json])
    if not (training_groups(doc) or _lab(doc) or _design(doc)):
        print(
            f"report: no 'net N=.. H=..' benchmark groups (nor 'lab: ' or 'design: ' ones) in "
            f"{', '.join(args.json)}",
            file=sys.stderr,
        )
        return 1
    sys.stdout.write(markdown(doc, args.command))
    if args.figure and training_groups(doc):
        figure(doc, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
