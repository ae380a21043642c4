"""Where a cold start's time goes: run with an empty NUMBA_CACHE_DIR.

    NUMBA_CACHE_DIR=$(mktemp -d) python benchmarks/profile_cold.py [net|linear|general]...

One stack of frames: each dispatcher compile ("numba:compile"), each compiler
pass ("numba:run_pass"), each cache load/save. A frame's self time is its time
minus its children's. LLVM time ("numba:llvm_lock", held by llvmlite around
every FFI call) is summed into the innermost frame. Per function: the self
time of its compile frame plus of the passes run for it (nested compiles of
callees, started from its type inference, are charged to the callees).
"""

import collections
import os
import sys
import time

T0 = time.perf_counter()
from numba.core import event  # noqa: E402

stack = []  # [name, kind, start, child_time, llvm_time]
self_time = collections.defaultdict(float)  # (func, what) -> s
llvm_time = collections.defaultdict(float)  # (func, what) -> s
count = collections.Counter()
top_total = [0.0]
llvm_depth = [0, 0.0]


def _func():
    for f in reversed(stack):
        if f[1] == "compile":
            return f[0]
    return "<none>"


def push(name, kind, func=None):
    stack.append([name, kind, time.perf_counter(), 0.0, 0.0, func])


def pop():
    name, kind, start, child, llvm, func = stack.pop()
    total = time.perf_counter() - start
    own = total - child
    key = (func or name, name if kind in ("pass", "cache", "llvm") else kind)
    self_time[key] += own
    llvm_time[key] += llvm
    if stack:
        stack[-1][3] += total
    else:
        top_total[0] += total
    return total


class CompileListener(event.Listener):
    def on_start(self, ev):
        d = ev.data["dispatcher"]
        name = f"{d.py_func.__module__.rsplit('.', 1)[-1]}.{d.py_func.__qualname__}"
        count[name] += 1
        push(name, "compile", name)

    def on_end(self, ev):
        pop()


class PassListener(event.Listener):
    def on_start(self, ev):
        pname = ev.data["name"].split(" [")[0]
        # passes of inlined helpers and of a parfor's gufunc are charged to the enclosing compile
        push(pname, "pass", _func())

    def on_end(self, ev):
        pop()


class LLVMListener(event.Listener):
    def on_start(self, ev):
        if llvm_depth[0] == 0:
            llvm_depth[1] = time.perf_counter()
        llvm_depth[0] += 1

    def on_end(self, ev):
        llvm_depth[0] -= 1
        if llvm_depth[0] == 0 and stack:
            stack[-1][4] += time.perf_counter() - llvm_depth[1]


event.register("numba:compile", CompileListener())
event.register("numba:run_pass", PassListener())
event.register("numba:llvm_lock", LLVMListener())

t = time.perf_counter()
import fastspiral as fs  # noqa: E402
from fastspiral.numba_backend import cache as _cache  # noqa: E402

t_import = time.perf_counter() - t


def _wrap(meth, label):
    orig = getattr(_cache.SafeCache, meth)

    def wrapped(self, *a, **k):
        f = self._py_func
        push(label, "cache", f"{f.__module__.rsplit('.', 1)[-1]}.{f.__qualname__}")
        try:
            return orig(self, *a, **k)
        finally:
            pop()

    setattr(_cache.SafeCache, meth, wrapped)


_wrap("load_overload", "cache-load")
_wrap("save_overload", "cache-save")

from numba.core import codegen as _cg  # noqa: E402


def _wrap_llvm(cls, meth, label):
    orig = getattr(cls, meth)

    def wrapped(self, *a, **k):
        lab = label
        if os.environ.get("PROFILE_LIBS"):  # one row per LLVM library (gufunc, wrappers)
            lab = f"{label} [{self.name[:50]}]"
        push(lab, "llvm", _func())
        try:
            return orig(self, *a, **k)
        finally:
            pop()

    setattr(cls, meth, wrapped)


_wrap_llvm(_cg.CPUCodeLibrary, "add_ir_module", "llvm: parse + function passes")
_wrap_llvm(_cg.CPUCodeLibrary, "finalize", "llvm: link callees + verify")
_wrap_llvm(_cg.CPUCodeLibrary, "_optimize_final_module", "llvm: module passes (O3)")
_wrap_llvm(_cg.JITCodeLibrary, "_finalize_specific", "llvm: machine code")

X, y = fs.make_spiral(seed=0)
calls = sys.argv[1:] or ["net"]
walls = []
for what in calls:
    t = time.perf_counter()
    if what == "net":
        fs.train_net(X, y, iters=10)
    elif what == "linear":
        fs.train_linear(X, y, iters=10)
    elif what == "general":
        import numpy as np

        rng = np.random.default_rng(0)
        fs.train_net(rng.standard_normal((2000, 64)), rng.integers(0, 10, 2000), iters=10)
    walls.append((what, time.perf_counter() - t))
total = time.perf_counter() - T0

print(f"process (numba import + fastspiral import + calls): {total:.2f} s")
print(f"  import fastspiral: {t_import:.2f} s")
for what, w in walls:
    print(f"  call {what}: {w:.2f} s")
outside = sum(w for _, w in walls) - top_total[0]
print(
    f"  in compile/cache frames (top level): {top_total[0]:.2f} s;"
    f" outside (typeof, dispatch, python, first run): {outside:.2f} s"
)

per_func = collections.defaultdict(lambda: [0.0, 0.0, collections.Counter()])
for (func, what), s in self_time.items():
    per_func[func][0] += s
    per_func[func][1] += llvm_time[(func, what)]
    per_func[func][2][what] += s
print(f"\n{'function (specialisations)':40s} {'self s':>7s} {'LLVM s':>7s}  biggest parts")
for func, (s, ll, parts) in sorted(per_func.items(), key=lambda kv: -kv[1][0]):
    if s < 0.01:
        continue
    big = ", ".join(
        f"{p} {v:.2f}"
        for p, v in parts.most_common(int(os.environ.get("PROFILE_PARTS", 5)))
        if v >= 0.01
    )
    label = f"{func} ({count[func]})" if count[func] else func
    print(f"{label[:40]:40s} {s:7.2f} {ll:7.2f}  {big}")

per_pass = collections.Counter()
per_pass_llvm = collections.Counter()
for (func, what), s in self_time.items():
    per_pass[what] += s
    per_pass_llvm[what] += llvm_time[(func, what)]
print(f"\n{'pass / frame kind (all functions)':40s} {'self s':>7s} {'LLVM s':>7s}")
for what, s in per_pass.most_common(18):
    print(f"{what:40s} {s:7.2f} {per_pass_llvm[what]:7.2f}")
print(f"{'sum of self times':40s} {sum(per_pass.values()):7.2f} {sum(per_pass_llvm.values()):7.2f}")
