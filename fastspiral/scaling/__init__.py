"""Scaling experiments: how the cost of net training grows with N, H and threads.

:func:`sweep` times every configuration (``driver``), each repeat in a fresh
process (``run``), locally or on a Dask cluster, with the repeats of all
configurations interleaved in a recorded random order. Each repeat times
two trainings from the inside of their loops, so a record holds the time
per iteration without set-up (``seconds_per_iter``, with the confidence
interval of its median) and the one-off set-up apart (``setup_seconds``),
the threads the iterations ran on (``threads_used``), and its throughput
against a matrix product of the same dtype on the same threads
(``fraction_of_peak``). ``results`` keeps the records on disk
(:func:`load_results`, :func:`merge_results`) and fits them: the cost model
``t = a + b * FLOPs`` (:func:`fit_cost_models`) and the exponents against N
and H (:func:`fit_exponents`), with bootstrap intervals (``stats``).
``figure`` draws them against N, H or threads, and ``measure`` says where
and how they were measured (the submodules are
``fastspiral.scaling.driver`` and so on).

The update is an axis too: ``optimizers`` (the rules of
``fastspiral.optim``) and ``batch_sizes`` (None for the full batch) are
part of every configuration's identity, and a record gives the time per
update (``seconds_per_iter``: one iteration is one update) and per epoch
(``seconds_per_epoch``, ``ceil(N / batch_size)`` updates). With a
``target_loss`` it also gives the cost to a result: the updates, epochs and
set-up-free seconds until the training loss first reached the target.

From the command line::

    fastspiral scale --n 300 3000 30000 --hidden 100 1000 --out scaling
    fastspiral scale --plot scaling --x H          # re-summarise and re-draw a folder
    fastspiral scale --compare before after        # B / A with 95% intervals

From Python, ``sweep(..., out="scaling")`` returns the records, and
``load_results("scaling")`` gives ``(machine, records)`` back: ``machine``
the latest sweep's machine, every host that ran a repeat (``hosts``, with
each host's matmul rates per dtype and thread count) and every sweep into
the folder (``sweeps``); ``records`` one dict per configuration, every field
of ``FIELDS`` plus ``repeat_seconds`` and ``runs`` (each repeat's own
figures). :func:`to_dataframe` makes a pandas DataFrame of them (pandas is
in the ``analysis`` extra).

**Adding a backend to the sweeps.** A sweep times whatever
``SWEEP_BACKENDS`` (in ``fastspiral/scaling/peers.py``) holds: fastspiral's
own backends (``fastspiral.backends.BACKENDS``, so a backend registered
there is swept with no more work), then the peers, PyTorch and JAX. To time
another library beside them, add one ``SweepBackend`` to its registry:

* ``train(X, y, *, hidden, seed, dtype, iters, max_iters)`` trains the case
  study's net from scratch, from ``initial_params`` (fastspiral's initial
  weights for the seed) with the step size and regularisation of ``STEP``
  and ``REG``, recording the loss at every iteration, and returns
  ``Trained``: the seconds of its loop alone (``time.perf_counter`` just
  before the first iteration and just after the last, the results made
  ready), the final loss and a model with ``score(X, y)`` and
  ``loss_history``;
* ``warm_up`` (same arguments) compiles or loads whatever the timed
  trainings will use;
* ``limit_threads(n)`` limits the library to ``n`` threads, before it is
  imported where it must be;
* ``workspace_bytes(N, D, H, K, dtype)`` estimates its work arrays without
  allocating them (a configuration that would not fit is skipped);
* ``module`` names the import that must be found for it to be available
  (a sweep refuses the backend otherwise, before any work);
* ``lab=True`` only if ``train`` and ``warm_up`` also take ``optimizer``,
  ``batch_size`` and ``step_size`` as :func:`fastspiral.train_net` does;
  otherwise the sweep times it on full-batch "gd" at step size 1 alone and
  records its other configurations as skipped.

Then add a test beside ``tests/test_scaling.py::test_peers_train_the_same_model``
(the loss history must match fastspiral's), and a colour in
``fastspiral.scaling.figure.BACKEND_COLORS``.
"""

from .driver import available_memory, estimate_memory, sweep
from .measure import machine_info, useful_flops
from .peers import SWEEP_BACKENDS
from .results import (
    FIELDS,
    compare_markdown,
    fit_cost_models,
    fit_exponents,
    load_results,
    merge_results,
    noise_warnings,
    record_key,
    save_results,
    speedups,
    summary_markdown,
    to_dataframe,
)
from .run import run_config, run_config_in_fresh_process, run_task, run_task_in_fresh_process

__all__ = [
    "FIELDS",
    "SWEEP_BACKENDS",
    "available_memory",
    "compare_markdown",
    "estimate_memory",
    "fit_cost_models",
    "fit_exponents",
    "load_results",
    "machine_info",
    "merge_results",
    "noise_warnings",
    "record_key",
    "run_config",
    "run_config_in_fresh_process",
    "run_task",
    "run_task_in_fresh_process",
    "save_results",
    "speedups",
    "summary_markdown",
    "sweep",
    "to_dataframe",
    "useful_flops",
]
