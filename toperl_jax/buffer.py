"""Trajectory replay buffer: a fixed-capacity FIFO ring of whole episodes (spec: top_erl.md §1, §2.2).

The buffer is a pytree (`TrajectoryBuffer`) holding one array `[capacity, ...]` per episode field, plus the
write position and the fill level. `init`, `add` and `sample` are pure and jit-able; nothing is mutated.

Episode fields are not hard-coded: any pytree of arrays works. `Episode` is the default type with the fields
of spec §1 (`episode_spec` builds its shapes), but a variant may store its own dataclass or a dict.

Semantics (those of upstream `TopErlReplayBuffer`):
- `add` writes a batch of n episodes at `insert_pos`, `insert_pos + 1`, … (mod capacity), overwriting the
  oldest entries once the buffer is full; then `insert_pos ← (insert_pos + n) mod capacity` and
  `size ← min(size + n, capacity)`. The j-th episode ever added (counting from 0) lives in slot j mod capacity.
- `sample` draws `batch_size` slot indices uniformly from {0, …, size − 1} **with replacement** (upstream:
  `torch.randint(0, size, (batch_size,))`). Because the filled slots are always 0 … size − 1 (the ring only
  wraps once it is full), this is uniform over the stored episodes.

Under jit, donate the buffer to `add` (`jax.jit(add, donate_argnums=0)`) so that XLA updates it in place.
"""

from __future__ import annotations

from typing import Any

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


@flax.struct.dataclass
class Episode:
    """One episode as the TOP-ERL learner stores it (spec §1). Leading batch axes are allowed everywhere.

    Attributes:
        states: [T, S] observations s_0 … s_{T−1} (s_0 = reset observation).
        actions: [T, 2·dof] desired position and velocity executed at steps 0 … T−1.
        rewards: [T] rewards.
        dones: [T] bool, episode-end flags.
        desired_pos: [T, dof] desired position in force when state k was observed (k = 0: measured at reset).
        desired_vel: [T, dof] desired velocity in force when state k was observed.
        init_time: [] episode initial time.
        init_pos: [dof] measured robot position at reset.
        init_vel: [dof] measured robot velocity at reset.
        params_mean: [k] behaviour-policy mean of the MP weights.
        params_L: [k, k] behaviour-policy Cholesky factor.
    """

    states: jax.Array
    actions: jax.Array
    rewards: jax.Array
    dones: jax.Array
    desired_pos: jax.Array
    desired_vel: jax.Array
    init_time: jax.Array
    init_pos: jax.Array
    init_vel: jax.Array
    params_mean: jax.Array
    params_L: jax.Array


def episode_spec(T: int, state_dim: int, dof: int, num_weights: int, dtype=jnp.float32) -> Episode:
    """Shapes and dtypes of one `Episode` (no batch axis) as `jax.ShapeDtypeStruct`s, for `init`.

    `dones` is bool, every other field `dtype`.
    """
    f = lambda *shape: jax.ShapeDtypeStruct(shape, dtype)
    return Episode(
        states=f(T, state_dim), actions=f(T, 2 * dof), rewards=f(T), dones=jax.ShapeDtypeStruct((T,), jnp.bool_),
        desired_pos=f(T, dof), desired_vel=f(T, dof), init_time=f(), init_pos=f(dof), init_vel=f(dof),
        params_mean=f(num_weights), params_L=f(num_weights, num_weights))


@flax.struct.dataclass
class TrajectoryBuffer:
    """FIFO ring buffer of episodes.

    Attributes:
        data: pytree of the episode type; every leaf is `[capacity, *episode_leaf_shape]`.
        insert_pos: [] int32, the slot the next episode goes to.
        size: [] int32, number of filled slots (saturates at `capacity`); the filled slots are 0 … size − 1.
        capacity: static int, number of slots.
    """

    data: PyTree
    insert_pos: jax.Array
    size: jax.Array
    capacity: int = flax.struct.field(pytree_node=False)


def init(capacity: int, example_episode: PyTree) -> TrajectoryBuffer:
    """An empty buffer for episodes shaped like `example_episode`.

    Args:
        capacity: number of episodes the buffer holds (static, ≥ 1).
        example_episode: one episode (no batch axis): a pytree of arrays or of `jax.ShapeDtypeStruct`
            (e.g. `episode_spec(...)`). Only shapes and dtypes are used.

    Returns:
        A buffer with zero-filled leaves `[capacity, *leaf.shape]`, `insert_pos = size = 0`.
    """
    if not isinstance(capacity, (int, np.integer)) or capacity < 1:
        raise ValueError(f"buffer capacity must be a positive int, got {capacity!r}")
    capacity = int(capacity)
    data = jax.tree.map(lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.result_type(x)), example_episode)
    if not jax.tree.leaves(data):
        raise ValueError("example_episode has no array leaves")
    return TrajectoryBuffer(data=data, insert_pos=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32),
                            capacity=capacity)


def _batch_size_of(buffer: TrajectoryBuffer, episodes: PyTree) -> int:
    """Checks that `episodes` matches the buffer's episode type with one leading batch axis; returns n."""
    buf_struct = jax.tree.structure(buffer.data)
    ep_struct = jax.tree.structure(episodes)
    if buf_struct != ep_struct:
        raise ValueError(f"episodes do not have the buffer's episode structure:\n  buffer: {buf_struct}\n"
                         f"  given:  {ep_struct}")
    paths_and_leaves = jax.tree_util.tree_flatten_with_path(episodes)[0]
    n = None
    for (path, leaf), buf_leaf in zip(paths_and_leaves, jax.tree.leaves(buffer.data)):
        name = jax.tree_util.keystr(path)
        shape = jnp.shape(leaf)
        if len(shape) != buf_leaf.ndim or shape[1:] != buf_leaf.shape[1:]:
            raise ValueError(f"episodes{name} has shape {shape}; expected [n, *{buf_leaf.shape[1:]}]")
        if n is None:
            n = shape[0]
        elif shape[0] != n:
            raise ValueError(f"episodes{name} has batch size {shape[0]}, other fields have {n}")
    return n


def add(buffer: TrajectoryBuffer, episodes: PyTree) -> TrajectoryBuffer:
    """Append a batch of episodes, overwriting the oldest ones once full (wrap-around).

    Args:
        buffer: the buffer.
        episodes: pytree like the buffer's episode type with leaves `[n, ...]`; n is static, 1 ≤ n ≤ capacity.
            Leaves are cast to the buffer's dtypes.

    Returns:
        The new buffer: episode i of the batch sits in slot (insert_pos + i) mod capacity;
        insert_pos ← (insert_pos + n) mod capacity, size ← min(size + n, capacity).
    """
    n = _batch_size_of(buffer, episodes)
    cap = buffer.capacity
    if not 1 <= n <= cap:
        raise ValueError(f"can add 1 … capacity={cap} episodes at once, got n={n}")
    # n ≤ capacity, so the n slots are distinct and the scatter is a plain (order-free) overwrite.
    slots = (buffer.insert_pos + jnp.arange(n, dtype=jnp.int32)) % cap
    data = jax.tree.map(lambda b, e: b.at[slots].set(e.astype(b.dtype), unique_indices=True),
                        buffer.data, episodes)
    return buffer.replace(data=data, insert_pos=(buffer.insert_pos + n) % cap,
                          size=jnp.minimum(buffer.size + n, cap))


def sample_indices(buffer: TrajectoryBuffer, key: jax.Array, batch_size: int) -> jax.Array:
    """`[batch_size]` int32 slot indices, i.i.d. uniform over the filled slots {0, …, size − 1}.

    With replacement, as upstream. On an empty buffer every index is 0 (a zero episode); callers gate on
    `size` (upstream asserts batch_size ≤ size, which cannot be asserted on a traced value).
    """
    chex.assert_shape(buffer.size, ())
    return jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1), dtype=jnp.int32)


def sample(buffer: TrajectoryBuffer, key: jax.Array, batch_size: int) -> PyTree:
    """A uniform batch of stored episodes (with replacement; see `sample_indices`).

    Args:
        buffer: the buffer.
        key: PRNG key (consumed).
        batch_size: static number of episodes.

    Returns:
        Pytree of the episode type with leaves `[batch_size, ...]`.
    """
    idx = sample_indices(buffer, key, batch_size)
    return jax.tree.map(lambda b: b[idx], buffer.data)


def downsample_episode(episode: Episode, factor: int, reward_scale: float | None = None) -> Episode:
    """The episode the learner stores when it sees only every `factor`-th step (spec top_erl.md §6, Meta-World).

    The environment runs all T steps of dt; the learner works with T_c = T / F coarse steps of dt_c = F·dt. Coarse
    step k covers the fine steps kF … kF + F − 1 (block k):

    - `states`, `desired_pos`, `desired_vel` [..., T, ·] → [..., T_c, ·]: fine index kF (`[::F]`), the block's
      first state and the desired pos/vel in force when it was observed (the ProDMP initial condition at
      init_time + k·dt_c for a segment starting at coarse k);
    - `actions` [..., T, 2·dof] → [..., T_c, 2·dof]: fine index kF + F − 1 (`[F−1::F]`), the block's last
      desired pos/vel, executed at init_time + (kF + F)·dt = init_time + (k + 1)·dt_c — exactly the learner's
      time t_k of action k, and equal to `desired_pos/vel[k + 1]` as in an undownsampled episode;
    - `rewards` [..., T] → [..., T_c]: sum over the block × `reward_scale` (default 1 / F, upstream
      `reward_scaling`); `dones`: any over the block;
    - `init_time`, `init_pos`, `init_vel`, `params_mean`, `params_L`: unchanged.

    Upstream (TOP_ERL_ICLR25_Code `mprl/rl/sampler/top_erl_sampler.py`, `run`) slices the actions with `[::F]`
    like the states, i.e. it keeps the desired pos/vel executed at (kF + 1)·dt, while its learner decodes the
    policy's actions at the coarse times (k + 1)·dt_c (`get_times(..., down_sample=True)`, used in
    `top_erl_agent.py`). The critic would then compare buffer actions and policy actions that lie (F − 1)·dt
    apart in time. We keep the action at the learner's time instead (the intended behaviour); states, desired
    pos/vel, rewards and dones follow upstream.

    Args:
        episode: `Episode` with any leading batch axes; the time axis is the last axis of `rewards`/`dones` and
            the second to last of `states`, `actions`, `desired_pos`, `desired_vel`.
        factor: F ≥ 1, dividing T (static). F = 1 returns the episode unchanged (rewards × `reward_scale` if given).
        reward_scale: multiplies the block sums; None: 1 / F.

    Returns:
        The downsampled `Episode` (time axes of length T / F).
    """
    if not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"downsample factor must be a positive int, got {factor!r}")
    T = episode.rewards.shape[-1]
    if T % factor:
        raise ValueError(f"downsample factor {factor} does not divide the episode length T = {T}")
    scale = 1.0 / factor if reward_scale is None else reward_scale
    if factor == 1:
        return episode if reward_scale is None else episode.replace(rewards=episode.rewards * scale)

    def blocks(x):  # [..., T] -> [..., T / F, F]
        return x.reshape(*x.shape[:-1], T // factor, factor)

    def starts(x):  # [..., T, d] -> [..., T / F, d]
        return x[..., ::factor, :]

    return episode.replace(
        states=starts(episode.states), actions=episode.actions[..., factor - 1::factor, :],
        rewards=(blocks(episode.rewards).sum(axis=-1) * scale).astype(episode.rewards.dtype),
        dones=blocks(episode.dones).any(axis=-1), desired_pos=starts(episode.desired_pos),
        desired_vel=starts(episode.desired_vel))
