"""What keeping 20 snapshots costs: the case study through fs.train_net and
fs.record_snapshots, interleaved.

    python benchmarks/time_snapshots.py [PAIRS]

Prints the medians and the median (and IQR) of the paired ratios; pairs run
back to back, so a noisy machine moves both members of a pair alike.
"""

import statistics
import sys
import time

import fastspiral as fs


def main(pairs: int = 30) -> None:
    X, y = fs.make_spiral(seed=0)
    fs.train_net(X, y, seed=0)  # compiled and loaded before timing
    fs.record_snapshots(X, y, seed=0)
    plain, kept, ratios = [], [], []
    for _ in range(pairs):
        t0 = time.perf_counter()
        fs.train_net(X, y, seed=0)
        t1 = time.perf_counter()
        fs.record_snapshots(X, y, seed=0, snapshots=20)
        t2 = time.perf_counter()
        plain.append(t1 - t0)
        kept.append(t2 - t1)
        ratios.append((t2 - t1) / (t1 - t0))
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    print(
        f"train_net median {statistics.median(plain) * 1e3:.1f} ms, record_snapshots(20) median "
        f"{statistics.median(kept) * 1e3:.1f} ms; "
        f"paired ratio median {statistics.median(ratios):.3f} "
        f"(IQR {q1:.3f}-{q3:.3f}, {pairs} pairs)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
