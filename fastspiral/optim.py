"""Update rules and learning-rate schedules: the next lesson after the case study.

The rules are those of CS231n's notes on parameter updates, where ``dx`` is
the gradient of the loss (data loss plus ``reg * W`` on the weights; the
biases take no L2), ``lr`` the step size and ``t`` the update count from 1:

=============  ==================================================================
``"gd"``       ``x += -lr * dx`` on the full batch (the case study's update)
``"sgd"``      the same rule, the name used with mini-batches
``Momentum``   ``v = mu * v - lr * dx;  x += v``
``Nesterov``   ``v_prev = v;  v = mu * v - lr * dx;  x += -mu * v_prev + (1 + mu) * v``
``Adagrad``    ``cache += dx**2;  x += -lr * dx / (sqrt(cache) + eps)``
``RMSProp``    ``cache = decay * cache + (1 - decay) * dx**2;  x += -lr * dx / (sqrt(cache) + eps)``
``Adam``       ``m = beta1 * m + (1 - beta1) * dx;  v = beta2 * v + (1 - beta2) * dx**2;``
               ``x += -lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)``
=============  ==================================================================

A schedule makes ``lr`` a function of the update count ``u = t - 1`` (0 for
the first update): :class:`StepDecay`, :class:`ExpDecay`,
:class:`InverseTimeDecay`. Each object's :meth:`~UpdateRule.step` applies its
rule to NumPy arrays as written above: it is the reference that the compiled
rules are tested against, and what the ``"numpy"`` backend runs.

>>> import fastspiral as fs
>>> from fastspiral.optim import Adam
>>> X, y = fs.make_data("moons", seed=0)
>>> net = fs.train_net(X, y, optimizer=Adam(beta1=0.9), step_size=1e-2, batch_size=32,
...                    iters=300, seed=0)                  # doctest: +SKIP
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import astuple, dataclass, fields
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "GD",
    "SGD",
    "Momentum",
    "Nesterov",
    "Adagrad",
    "RMSProp",
    "Adam",
    "StepDecay",
    "ExpDecay",
    "InverseTimeDecay",
    "get_optimizer",
    "get_schedule",
    "OPTIMIZERS",
]


def _check_unit(value: Any, name: str, owner: str) -> float:
    """A real number in [0, 1), as mu and the betas must be."""
    value = _check_real(value, name, owner)
    if not 0 <= value < 1:
        raise ValueError(f"{owner}: {name} must be in [0, 1), got {value!r}")
    return value


def _check_positive(value: Any, name: str, owner: str) -> float:
    value = _check_real(value, name, owner)
    if not value > 0:
        raise ValueError(f"{owner}: {name} must be > 0, got {value!r}")
    return value


def _check_real(value: Any, name: str, owner: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{owner}: {name} must be a real number, got {type(value).__name__} {value!r}"
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be finite, got {value!r}")
    return value


# -- update rules ---------------------------------------------------------------------


@dataclass(frozen=True)
class UpdateRule:
    """An update rule: its name, its hyperparameters (the dataclass fields) and the state it keeps.

    ``state`` names the vectors it keeps beside the parameters, each of the
    parameters' shapes (velocities, caches, moments), zero at the start.
    """

    name: ClassVar[str] = ""
    state: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        pass

    @property
    def hyper(self) -> tuple[float, ...]:
        """The hyperparameters in field order (what the compiled rule reads after the step size)."""
        return tuple(float(v) for v in astuple(self))

    def config(self) -> dict[str, Any]:
        """The rule as JSON values, ``{"name": ..., <hyperparameter>: ...}``, saved with a model."""
        return {"name": self.name, **{f.name: getattr(self, f.name) for f in fields(self)}}

    def step(self, params: dict, grads: dict, state: dict, t: int, lr: float) -> None:
        """Update ``params`` in place from ``grads`` (the L2 term included), as the formula says.

        ``state[vector][param]`` is updated in place too; ``t`` counts updates from 1.
        """
        raise NotImplementedError


@dataclass(frozen=True)
class GD(UpdateRule):
    """``x += -lr * dx``: the case study's update (full batch unless ``batch_size`` is given)."""

    name: ClassVar[str] = "gd"

    def step(self, params, grads, state, t, lr):
        for k, g in grads.items():
            params[k] -= lr * g


@dataclass(frozen=True)
class SGD(GD):
    """``x += -lr * dx``: vanilla stochastic gradient descent (the rule of :class:`GD`)."""

    name: ClassVar[str] = "sgd"


@dataclass(frozen=True)
class Momentum(UpdateRule):
    """``v = mu * v - lr * dx;  x += v``."""

    mu: float = 0.9
    name: ClassVar[str] = "momentum"
    state: ClassVar[tuple[str, ...]] = ("velocity",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mu", _check_unit(self.mu, "mu", type(self).__name__))

    def step(self, params, grads, state, t, lr):
        for k, g in grads.items():
            v = state["velocity"][k]
            v *= self.mu
            v -= lr * g
            params[k] += v


@dataclass(frozen=True)
class Nesterov(Momentum):
    """``v_prev = v;  v = mu * v - lr * dx;  x += -mu * v_prev + (1 + mu) * v``."""

    name: ClassVar[str] = "nesterov"

    def step(self, params, grads, state, t, lr):
        for k, g in grads.items():
            v = state["velocity"][k]
            v_prev = v.copy()
            v *= self.mu
            v -= lr * g
            params[k] += -self.mu * v_prev + (1 + self.mu) * v


@dataclass(frozen=True)
class Adagrad(UpdateRule):
    """``cache += dx**2;  x += -lr * dx / (sqrt(cache) + eps)``."""

    eps: float = 1e-8
    name: ClassVar[str] = "adagrad"
    state: ClassVar[tuple[str, ...]] = ("cache",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", _check_positive(self.eps, "eps", type(self).__name__))

    def step(self, params, grads, state, t, lr):
        for k, g in grads.items():
            cache = state["cache"][k]
            cache += g * g
            params[k] -= lr * g / (np.sqrt(cache) + self.eps)


@dataclass(frozen=True)
class RMSProp(UpdateRule):
    """``cache = decay * cache + (1 - decay) * dx**2;  x += -lr * dx / (sqrt(cache) + eps)``."""

    decay: float = 0.99
    eps: float = 1e-8
    name: ClassVar[str] = "rmsprop"
    state: ClassVar[tuple[str, ...]] = ("cache",)

    def __post_init__(self) -> None:
        owner = type(self).__name__
        object.__setattr__(self, "decay", _check_unit(self.decay, "decay", owner))
        object.__setattr__(self, "eps", _check_positive(self.eps, "eps", owner))

    def step(self, params, grads, state, t, lr):
        for k, g in grads.items():
            cache = state["cache"][k]
            cache *= self.decay
            cache += (1 - self.decay) * g * g
            params[k] -= lr * g / (np.sqrt(cache) + self.eps)


@dataclass(frozen=True)
class Adam(UpdateRule):
    """``m = beta1 * m + (1 - beta1) * dx;  v = beta2 * v + (1 - beta2) * dx**2``, then
    ``x += -lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)`` (bias-corrected)."""

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    name: ClassVar[str] = "adam"
    state: ClassVar[tuple[str, ...]] = ("m", "v")

    def __post_init__(self) -> None:
        owner = type(self).__name__
        object.__setattr__(self, "beta1", _check_unit(self.beta1, "beta1", owner))
        object.__setattr__(self, "beta2", _check_unit(self.beta2, "beta2", owner))
        object.__setattr__(self, "eps", _check_positive(self.eps, "eps", owner))

    def step(self, params, grads, state, t, lr):
        c1, c2 = 1 - self.beta1**t, 1 - self.beta2**t
        for k, g in grads.items():
            m, v = state["m"][k], state["v"][k]
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * g * g
            params[k] -= lr * (m / c1) / (np.sqrt(v / c2) + self.eps)


#: The update rules by name, as ``optimizer=`` takes them (with their default hyperparameters).
OPTIMIZERS: dict[str, type[UpdateRule]] = {
    cls.name: cls for cls in (GD, SGD, Momentum, Nesterov, Adagrad, RMSProp, Adam)
}


def get_optimizer(optimizer: Any) -> UpdateRule:
    """The update rule ``optimizer`` names (a name from :data:`OPTIMIZERS`, or a rule object)."""
    if isinstance(optimizer, UpdateRule):
        return optimizer
    if isinstance(optimizer, str) and optimizer in OPTIMIZERS:
        return OPTIMIZERS[optimizer]()
    if isinstance(optimizer, str):
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    raise TypeError(
        "optimizer must be a name or an object from fastspiral.optim (e.g. Adam()), "
        f"got {type(optimizer).__name__}"
    )


def optimizer_from_config(config: Mapping[str, Any]) -> UpdateRule:
    """The rule :meth:`UpdateRule.config` describes (ValueError if it names none)."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r} (expected one of {sorted(OPTIMIZERS)})")
    try:
        return OPTIMIZERS[name](**config)
    except TypeError as exc:
        raise ValueError(f"optimizer {name!r}: {exc}") from None


# -- learning-rate schedules ----------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule: the rate of update ``u`` (0 for the first) from the step size."""

    #: The compiled rules tell schedules apart by this code (fastspiral.numba_backend.update).
    code: ClassVar[int] = 0

    def rate(self, step_size: float, u: int) -> float:
        raise NotImplementedError

    @property
    def params(self) -> tuple[float, float]:
        values = [float(v) for v in astuple(self)]
        return (values + [0.0, 0.0])[0], (values + [0.0, 0.0])[1]

    def config(self) -> dict[str, Any]:
        return {
            "name": type(self).__name__,
            **{f.name: getattr(self, f.name) for f in fields(self)},
        }


@dataclass(frozen=True)
class StepDecay(Schedule):
    """``lr = step_size * factor ** (u // every)``: times ``factor`` every ``every`` updates."""

    every: int
    factor: float = 0.5
    code: ClassVar[int] = 1

    def __post_init__(self) -> None:
        every = self.every
        if isinstance(every, (bool, np.bool_)) or not isinstance(every, numbers.Integral):
            raise TypeError(
                f"StepDecay: every must be an integer, got {type(every).__name__} {every!r}"
            )
        if every < 1:
            raise ValueError(f"StepDecay: every must be >= 1, got {every}")
        object.__setattr__(self, "every", int(every))
        object.__setattr__(self, "factor", _check_positive(self.factor, "factor", "StepDecay"))

    def rate(self, step_size, u):
        return step_size * self.factor ** (u // self.every)


@dataclass(frozen=True)
class ExpDecay(Schedule):
    """``lr = step_size * exp(-k * u)``."""

    k: float
    code: ClassVar[int] = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "k", _check_positive(self.k, "k", "ExpDecay"))

    def rate(self, step_size, u):
        return step_size * math.exp(-self.k * u)


@dataclass(frozen=True)
class InverseTimeDecay(Schedule):
    """``lr = step_size / (1 + k * u)`` (CS231n's "1/t decay")."""

    k: float
    code: ClassVar[int] = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "k", _check_positive(self.k, "k", "InverseTimeDecay"))

    def rate(self, step_size, u):
        return step_size / (1 + self.k * u)


SCHEDULES: dict[str, type[Schedule]] = {
    cls.__name__: cls for cls in (StepDecay, ExpDecay, InverseTimeDecay)
}


def get_schedule(schedule: Any) -> Schedule | None:
    """``schedule`` checked: None (a constant rate) or a schedule object."""
    if schedule is None or isinstance(schedule, Schedule):
        return schedule
    raise TypeError(
        "schedule must be None or an object from fastspiral.optim (StepDecay, ExpDecay, "
        f"InverseTimeDecay), got {type(schedule).__name__}"
    )


def schedule_from_config(config: Mapping[str, Any] | None) -> Schedule | None:
    """The schedule :meth:`Schedule.config` describes, or None."""
    if config is None:
        return None
    config = dict(config)
    name = config.pop("name", None)
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r} (expected one of {sorted(SCHEDULES)})")
    try:
        return SCHEDULES[name](**config)
    except TypeError as exc:
        raise ValueError(f"schedule {name!r}: {exc}") from None
