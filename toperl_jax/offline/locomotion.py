"""brax's MJX locomotion tasks (hopper, walker2d, halfcheetah) as a source of offline datasets (issue 7).

The D4RL gym-locomotion datasets cannot be downloaded here, and D4RL's MuJoCo-2.1 gym environments cannot be run,
so the locomotion set is rebuilt on brax's own environments with the MJX backend (`brax.envs.get_environment(name,
backend="mjx")`; observation/action sizes: hopper 11/3, walker2d 17/6, halfcheetah 17/6). Their dynamics and reward
scales differ from gym's, so D4RL's reference returns do not transfer (specs/qt.md §8d): each dataset records the
random and expert returns of *this* env.

Episodes follow D4RL's conventions: at most `episode_length` (1000) steps; hopper and walker2d terminate when
unhealthy (`terminals` = 1 at that step), an episode that reaches the time limit ends with `timeouts` = 1 and
`terminals` = 0; halfcheetah never terminates. Actions are brax's, in [−1, 1] (QT's tanh head fits them as they
are).

    env = locomotion.make_env("hopper")
    ep = jax.jit(lambda k: locomotion.rollout(env, act_fn, k, 8, 1000))(key)
    columns = locomotion.flatten(ep)     # the D4RL columns of the 8 episodes
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

ENVS = ("hopper", "walker2d", "halfcheetah")
PREFIX = "brax-"  # dataset `env` attribute: "brax-hopper", ... (this project's MJX tasks have no prefix)


def is_locomotion(name: str) -> bool:
    return name.startswith(PREFIX)


def make_env(name: str):
    """brax's MJX environment `name` ("hopper" or "brax-hopper", ...), without training wrappers."""
    base = name.removeprefix(PREFIX)
    if base not in ENVS:
        raise ValueError(f"unknown locomotion env {name!r}; accepted: {', '.join(PREFIX + e for e in ENVS)}")
    import warnings

    from brax import envs as brax_envs

    with warnings.catch_warnings():  # brax's "not actively maintained" notice on every construction
        warnings.simplefilter("ignore", UserWarning)
        return brax_envs.get_environment(base, backend="mjx")


def _device_put_replicated(x, devices):
    """Stand-in for `jax.device_put_replicated` (removed in jax 0.10): x stacked along a new leading axis of
    len(devices), one slice per device (what `jax.pmap` expects of replicated inputs)."""
    mesh = jax.sharding.Mesh(np.asarray(devices), ("d",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
    return jax.tree.map(lambda a: jax.device_put(jnp.stack([jnp.asarray(a)] * len(devices)), sharding), x)


@contextlib.contextmanager
def brax_trainer_compat():
    """brax 0.14.2's PPO and SAC trainers (the newest release) call `jax.device_put_replicated`, which jax 0.10
    removed; inside this context the name exists again (the stand-in above), so the trainers run unchanged."""
    if hasattr(jax, "device_put_replicated"):
        yield
        return
    jax.device_put_replicated = _device_put_replicated
    try:
        yield
    finally:
        del jax.device_put_replicated


class Episodes(NamedTuple):
    """n episodes of at most T steps, zero-padded after termination ([n, T, ...]).

    obs: state before each step; actions, rewards; done: the env's termination flag after the step;
    valid: the step belongs to the episode (no termination before it).
    """

    obs: jax.Array
    actions: jax.Array
    rewards: jax.Array
    done: jax.Array
    valid: jax.Array


def rollout(env, act_fn: Callable, key: jax.Array, n: int, T: int) -> Episodes:
    """Run n episodes of ≤ T steps from fresh resets; `act_fn(obs [n, S], key) -> actions [n, A]` (clipped to
    [−1, 1] here). Steps after an episode's first termination are not valid (zeros); the loop stops as soon as every
    episode has terminated, so batches of short episodes (random actions, early snapshots) cost their longest
    episode, not T steps."""
    k_reset, key = jax.random.split(key)
    start = jax.vmap(env.reset)(jax.random.split(k_reset, n))
    keys = jax.random.split(key, T)
    f32 = jnp.float32
    buf = Episodes(jnp.zeros((T, n, env.observation_size), f32), jnp.zeros((T, n, env.action_size), f32),
                   jnp.zeros((T, n), f32), jnp.zeros((T, n), bool), jnp.zeros((T, n), bool))

    def running(c):
        t, _, alive, _ = c
        return (t < T) & jnp.any(alive)

    def step(c):
        t, state, alive, buf = c
        a = jnp.clip(act_fn(state.obs, keys[t]), -1.0, 1.0)
        nxt = jax.vmap(env.step)(state, a)
        done = nxt.done > 0
        row = Episodes(state.obs, a, nxt.reward, done, alive)
        buf = jax.tree.map(lambda b, x: b.at[t].set(jnp.where(alive.reshape((n,) + (1,) * (x.ndim - 1)), x, 0)
                                                      .astype(b.dtype)), buf, row)
        return t + 1, nxt, alive & ~done, buf

    _, _, _, buf = jax.lax.while_loop(running, step, (jnp.int32(0), start, jnp.ones(n, bool), buf))
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), buf)


def flatten(ep: Episodes) -> dict[str, np.ndarray]:
    """Episodes [n, T, ...] → the flat D4RL columns (episodes one after another, only valid steps).

    terminals = the env terminated at that step; timeouts = the last step of an episode that reached T steps."""
    valid = np.asarray(ep.valid, bool)
    done = np.asarray(ep.done, bool) & valid
    timeouts = np.zeros_like(valid)
    timeouts[:, -1] = valid[:, -1] & ~done[:, -1]
    keep = valid.reshape(-1)
    take = lambda x: np.asarray(x).reshape(keep.size, *np.shape(x)[2:])[keep]
    return {"observations": take(ep.obs).astype(np.float32), "actions": take(ep.actions).astype(np.float32),
            "rewards": take(ep.rewards).astype(np.float32), "terminals": done.reshape(-1)[keep],
            "timeouts": timeouts.reshape(-1)[keep]}


def episode_returns(ep: Episodes) -> np.ndarray:
    """[n] undiscounted returns over the valid steps."""
    return np.sum(np.where(np.asarray(ep.valid), np.asarray(ep.rewards, np.float64), 0.0), axis=1)
