"""How a training proceeds: its update rule and schedule, its start, the rows each update sees.

A :class:`Plan` is what every backend reads beside a problem's data and
parameters. With ``batch_size=B`` an epoch is ``ceil(N / B)`` updates over the rows in a
new random order, the last batch smaller (as scikit-learn's ``gen_batches``).
Epoch e's order is a Fisher-Yates shuffle of ``0..N-1`` driven by N random
integers drawn for it from one NumPy generator, epochs in turn; the shuffle
itself (:func:`shuffle_rows`) runs inside the compiled loop (compiled from
this code) and in the NumPy reference alike, so both backends train on the same batches. The
generator's
state at the start of an epoch is saved with a model, so a continued training
draws what an uninterrupted one would have.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .optim import GD, Schedule, UpdateRule

#: Random integers are drawn below this bound; ``draw % (i + 1)`` then picks a row with a bias
#: below N / 2**62 (Fisher-Yates with NumPy's bounded integers cost 3x as much to draw).
DRAW_BOUND = 2**62


def shuffle_rows(order, draws):
    """``order`` becomes a permutation of ``0..N-1``: Fisher-Yates, row i swapped with row
    ``draws[i] % (i + 1)``, from the last row down."""
    n = order.size
    for i in range(n):
        order[i] = i
    for i in range(n - 1, 0, -1):
        j = draws[i] % (i + 1)
        order[i], order[j] = order[j], order[i]


def batch_bounds(u, n_samples, batch_size):
    """``(epoch, first, stop)``: update u trains on rows ``order[first:stop]`` of that epoch."""
    per_epoch = (n_samples + batch_size - 1) // batch_size
    epoch, b = u // per_epoch, u % per_epoch
    first = b * batch_size
    return epoch, first, min(first + batch_size, n_samples)


class BatchOrder:
    """The epochs' random integers of a mini-batch training, drawn in turn from one generator.

    ``rng`` is a :class:`numpy.random.Generator` positioned at the start of
    epoch ``epoch``.
    """

    def __init__(self, n_samples: int, batch_size: int, rng: np.random.Generator, epoch: int = 0):
        self.n_samples, self.batch_size = n_samples, batch_size
        self._rng = rng
        self._next_epoch = epoch  # the epoch rng draws for next
        self._drawn: deque[tuple[int, Any, np.ndarray]] = deque()  # (epoch, state before, draws)

    @property
    def per_epoch(self) -> int:
        """Updates per epoch."""
        return -(-self.n_samples // self.batch_size)

    def draws(self, first_update: int, stop_update: int) -> tuple[np.ndarray, int]:
        """``(draws, first_epoch)`` for updates ``first_update..stop_update-1``: row e of the
        (epochs, N) int64 array drives the shuffle of epoch ``first_epoch + e``."""
        e0 = first_update // self.per_epoch
        e1 = (max(stop_update, first_update + 1) - 1) // self.per_epoch
        kept = self._drawn[0][0] if self._drawn else self._next_epoch
        if e0 < kept:
            raise RuntimeError(f"the draws of epoch {e0} are gone: updates run forwards only")
        while self._drawn and self._drawn[0][0] < e0:
            self._drawn.popleft()
        if self._next_epoch < e0:  # epochs skipped, as by a resumed count: draw them in turn
            for _ in range(e0 - self._next_epoch):
                self._draw_one()
            self._drawn.clear()
        while self._next_epoch <= e1:
            self._drawn.append((self._next_epoch, self._rng.bit_generator.state, self._draw_one()))
        return np.stack([d for e, _, d in self._drawn if e0 <= e <= e1]), e0

    def _draw_one(self) -> np.ndarray:
        self._next_epoch += 1
        return self._rng.integers(0, DRAW_BOUND, size=self.n_samples, dtype=np.int64)

    def state(self, next_update: int) -> dict[str, Any]:
        """JSON values restoring the order from update ``next_update`` on (:meth:`from_state`)."""
        epoch = next_update // self.per_epoch
        for e, state, _ in self._drawn:
            if e == epoch:
                return {"epoch": epoch, "rng": state}
        if epoch == self._next_epoch:
            return {"epoch": epoch, "rng": self._rng.bit_generator.state}
        raise ValueError(f"the order of epoch {epoch} is no longer known")

    @classmethod
    def from_state(cls, n_samples: int, batch_size: int, state: dict[str, Any]) -> BatchOrder:
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        return cls(n_samples, batch_size, rng, int(state["epoch"]))


@dataclass(frozen=True)
class Plan:
    """How a training proceeds, validated: what every backend reads beside a problem's data.

    ``state`` holds the rule's vectors by name and parameter (``state["m"]["W1"]``),
    in the parameters' shapes, to start from (zeros where missing);
    ``first_update`` counts the updates made before (a continued model's), which
    Adam's bias correction and the schedules go on from; ``batch_order`` draws the
    epochs' orders (None: every update sees the full batch, in order).
    """

    rule: UpdateRule = field(default_factory=GD)
    schedule: Schedule | None = None
    batch_size: int | None = None
    first_update: int = 0
    state: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    batch_order: BatchOrder | None = None


def _shuffle_generator(rng: Any) -> np.random.Generator:
    """The generator of a training's batch orders: seeded by one draw from the ``seed``'s stream
    (a Generator or the case study's legacy RandomState), after the initial weights."""
    if isinstance(rng, np.random.RandomState):
        return np.random.default_rng(int(rng.randint(0, 2**62, dtype=np.int64)))
    return np.random.default_rng(int(rng.integers(0, 2**62)))


def make_plan(
    optimizer: Any, schedule: Any, batch_size: Any, n_samples: int, init: Any, rng: Any
) -> Plan:
    """The :class:`Plan` of a training, its arguments checked (errors name them).

    ``init`` is what the training continues from: a model trained with the
    same rule (name and hyperparameters) hands over its state and its update
    count, and with the same batch size its batches' order too, so that two
    trainings of 500 updates give the bits of one of 1,000. Anything else
    starts the rule afresh. ``rng`` is the ``seed``'s stream, drawn from only
    when mini-batches need an order.
    """
    from ._validation import check_int
    from .optim import get_optimizer, get_schedule, optimizer_from_config, schedule_from_config

    rule = get_optimizer(optimizer)
    schedule = get_schedule(schedule)
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        if batch_size > n_samples:
            raise ValueError(
                f"batch_size must be <= the {n_samples:,} rows of X, got {batch_size:,}"
            )
    info = getattr(init, "info", None) or {}
    state = getattr(init, "optimizer_state", None) or {}
    same_rule = False
    if info.get("optimizer") is not None:
        try:
            same_rule = optimizer_from_config(info["optimizer"]) == rule
            same_rule &= schedule_from_config(info.get("schedule")) == schedule
        except (ValueError, TypeError):  # a hand-written info: start afresh
            same_rule = False
    first_update = int(info.get("updates", 0)) if same_rule else 0
    order = None
    if batch_size is not None:
        saved = info.get("batch_order") if same_rule else None
        if saved is not None and info.get("batch_size") == batch_size:
            order = BatchOrder.from_state(n_samples, batch_size, saved)
        else:
            order = BatchOrder(n_samples, batch_size, _shuffle_generator(rng))
    return Plan(
        rule=rule,
        schedule=schedule,
        batch_size=batch_size,
        first_update=first_update,
        state=state if same_rule else {},
        batch_order=order,
    )
