"""Scaling experiments: time, GFLOP/s and memory of net training over N, H and threads.

:func:`sweep` runs every configuration (:mod:`.driver`), each in a fresh
process (:mod:`.run`), locally or on a Dask cluster; :mod:`.results` keeps
the records on disk and summarises them, :mod:`.figure` draws them and
:mod:`.measure` says where and how they were measured.
"""

from .driver import available_memory, estimate_memory, sweep
from .measure import machine_info, useful_flops
from .results import (
    FIELDS,
    compare_markdown,
    fit_exponents,
    load_results,
    noise_warnings,
    record_key,
    save_results,
    speedups,
    summary_markdown,
    to_dataframe,
)
from .run import run_config, run_config_in_fresh_process

__all__ = [
    "FIELDS",
    "available_memory",
    "compare_markdown",
    "estimate_memory",
    "fit_exponents",
    "load_results",
    "machine_info",
    "noise_warnings",
    "record_key",
    "run_config",
    "run_config_in_fresh_process",
    "save_results",
    "speedups",
    "summary_markdown",
    "sweep",
    "to_dataframe",
    "useful_flops",
]
