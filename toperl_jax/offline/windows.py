"""Context windows for sequence policies (Decision Transformer, QT), sampled on the device by gather.

    data = prepare_windows(ds, scale=10.0, max_ep_len=1000)   # host: normalise, RTG, episode ends; to device
    batch = sample_windows(data, key, batch_size=256, K=20)    # jit-able: Window of [B, K, ...] arrays

Sampling (specs/qt.md §4): a window start t0 is drawn uniformly over all N steps of the dataset. This is exactly
upstream's two-stage draw (trajectory with probability ∝ its length, then a start uniform in it), without its
failure on trajectories shorter than K and without the hopper-only restriction t0 ≤ len − K − 1. The window is
steps t0 … min(t0 + K, end) − 1 of that episode; a window cut by the episode end has L < K valid steps, which
sit at the *end* of the window (left padding): position p holds step t0 + p − (K − L), valid iff p ≥ K − L.

Padding: every field is 0 at padded positions, and states are normalised *before* padding, so a padded state
is the zero vector in normalised units both here and at inference (upstream pads raw states with 0 before
normalising in training, i.e. −μ/σ, but pads normalised states with 0 at inference; spec §7.6).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from toperl_jax.offline.dataset import TrajectoryDataset, returns_to_go, state_stats


@struct.dataclass
class WindowData:
    """The dataset flat on the device, N steps.

    obs: [N, S] normalised states; actions [N, A]; rewards [N] raw; rtg [N] return-to-go / scale;
    timesteps [N] int32 step index within its episode, clipped to max_ep_len − 1; ep_end [N] int32 one past
    the last step of the step's episode; no_bootstrap [N] bool: the episode ends after this step without a
    successor state to bootstrap from (a termination, or a timeout when timeouts are treated as terminal).
    """

    obs: jax.Array
    actions: jax.Array
    rewards: jax.Array
    rtg: jax.Array
    timesteps: jax.Array
    ep_end: jax.Array
    no_bootstrap: jax.Array


@struct.dataclass
class Window:
    """A batch of windows, B × K. Fields as in WindowData plus mask [B, K] float32 (1 = valid step)."""

    obs: jax.Array
    actions: jax.Array
    rewards: jax.Array
    rtg: jax.Array
    timesteps: jax.Array
    mask: jax.Array
    no_bootstrap: jax.Array  # [B, K] bool (only the last position matters for QT's targets)


def prepare_windows(ds: TrajectoryDataset, scale: float, max_ep_len: int = 1000, bootstrap_timeouts: bool = True,
                    stats: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[WindowData, np.ndarray, np.ndarray]:
    """Host-side preprocessing. Returns (WindowData on the default device, state mean [S], state std [S]).

    bootstrap_timeouts: False treats a timeout like a termination for the targets (right for tasks whose
    observation contains the time, where the time limit is part of the MDP).
    """
    starts, ends = ds.episode_bounds(ds.metadata.get("max_episode_steps") if not ds.timeouts.any() else None)
    mean, std = stats if stats is not None else state_stats(ds.observations)
    rtg = returns_to_go(ds.rewards, starts, ends) / np.float32(scale)
    lengths = ends - starts
    ep_end = np.repeat(ends, lengths).astype(np.int32)
    timesteps = (np.arange(len(ds)) - np.repeat(starts, lengths)).clip(0, max_ep_len - 1).astype(np.int32)
    no_boot = ds.terminals | (ds.timeouts & (not bootstrap_timeouts))
    data = WindowData(obs=jnp.asarray((ds.observations - mean) / std), actions=jnp.asarray(ds.actions),
                      rewards=jnp.asarray(ds.rewards), rtg=jnp.asarray(rtg, jnp.float32),
                      timesteps=jnp.asarray(timesteps), ep_end=jnp.asarray(ep_end),
                      no_bootstrap=jnp.asarray(no_boot))
    return data, mean, std


def window_indices(t0: jax.Array, ep_end: jax.Array, K: int) -> tuple[jax.Array, jax.Array]:
    """(idx [..., K] int32 gather indices, mask [..., K] bool) of windows starting at t0 (left-padded)."""
    L = jnp.minimum(K, ep_end - t0)  # valid steps
    p = jnp.arange(K)
    idx = t0[..., None] + p - (K - L)[..., None]
    mask = p >= (K - L)[..., None]
    return jnp.where(mask, idx, 0).astype(jnp.int32), mask


def gather_windows(data: WindowData, t0: jax.Array, K: int) -> Window:
    """Windows of length K starting at steps t0 [B]."""
    idx, mask = window_indices(t0, data.ep_end[t0], K)
    m = mask.astype(jnp.float32)

    def g(x):
        v = x[idx]
        return v * m.reshape(m.shape + (1,) * (v.ndim - m.ndim)).astype(v.dtype) if v.dtype != bool else v & mask

    return Window(obs=g(data.obs), actions=g(data.actions), rewards=g(data.rewards), rtg=g(data.rtg),
                  timesteps=jnp.where(mask, data.timesteps[idx], 0), mask=m, no_bootstrap=g(data.no_bootstrap))


def sample_windows(data: WindowData, key: jax.Array, batch_size: int, K: int) -> Window:
    """B windows with starts uniform over all steps (see the module docstring)."""
    t0 = jax.random.randint(key, (batch_size,), 0, data.obs.shape[0])
    return gather_windows(data, t0, K)
