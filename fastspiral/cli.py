"""The ``fastspiral`` command line (also ``python -m fastspiral``)."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import stat
import sys
import time
import zipfile
from collections.abc import Sequence

import numpy as np

from ._files import check_npz, check_writable_path
from ._signals import Terminated
from ._validation import DTYPES
from ._version import __version__
from .backends import BACKENDS
from .data import make_spiral
from .optim import OPTIMIZERS
from .train import train_linear, train_net


class _CliError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr and exit 2 (no usage dump)."""

    def error(self, message: str):
        raise _CliError(f"{self.prog}: error: {message}")


def _int_at_least(minimum: int):
    """argparse type: an integer >= minimum, with a one-line message otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_nonneg_int = _int_at_least(0)


def _rows(text: str) -> int:
    """argparse type of ``scale --n``: total rows, a positive multiple of 3 (three classes)."""
    value = _positive_int(text)
    if value % 3:
        raise argparse.ArgumentTypeError(
            f"expected a multiple of 3 (N = 3 x points per class), got {value}"
        )
    return value


def _real(text: str) -> float:
    """argparse type: a finite real number (NaN and infinities are refused here, by name)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive_real(text: str) -> float:
    """argparse type: a finite real number > 0."""
    value = _real(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _batch_size(text: str) -> int | None:
    """argparse type of ``scale --batch-sizes``: rows per update, or "full" (None: every row)."""
    return None if text == "full" else _positive_int(text)


def _path(text: str) -> str:
    """argparse type of a file or folder name: not empty (``--save ''`` saved nothing and exited 0:
    tests/test_cli.py::test_empty_paths_and_non_finite_numbers_are_refused)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return text


#: ``--connect-timeout``: a number of seconds, or one with a unit as Dask writes them.
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|min|h)?\s*$")
_UNIT_SECONDS = {"ms": 1e-3, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def _duration(text: str) -> float:
    """argparse type: "10", "10s", "500ms", "2min" or "1h" as seconds > 0."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 10, 10s, 500ms or 2min, got {text!r}"
        )
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration > 0, got {text!r}")
    return seconds


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default is argparse.SUPPRESS:
            return text
        if action.nargs == 0:  # a flag
            return f"{text} (default: off)"
        value = action.default
        if isinstance(value, (list, tuple)):
            value = " ".join(map(str, value))
        return f"{text} (default: {str(value).replace('%', '%%')})"


def _regular_file(path: str, option: str, command: str) -> None:
    """Refuse, before opening it, a path that is not an existing regular file: a FIFO or a
    device would block the read forever
    (tests/test_cli.py::test_train_refuses_a_fifo_instead_of_hanging)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise _CliError(
            f"fastspiral {command}: error: cannot read {option} {path!r}: {exc.strerror}"
        ) from None
    if not stat.S_ISREG(mode):
        raise _CliError(f"fastspiral {command}: error: {option} {path!r} is not a regular file")


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0


#: The pictures ``fastspiral demo`` writes into --out.
DEMO_PICTURES = (
    "spiral_raw.png",
    "spiral_linear.png",
    "spiral_net.png",
    "loss.png",
    "training_net.gif",
)


def _check_output(path: str, option: str) -> None:
    """Refuse an output path that could not be written, before any work (one-line error)."""
    try:
        check_writable_path(path, option)
    except (OSError, ValueError) as exc:
        raise _CliError(f"fastspiral: error: {exc}") from None


def _print_compiled(info: dict) -> None:
    """Say so when a run compiled kernels first (loading them from the cache takes < 1 s)."""
    if info.get("compile_seconds", 0.0) >= 1.0:
        print(f"(compiled the kernels first, in {info['compile_seconds']:.1f} s, once per install)")


def _print_times(model, seconds: float, note: str) -> None:
    """Training time apart from the first run's compilation."""
    train = model.info.get("train_seconds", seconds)
    print(f"trained {model.info['iters']} iterations in {train:.3f} s{note}")
    _print_compiled(model.info)


def _demo(args: argparse.Namespace) -> None:
    from .animate import animate_training, record_snapshots
    from .plot import plot_data, plot_decision_regions, plot_loss, save_figure

    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        raise _CliError(
            f"fastspiral demo: error: cannot create --out {args.out!r}: {exc.strerror}"
        ) from None
    for name in DEMO_PICTURES:
        _check_output(os.path.join(args.out, name), "--out")
    # One legacy stream for data and both initialisations, in the case study's
    # order, so `--seed 0` replays its published run.
    rng = np.random.RandomState(args.seed)
    X, y = make_spiral(100, 3, seed=rng)
    print(f"spiral data: {X.shape[0]} points, {X.shape[1]} features, 3 classes")

    print(f"\nsoftmax linear classifier (backend {args.backend})")
    lin, t_lin = _timed(train_linear, X, y, seed=rng, backend=args.backend, verbose=True)
    print(f"training accuracy: {lin.score(X, y):.2f}")
    _print_times(lin, t_lin, "")

    print(f"\n2-layer neural network, {args.hidden} hidden units (backend {args.backend})")
    (net, frames), t_net = _timed(
        record_snapshots,
        X,
        y,
        hidden=args.hidden,
        seed=rng,
        backend=args.backend,
        verbose=True,
        snapshots=20,
    )
    print(f"training accuracy: {net.score(X, y):.2f}")
    _print_times(net, t_net, f" (keeping {len(frames)} snapshots of the weights)")

    raw, linear, net_png, loss, gif = (os.path.join(args.out, name) for name in DEMO_PICTURES)
    written = [
        save_figure(plot_data(X, y), raw, close=True),
        save_figure(plot_decision_regions(lin, X, y), linear, close=True),
        save_figure(plot_decision_regions(net, X, y), net_png, close=True),
        save_figure(
            plot_loss({"softmax linear classifier": lin, f"2-layer net, H={args.hidden}": net}),
            loss,
            close=True,
        ),
        animate_training(X, y, frames, gif),
    ]
    print("\nwrote " + ", ".join(written))


def _schedule(text: str):
    """``step:EVERY[:FACTOR]``, ``exp:K`` or ``inv:K`` as a schedule of fastspiral.optim."""
    from .optim import ExpDecay, InverseTimeDecay, StepDecay

    kind, _, rest = text.partition(":")
    parts = rest.split(":") if rest else []
    try:
        if kind == "step" and len(parts) in (1, 2):
            return StepDecay(int(parts[0]), *(float(p) for p in parts[1:]))
        if kind == "exp" and len(parts) == 1:
            return ExpDecay(float(parts[0]))
        if kind == "inv" and len(parts) == 1:
            return InverseTimeDecay(float(parts[0]))
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    raise argparse.ArgumentTypeError(f"expected step:EVERY[:FACTOR], exp:K or inv:K, got {text!r}")


def _add_data_options(parser: argparse.ArgumentParser, *, npz: bool) -> None:
    """Where the training data comes from: a generated 2-D set, or (``npz``) a file."""
    from .data import KINDS

    parser.add_argument(
        "--data-kind",
        choices=sorted(KINDS),
        default="spiral",
        help="kind of generated 2-D data (the spiral in the case study's class-by-class order)",
    )
    parser.add_argument(
        "--n-per-class", type=_positive_int, default=100, help="generated points per class"
    )
    parser.add_argument(
        "--n-classes",
        type=_positive_int,
        default=None,
        help="classes (default: 3 for the spiral, 2 for the other kinds)",
    )
    parser.add_argument(
        "--noise", type=_real, default=None, help="noise (default: the data kind's own)"
    )
    parser.add_argument(
        "--data-seed", type=_nonneg_int, default=0, help="seed of the generated data"
    )
    if npz:
        parser.add_argument(
            "--data",
            type=_path,
            default=None,
            help=".npz file with arrays X and y, instead of generated data (default: generated)",
        )


def _add_training_options(parser: argparse.ArgumentParser, *, reg_per_row: bool = False) -> None:
    """The update: rule, step size, L2, batches, schedule (``fastspiral.train_net``'s);
    ``reg_per_row``: several L2 strengths, one per row of a grid of pictures."""
    from .optim import OPTIMIZERS

    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="gd", help="update rule")
    parser.add_argument(
        "--step-size",
        type=_real,
        default=1.0,
        help="learning rate (adam and rmsprop want about 0.01)",
    )
    if reg_per_row:
        parser.add_argument(
            "--reg", type=_real, nargs="+", default=[1e-4, 1e-3, 1e-2],
            help="L2 regularisation strengths, a row each",
        )  # fmt: skip
    else:
        parser.add_argument("--reg", type=_real, default=1e-3, help="L2 regularisation strength")
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="rows per update, reshuffled every epoch (default: the full batch)",
    )
    parser.add_argument(
        "--schedule",
        type=_schedule,
        default=None,
        metavar="SCHEDULE",
        help="learning-rate decay: step:EVERY[:FACTOR], exp:K or inv:K (default: constant)",
    )


def _generated(args: argparse.Namespace, seed: int):
    """The generated data set of ``args`` drawn with ``seed``: the spiral keeps
    :func:`make_spiral`'s class-by-class order, so the default run keeps its bits."""
    from .data import make_data

    if args.data_kind == "spiral":
        noise = 0.2 if args.noise is None else args.noise
        return make_spiral(args.n_per_class, args.n_classes or 3, noise=noise, seed=seed)
    return make_data(args.data_kind, args.n_per_class, args.n_classes, noise=args.noise, seed=seed)


def _read_npz(path: str, option: str, command: str):
    """X and y from an .npz file (one-line error if they cannot be read)."""
    _regular_file(path, option, command)
    try:
        check_npz(path)
        with np.load(path, allow_pickle=False) as archive:
            return archive["X"], archive["y"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _CliError(f"fastspiral {command}: cannot read X and y from {path!r}: {exc}") from None


def _training_kwargs(args: argparse.Namespace) -> dict:
    return dict(
        optimizer=args.optimizer,
        step_size=args.step_size,
        reg=args.reg,
        batch_size=args.batch_size,
        schedule=args.schedule,
    )


def _check_figure_output(path: str, option: str, command: str) -> None:
    """Refuse a picture path whose format matplotlib cannot write, or that could not be written."""
    from .plot import figure_format

    try:
        figure_format(path)
    except ValueError as exc:
        raise _CliError(f"fastspiral {command}: error: {option}: {exc}") from None
    _check_output(path, option)


def _grid(args: argparse.Namespace) -> None:
    from .plot import plot_grid, save_figure

    _check_figure_output(args.out, "--out", "grid")
    if args.data is not None:
        X, y = _read_npz(args.data, "--data", "grid")
    else:
        X, y = _generated(args, args.data_seed)
    kwargs = _training_kwargs(args)
    del kwargs["reg"]  # a row each
    fig = plot_grid(
        X,
        y,
        hidden=args.hidden,
        reg=args.reg,
        iters=args.iters,
        seed=args.seed,
        backend=args.backend,
        **kwargs,
    )
    print(f"wrote {save_figure(fig, args.out, close=True)}")


def _train(args: argparse.Namespace) -> None:
    # Everything that could fail after training is checked first.
    if args.model == "linear" and args.hidden is not None:
        raise _CliError("fastspiral train: error: --hidden applies to --model net only")
    if args.save is not None:
        _check_output(args.save, "--save")
    if args.plot is not None:
        _check_figure_output(args.plot, "--plot", "train")
    if args.validation_data is not None and args.validation_seed is not None:
        raise _CliError(
            "fastspiral train: error: --validation-data and --validation-seed are alternatives"
        )
    if args.data is not None and args.validation_seed is not None:
        raise _CliError(
            "fastspiral train: error: --validation-seed draws held-out generated data; "
            "with --data give --validation-data"
        )
    if args.init is not None:
        _regular_file(args.init, "--init", "train")
    if args.data is not None:
        X, y = _read_npz(args.data, "--data", "train")
    else:
        X, y = _generated(args, args.data_seed)
    validation = None
    if args.validation_data is not None:
        validation = _read_npz(args.validation_data, "--validation-data", "train")
    elif args.validation_seed is not None:
        validation = _generated(args, args.validation_seed)
    if validation is None and (args.early_stopping or args.validate_every is not None):
        raise _CliError(
            "fastspiral train: error: --early-stopping and --validate-every need held-out "
            "data (--validation-seed or --validation-data)"
        )
    if args.plot is not None and np.ndim(X) == 2 and np.shape(X)[1] != 2:
        raise _CliError(
            f"fastspiral train: error: --plot draws 2-D data only; X from {args.data!r} "
            f"has {np.shape(X)[1]} features"
        )
    common = dict(
        **_training_kwargs(args),
        validation=validation,
        validate_every=args.validate_every,
        early_stopping=args.early_stopping,
        patience=args.patience,
        seed=args.seed,
        backend=args.backend,
        dtype=args.dtype,
        verbose=args.verbose,
        progress=args.progress,
    )
    if args.iters is not None:
        common["iters"] = args.iters
    if args.init is not None:
        from .model import load

        common["init"] = load(args.init)
        if common["init"].kind != args.model:
            raise _CliError(
                f"fastspiral train: --init {args.init!r} holds a {common['init'].kind} "
                f"model but --model is {args.model}"
            )
    if args.model == "net":
        # None: 100, or the hidden units of --init (a different --hidden is an error there)
        model, seconds = _timed(train_net, X, y, hidden=args.hidden, **common)
    else:
        model, seconds = _timed(train_linear, X, y, **common)
    info = model.info
    updates = info["iters"]  # this run's (a continued model's history holds the whole run)
    rule = info["optimizer"]["name"]
    batches = ""
    if info.get("batch_size"):
        epochs = updates / -(-len(X) // info["batch_size"])
        batches = f", batches of {info['batch_size']}, {epochs:.3g} epochs"
    # training apart from compiling: the first run in a fresh environment compiles for seconds
    train_seconds = info.get("train_seconds", seconds)
    print(
        f"{args.model}: {updates} iterations ({rule}{batches}) in "
        f"{train_seconds:.3f} s ({1e6 * train_seconds / max(updates, 1):.1f} us/iteration, "
        f"backend {args.backend}, {args.dtype})"
    )
    _print_compiled(info)
    print(f"final loss: {model.final_loss:f}")
    print(f"training accuracy: {model.score(X, y):.4f}")
    if validation is not None:
        print(f"held-out accuracy: {model.score(*validation):.4f}")
        if args.early_stopping and info.get("best_iteration") is not None:
            print(f"best held-out loss after {info['best_iteration']} updates (kept)")
    if args.save is not None:
        model.save(args.save)
        print(f"saved model to {args.save}")
    if args.plot is not None:
        from .plot import plot_decision_regions, save_figure

        save_figure(plot_decision_regions(model, X, y), args.plot, close=True)
        print(f"wrote {args.plot}")


def _race(args: argparse.Namespace) -> None:
    from .animate import race, race_names
    from .plot import save_figure

    _check_figure_output(args.out, "--out", "race")
    if args.gif is not None:
        if not args.gif.lower().endswith((".gif", ".mp4")):
            raise _CliError(f"fastspiral race: error: --gif {args.gif!r} must end in .gif or .mp4")
        _check_output(args.gif, "--gif")
    if len(args.step_sizes) not in (0, 1, len(args.optimizers)):
        raise _CliError(
            f"fastspiral race: error: --step-sizes gives {len(args.step_sizes)} values for "
            f"{len(args.optimizers)} optimizers (give one for all, or one each)"
        )
    steps: float | dict | None = None
    if len(args.step_sizes) == 1:
        steps = args.step_sizes[0]
    elif args.step_sizes:
        steps = dict(zip(race_names(args.optimizers), args.step_sizes))
    if args.data is not None:
        X, y = _read_npz(args.data, "--data", "race")
    else:
        X, y = _generated(args, args.data_seed)
    fig, models = race(
        X,
        y,
        args.optimizers,
        step_sizes=steps,
        iters=args.iters,
        seed=args.seed,
        animation=args.gif,
        hidden=args.hidden,
        reg=args.reg,
        batch_size=args.batch_size,
        backend=args.backend,
    )
    for name, model in models.items():
        print(
            f"{name:<10} step size {model.info['step_size']:<6g} loss {model.final_loss:.4f}  "
            f"training accuracy {model.score(X, y):.4f}"
        )
    print(f"wrote {save_figure(fig, args.out, close=True)}")
    if args.gif is not None:
        print(f"wrote {args.gif}")


def _compile(args: argparse.Namespace) -> None:
    from .numba_backend.warmup import compile_kernels

    print("compiling the standard kernels into the cache (once per environment)...")
    t0 = time.perf_counter()
    compile_kernels(processes=args.processes, report=lambda line: print(f"  {line}"))
    print(f"done in {time.perf_counter() - t0:.1f} s; later runs load them in a fraction of that")


def _scale_error(message: str) -> _CliError:
    return _CliError(f"fastspiral scale: error: {message}")


def _results_folder(folder: str, option: str) -> tuple[dict, list]:
    """(machine, records) of a results folder named on the command line, or a one-line error."""
    from .scaling import load_results

    if not os.path.isdir(folder):
        raise _scale_error(f"{option}: {folder!r} is not a folder")
    machine, records = load_results(folder)  # ValueError (exit 2) if it is not a results file
    if not records:
        raise _scale_error(f"{option}: no results.json in {folder!r}")
    return machine, records


def _scale(args: argparse.Namespace) -> None:
    from .scaling import compare_markdown, load_results, summary_markdown, sweep
    from .scaling.driver import check_backends, check_out, write_figure

    if args.compare and args.plot:
        raise _scale_error("--compare and --plot are separate commands; give one")
    if args.compare:
        sets = [_results_folder(folder, "--compare")[1] for folder in args.compare]
        print(compare_markdown(sets[0], sets[1], label_a=args.compare[0], label_b=args.compare[1]))
        return
    if args.plot:
        machine, records = _results_folder(args.plot, "--plot")
        _check_figure_output(os.path.join(args.plot, "scaling.png"), "--plot", "scale")
        print(summary_markdown(records, machine))
        print(f"\nwrote {write_figure(args.plot, records, machine, x=args.x)}")
        return
    if not args.out:
        raise _scale_error("--out is required (or --plot DIR, or --compare DIR_A DIR_B)")
    # Everything that could fail after the first configuration is checked first.
    try:
        check_backends(args.backends)
    except ValueError as exc:
        raise _scale_error(f"--{exc}") from None
    try:
        check_out(args.out, create=False)
    except (OSError, ValueError) as exc:
        raise _scale_error(f"--{exc}") from None
    load_results(args.out)  # a damaged results.json: refused now, not after the sweep
    client = None
    if args.scheduler:
        try:
            from distributed import Client
        except ImportError:
            raise _scale_error(
                "--scheduler needs Dask: pip install 'fastspiral[distributed]'"
            ) from None
        try:
            client = Client(args.scheduler, timeout=args.connect_timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise _scale_error(f"cannot reach the scheduler {args.scheduler}: {exc}") from None
    sizes = dict(n_samples=args.n) if args.n else dict(n_per_class=args.n_per_class)
    try:
        sweep(
            hidden=args.hidden,
            backends=args.backends,
            dtypes=args.dtypes,
            iters=args.iters,
            repeats=args.repeats,
            seed=args.seed,
            out=args.out,
            executor=client,
            progress=not args.no_progress,
            force=args.force,
            threads=args.threads,
            share_hosts=args.share_hosts,
            x=args.x,
            optimizers=args.optimizers,
            batch_sizes=args.batch_sizes,
            step_size=args.step_size,
            target_loss=args.target_loss,
            **sizes,
        )
    except KeyboardInterrupt:
        _interrupted(args)
        raise
    finally:
        if client is not None:
            client.close()
    machine, records = load_results(args.out)
    print(summary_markdown(records, machine))
    print(
        f"\nwrote {os.path.join(args.out, 'results.csv')}, "
        f"{os.path.join(args.out, 'results.json')}, {os.path.join(args.out, 'scaling.png')}"
    )


def _interrupted(args: argparse.Namespace) -> None:
    """After an interrupt: the summary of the rows kept, and how to go on from there."""
    from .scaling import load_results, summary_markdown

    try:
        machine, records = load_results(args.out)
    except ValueError:
        return
    done = [r for r in records if r.get("status") == "ok"]
    partial = [r for r in records if str(r.get("status", "")).startswith("partial")]
    if done:
        print(summary_markdown(done, machine))
    command = shlex.join(["fastspiral", *args.argv])
    print(
        f"fastspiral scale: interrupted; {os.path.join(args.out, 'results.json')} keeps "
        f"{len(done)} finished configuration(s), {len(partial)} partial one(s) and every "
        f"finished repeat. To resume, run the same command again: {command}",
        file=sys.stderr,
    )


def _add_scale_parser(sub) -> None:
    scale = sub.add_parser(
        "scale",
        help="time training over N, H and threads: a table, a cost model and a figure",
        description="Time net training for every combination of sizes, backends, dtypes and "
        "threads, each repeat in a fresh process, repeats interleaved in a random order; "
        "times are per iteration without set-up. Writes results.json, results.csv and "
        "scaling.png into --out and prints a summary. Rerun to resume.",
        formatter_class=_HelpFormatter,
    )
    sizes = scale.add_mutually_exclusive_group()
    sizes.add_argument(
        "--n-per-class",
        type=_positive_int,
        nargs="+",
        default=[100, 1000, 10000],
        metavar="K",
        help="spiral points per class; N = 3 x K rows",
    )
    sizes.add_argument(
        "--n",
        type=_rows,
        nargs="+",
        default=None,
        metavar="N",
        help="total rows N instead of --n-per-class, multiples of 3 (default: from --n-per-class)",
    )
    scale.add_argument(
        "--hidden", type=_positive_int, nargs="+", default=[100, 1000], help="hidden units H"
    )
    scale.add_argument(
        "--backends",
        nargs="+",
        default=["numba", "numpy"],
        help="from numba, numpy, and torch and jax where installed",
    )
    scale.add_argument(
        "--dtypes",
        choices=sorted(DTYPES),
        nargs="+",
        default=["float64", "float32"],
        help="training precisions",
    )
    scale.add_argument(
        "--threads",
        type=_positive_int,
        nargs="+",
        default=[1, 2],
        help="thread counts to time each configuration with; a count above what the machine "
        "or a Dask worker has is recorded as skipped",
    )
    scale.add_argument(
        "--iters",
        type=_positive_int,
        default=50,
        help="iterations of each repeat's shorter timed training (the longer has twice as many)",
    )
    scale.add_argument(
        "--repeats",
        type=_positive_int,
        default=3,
        help="repeats per configuration, each in a fresh process (3 give a 75%% interval on "
        "the median, 6 a 95%% one)",
    )
    scale.add_argument(
        "--seed", type=_nonneg_int, default=0, help="seed of the data and the initial weights"
    )
    scale.add_argument(
        "--out",
        type=_path,
        default=None,
        help="folder for results.json, results.csv and scaling.png (default: none; required "
        "unless --plot or --compare)",
    )
    scale.add_argument(
        "--x",
        choices=["N", "H", "threads"],
        default=None,
        help="x-axis of the figure (default: the first of N, H, threads swept over)",
    )
    scale.add_argument(
        "--plot",
        type=_path,
        default=None,
        metavar="DIR",
        help="re-summarise and re-draw every record of DIR, timing nothing (default: off)",
    )
    scale.add_argument(
        "--compare",
        type=_path,
        nargs=2,
        metavar=("DIR_A", "DIR_B"),
        default=None,
        help="print DIR_B's times over DIR_A's, with 95%% intervals (default: off)",
    )
    scale.add_argument(
        "--scheduler",
        default=None,
        help="Dask scheduler address, e.g. tcp://host:8786 (default: run locally)",
    )
    scale.add_argument(
        "--connect-timeout",
        type=_duration,
        default="10s",
        help="how long to try the scheduler: 10, 10s, 500ms, 2min",
    )
    scale.add_argument(
        "--share-hosts",
        action="store_true",
        help="let Dask workers on one host time configurations at the same moment (faster; "
        "each slows the others, and the summary warns)",
    )
    scale.add_argument(
        "--optimizers",
        nargs="+",
        choices=sorted(OPTIMIZERS),
        default=["gd"],
        metavar="RULE",
        help=f"update rules, from {', '.join(sorted(OPTIMIZERS))}",
    )
    scale.add_argument(
        "--batch-sizes",
        type=_batch_size,
        nargs="+",
        default=[None],
        metavar="B",
        help="rows per update, or full for the whole batch (default: full)",
    )
    scale.add_argument(
        "--step-size", type=_positive_real, default=1.0, help="learning rate of every rule"
    )
    scale.add_argument(
        "--target-loss",
        type=_positive_real,
        default=None,
        help="also record the updates, epochs and seconds each configuration takes to reach "
        "this training loss (default: none)",
    )
    scale.add_argument("--force", action="store_true", help="rerun what --out already holds")
    scale.add_argument("--no-progress", action="store_true", help="no progress bar")
    scale.set_defaults(run=_scale)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastspiral", description="Train the CS231n spiral models fast on a CPU.")
    parser.add_argument("--version", action="version", version=f"fastspiral {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    backends = sorted(BACKENDS)

    demo = sub.add_parser(
        "demo",
        help="the case study end to end: both models, printed and plotted",
        formatter_class=_HelpFormatter,
    )
    demo.add_argument(
        "--out", type=_path, default="fastspiral-demo", help="folder for the pictures and the GIF"
    )
    demo.add_argument(
        "--seed", type=_nonneg_int, default=0, help="seed of the legacy random stream"
    )
    demo.add_argument("--backend", choices=backends, default="numba", help="training backend")
    demo.add_argument("--hidden", type=_positive_int, default=100, help="hidden units")
    demo.set_defaults(run=_demo)

    grid = sub.add_parser(
        "grid",
        help="decision regions of nets over hidden units and regularisation",
        formatter_class=_HelpFormatter,
    )
    grid.add_argument(
        "--hidden",
        type=_positive_int,
        nargs="+",
        default=[10, 100],
        help="hidden units, a column each",
    )
    _add_training_options(grid, reg_per_row=True)
    grid.add_argument("--iters", type=_nonneg_int, default=10_000, help="updates per net")
    grid.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the initial weights")
    grid.add_argument("--backend", choices=backends, default="numba", help="training backend")
    _add_data_options(grid, npz=True)
    grid.add_argument(
        "--out", type=_path, default="grid.png", help="picture to write, format from the suffix"
    )
    grid.set_defaults(run=_grid)

    train = sub.add_parser(
        "train",
        help="train one model on spiral data (or X, y from an .npz)",
        formatter_class=_HelpFormatter,
    )
    train.add_argument("--model", choices=["linear", "net"], default="net", help="what to train")
    train.add_argument(
        "--hidden",
        type=_positive_int,
        default=None,
        help="hidden units (default: 100, or those of --init)",
    )
    _add_training_options(train)
    train.add_argument(
        "--iters",
        type=_nonneg_int,
        default=None,
        help="updates (default: 10000 for net, 200 for linear)",
    )
    train.add_argument(
        "--seed",
        type=_nonneg_int,
        default=None,
        help="seed of the initial weights (default: fresh randomness)",
    )
    train.add_argument("--backend", choices=backends, default="numba", help="training backend")
    train.add_argument(
        "--dtype", choices=sorted(DTYPES), default="float64", help="training precision"
    )
    train.add_argument(
        "--verbose",
        action="store_true",
        help="print the loss every 1000 (net) / 10 (linear) iterations",
    )
    train.add_argument(
        "--progress", action="store_true", help="show a progress bar with the current loss"
    )
    train.add_argument(
        "--init",
        type=_path,
        default=None,
        help="continue training from a model saved with --save (default: fresh weights)",
    )
    _add_data_options(train, npz=True)
    held_out = train.add_argument_group("held-out data")
    held_out.add_argument(
        "--validation-seed",
        type=_nonneg_int,
        default=None,
        help="draw a held-out set of the same kind of data with this seed (default: none)",
    )
    held_out.add_argument(
        "--validation-data",
        type=_path,
        default=None,
        help=".npz file with held-out arrays X and y (default: none)",
    )
    held_out.add_argument(
        "--validate-every",
        type=_positive_int,
        default=None,
        help="updates between held-out scores (default: the --verbose cadence)",
    )
    held_out.add_argument(
        "--early-stopping",
        action="store_true",
        help="stop when the held-out loss stops improving; keep the best parameters",
    )
    held_out.add_argument(
        "--patience",
        type=_positive_int,
        default=10,
        help="held-out scores without improvement before --early-stopping stops",
    )
    train.add_argument(
        "--save",
        type=_path,
        default=None,
        help="write the trained model to this .npz path (default: not saved)",
    )
    train.add_argument(
        "--plot",
        type=_path,
        default=None,
        help="write a decision-region picture, format from the suffix, 2-D data only "
        "(default: none)",
    )
    train.set_defaults(run=_train)

    _add_race_parser(sub, backends)
    compile_ = sub.add_parser(
        "compile",
        help="compile the kernels into the cache now, so that the first training is quick",
        formatter_class=_HelpFormatter,
    )
    compile_.add_argument(
        "--processes",
        type=_positive_int,
        default=None,
        help="processes to compile in (default: one per usable CPU, at most 2)",
    )
    compile_.set_defaults(run=_compile)
    _add_scale_parser(sub)
    return parser


def _add_race_parser(sub, backends: list[str]) -> None:
    from .animate import RACE_STEP_SIZES

    race = sub.add_parser(
        "race",
        help="nets trained by several update rules from the same start: a figure and a GIF",
        formatter_class=_HelpFormatter,
    )
    race.add_argument(
        "--optimizers",
        nargs="+",
        choices=sorted(RACE_STEP_SIZES),
        default=["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"],
        help="update rules, a net each",
    )
    race.add_argument(
        "--step-sizes",
        type=_real,
        nargs="*",
        default=[],
        help="one for all, or one per optimizer (default: each rule's: "
        + ", ".join(f"{k} {v:g}" for k, v in RACE_STEP_SIZES.items())
        + ")",
    )
    race.add_argument("--iters", type=_nonneg_int, default=1000, help="updates per net")
    race.add_argument("--hidden", type=_positive_int, default=100, help="hidden units")
    race.add_argument("--reg", type=_real, default=1e-3, help="L2 regularisation strength")
    race.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="rows per update, the same batches for every net (default: the full batch)",
    )
    race.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the shared start")
    race.add_argument("--backend", choices=backends, default="numba", help="training backend")
    _add_data_options(race, npz=True)
    race.add_argument(
        "--out", type=_path, default="race.png", help="figure to write, format from the suffix"
    )
    race.add_argument(
        "--gif",
        type=_path,
        default="race.gif",
        help="animation of every net's regions forming at once (.gif, or .mp4 with ffmpeg)",
    )
    race.set_defaults(run=_race)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 training failed, 2 bad input,
    128 + N after signal N: 130 Ctrl-C, 141 a closed pipe, 143 SIGTERM)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv:  # no command: say what there is
        parser.print_help()
        return 0
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version
            return int(exc.code or 0)
        args.argv = argv  # for the command an interrupted sweep tells the user to rerun
        args.run(args)
    except _CliError as exc:
        print(exc, file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `fastspiral train --verbose | head`: the reader has what it wanted. Point stdout at
        # devnull so the interpreter's final flush does not fail again (Python's documented recipe).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except (ValueError, TypeError, OSError) as exc:
        print(f"fastspiral: error: {exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:
        print(f"fastspiral: error: {exc}", file=sys.stderr)
        return 1
    except Terminated as exc:
        print(f"fastspiral: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("fastspiral: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
