"""The quickstart placeholder learns: trust-region policy search over ProDMP weights reduces the reach error."""


import jax
import pytest

from variants import trust_region_demo as demo


def test_demo_learns_to_reach():
    args = demo.Args(iterations=200, log_every=100, batch_size=64)
    init, run_chunk, evaluate = demo.make_train(args)
    state = init(jax.random.key(0))
    key = jax.random.key(1)
    before = float(evaluate(state.params, key))
    for _ in range(2):
        state, metrics = run_chunk(state)
    after = float(evaluate(state.params, key))
    assert after < 0.6 * before, (before, after)
    assert float(metrics["fallback"]) == 0.0  # no projection fell back to the old policy


def test_demo_rejects_bad_flags():
    with pytest.raises(ValueError, match="--log-every"):
        demo.Args(iterations=150, log_every=100)
    with pytest.raises(ValueError, match="--dt"):
        demo.Args(dt=2.0)
