"""Scaling results: the records, results.json and results.csv, and what is computed from them.

A *record* is one configuration: what identifies it (:func:`record_key`),
every repeat it ran (``runs``, each from :func:`fastspiral.scaling.run.run_task`)
and the figures drawn from them (:func:`summarise`). Records are kept in
DIR/results.json (the full records, with every repeat) and DIR/results.csv
(one row per record, the columns of :data:`FIELDS`).

**Reading and writing.** :func:`load_results` checks every field of every record, with its type,
before anything else is done, and refuses a file holding two records of one
configuration (a hand edit: which to keep is for a person to say).
:func:`merge_results` writes under a lock on the folder, merging with what is
on disk at that moment: two sweeps writing into one folder at once keep
every record, and every repeat (repeats of one configuration from both are
pooled; each repeat has a ``run_id``).

**The record's fields.** ``seconds_per_iter`` is the median over the repeats of the time per
iteration without set-up (see :mod:`fastspiral.scaling.run`), with its
order-statistic confidence interval ``[ci_low, ci_high]`` at confidence
``ci_level``; ``setup_seconds`` the median of the one-off costs of a
training of ``iters`` iterations; ``wall_seconds_per_iter`` the shorter
training's wall time over its iterations (set-up included, as a user
timing ``train_net`` sees it). ``gflops`` counts the useful FLOPs
(:func:`~fastspiral.scaling.measure.useful_flops`) of the set-up-free time;
``fraction_of_peak`` sets it against ``matmul_gflops``, NumPy's matrix
product of the same dtype on the same threads timed in each repeat's own
process, on its own host. ``threads_used`` is the thread count most
iterations ran on, ``thread_shares`` the share of the iterations on each
count (the Numba backend's chooser may use fewer threads than allowed;
a one-slot problem runs on one).

**Update rules and mini-batches.** ``optimizer`` (a rule's name, with the
hyperparameters that differ from its defaults: ``adam(beta1=0.8)``),
``batch_size`` (None: the full batch) and ``step_size`` are part of a
configuration's identity. One iteration is one update, so
``seconds_per_iter`` is the time per update; ``updates_per_epoch`` is
``ceil(N / batch_size)`` (1 for the full batch) and ``seconds_per_epoch``
the time to pass over every row once. ``gflops``, ``fraction_of_peak``, the
cost model and the exponents use the time per epoch, whose useful FLOPs are
``4NDH + 6NHK`` whatever the batch size (for the full batch it is the time
per iteration), and they group records by optimizer and batch size as well,
never mixing them.

**Cost to a result.** With a ``target_loss``, ``target_iters`` is the number
of updates run until the training loss first reached the target or went
below it, ``target_epochs`` the epochs and ``target_seconds`` their
set-up-free time (``target_iters * seconds_per_iter``; the interval of the
median scales with it); ``target_status`` says "reached" or "not reached
within U updates" (U: the longer timed training's updates, the ones
searched). The training loss is the one :func:`fastspiral.train_net` records
before each update: with the full batch, that of every iteration; with
mini-batches, checked at the end of each epoch, the mean of that epoch's
batch losses weighted by their rows (what scikit-learn's MLPClassifier
reports as ``loss_curve_``), since one batch's loss is too noisy to say that
a model has reached a loss. ``final_loss`` follows the same rule: the
shorter timed training's last loss, or its last epoch's mean.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import math
import numbers
import os
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from .._files import replace_text
from .._validation import DTYPES
from .measure import format_seconds, useful_flops
from .stats import LEVEL, fit_cost_model, fit_slope, median_interval, ratio_interval

#: Format and version of results.json. Version 1 timed whole trainings, set-up included.
FORMAT, VERSION = "fastspiral-scaling", 2

#: Columns of results.csv, in order; every record has these keys.
FIELDS = (
    "backend",
    "dtype",
    "n_samples",
    "hidden",
    "optimizer",
    "batch_size",
    "step_size",
    "iters",
    "seed",
    "thread_limit",
    "repeats",
    "repeats_done",
    "seconds_per_iter",
    "ci_low",
    "ci_high",
    "ci_level",
    "seconds_min",
    "seconds_max",
    "spread",
    "updates_per_epoch",
    "seconds_per_epoch",
    "setup_seconds",
    "wall_seconds_per_iter",
    "gflops",
    "matmul_gflops",
    "fraction_of_peak",
    "peak_mem_mib",
    "estimated_mem_mib",
    "others_cpu_before",
    "others_cpu",
    "threads_allowed",
    "threads_used",
    "thread_shares",
    "final_loss",
    "accuracy",
    "target_loss",
    "target_iters",
    "target_epochs",
    "target_seconds",
    "target_status",
    "host",
    "cpu",
    "cores",
    "worker",
    "threading_layer",
    "blas",
    "started",
    "finished",
    "status",
)
#: The fields that identify a configuration: every argument that changes its result or its timing.
KEY_FIELDS = (
    "backend",
    "dtype",
    "n_samples",
    "hidden",
    "iters",
    "seed",
    "thread_limit",
    "optimizer",
    "batch_size",
    "step_size",
    "target_loss",
)
#: What a record written before the update-rule axes (which has none of these fields) timed:
#: the case study's full-batch gradient descent at its step size, with no target.
LEGACY_DEFAULTS = {"optimizer": "gd", "batch_size": None, "step_size": 1.0, "target_loss": None}
#: Beyond this spread ((max - min) / median of the repeats) or share of the CPUs taken by
#: other programs, the summary warns that the figure is not to be trusted as it stands.
NOISY_SPREAD, BUSY_SHARE = 0.25, 0.2
#: A record whose iterations ran less than this share on one thread count is "mixed": left out
#: of the fits and of the thread panel, and named in the warnings.
MIXED_SHARE = 0.9
#: Longest wait for another sweep's write to the same folder (milliseconds when healthy).
LOCK_WAIT = 60.0
_LOCK_NAME = ".results.lock"

# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def record_key(record: dict[str, Any]) -> tuple:
    """What identifies a configuration: backend, dtype, N, H, iterations, seed, thread limit,
    optimizer, batch size, step size and target loss (the last four as
    ``LEGACY_DEFAULTS`` where a record has none)."""

    def get(name: str) -> Any:
        return record.get(name, LEGACY_DEFAULTS[name])

    return (
        record["backend"],
        record["dtype"],
        int(record["n_samples"]),
        int(record["hidden"]),
        int(record["iters"]),
        int(record["seed"]),
        _int_or_none(record.get("thread_limit")),
        str(get("optimizer")),
        _int_or_none(get("batch_size")),
        float(get("step_size")),
        _float_or_none(get("target_loss")),
    )


def optimizer_label(rule: Any) -> str:
    """A rule of :mod:`fastspiral.optim` as a record names it: its name, with the hyperparameters
    that differ from the rule's defaults (``adam``, ``adam(beta1=0.8)``)."""
    default = type(rule)()
    changed = [
        f"{k}={v!r}"
        for k, v in rule.config().items()
        if k != "name" and v != default.config().get(k)
    ]
    return rule.name + (f"({', '.join(changed)})" if changed else "")


def updates_per_epoch(n_samples: int, batch_size: int | None) -> int:
    """Updates in one pass over the rows: ``ceil(N / batch_size)``, 1 for the full batch."""
    return 1 if batch_size is None else -(-int(n_samples) // int(batch_size))


def update_text(record: dict[str, Any], sep: str = ", ", always: bool = False) -> str:
    """``", adam, batches of 200, step 0.01"``: the update in words where it is not the case
    study's (full-batch gd at step size 1), or ``always`` (beside records of other updates)."""
    parts = []
    opt, batch = record.get("optimizer") or "gd", record.get("batch_size")
    step = record.get("step_size")
    if always or opt != "gd" or batch is not None or (step is not None and step != 1.0):
        parts.append(opt)
        parts.append("full batch" if batch is None else f"batches of {batch:,}")
    if step is not None and step != 1.0:
        parts.append(f"step {step:g}")
    return "".join(sep + p for p in parts)


def describe(record: dict[str, Any], always: bool = False) -> str:
    """``numba float64 N=3,000 H=100, adam, batches of 200, 1 thread (of 2)``: the update where
    it is not the case study's (or ``always``), the threads it ran on, and its limit where that
    differs."""
    threads, limit = (
        record.get("threads_used") or record.get("thread_limit"),
        record.get("thread_limit"),
    )
    text = f"{record['backend']} {record['dtype']} N={record['n_samples']:,} H={record['hidden']:,}"
    text += update_text(record, always=always)
    if threads:
        text += f", {threads} thread{'s' if threads != 1 else ''}"
        if limit and limit != threads:
            text += f" (of {limit})"
    return text


def new_record(config: dict[str, Any], host: dict[str, Any] | None = None) -> dict[str, Any]:
    """A record of ``config`` with no repeat run yet (status "partial: 0 of R repeats")."""
    record = {key: config.get(key) for key in FIELDS}
    for key, value in LEGACY_DEFAULTS.items():
        record[key] = config.get(key, value)
    host = host or {}
    record.update(
        updates_per_epoch=updates_per_epoch(config["n_samples"], record["batch_size"]),
        repeats=int(config.get("repeats") or 1),
        repeats_done=0,
        cpu=host.get("cpu"),
        cores=host.get("cores"),
        blas=host.get("blas"),
        repeat_seconds=[],
        runs=[],
    )
    record["status"] = _count_status(record)
    return record


def _count_status(record: dict[str, Any]) -> str:
    done, wanted = len(record.get("runs") or []), record.get("repeats") or 1
    return "ok" if done >= wanted else f"partial: {done} of {wanted} repeats"


def add_run(record: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """Add one repeat's result to ``record`` and recompute its figures (in place; returns it).

    A skipped or failed run sets the record's status and is not kept.
    """
    status = str(run.get("status", ""))
    if status == "ok":
        record.setdefault("runs", []).append(run)
        record["status"] = ""  # counted again from the runs
        summarise(record)
    else:
        record["status"] = status
        for key in ("host", "worker"):
            record[key] = record.get(key) or run.get(key)
    return record


def summarise(record: dict[str, Any]) -> dict[str, Any]:
    """Recompute a record's figures from its ``runs`` (in place; returns it)."""
    runs = sorted(record.get("runs") or [], key=lambda r: (str(r.get("started")), r["run_id"]))
    record["runs"] = runs
    record["repeats_done"] = len(runs)
    if not str(record.get("status", "")).startswith(("skipped", "failed")):
        record["status"] = _count_status(record)
    if not runs:
        return record
    times = [r["seconds_per_iter"] for r in runs]
    median = median_interval(times)
    seconds = median.value
    per_epoch = updates_per_epoch(record["n_samples"], record.get("batch_size"))
    flops = useful_flops(record["n_samples"], record["hidden"])  # of an epoch
    rates = [r["matmul_gflops"] for r in runs if r.get("matmul_gflops")]
    matmul = statistics.median(rates) if rates else None
    iterations: collections.Counter = collections.Counter()
    for r in runs:
        iterations.update({int(k): v for k, v in (r.get("thread_iterations") or {}).items()})
    total = sum(iterations.values())
    shares = {str(k): round(v / total, 4) for k, v in sorted(iterations.items())} if total else None
    seen = lambda key: [r[key] for r in runs if r.get(key) is not None]  # noqa: E731
    record.update(
        repeat_seconds=times,
        seconds_per_iter=seconds,
        ci_low=median.low,
        ci_high=median.high,
        ci_level=median.level,
        seconds_min=min(times),
        seconds_max=max(times),
        spread=(max(times) - min(times)) / seconds,
        updates_per_epoch=per_epoch,
        seconds_per_epoch=seconds * per_epoch,
        setup_seconds=statistics.median(r["setup_seconds"] for r in runs),
        wall_seconds_per_iter=statistics.median(
            r["wall_seconds"] / r.get("timed_iters", record["iters"]) for r in runs
        ),
        gflops=flops / (seconds * per_epoch) / 1e9,
        matmul_gflops=matmul,
        fraction_of_peak=flops / (seconds * per_epoch) / 1e9 / matmul if matmul else None,
        peak_mem_mib=max(seen("peak_mem_mib"), default=None),
        others_cpu_before=max(seen("others_cpu_before"), default=None),
        others_cpu=max(seen("others_cpu"), default=None),
        threads_allowed=max(seen("threads_allowed"), default=None),
        threads_used=max(iterations, key=lambda k: (iterations[k], k)) if total else None,
        thread_shares=shares,
        final_loss=runs[0]["final_loss"],
        accuracy=runs[0]["accuracy"],
        host=", ".join(sorted(set(seen("host")))) or None,
        worker=", ".join(sorted(set(seen("worker")))) or None,
        threading_layer=runs[0].get("threading_layer"),
        cpu=runs[0].get("cpu") or record.get("cpu"),
        cores=runs[0].get("cores") or record.get("cores"),
        blas=runs[0].get("blas") or record.get("blas"),
        started=min(seen("started"), default=None),
        finished=max(seen("finished"), default=None),
    )
    record.update(_cost_to_target(record, runs, seconds, per_epoch))
    return record


def _cost_to_target(
    record: dict[str, Any], runs: list[dict[str, Any]], seconds: float, per_epoch: int
) -> dict[str, Any]:
    """The target fields from the runs' ``target_iters``: the median run's (not reached counted
    as the slowest; the training's bits, hence the count, are the same in every repeat of a
    configuration on one kind of CPU), times the set-up-free time per update."""
    none = dict(target_iters=None, target_epochs=None, target_seconds=None, target_status=None)
    if record.get("target_loss") is None:
        return none
    found = sorted(
        (r.get("target_iters") for r in runs), key=lambda v: math.inf if v is None else v
    )
    middle = found[(len(found) - 1) // 2]  # the lower median: a count that a repeat gave
    if middle is None:
        budget = min(r.get("target_budget") or 0 for r in runs)
        return dict(none, target_status=f"not reached within {budget:,} updates")
    return dict(
        target_iters=int(middle),
        target_epochs=-(-int(middle) // per_epoch),
        target_seconds=middle * seconds,
        target_status="reached",
    )


def is_mixed(record: dict[str, Any]) -> bool:
    """Whether the record's iterations ran on more than one thread count (no count held
    MIXED_SHARE of them)."""
    shares = record.get("thread_shares") or {}
    return bool(shares) and max(shares.values()) < MIXED_SHARE


# --------------------------------------------------------------------------
# Checking what is read
# --------------------------------------------------------------------------


def _check_type(where: str, name: str, value: Any, kind: str) -> None:
    """Raise ValueError unless ``value`` is of ``kind`` (a name from the table below)."""
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    checks = {
        "str": lambda: isinstance(value, str),
        "int>=0": lambda: is_int and value >= 0,
        "int>=1": lambda: is_int and value >= 1,
        "real": lambda: is_real and math.isfinite(value),
        "real>=0": lambda: is_real and math.isfinite(value) and value >= 0,
        "real>0": lambda: is_real and math.isfinite(value) and value > 0,
        "share": lambda: is_real and 0 <= value <= 1,
        "dtype": lambda: isinstance(value, str) and value in DTYPES,
    }
    ok = checks[kind.removesuffix("?")]()
    if kind.endswith("?") and value is None:
        return
    if not ok:
        wanted = {
            "str": "a string",
            "int>=0": "an integer >= 0",
            "int>=1": "an integer >= 1",
            "real": "a finite number",
            "real>=0": "a finite number >= 0",
            "real>0": "a finite number > 0",
            "share": "a number from 0 to 1",
            "dtype": f"one of {sorted(DTYPES)}",
        }[kind.removesuffix("?")]
        null = " or null" if kind.endswith("?") else ""
        raise ValueError(
            f"{where}: {name} must be {wanted}{null}, got {type(value).__name__} {value!r}"
        )


#: Field -> kind, for records (a trailing ? allows null).
RECORD_TYPES = {
    "backend": "str",
    "dtype": "dtype",
    "n_samples": "int>=1",
    "hidden": "int>=1",
    "iters": "int>=1",
    "seed": "int>=0",
    "thread_limit": "int>=1?",
    "optimizer": "str",
    "batch_size": "int>=1?",
    "step_size": "real>0",
    "repeats": "int>=1",
    "repeats_done": "int>=0",
    "seconds_per_iter": "real>0?",
    "ci_low": "real>0?",
    "ci_high": "real>0?",
    "ci_level": "share?",
    "seconds_min": "real>0?",
    "seconds_max": "real>0?",
    "spread": "real>=0?",
    "updates_per_epoch": "int>=1?",
    "seconds_per_epoch": "real>0?",
    "setup_seconds": "real?",
    "wall_seconds_per_iter": "real>=0?",
    "gflops": "real>=0?",
    "matmul_gflops": "real>0?",
    "fraction_of_peak": "real>=0?",
    "peak_mem_mib": "real>=0?",
    "estimated_mem_mib": "real>=0?",
    "others_cpu_before": "share?",
    "others_cpu": "share?",
    "threads_allowed": "int>=1?",
    "threads_used": "int>=1?",
    "final_loss": "real?",
    "accuracy": "share?",
    "target_loss": "real>0?",
    "target_iters": "int>=1?",
    "target_epochs": "int>=1?",
    "target_seconds": "real>0?",
    "target_status": "str?",
    "host": "str?",
    "cpu": "str?",
    "cores": "int>=1?",
    "worker": "str?",
    "threading_layer": "str?",
    "blas": "str?",
    "started": "str?",
    "finished": "str?",
    "status": "str",
}
#: Field -> kind, for the runs (repeats) inside a record.
RUN_TYPES = {
    "run_id": "str",
    "repeat": "int>=0",
    "sequence": "int>=0?",
    "host": "str",
    "worker": "str",
    "status": "str",
    "started": "str",
    "finished": "str",
    "threads_allowed": "int>=1",
    "timed_iters": "int>=1?",
    "target_iters": "int>=1?",
    "target_budget": "int>=1?",
    "seconds_per_iter": "real>0",
    "setup_seconds": "real",
    "wall_seconds": "real>=0",
    "matmul_gflops": "real>0?",
    "others_cpu_before": "share?",
    "others_cpu": "share?",
    "peak_mem_mib": "real>=0?",
    "final_loss": "real",
    "accuracy": "share",
    "threading_layer": "str?",
    "cpu": "str?",
    "cores": "int>=1?",
    "blas": "str?",
}


def check_record(record: Any, where: str) -> None:
    """Raise ValueError naming ``where`` and the field unless ``record`` is a well-formed record."""
    if not isinstance(record, dict):
        raise ValueError(f"{where} is a {type(record).__name__}, not an object")
    for name, kind in RECORD_TYPES.items():
        if name not in record and (
            (name in KEY_FIELDS and name not in LEGACY_DEFAULTS) or name == "status"
        ):
            raise ValueError(f"{where}: {name} is missing")
        missing = name not in record and not kind.endswith("?")
        _check_type(where, name, record.get(name), kind + "?" if missing else kind)
    shares = record.get("thread_shares")
    if shares is not None:
        if not isinstance(shares, dict):
            raise ValueError(f"{where}: thread_shares must be an object or null")
        for k, v in shares.items():
            if not k.isdigit() or int(k) < 1:
                raise ValueError(f"{where}: thread_shares has a key {k!r}, not a thread count")
            _check_type(where, f"thread_shares[{k!r}]", v, "share")
    for name in ("repeat_seconds", "runs"):
        if not isinstance(record.get(name, []), list):
            raise ValueError(f"{where}: {name} must be a list")
    for i, v in enumerate(record.get("repeat_seconds", [])):
        _check_type(where, f"repeat_seconds[{i}]", v, "real>0")
    ids = set()
    for i, run in enumerate(record.get("runs", [])):
        here = f"{where}, run {i}"
        if not isinstance(run, dict):
            raise ValueError(f"{here} is a {type(run).__name__}, not an object")
        for name, kind in RUN_TYPES.items():
            if name not in run and not kind.endswith("?"):
                raise ValueError(f"{here}: {name} is missing")
            _check_type(here, name, run.get(name), kind)
        counts = run.get("thread_iterations")
        if not isinstance(counts, dict) or not counts:
            raise ValueError(f"{here}: thread_iterations must be a non-empty object")
        for k, v in counts.items():
            if not k.isdigit() or int(k) < 1:
                raise ValueError(f"{here}: thread_iterations has a key {k!r}, not a thread count")
            _check_type(here, f"thread_iterations[{k!r}]", v, "int>=0")
        if run["run_id"] in ids:
            raise ValueError(f"{here}: run_id {run['run_id']!r} appears twice")
        ids.add(run["run_id"])


# --------------------------------------------------------------------------
# Results on disk
# --------------------------------------------------------------------------


def _read(path: str) -> dict[str, Any]:
    """The document in ``path``, checked record by record, field by field."""
    with open(path) as fh:
        doc = json.load(fh)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError("no fastspiral-scaling document")
    if doc.get("version") != VERSION:
        raise ValueError(
            f"it has version {doc.get('version')!r}, this fastspiral reads version {VERSION} "
            "(version 1 timed whole trainings, set-up included): sweep into a new folder"
        )
    machine, records = doc.get("machine", {}), doc.get("records")
    if not isinstance(machine, dict) or not isinstance(records, list):
        raise ValueError("machine must be an object and records a list")
    if not isinstance(doc.get("sweeps", []), list):
        raise ValueError("sweeps must be a list")
    seen: dict[tuple, int] = {}
    for i, record in enumerate(records):
        check_record(record, f"record {i}")
        if any(name not in record for name in LEGACY_DEFAULTS):  # written before the axes
            for name, value in LEGACY_DEFAULTS.items():
                record.setdefault(name, value)
            record.setdefault("updates_per_epoch", 1)
            if record.get("seconds_per_iter"):
                record.setdefault("seconds_per_epoch", record["seconds_per_iter"])
        key = record_key(record)
        if key in seen:  # keeping either would drop the other's repeats (a hand edit; the tests:
            # tests/test_scaling.py::test_duplicated_records_are_refused_and_none_is_dropped)
            raise ValueError(
                f"records {seen[key]} and {i} are the same configuration ({describe(record)}, "
                f"iters={key[4]}, seed={key[5]}, thread_limit={key[6]}, "
                f"target_loss={key[10]}); keep one of them, or move both repeats' runs into one "
                "record, by hand"
            )
        seen[key] = i
    return doc


def load_results(out: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(machine, records) from DIR/results.json, or ({}, []) if there is none yet.

    Every field of every record is checked, with its type, and a file
    holding two records of one configuration is refused: ValueError naming
    the record and the field. ``machine`` is the latest sweep's machine with
    ``hosts`` (every host that ran a repeat) and ``sweeps`` (each sweep into
    the folder: when, from where, in which order). The records are those of
    ``FIELDS`` plus ``repeat_seconds`` and ``runs``;
    :func:`to_dataframe` turns them into a pandas DataFrame.
    """
    path = os.path.join(os.fspath(out), "results.json")
    if not os.path.exists(path):
        return {}, []
    try:
        doc = _read(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ValueError(f"{path} exists but is not a fastspiral results file: {exc}") from exc
    machine = dict(doc.get("machine", {}))
    machine["sweeps"] = doc.get("sweeps", [])
    return machine, doc["records"]


def _csv_row(record: dict[str, Any]) -> dict[str, Any]:
    row = {k: record.get(k) for k in FIELDS}
    shares = record.get("thread_shares")
    if shares:
        row["thread_shares"] = " ".join(f"{k}:{v:.3f}" for k, v in shares.items())
    return row


def save_results(
    out: str | os.PathLike, machine: dict[str, Any], records: Sequence[dict[str, Any]]
) -> None:
    """Write DIR/results.json and DIR/results.csv as given, each replaced atomically (no merge:
    :func:`merge_results` is what sweeps use)."""
    out = os.fspath(out)
    machine = dict(machine)
    sweeps = machine.pop("sweeps", [])
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "machine": machine,
        "sweeps": sweeps,
        "records": list(records),
    }
    replace_text(
        os.path.join(out, "results.json"), json.dumps(doc, indent=1) + "\n", "results file"
    )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(_csv_row(r) for r in records)
    replace_text(os.path.join(out, "results.csv"), buf.getvalue(), "results file")


def _merge_record(disk: dict[str, Any], mine: dict[str, Any], dropped: set[str]) -> dict[str, Any]:
    """One configuration from two writers: every repeat of both (less ``dropped``), mine's status
    where it says skipped or failed."""
    runs = {r["run_id"]: r for r in disk.get("runs", []) if r["run_id"] not in dropped}
    runs.update({r["run_id"]: r for r in mine.get("runs", [])})
    merged = dict(mine, runs=list(runs.values()))
    merged["repeats"] = mine.get("repeats") or 1  # what the latest sweep asked for
    if not str(mine.get("status", "")).startswith(("skipped", "failed")):
        merged["status"] = ""  # counted again from the pooled runs
    return summarise(merged)


def merge_results(
    out: str | os.PathLike,
    machine: dict[str, Any],
    records: Iterable[dict[str, Any]],
    dropped: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Merge ``records`` into DIR's results under the folder's lock and write them; returns all
    the folder's records.

    A lock held for a whole sweep was rejected: a second sweep into the folder would wait for
    hours or fail, where merging lets both go on and keeps both
    (tests/test_scaling.py::test_two_sweeps_into_one_folder_keep_every_record).

    What another sweep wrote meanwhile is kept: records it added, and the
    repeats it added to a configuration both hold. ``dropped`` names the runs
    (``run_id``) to leave out (those a ``force`` rerun replaces).
    ``machine["sweeps"]`` entries are merged by their ``id``, ``hosts`` by name.
    """
    from ..numba_backend.cache import file_lock

    out = os.fspath(out)
    dropped = set(dropped)
    with file_lock(os.path.join(out, _LOCK_NAME), LOCK_WAIT) as state:
        if state == "timeout":
            raise OSError(f"another sweep held {out!r}'s lock for {LOCK_WAIT:.0f} s; try again")
        disk_machine, disk_records = load_results(out)
        by_key = {record_key(r): r for r in disk_records}
        for record in records:
            key = record_key(record)
            by_key[key] = _merge_record(by_key[key], record, dropped) if key in by_key else record
        sweeps = {s.get("id"): s for s in disk_machine.get("sweeps", [])}
        sweeps.update({s.get("id"): s for s in machine.get("sweeps", [])})
        hosts = dict(disk_machine.get("hosts") or {})
        for name, info in (machine.get("hosts") or {}).items():
            merged = dict(hosts.get(name) or {}, **info)
            merged["workers"] = {**(hosts.get(name) or {}).get("workers", {}),
                                 **info.get("workers", {})}  # fmt: skip
            hosts[name] = merged
        all_records = list(by_key.values())
        _reference_rates(hosts, all_records)
        merged_machine = dict(machine, hosts=hosts, sweeps=list(sweeps.values()))
        save_results(out, merged_machine, all_records)
    return all_records


def _reference_rates(hosts: dict[str, dict], records: Iterable[dict[str, Any]]) -> None:
    """Each host's, and each of its workers', median matmul rate per dtype and thread count, from
    the repeats they ran (``reference_gflops``, ``worker_reference_gflops``)."""
    rates: dict[tuple[str, str], dict[str, list[float]]] = {}
    for record in records:
        for run in record.get("runs") or []:
            if run.get("matmul_gflops"):
                n = run["threads_allowed"]
                label = f"{record['dtype']}, {n} thread{'s' if n != 1 else ''}"
                for who in ("", run["worker"]):
                    rates.setdefault((run["host"], who), {}).setdefault(label, []).append(
                        run["matmul_gflops"]
                    )
    for (host, worker), by_label in sorted(rates.items()):
        medians = {label: round(statistics.median(v), 2) for label, v in sorted(by_label.items())}
        info = hosts.setdefault(host, {})
        if worker:
            info.setdefault("worker_reference_gflops", {})[worker] = medians
        else:
            info["reference_gflops"] = medians


# --------------------------------------------------------------------------
# Fits and comparisons
# --------------------------------------------------------------------------


def ok_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records with figures: status "ok" and a time."""
    return [r for r in records if r.get("status") == "ok" and r.get("seconds_per_iter")]


def _repeats(record: dict[str, Any]) -> list[float]:
    return list(record.get("repeat_seconds") or [record["seconds_per_iter"]])


def _epoch_repeats(record: dict[str, Any]) -> list[float]:
    """Each repeat's time per epoch (per iteration for the full batch): what the fits use."""
    per_epoch = updates_per_epoch(record["n_samples"], record.get("batch_size"))
    return [t * per_epoch for t in _repeats(record)]


def fit_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records fits use: ok, and on one thread count (not mixed)."""
    return [r for r in ok_records(records) if not is_mixed(r)]


def _threads(record: dict[str, Any]) -> int | None:
    return record.get("threads_used") or record.get("thread_limit")


def _update(record: dict[str, Any]) -> tuple[str, int | None]:
    """(optimizer, batch size): what, beside the backend, dtype and threads, sets an epoch's
    cost (the step size, seed and target do not, so their records are pooled)."""
    return (record.get("optimizer") or "gd", record.get("batch_size"))


def fit_exponents(
    records: Iterable[dict[str, Any]], against: str = "n_samples"
) -> dict[tuple, Any]:
    """Slope k of log(time per epoch) against log(N) (or log(H)), time ~ N^k, with its interval.

    Keys are (backend, dtype, threads_used, the other size: H for N, N for
    H, optimizer, batch size); values ``Interval`` (:mod:`fastspiral.scaling`'s
    ``stats``: value, low, high, level). One fit per thread count, optimizer
    and batch size: a slope over two of them describes neither. The time is
    that of an epoch (for the full batch, of an iteration): an update of a
    mini-batch costs the same whatever N, an epoch grows with it. 1.0 means
    time grows linearly, as the FLOP count does. Needs two sizes.
    """
    other = "hidden" if against == "n_samples" else "n_samples"
    groups: dict[tuple, list[dict]] = {}
    for r in fit_records(records):
        key = (r["backend"], r["dtype"], _threads(r), r[other], *_update(r))
        groups.setdefault(key, []).append(r)
    out = {}
    for key, rows in sorted(groups.items(), key=lambda kv: _sortable(kv[0])):
        fit = fit_slope([r[against] for r in rows], [_epoch_repeats(r) for r in rows])
        if fit is not None:
            out[key] = fit
    return out


def fit_cost_models(records: Iterable[dict[str, Any]]) -> dict[tuple, Any]:
    """``t = a + b * (useful FLOPs)`` of an epoch per (backend, dtype, threads_used, optimizer,
    batch size), over every N and H swept.

    ``t`` is the set-up-free time per epoch (per iteration for the full
    batch) and the FLOPs those of a pass over every row, ``4NDH + 6NHK``.
    Values are ``CostModel`` (:mod:`fastspiral.scaling`'s ``stats``: a, b,
    the rate 1 / b in GFLOP/s, each with its interval, and the worst misfit).
    """
    groups: dict[tuple, list[dict]] = {}
    for r in fit_records(records):
        groups.setdefault((r["backend"], r["dtype"], _threads(r), *_update(r)), []).append(r)
    out = {}
    for key, rows in sorted(groups.items(), key=lambda kv: _sortable(kv[0])):
        model = fit_cost_model(
            [useful_flops(r["n_samples"], r["hidden"]) for r in rows],
            [_epoch_repeats(r) for r in rows],
        )
        if model is not None:
            out[key] = model
    return out


def _sortable(key: tuple) -> tuple:
    """A key that sorts numbers in order, None (the full batch, no limit) before them and
    strings after."""
    return tuple(
        (-1, 0) if v is None else (0, v) if isinstance(v, (int, float)) else (1, str(v))
        for v in key
    )


def speedups(records: Iterable[dict[str, Any]]) -> dict[tuple, Any]:
    """Other backend's time / numba's for each (other, dtype, N, H, threads, optimizer, batch
    size) where both ran with the same thread limit (``threads``: that limit, else the threads
    the other ran on), with the ratio's bootstrap interval (an ``Interval``)."""
    rows: dict[tuple, dict] = {}
    for r in fit_records(records):
        key = (r["backend"], r["dtype"], r["n_samples"], r["hidden"], r.get("thread_limit"))
        rows[key + _update(r)] = r
    out = {}
    for (b, d, n, h, limit, opt, batch), r in sorted(rows.items(), key=lambda kv: _sortable(kv[0])):
        numba = rows.get(("numba", d, n, h, limit, opt, batch))
        if b != "numba" and numba is not None:
            out[(b, d, n, h, limit or _threads(r), opt, batch)] = ratio_interval(
                _repeats(numba), _repeats(r)
            )
    return out


def _spread_text(r: dict[str, Any]) -> str:
    if r.get("ci_low") is None or r.get("ci_high") is None:
        return "n/a"
    level = r.get("ci_level")
    return f"{format_seconds(r['ci_low'])}-{format_seconds(r['ci_high'])}" + (
        f" ({100 * level:.0f}%)" if level is not None else ""
    )


def _overlaps(records: Iterable[dict[str, Any]]) -> list[str]:
    """Repeats that ran at the same moment on one host, from different workers or sweeps."""
    spans = []
    for r in records:
        for run in r.get("runs") or []:
            spans.append((run["host"], run["started"], run["finished"], run["worker"], r))
    spans.sort(key=lambda s: (s[0], s[1]))
    lines, seen = [], set()
    for i, (host, _, end, worker, r) in enumerate(spans):
        for host2, start2, _, worker2, r2 in spans[i + 1 :]:
            if host2 != host or start2 >= end:
                break
            pair = (describe(r), describe(r2), host)
            if pair not in seen:
                seen.add(pair)
                lines.append(
                    f"- {pair[0]} and {pair[1]} were timed at the same moment on {host} "
                    f"({worker} and {worker2}): each slowed the other"
                )
    return lines


def noise_warnings(records: Iterable[dict[str, Any]]) -> list[str]:
    """One line per configuration whose repeats spread widely, that ran beside other work, whose
    iterations ran on more than one thread count, or that shared its host at the same moment."""
    lines = []
    ok = ok_records(records)
    spell = len({_update(r) for r in ok}) > 1  # name gd and the full batch beside the others
    for r in ok:
        what = describe(r, always=spell)
        if (r.get("spread") or 0) > NOISY_SPREAD:
            lines.append(f"- {what}: repeats spread {100 * r['spread']:.0f}% of the median")
        busy = max(r.get("others_cpu") or 0, r.get("others_cpu_before") or 0)
        if busy > BUSY_SHARE:
            lines.append(f"- {what}: other programs used {100 * busy:.0f}% of the CPUs")
        if is_mixed(r):
            shares = ", ".join(
                f"{100 * v:.0f}% on {k}" for k, v in (r.get("thread_shares") or {}).items()
            )
            lines.append(f"- {what}: the thread chooser switched ({shares}); left out of the fits")
    return lines + _overlaps(ok)


def _fmt_interval(iv: Any, fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(iv.value)} [{fmt.format(iv.low)}, {fmt.format(iv.high)}]"


#: What the summary and the figure set the throughput against.
REFERENCE_TEXT = (
    "fraction_of_peak: useful GFLOP/s over NumPy's 1024x1024 matrix product of the same "
    "dtype on the same threads, timed in each repeat's own process on its own host"
)


def _optimizer_cell(r: dict[str, Any]) -> str:
    step = r.get("step_size")
    text = r.get("optimizer") or "gd"
    return text + (f", step {step:g}" if step is not None and step != 1.0 else "")


def _batch_cell(r: dict[str, Any]) -> str:
    return "full" if r.get("batch_size") is None else f"{r['batch_size']:,}"


def _target_cells(r: dict[str, Any]) -> str:
    """The cells of the cost to the target: its loss, the updates, epochs and seconds to it."""
    if r.get("target_loss") is None:
        return " | | | |"
    head = f" {r['target_loss']:g} |"
    if r.get("target_iters") is None:
        return head + f" {r.get('target_status') or 'n/a'} | | |"
    n = r["target_iters"]
    seconds = format_seconds(r["target_seconds"])
    if r.get("ci_low") is not None and r.get("ci_high") is not None:
        seconds += f" ({format_seconds(n * r['ci_low'])}-{format_seconds(n * r['ci_high'])})"
    return head + f" {n:,} | {r['target_epochs']:,} | {seconds} |"


#: How the summary's "to target" columns read, under the table (:func:`summary_markdown`).
TARGET_TEXT = (
    "To target: the updates, epochs and set-up-free seconds (updates x time per update, with "
    "the interval of the median) until the training loss first reached the target loss; with "
    "mini-batches the loss is each epoch's mean of its batch losses (weighted by their rows), "
    "checked at the epoch's end."
)


def summary_markdown(
    records: Sequence[dict[str, Any]], machine: dict[str, Any] | None = None
) -> str:
    """The results as a Markdown table, with warnings, the cost model, exponents and speed-ups.

    Times are set-up-free, with the confidence interval of each median: per
    update, and per epoch (``ceil(N / batch)`` updates; one for the full
    batch); "threads" is the count the iterations ran on (its limit in
    brackets where that differs). The optimizer column gives the step size
    where it is not 1. Where a record has a target loss, four more columns
    give the cost to reach it.
    """
    targets = any(r.get("target_loss") is not None for r in records)
    lines = [
        "| backend | dtype | N | H | optimizer | batch | threads | time/update | interval | "
        "time/epoch | set-up | GFLOP/s | of matmul | peak MiB | loss | accuracy | others' CPU | "
        + ("target loss | to target: updates | epochs | seconds | " if targets else "")
        + "status |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: | ---: | "
        + ("---: | ---: | ---: | ---: | " if targets else "")
        + "--- |",
    ]
    order = sorted(
        records,
        key=lambda r: _sortable(
            (
                r["hidden"],
                r["n_samples"],
                r["backend"],
                r["dtype"],
                r.get("optimizer") or "gd",
                r.get("batch_size"),
                r.get("step_size"),
                r.get("thread_limit") or 0,
                r.get("iters") or 0,
                r.get("seed") or 0,
                r.get("target_loss"),
            )
        ),
    )
    for r in order:
        used, limit = r.get("threads_used"), r.get("thread_limit")
        threads = "" if used is None and limit is None else str(used or limit)
        if used is not None and limit is not None and used != limit:
            threads += f" (of {limit})"
        head = (
            f"| {r['backend']} | {r['dtype']} | {r['n_samples']:,} | {r['hidden']:,} | "
            f"{_optimizer_cell(r)} | {_batch_cell(r)} | {threads} | "
        )
        if r.get("status") != "ok" or not r.get("seconds_per_iter"):
            lines.append(
                head
                + " | | | | | | | | | |"
                + (" | | | |" if targets else "")
                + f" {r['status']} |"
            )
            continue
        mem = f"{r['peak_mem_mib']:.2f}" if r.get("peak_mem_mib") is not None else "n/a"
        seen = [v for v in (r.get("others_cpu_before"), r.get("others_cpu")) if v is not None]
        others = f"{100 * max(seen):.0f}%" if seen else "n/a"
        peak = r.get("fraction_of_peak")
        setup = r.get("setup_seconds")
        epoch = r.get("seconds_per_epoch") or r["seconds_per_iter"]
        lines.append(
            head + f"{format_seconds(r['seconds_per_iter'])} | {_spread_text(r)} | "
            f"{format_seconds(epoch)} | "
            f"{format_seconds(setup) if setup is not None and setup > 0 else 'n/a'} | "
            f"{r['gflops']:.1f} | {'n/a' if peak is None else f'{peak:.2f}'} | {mem} | "
            f"{r['final_loss']:.4f} | {r['accuracy']:.3f} | {others} |"
            + (_target_cells(r) if targets else "")
            + " ok |"
        )
    ok = ok_records(records)
    if any((r.get("ci_level") or 1) < LEVEL for r in ok):
        lines += [
            "",
            f"Intervals are the range of the repeats where there are too few for {100 * LEVEL:.0f}%"
            " (its confidence in brackets: 3 repeats give 75%, 5 give 94%, 6 or more 95%).",
        ]
    if targets:
        lines += ["", TARGET_TEXT]
    warn = noise_warnings(records)
    if warn:
        lines += [
            "",
            f"Warning: these timings are not to be trusted as they stand (spread over "
            f"{100 * NOISY_SPREAD:.0f}%, other programs over {100 * BUSY_SHARE:.0f}% of "
            "the CPUs, threads switched, or a host shared); rerun them on a quiet machine "
            "(--force):",
            "",
        ] + warn
    mini = any(r.get("batch_size") is not None for r in ok)
    unit = "epoch" if mini else "iteration"
    spell = len({_update(r) for r in ok}) > 1  # name gd and the full batch beside the others
    models = fit_cost_models(records)
    if models:
        lines += [
            "",
            "Cost model t = a + b * (useful FLOPs) per backend, dtype and threads"
            + (", optimizer and batch size; t per epoch, every row once" if mini else "")
            + " (95% intervals; 1/b as GFLOP/s; worst misfit of a configuration):",
            "",
        ]
        for (b, d, t, opt, batch), m in models.items():
            what = update_text(dict(optimizer=opt, batch_size=batch), always=spell)
            lines.append(
                f"- {b} {d}, {t} thread{'s' if t != 1 else ''}{what}: a = "
                f"{_fmt_interval(m.a, '{:.3g}')} s, 1/b = {_fmt_interval(m.rate, '{:.1f}')} "
                f"GFLOP/s over {m.points} configurations (worst misfit {100 * m.worst:.0f}%)"
            )
    for against, name, other in (("n_samples", "N", "H"), ("hidden", "H", "N")):
        exps = fit_exponents(records, against)
        if exps:
            lines += [
                "",
                f"Exponent of the set-up-free time per {unit} against {name} (time ~ "
                f"{name}^k, 95% intervals):",
                "",
            ]
            lines += [
                f"- {b} {d}, {t} thread{'s' if t != 1 else ''}"
                f"{update_text(dict(optimizer=opt, batch_size=batch), always=spell)}, "
                f"{other}={o:,}: k = {_fmt_interval(k)}"
                for (b, d, t, o, opt, batch), k in exps.items()
            ]
    ups = speedups(records)
    if ups:
        lines += ["", "Speed-up of numba (other backend's time / numba's, 95% intervals):", ""]
        lines += [
            f"- over {b} {d}, N={n:,}, H={h:,}, {t} thread{'s' if t != 1 else ''}"
            f"{update_text(dict(optimizer=opt, batch_size=batch), always=spell)}: "
            f"{_fmt_interval(s, '{:.2f}')}x"
            for (b, d, n, h, t, opt, batch), s in ups.items()
        ]
    lines += ["", REFERENCE_TEXT + "."]
    if machine:
        lines += ["", machine_text(machine)]
    return "\n".join(lines)


def machine_text(machine: dict[str, Any]) -> str:
    """One paragraph: the sweep's machine and versions, and every host's reference rates."""
    text = (
        f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores; BLAS "
        f"{machine.get('blas', 'n/a')}; Python {machine.get('python')}, "
        f"NumPy {machine.get('numpy')}, Numba {machine.get('numba')}, fastspiral "
        f"{machine.get('fastspiral', 'n/a')}; {machine.get('started', '')} to "
        f"{machine.get('finished', '')}."
    )
    for host, info in sorted((machine.get("hosts") or {}).items()):
        rates = info.get("reference_gflops") or {}
        if rates:
            text += f" Matmul on {host}: " + "; ".join(
                f"{label} {rate:.1f} GFLOP/s" for label, rate in rates.items()
            )
            workers = info.get("workers") or {}
            if len(workers) > 1:
                text += f" (shared by {len(workers)} workers)"
            text += "."
    return text


def compare_markdown(
    a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], label_a: str = "A", label_b: str = "B"
) -> str:
    """B's time over A's for every configuration both hold, each with a 95% bootstrap interval.

    Configurations match on backend, dtype, N, H, iterations, seed,
    optimizer, batch size and step size, and on the thread limit where
    either set has more than one (not on the target loss: it changes what is
    recorded, not the time). A ratio whose
    interval holds 1 reads "no difference"; a row that ran beside programs
    using more than BUSY_SHARE of the CPUs is marked busy, whatever its ratio.
    """
    multi = (
        len({r.get("thread_limit") for r in a}) > 1 or len({r.get("thread_limit") for r in b}) > 1
    )

    def key(r):
        return (
            r["backend"],
            r["dtype"],
            r["n_samples"],
            r["hidden"],
            r["iters"],
            r.get("seed"),
            *_update(r),
            r.get("step_size", 1.0),
        ) + ((r.get("thread_limit"),) if multi else ())

    def busy(r):
        return max(r.get("others_cpu") or 0, r.get("others_cpu_before") or 0)

    rows_a = {key(r): r for r in ok_records(a)}
    lines = [
        f"| backend | dtype | N | H | optimizer | batch | threads | {label_a} | {label_b} | "
        f"{label_b} / {label_a} | 95% interval | verdict |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    matched = 0
    for r in sorted(
        ok_records(b),
        key=lambda r: _sortable((r["hidden"], r["n_samples"], r["backend"], r["dtype"],
                                 *_update(r), r.get("thread_limit") or 0)),
    ):  # fmt: skip
        other = rows_a.get(key(r))
        if other is None:
            continue
        matched += 1
        ratio = ratio_interval(_repeats(other), _repeats(r))
        if ratio.low <= 1 <= ratio.high:
            verdict = "no difference"
        else:
            verdict = "slower" if ratio.value > 1 else "faster"
        loads = [(label, busy(x)) for label, x in ((label_a, other), (label_b, r))]
        marks = [f"{label} {100 * v:.0f}%" for label, v in loads if v > BUSY_SHARE]
        if marks:
            verdict += f"; busy ({', '.join(marks)} others' CPU)"
        threads = f"{_threads(other) or ''} / {_threads(r) or ''}"
        lines.append(
            f"| {r['backend']} | {r['dtype']} | {r['n_samples']:,} | {r['hidden']:,} | "
            f"{_optimizer_cell(r)} | {_batch_cell(r)} | {threads} | "
            f"{format_seconds(other['seconds_per_iter'])} | "
            f"{format_seconds(r['seconds_per_iter'])} | {ratio.value:.2f} | "
            f"{ratio.low:.2f}-{ratio.high:.2f} | {verdict} |"
        )
    if not matched:
        return "No configuration is in both result sets."
    return "\n".join(lines)


def to_dataframe(records: Iterable[dict[str, Any]]):
    """The records as a pandas DataFrame, one row per configuration (``repeat_seconds`` and ``runs``
    as lists). pandas comes with the ``analysis`` extra: ImportError if it is missing."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "to_dataframe needs pandas: pip install pandas (or 'fastspiral[analysis]')"
        ) from None
    return pd.DataFrame(list(records))


__all__ = [
    "FIELDS",
    "KEY_FIELDS",
    "LEGACY_DEFAULTS",
    "add_run",
    "compare_markdown",
    "fit_cost_models",
    "fit_exponents",
    "load_results",
    "merge_results",
    "new_record",
    "noise_warnings",
    "optimizer_label",
    "record_key",
    "save_results",
    "speedups",
    "summarise",
    "summary_markdown",
    "to_dataframe",
    "update_text",
    "updates_per_epoch",
]
