"""Time train_net in a fresh process: median, min and max microseconds per iteration of 5 calls.

    python benchmarks/time_training.py N H DTYPE ITERS [BACKEND]

For before/after comparisons, alternate it between two checkouts (the
earlier one in a git worktree, put first on PYTHONPATH) so that both see the
same machine; docs/design.md gives the loop.
"""

import statistics
import sys
import time

import fastspiral as fs


def main(argv):
    n, hidden, dtype, iters = int(argv[0]), int(argv[1]), argv[2], int(argv[3])
    backend = argv[4] if len(argv) > 4 else "numba"
    X, y = fs.make_spiral(n // 3, 3, seed=0)
    fs.train_net(
        X, y, hidden=hidden, iters=3, seed=0, dtype=dtype, backend=backend
    )  # compile or load
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        fs.train_net(X, y, hidden=hidden, iters=iters, seed=0, dtype=dtype, backend=backend)
        times.append((time.perf_counter() - t0) / iters * 1e6)
    print(f"{statistics.median(times):.2f} {min(times):.2f} {max(times):.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
