"""Goal-switching tasks: the target moves once, at a random time during the episode (replanning matters).

`ReacherSwitch` (`reacher-switch`) is the reacher (`reacher.py`, every formula unchanged) whose goal jumps
from a first goal g_A to a second goal g_B at a random control step k_s:

- reset draws g_A and g_B independently from the reacher's goal distribution and
  k_s ~ U{switch_range[0] … switch_range[1]} (default 10 … 20 of T = 50, i.e. between 0.2 s and 0.4 s);
- the goal in force after step k (k = 1 … T) is g_B if k ≥ k_s, else g_A. The observation, the reward and the
  metrics after a step use the goal in force then, so the observation always shows the current target
  (obs[4:6] = goal / reach); s_0 … s_{k_s − 1} show g_A, s_{k_s} … show g_B;
- success = fingertip within 2 cm of g_B at the last step (`is_success` of the final state).

A policy that plans once at reset (plain TOP-ERL) sees only g_A and succeeds only when g_B happens to be near
it; a policy that replans after k_s sees g_B and can move there (one split start in (k_s, T) suffices, e.g.
equal splits N = 2: σ_1 = 25).

The switch step and both goals live in `EnvState.info` ("goal" = the current goal, "goal_a", "goal_b",
"switch_step"); everything is drawn from the reset key, so the same key gives the same episode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from toperl_jax.envs.base import EnvState
from toperl_jax.envs.reacher import Reacher


class ReacherSwitch(Reacher):
    """Reacher whose goal switches once, at a random step (see the module docstring)."""

    name = "reacher-switch"
    switch_range = (10, 20)
    """Inclusive range of the control step k_s after which the second goal is in force."""

    def __init__(self, episode_length: int | None = None, switch_range: tuple[int, int] | None = None):
        super().__init__(episode_length)
        if switch_range is not None:
            self.switch_range = tuple(int(s) for s in switch_range)
        lo, hi = self.switch_range
        if not 1 <= lo <= hi <= self.episode_length:
            raise ValueError(f"switch_range must satisfy 1 <= lo <= hi <= T={self.episode_length}, "
                             f"got {self.switch_range}")

    def _draw_goal(self, key: jax.Array) -> jax.Array:
        k_r, k_a = jax.random.split(key)
        r = jax.random.uniform(k_r, (), minval=self.goal_radius_range[0], maxval=self.goal_radius_range[1])
        a = jax.random.uniform(k_a, (), minval=self.goal_angle_range[0], maxval=self.goal_angle_range[1])
        return r * jnp.stack([jnp.cos(a), jnp.sin(a)])

    def reset(self, key: jax.Array) -> EnvState:
        """The reacher's reset from `key` (g_A is its goal), plus g_B and k_s from a key folded off `key`."""
        state = super().reset(key)
        k_b, k_s = jax.random.split(jax.random.fold_in(key, 0x5717C4))
        goal_b = self._draw_goal(k_b)
        switch = jax.random.randint(k_s, (), self.switch_range[0], self.switch_range[1] + 1, dtype=jnp.int32)
        goal_a = state.info["goal"]
        return state.replace(info={"goal": goal_a, "goal_a": goal_a, "goal_b": goal_b, "switch_step": switch})

    def step(self, state: EnvState, desired_pos: jax.Array, desired_vel: jax.Array) -> EnvState:
        """One reacher step; the goal of the new state is g_B from step k_s on."""
        info = state.info
        goal = jnp.where(state.time_step + 1 >= info["switch_step"], info["goal_b"], info["goal_a"])
        new = super().step(state.replace(info={**info, "goal": goal}), desired_pos, desired_vel)
        return new
