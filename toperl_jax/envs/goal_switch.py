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

`BoxPushingSwitch` (`box-pushing-dense-switch`, `box-pushing-sparse-switch`) is box pushing (`box_pushing.py`,
every formula unchanged) whose goal pose (position and quaternion) jumps from g_A to g_B at step k_s:

- reset is box pushing's reset from the key (box start and g_A); from a key folded off the reset key it draws
  g_B with the task's own goal sampler (`sample_goal`: uniform pose, xy redrawn until >= 0.3 m from the box
  *start*, as g_A) and k_s ~ U{switch_range[0] … switch_range[1]}; default T // 5 … T // 2 = 20 … 50 of
  T = 100, i.e. between 0.4 s and 1 s (why: `BoxPushingSwitch.switch_range`);
- the goal in force after step k is g_B if k >= k_s, else g_A: the observation (obs[21:28] = goal position,
  quaternion), the reward (dense terms every step; the sparse terminal terms at t = T) and the metrics after
  the step use it; the mocap goal marker follows it (videos show the switch);
- success (`is_success` at t = T) and the final distances are judged against g_B, since k_s <= T.

Its info holds "goal_pos"/"goal_quat" (the current goal, as box pushing), "goal_a_pos", "goal_a_quat",
"goal_b_pos", "goal_b_quat" and "switch_step".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from toperl_jax.envs.base import EnvState
from toperl_jax.envs.box_pushing import BoxPushing
from toperl_jax.envs.reacher import Reacher


class ReacherSwitch(Reacher):
    """Reacher whose goal switches once, at a random step (see the module docstring)."""

    name = "reacher-switch"
    switch_range = (10, 20)
    """Inclusive range of the control step k_s after which the second goal is in force."""

    def __init__(self, episode_length: int | None = None, switch_range: tuple[int, int] | None = None,
                 physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
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


class BoxPushingSwitch(BoxPushing):
    """Box pushing whose goal pose switches once, at a random step (see the module docstring).

    Args: those of `BoxPushing`, plus switch_range: inclusive range (lo, hi) of k_s, 1 <= lo <= hi <= T
    (default: (max(1, T // 5), max(lo, T // 2)), i.e. 20 … 50 for T = 100).
    """

    switch_range: tuple[int, int]
    """Inclusive range of the control step k_s from which the second goal is in force. The default 20 … 50 of
    T = 100 (20 % … 50 % of the episode): from step 20 (0.4 s) on, a plan made at reset has already committed
    the rod to g_A, so the switch is a real change mid-motion and not just a second goal known at reset; up to
    step 50 (1 s) there is at least half the episode left to bring the rod round the box and push it towards
    g_B (TOP-ERL's box-dense policies spend most of the 2 s on a >= 0.3 m push, so a later switch would mostly
    measure unreachable goals). k_s <= 50 also means that the box-dense replanning preset's second plan, at
    σ_1 = 50 of its fixed splits [50, 20, 30], always sees g_B — as σ_1 = 25 > 20 does for `reacher-switch`."""

    def __init__(self, reward_type: str = "dense", random_init: bool = True, episode_length: int | None = None,
                 switch_range: tuple[int, int] | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(reward_type, random_init, episode_length, physics_impl, warp_worlds)
        self.name = self.name + "-switch"
        T = self.episode_length
        if switch_range is None:
            lo = max(1, T // 5)
            switch_range = (lo, max(lo, T // 2))
        self.switch_range = tuple(int(s) for s in switch_range)
        if len(self.switch_range) != 2 or not 1 <= self.switch_range[0] <= self.switch_range[1] <= T:
            raise ValueError(f"switch_range must be (lo, hi) with 1 <= lo <= hi <= T={T}, got {switch_range}")

    def reset(self, key: jax.Array) -> EnvState:
        """Box pushing's reset from `key` (g_A is its goal), plus g_B and k_s from a key folded off `key`."""
        state = super().reset(key)
        k_b, k_s = jax.random.split(jax.random.fold_in(key, 0xB0C5))
        box_start = state.mjx_data.qpos[self._box_qpos:self._box_qpos + 3]
        goal_b_pos, goal_b_quat = self.sample_goal(k_b, box_start)
        switch = jax.random.randint(k_s, (), self.switch_range[0], self.switch_range[1] + 1, dtype=jnp.int32)
        info = state.info
        return state.replace(info={**info, "goal_a_pos": info["goal_pos"], "goal_a_quat": info["goal_quat"],
                                   "goal_b_pos": goal_b_pos, "goal_b_quat": goal_b_quat, "switch_step": switch})

    def step(self, state: EnvState, desired_pos: jax.Array, desired_vel: jax.Array) -> EnvState:
        """One box-pushing step; the goal (info, observation, reward, metrics, marker) is g_B from step k_s on."""
        info = state.info
        after = state.time_step + 1 >= info["switch_step"]
        goal_pos = jnp.where(after, info["goal_b_pos"], info["goal_a_pos"])
        goal_quat = jnp.where(after, info["goal_b_quat"], info["goal_a_quat"])
        data = state.mjx_data.replace(mocap_pos=goal_pos[None], mocap_quat=goal_quat[None])
        return super().step(state.replace(mjx_data=data, info={**info, "goal_pos": goal_pos, "goal_quat": goal_quat}),
                            desired_pos, desired_vel)
