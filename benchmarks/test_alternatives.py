"""The same training in the libraries users would otherwise pick, in the same groups.

JAX and PyTorch are not dependencies: each benchmark runs only where its
library is installed. Both run the case study's full-batch gradient descent in
float64 with the loss recorded every iteration, as fastspiral does:

* JAX: the whole loop jitted (``jax.jit`` around ``lax.fori_loop``), the
  scaling sweep's own (``fastspiral.scaling.peers``).
* PyTorch: eager tensor operations with the gradients written out (no
  autograd graph), on all of torch's intra-op threads.
"""

import numpy as np
import pytest

from fastspiral.scaling.peers import REG, STEP  # the case study's, as the sweep's peers train

from .conftest import (
    ROUNDS,
    SIZES,
    group_name,
    iterations_per_round,
    record,
    reset_peak_memory,
    settle,
    size_id,
)


def _jax_runner(n_samples, hidden, iters):
    pytest.importorskip("jax")
    from fastspiral.scaling.peers import _jax, _jax_compiled

    from .conftest import spiral_problem

    # The sweep's JAX peer: one jitted loop, so the benchmark and a scaling figure time the same.
    jax, jnp = _jax()
    problem = spiral_problem(n_samples, hidden, "float64")
    X, y, p = problem.X, problem.y, problem.params
    (N, D), K = X.shape, p["b2"].size
    train = _jax_compiled(N, D, hidden, K, "float64", iters)
    X, onehot = jnp.asarray(X), jax.nn.one_hot(jnp.asarray(y), K, dtype=jnp.float64)
    n_iters = jnp.int32(iters)
    state = {"params": tuple(jnp.asarray(p[k]) for k in ("W1", "b1", "W2", "b2"))}

    def run():
        params, history = train(state["params"], X, onehot, n_iters)
        history.block_until_ready()
        state["params"], state["history"] = params, history

    run.state = state
    return run


def _torch_runner(n_samples, hidden, iters):
    torch = pytest.importorskip("torch")
    from fastspiral.scaling.peers import torch_steps

    from .conftest import spiral_problem

    problem = spiral_problem(n_samples, hidden, "float64")
    X, y, p = problem.X, problem.y, problem.params
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    params = tuple(torch.from_numpy(p[k].copy()) for k in ("W1", "b1", "W2", "b2"))
    history = torch.empty(iters, dtype=torch.float64)
    run_state = {"history": history}

    def run():
        torch_steps(X, y, params, history)  # the sweep peer's loop, on all of torch's threads

    run.state = run_state
    return run


@pytest.mark.parametrize("library", ["jax", "torch"])
@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_train_net_alternative(benchmark, size, library):
    n_samples, hidden = size
    benchmark.group = group_name(n_samples, hidden)
    iters = iterations_per_round(n_samples, hidden)
    make = _jax_runner if library == "jax" else _torch_runner
    mark = reset_peak_memory()
    run = make(n_samples, hidden, iters)
    settle()
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1)  # warm-up: JIT compile
    record(
        benchmark, n_samples, hidden, iters, mark, backend=library, dtype="float64", threads=None
    )


@pytest.mark.parametrize("library", ["jax", "torch"])
def test_alternative_trains_the_same_model(library):
    """Each comparison computes what fastspiral computes, so the timings compare like with like."""
    import fastspiral as fs

    from .conftest import spiral_problem

    make = _jax_runner if library == "jax" else _torch_runner
    run = make(300, 100, 50)
    run()
    problem = spiral_problem(300, 100, "float64")
    X, y, p = problem.X, problem.y, problem.params
    net = fs.train_net(X, y, init=p, iters=50, step_size=STEP, reg=REG)
    np.testing.assert_allclose(np.asarray(run.state["history"]), net.loss_history, rtol=1e-9)
