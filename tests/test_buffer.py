"""Trajectory replay buffer against a plain Python reference (wrap-around order, size, uniform sampling, jit)."""

from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from toperl_jax import buffer as rb

T, S, DOF, K = 5, 3, 2, 4


def make_episodes(ids, dtype=np.float32):
    """Batch of `Episode`s whose every field encodes the episode id (so that the id can be read back)."""
    ids = np.asarray(ids)
    n = len(ids)

    def full(*shape):
        return np.broadcast_to(ids.reshape((n,) + (1,) * len(shape)), (n, *shape)).astype(dtype)

    return rb.Episode(states=full(T, S), actions=full(T, 2 * DOF), rewards=full(T), dones=(full(T) % 2 == 1),
                      desired_pos=full(T, DOF), desired_vel=full(T, DOF), init_time=full(), init_pos=full(DOF),
                      init_vel=full(DOF), params_mean=full(K), params_L=full(K, K))


def slot_ids(buf):
    """Episode id stored in each slot, checked to be consistent over all fields."""
    ids = np.asarray(buf.data.init_time).astype(int)
    for name in ("states", "actions", "rewards", "desired_pos", "desired_vel", "init_pos", "init_vel",
                 "params_mean", "params_L"):
        leaf = np.asarray(getattr(buf.data, name))
        np.testing.assert_array_equal(leaf, np.broadcast_to(ids.reshape((-1,) + (1,) * (leaf.ndim - 1)),
                                                            leaf.shape))
    np.testing.assert_array_equal(np.asarray(buf.data.dones), np.broadcast_to((ids % 2 == 1)[:, None],
                                                                               buf.data.dones.shape))
    return ids


def test_init_shapes_and_dtypes():
    buf = rb.init(7, rb.episode_spec(T, S, DOF, K))
    assert buf.data.states.shape == (7, T, S) and buf.data.actions.shape == (7, T, 2 * DOF)
    assert buf.data.params_L.shape == (7, K, K) and buf.data.init_time.shape == (7,)
    assert buf.data.dones.dtype == jnp.bool_ and buf.data.rewards.dtype == jnp.float32
    assert int(buf.size) == 0 and int(buf.insert_pos) == 0
    # A generic pytree (a dict) from an example episode works as well.
    buf2 = rb.init(3, {"obs": np.zeros((4, 2), np.float32), "idx": np.zeros((), np.int32)})
    assert buf2.data["obs"].shape == (3, 4, 2) and buf2.data["idx"].dtype == jnp.int32


@pytest.mark.parametrize("capacity", [1, 7, 16])
def test_wraparound_against_deque(capacity):
    rng = np.random.default_rng(capacity)
    buf = rb.init(capacity, rb.episode_spec(T, S, DOF, K))
    add = jax.jit(rb.add)
    ref = deque(maxlen=capacity)  # chronological order, oldest first
    next_id = 0
    for _ in range(40):
        n = int(rng.integers(1, capacity + 1))
        ids = list(range(next_id, next_id + n))
        next_id += n
        buf = add(buf, make_episodes(ids))
        ref.extend(ids)
        size, pos = int(buf.size), int(buf.insert_pos)
        assert size == len(ref) == min(next_id, capacity)
        assert pos == next_id % capacity
        stored = slot_ids(buf)
        # Upstream slot rule: the j-th episode ever added lives in slot j mod capacity.
        for j in ref:
            assert stored[j % capacity] == j
        # Chronological read-out of the ring equals the deque.
        order = [(pos - size + i) % capacity for i in range(size)]
        assert list(stored[order]) == list(ref)


def test_size_saturates_and_errors():
    buf = rb.init(5, rb.episode_spec(T, S, DOF, K))
    buf = rb.add(buf, make_episodes([1, 2, 3]))
    assert int(buf.size) == 3 and int(buf.insert_pos) == 3
    buf = rb.add(buf, make_episodes([4, 5, 6, 7]))
    assert int(buf.size) == 5 and int(buf.insert_pos) == 2
    buf = rb.add(buf, make_episodes([8, 9, 10, 11, 12]))
    assert int(buf.size) == 5 and int(buf.insert_pos) == 2
    assert sorted(slot_ids(buf)) == [8, 9, 10, 11, 12]
    with pytest.raises(ValueError, match="capacity"):
        rb.add(buf, make_episodes(range(6)))
    with pytest.raises(ValueError, match="states"):
        bad = make_episodes([1]).replace(states=np.zeros((1, T, S + 1), np.float32))
        rb.add(buf, bad)
    with pytest.raises(ValueError, match="capacity"):
        rb.init(0, rb.episode_spec(T, S, DOF, K))


def test_sampling_filled_only_and_uniform():
    capacity, filled = 20, 13
    buf = rb.init(capacity, rb.episode_spec(T, S, DOF, K))
    buf = rb.add(buf, make_episodes(np.arange(100, 100 + filled)))
    sample = jax.jit(rb.sample, static_argnums=2)
    batch = sample(buf, jax.random.key(0), 4000)
    ids = np.asarray(batch.init_time).astype(int)
    assert batch.states.shape == (4000, T, S)
    # Only stored episodes come back, whole (every field of a sampled episode agrees).
    assert set(ids) <= set(range(100, 100 + filled))
    np.testing.assert_array_equal(np.asarray(batch.params_L), np.broadcast_to(ids[:, None, None], (4000, K, K)))
    counts = np.bincount(ids - 100, minlength=filled)
    assert stats.chisquare(counts).pvalue > 1e-3
    # With replacement (as upstream): a batch larger than the fill level is allowed and has repeats.
    small = rb.add(rb.init(capacity, rb.episode_spec(T, S, DOF, K)), make_episodes([1, 2, 3]))
    ids_small = np.asarray(rb.sample(small, jax.random.key(1), 10).init_time).astype(int)
    assert set(ids_small) <= {1, 2, 3}


def test_jit_no_retrace():
    traces = {"add": 0, "sample": 0}

    def add_fn(b, e):
        traces["add"] += 1
        return rb.add(b, e)

    def sample_fn(b, k):
        traces["sample"] += 1
        return rb.sample(b, k, 8)

    add = jax.jit(add_fn, donate_argnums=0)
    sample = jax.jit(sample_fn)
    buf = rb.init(6, rb.episode_spec(T, S, DOF, K))
    key = jax.random.key(0)
    for i in range(5):
        buf = add(buf, make_episodes([3 * i, 3 * i + 1, 3 * i + 2]))
        key, sub = jax.random.split(key)
        batch = sample(buf, sub)
        assert batch.states.shape == (8, T, S)
    assert traces == {"add": 1, "sample": 1}
    assert int(buf.size) == 6 and int(buf.insert_pos) == 15 % 6
