"""The evaluation environment of an offline dataset: reset / per-step action → next state, for this project's MJX
tasks (through the per-step action map of `offline.actions`) and brax's locomotion tasks (`offline.locomotion`).

Both kinds of state carry `obs`, `reward`, `done` (termination or time limit after the step) and `metrics`.
An evaluator runs `episode_length` steps and counts rewards only until the first `done`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp

from toperl_jax.offline import actions, locomotion

# task metrics that are meaningful at the end of an episode (success, final distance, jump height)
FINAL_METRICS = ("is_success", "distance", "max_height", "goal_dist")


class EvalEnv(NamedTuple):
    name: str
    obs_size: int
    action_size: int
    episode_length: int
    reset: Callable  # key -> state
    step: Callable  # (state, action [A] in [-1, 1]) -> state
    final_metrics: tuple[str, ...]  # names in state.metrics to report at the end of an episode


def check_physics(name: str, physics_impl: str) -> None:
    """Raise ValueError unless `physics_impl` can run the evaluation env `name` (brax's locomotion envs: 'jax' only)."""
    from toperl_jax import envs

    envs.check_physics_impl(physics_impl)
    if locomotion.is_locomotion(name) and physics_impl != "jax":
        raise ValueError(f"physics_impl {physics_impl!r} is for this project's MJX tasks; brax's {name} runs on "
                         "MJX-JAX only (physics_impl 'jax')")


def make_eval_env(name: str, physics_impl: str = "jax", warp_worlds: int = 1) -> EvalEnv:
    """The env a dataset's `env` attribute names: "brax-hopper" etc., or a task of `toperl_jax.envs` on
    `physics_impl` ('jax' or 'warp'; with 'warp', `warp_worlds` is the most episodes stepped together, see
    `toperl_jax.envs.base.make_data`). brax's locomotion envs run on MJX-JAX only."""
    check_physics(name, physics_impl)
    if locomotion.is_locomotion(name):
        env = locomotion.make_env(name)
        return EvalEnv(name, env.observation_size, env.action_size, 1000, env.reset,
                       lambda s, a: env.step(s, jnp.clip(a, -1.0, 1.0)), ())
    from toperl_jax import envs

    if name not in envs.task_names():
        raise ValueError(f"unknown evaluation env {name!r}; accepted: "
                         f"{', '.join([*envs.task_names(), *(locomotion.PREFIX + e for e in locomotion.ENVS)])}")
    task = envs.make(name, physics_impl=physics_impl, warp_worlds=warp_worlds)
    actions.check_supported(task)
    return EvalEnv(task.name, task.obs_size, task.num_dof, task.episode_length, task.reset,
                   functools.partial(actions.step_action, task),
                   tuple(n for n in FINAL_METRICS if n in task.metric_names))
