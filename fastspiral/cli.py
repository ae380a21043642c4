"""The ``fastspiral`` command line (also ``python -m fastspiral``)."""

from __future__ import annotations

import argparse
import os
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
from .train import train_linear, train_net


class _CliError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr and exit 2 (no usage dump)."""

    def error(self, message: str):  # type: ignore[override]
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
    print(f"trained 200 iterations in {t_lin:.3f} s")

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
    print(f"trained 10000 iterations in {t_net:.3f} s (keeping 21 snapshots of the weights)")

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
    X, y = make_spiral(args.n_per_class, args.n_classes, seed=args.data_seed)
    fig = plot_grid(
        X,
        y,
        hidden=args.hidden,
        reg=args.reg,
        iters=args.iters,
        seed=args.seed,
        backend=args.backend,
    )
    print(f"wrote {save_figure(fig, args.out, close=True)}")


def _train(args: argparse.Namespace) -> None:
    # Everything that could fail after training is checked first.
    if args.model == "linear" and args.hidden is not None:
        raise _CliError("fastspiral train: error: --hidden applies to --model net only")
    if args.save:
        _check_output(args.save, "--save")
    if args.plot:
        _check_figure_output(args.plot, "--plot", "train")
    if args.data is not None:
        try:
            check_npz(args.data)
            with np.load(args.data, allow_pickle=False) as archive:
                X, y = archive["X"], archive["y"]
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise _CliError(
                f"fastspiral train: cannot read X and y from {args.data!r}: {exc}"
            ) from None
    else:
        X, y = make_spiral(args.n_per_class, args.n_classes, noise=args.noise, seed=args.data_seed)
    if args.plot and np.ndim(X) == 2 and np.shape(X)[1] != 2:
        raise _CliError(
            f"fastspiral train: error: --plot draws 2-D data only; X from {args.data!r} "
            f"has {np.shape(X)[1]} features"
        )
    common = dict(
        step_size=args.step_size,
        reg=args.reg,
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
    iters = model.info["iters"]  # this run's (a continued model's history holds the whole run)
    print(
        f"{args.model}: {iters} iterations in {seconds:.3f} s "
        f"({1e6 * seconds / max(iters, 1):.1f} us/iteration, backend {args.backend}, {args.dtype})"
    )
    print(f"final loss: {model.final_loss:f}")
    print(f"training accuracy: {model.score(X, y):.4f}")
    if args.save:
        model.save(args.save)
        print(f"saved model to {args.save}")
    if args.plot:
        from .plot import plot_decision_regions, save_figure

        save_figure(plot_decision_regions(model, X, y), args.plot, close=True)
        print(f"wrote {args.plot}")


def _scale(args: argparse.Namespace) -> None:
    from .scaling import compare_markdown, load_results, summary_markdown, sweep

    if args.compare:
        sets = []
        for folder in args.compare:
            machine, records = load_results(folder)
            if not records:
                raise _CliError(
                    f"fastspiral scale: error: --compare: no results.json in {folder!r}"
                )
            sets.append(records)
        print(compare_markdown(*sets, label_a=args.compare[0], label_b=args.compare[1]))
        return
    if not args.out:
        raise _CliError("fastspiral scale: error: --out is required (or --compare DIR_A DIR_B)")
    client = None
    if args.scheduler:
        try:
            from distributed import Client
        except ImportError:
            raise _CliError(
                "fastspiral scale: --scheduler needs Dask: pip install 'fastspiral[distributed]'"
            ) from None
        try:
            client = Client(args.scheduler, timeout=args.connect_timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise _CliError(
                f"fastspiral scale: cannot reach the scheduler {args.scheduler}: {exc}"
            ) from None
    try:
        records = sweep(
            args.n_per_class,
            args.hidden,
            args.backends,
            args.dtypes,
            iters=args.iters,
            repeats=args.repeats,
            seed=args.seed,
            out=args.out,
            executor=client,
            progress=not args.no_progress,
            force=args.force,
            threads=args.threads,
        )
    finally:
        if client is not None:
            client.close()
    machine, _ = load_results(args.out)
    print(summary_markdown(records, machine))
    print(
        f"\nwrote {os.path.join(args.out, 'results.csv')}, {os.path.join(args.out, 'results.json')}, "
        f"{os.path.join(args.out, 'scaling.png')}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastspiral", description="Train the CS231n spiral models fast on a CPU.")
    parser.add_argument("--version", action="version", version=f"fastspiral {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser(
        "demo", help="the case study end to end: both models, printed and plotted"
    )
    demo.add_argument(
        "--out",
        default="fastspiral-demo",
        help="folder for the pictures and the GIF (default: %(default)s)",
    )
    demo.add_argument(
        "--seed", type=_nonneg_int, default=0, help="seed of the legacy random stream (default: 0)"
    )
    demo.add_argument("--backend", choices=sorted(BACKENDS), default="numba")
    demo.add_argument(
        "--hidden", type=_positive_int, default=100, help="hidden units (default: 100)"
    )
    demo.set_defaults(run=_demo)

    grid = sub.add_parser(
        "grid", help="decision regions of nets over hidden units and regularisation"
    )
    grid.add_argument("--hidden", type=_positive_int, nargs="+", default=[10, 100])
    grid.add_argument("--reg", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2])
    grid.add_argument("--iters", type=_nonneg_int, default=10_000)
    grid.add_argument(
        "--seed", type=_nonneg_int, default=0, help="seed of the initial weights (default: 0)"
    )
    grid.add_argument("--backend", choices=sorted(BACKENDS), default="numba")
    grid.add_argument("--n-per-class", type=_positive_int, default=100)
    grid.add_argument("--n-classes", type=_positive_int, default=3)
    grid.add_argument(
        "--data-seed", type=_nonneg_int, default=0, help="seed of the spiral data (default: 0)"
    )
    grid.add_argument("--out", default="grid.png", help="picture to write (default: %(default)s)")
    grid.set_defaults(run=_grid)

    train = sub.add_parser("train", help="train one model on spiral data (or X, y from an .npz)")
    train.add_argument("--model", choices=["linear", "net"], default="net")
    train.add_argument(
        "--hidden",
        type=_positive_int,
        default=None,
        help="hidden units (default: 100, or those of --init)",
    )
    train.add_argument("--step-size", type=float, default=1.0)
    train.add_argument("--reg", type=float, default=1e-3)
    train.add_argument(
        "--iters",
        type=_nonneg_int,
        default=None,
        help="iterations (default: 10000 for net, 200 for linear)",
    )
    train.add_argument("--seed", type=_nonneg_int, default=None, help="seed of the initial weights")
    train.add_argument("--backend", choices=sorted(BACKENDS), default="numba")
    train.add_argument("--dtype", choices=sorted(DTYPES), default="float64")
    train.add_argument(
        "--verbose",
        action="store_true",
        help="print the loss every 1000 (net) / 10 (linear) iterations",
    )
    train.add_argument(
        "--progress", action="store_true", help="show a progress bar with the current loss"
    )
    train.add_argument(
        "--init", default=None, help="continue training from a model saved with --save"
    )
    train.add_argument("--n-per-class", type=_positive_int, default=100)
    train.add_argument("--n-classes", type=_positive_int, default=3)
    train.add_argument("--noise", type=float, default=0.2)
    train.add_argument(
        "--data-seed", type=_nonneg_int, default=0, help="seed of the spiral data (default: 0)"
    )
    train.add_argument(
        "--data", default=None, help=".npz file with arrays X and y, instead of a spiral"
    )
    train.add_argument("--save", default=None, help="write the trained model to this .npz path")
    train.add_argument(
        "--plot",
        default=None,
        help="write a decision-region picture, format from the suffix (2-D data only)",
    )
    train.set_defaults(run=_train)

    scale = sub.add_parser("scale", help="time training over N and H, write a table and a figure")
    scale.add_argument("--n-per-class", type=_positive_int, nargs="+", default=[100, 1000, 10000])
    scale.add_argument("--hidden", type=_positive_int, nargs="+", default=[100, 1000])
    scale.add_argument(
        "--backends", choices=sorted(BACKENDS), nargs="+", default=["numba", "numpy"]
    )
    scale.add_argument("--dtypes", choices=sorted(DTYPES), nargs="+", default=["float64"])
    scale.add_argument(
        "--iters", type=_positive_int, default=50, help="iterations per timed run (default: 50)"
    )
    scale.add_argument(
        "--repeats",
        type=_positive_int,
        default=3,
        help="timed runs per configuration, all kept (default: 3)",
    )
    scale.add_argument(
        "--threads",
        type=_positive_int,
        nargs="+",
        default=None,
        help="thread counts to time each configuration with (default: the machine's)",
    )
    scale.add_argument("--seed", type=_nonneg_int, default=0)
    scale.add_argument(
        "--out", default=None, help="folder for results.csv, results.json, scaling.png"
    )
    scale.add_argument(
        "--compare",
        nargs=2,
        metavar=("DIR_A", "DIR_B"),
        default=None,
        help="print DIR_B's times over DIR_A's for the configurations both hold",
    )
    scale.add_argument(
        "--scheduler", default=None, help="Dask scheduler address, e.g. tcp://host:8786"
    )
    scale.add_argument(
        "--connect-timeout", default="10s", help="how long to try the scheduler (default: 10s)"
    )
    scale.add_argument("--force", action="store_true", help="recompute rows already in --out")
    scale.add_argument("--no-progress", action="store_true", help="no progress bar")
    scale.set_defaults(run=_scale)
    return parser


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
