"""The per-step action space of the offline datasets made from the episodic MJX tasks.

The tasks are driven by desired joint positions/velocities that a PD controller tracks (`envs/base.py`); TOP-ERL
policies output ProDMP weights decoded into a whole desired trajectory. QT (specs/qt.md §8a) needs per-step
actions in [−1, 1] (its action head is a tanh). The spec does not fix which per-step quantity to use; this
project's choice is the **normalised PD command** that the task's controller applies in a step:

    reacher:     a = clip(Kp (q_d − q) + Kd (qd_d − qd), ±pd_limit) / pd_limit       (gravity bias added after)
    hopper jump: a = clip(Kp (q_d − q) + Kd (qd_d − qd), ±1)   (fancy_gym's env action, ×200 N m by the gear)

with (q, qd) the measured joint state before the step. Every component is in [−1, 1] by construction, and the
map is exactly invertible through the task's own `step`: choosing

    q_d = q + a · pd_limit / Kp,   qd_d = qd                 (`desired_from_action`)

makes the controller output exactly a · pd_limit, so replaying the recorded actions reproduces the recorded
episode (up to float rounding) with the unmodified task physics and reward. The alternative, desired pos/vel
per step, would be unbounded and task-scaled; the raw torque would include the gravity bias, which depends on
the state. Box pushing is not supported yet (its controller clips per joint with different limits).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from mujoco import mjx

from toperl_jax.envs.base import EnvState, EpisodicTask


def _spec(task: EpisodicTask) -> tuple[slice, float]:
    """(joint slice of qpos/qvel, pd limit) of a supported task."""
    if task.name == "reacher":
        return slice(0, 2), float(task.pd_limit)
    if task.name.startswith("hopper-jump"):
        return slice(3, 6), 1.0
    raise ValueError(f"per-step offline actions are implemented for reacher and hopper-jump-*, not {task.name!r}")


def check_supported(task: EpisodicTask) -> None:
    """Raise a ValueError naming the task if it has no per-step action map."""
    _spec(task)


def action_dim(task: EpisodicTask) -> int:
    return task.num_dof


def action_from_desired(task: EpisodicTask, data: mjx.Data, desired_pos, desired_vel) -> jax.Array:
    """[dof] normalised PD command in [−1, 1] that `task.step` applies for (desired_pos, desired_vel) in `data`."""
    js, limit = _spec(task)
    kp, kd = jnp.asarray(task.kp, jnp.float32), jnp.asarray(task.kd, jnp.float32)
    u = kp * (desired_pos - data.qpos[js]) + kd * (desired_vel - data.qvel[js])
    return jnp.clip(u, -limit, limit) / limit


def desired_from_action(task: EpisodicTask, data: mjx.Data, action) -> tuple[jax.Array, jax.Array]:
    """(desired_pos, desired_vel) [dof] that make `task.step` apply the normalised PD command `action`."""
    js, limit = _spec(task)
    kp = jnp.asarray(task.kp, jnp.float32)
    a = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
    return data.qpos[js] + a * limit / kp, data.qvel[js]


def step_action(task: EpisodicTask, state: EnvState, action) -> EnvState:
    """One task step driven by a normalised PD command `action` [dof]."""
    dp, dv = desired_from_action(task, state.mjx_data, action)
    return task.step(state, dp, dv)


class Recorded(NamedTuple):
    """One episode in the offline layout (T = steps executed).

    obs [T, S] (state before each step), actions [T, dof] (normalised PD commands), rewards [T] (env rewards),
    dones [T] (time limit after the step), final_obs [S], final_metrics {name: []}.
    """

    obs: jax.Array
    actions: jax.Array
    rewards: jax.Array
    dones: jax.Array
    final_obs: jax.Array
    final_metrics: dict


def record_desired(task: EpisodicTask, state: EnvState, desired: jax.Array) -> Recorded:
    """Execute a desired trajectory [T, 2 dof] (e.g. a decoded ProDMP) and record the per-step actions."""
    dof = task.num_dof

    def body(s, d):
        a = action_from_desired(task, s.mjx_data, d[:dof], d[dof:])
        s2 = task.step(s, d[:dof], d[dof:])
        return s2, (s.obs, a, s2.reward, s2.done)

    final, (obs, act, rew, done) = jax.lax.scan(body, state, desired)
    return Recorded(obs, act, rew, done, final.obs, final.metrics)


def record_actions(task: EpisodicTask, state: EnvState, actions: jax.Array) -> Recorded:
    """Execute normalised PD commands [T, dof] and record the episode (used by the random recipe and tests)."""

    def body(s, a):
        s2 = step_action(task, s, a)
        return s2, (s.obs, jnp.clip(a, -1.0, 1.0), s2.reward, s2.done)

    final, (obs, act, rew, done) = jax.lax.scan(body, state, actions)
    return Recorded(obs, act, rew, done, final.obs, final.metrics)


def start_from_obs(task: EpisodicTask, obs0: jax.Array) -> EnvState:
    """The start state of an episode reconstructed from its first observation [S] (to re-simulate the episodes of
    a TOP-ERL replay buffer, which stores observations and desired trajectories but no physics state).

    reacher: qpos, qvel and the goal are in the observation (the goal up to float rounding of goal / reach).
    hopper jump: qpos = obs[0:6], qvel = 0 (every reset has qvel = 0), goal = (obs[15], 0, 0).
    """
    _spec(task)
    if task.name == "reacher":
        data = task.new_data().replace(qpos=obs0[0:2], qvel=obs0[2:4])
        data = mjx.forward(task.mjx_model, data)
        goal = obs0[4:6] * task.reach
        base = task.reset(jax.random.PRNGKey(0))
        return base.replace(mjx_data=data, obs=obs0, desired_pos=data.qpos, desired_vel=data.qvel,
                            info={"goal": goal}, metrics=task._metrics(data, goal, jnp.zeros(2)))
    goal = jnp.stack([obs0[15], 0.0, 0.0])
    return task.reset_to(obs0[0:6], jnp.zeros(6), goal)
