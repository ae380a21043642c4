"""Back-to-back short trainings (a sweep's repeats, a grid search's fits): median us per iteration.

    python benchmarks/time_short_trainings.py N [LABEL]

Run it with the default thread count and with NUMBA_NUM_THREADS=1, quiet and
beside CPU-bound programs, to see what the shared thread chooser gives
(docs/design.md, "How many threads").
"""

import statistics
import sys
import time

import fastspiral as fs


def main(n_samples: int, label: str) -> None:
    X, y = fs.make_spiral(n_samples // 3, 3, seed=0)
    fs.train_net(X, y, iters=2, seed=0)  # compiled and loaded before timing
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        fs.train_net(X, y, iters=50, seed=0)
        times.append((time.perf_counter() - t0) / 50)
    q1, _, q3 = statistics.quantiles(times, n=4)
    print(
        f"{label} N={n_samples}: median {statistics.median(times) * 1e6:.0f} us/iter, "
        f"IQR {q1 * 1e6:.0f}-{q3 * 1e6:.0f}"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "")
