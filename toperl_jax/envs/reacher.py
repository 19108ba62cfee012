"""Reacher: a planar two-link arm (MJX) that must bring its fingertip to a random goal.

Small and contact-free, so that an agent learns it on a 2-core CPU in minutes; it uses the same
PD-tracking interface as the fancy_gym tasks (desired joint pos/vel per step).

Physics (`reacher.xml`): two hinge joints in the vertical x-z plane (axes along y, gravity -z on,
so the controller's qfrc_bias term matters), links 0.10 m and 0.11 m of 0.5 kg each, armature
0.005, no contacts. The shoulder is free; the elbow bends one way only, range [-0.2, 2.9] rad (a
joint limit, the model's only constraint). Physics timestep 0.01 s (Euler), frame_skip 2, so the
control step is dt = 0.02 s; T = 50 control steps (1 s episodes).

Why the elbow limit: without it every goal has two inverse-kinematics solutions (elbow bent either
way), mirror images whose average is the straight arm. A TOP-ERL agent trained on the unlimited arm
bent the elbow one way for goals below the shoulder and the other way above it, by about the same
angle whatever the goal's distance, and reached none of the goals within 13 cm of the shoulder, where
the two solutions are far apart (docs/top_erl.md). With the limit the solution is unique (elbow
angle in [0.62, 2.67] rad for the goal radii below).

Reset: q ~ U(-0.1, 0.1)^2 rad, qd ~ U(-0.1, 0.1)^2 rad/s; goal g = r (cos a, sin a) in the x-z
plane with r ~ U(0.05, 0.20) m, a ~ U(-pi/2, pi/2) (the half plane in front of the shoulder, x >= 0,
inside the 0.21 m reach). Restricting a to a half plane keeps the goal -> joint-angle map continuous (a
full circle would force a discontinuity behind the arm), which is what lets an agent learn it in minutes.

Control (see base.py): tau = clip(clip(Kp (q_d - q) + Kd (qd_d - qd), +-3) + qfrc_bias, +-3) N m,
Kp = 10 N m/rad, Kd = 0.5 N m s/rad per joint, held for frame_skip substeps.

Reward after each step (p = fingertip x-z position after the step, d = ||p - g||_2 in m):
    r = -d + precision_weight * exp(-(d / precision_scale)^2) - ctrl_cost_weight * sum_j (tau_j / torque_limit)^2
with precision_weight = 1, precision_scale = 0.03 m, ctrl_cost_weight = 0.01. The distance term pulls the
fingertip towards the goal; the Gaussian precision term pays up to 1 per step for being within a few cm, so
that the last centimetres (which decide success) are worth something against the transit's distance cost.
Metrics after each step: distance = ||p - g||, is_success = float(distance < 0.02 m),
ctrl_cost = the subtracted control term. The episode's success is `is_success` at the last step.

Observation [9]: qpos (2), qvel (2), goal x-z / reach (2), fingertip x-z / reach (2), t / duration (1)
(reach = 0.21 m, so positions are O(1) like the joint angles; t = time_step * dt, so 0 at reset and 1
after the last step). Rewards and metrics use metres.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from toperl_jax.envs.base import EnvState, EpisodicTask, pd_torque
from toperl_jax.mp import ProDMPConfig

XML_PATH = pathlib.Path(__file__).with_name("reacher.xml")


class Reacher(EpisodicTask):
    """Planar 2-dof reaching task (see the module docstring for every formula)."""

    name = "reacher"
    num_dof = 2
    episode_length = 50
    """T, control steps per episode."""
    frame_skip = 2
    """Physics substeps (of `timestep` = 0.01 s) per control step."""
    obs_size = 9
    metric_names = ("distance", "is_success", "ctrl_cost")

    kp = (10.0, 10.0)
    """PD position gains, N m / rad."""
    kd = (0.5, 0.5)
    """PD velocity gains, N m s / rad."""
    pd_limit = 3.0
    """Clip of the PD part before adding the bias, N m."""
    torque_limit = 3.0
    """Clip of the total joint torque (= actuator ctrlrange), N m."""
    ctrl_cost_weight = 0.01
    """Weight of sum_j (tau_j / torque_limit)^2 in the reward."""
    precision_weight = 1.0
    """Weight of the precision term exp(-(d / precision_scale)^2) in the reward."""
    precision_scale = 0.03
    """Length scale (m) of the precision term."""
    success_radius = 0.02
    """Success: fingertip within this distance (m) of the goal at the last step."""
    goal_radius_range = (0.05, 0.20)
    """Goal distance from the shoulder, m (uniform)."""
    goal_angle_range = (-0.5 * np.pi, 0.5 * np.pi)
    """Goal angle from the +x axis in the x-z plane, rad (uniform)."""
    reach = 0.21
    """Arm length (m); observed positions are divided by it."""
    init_pos_noise = 0.1
    """Initial joint positions ~ U(-x, x) rad."""
    init_vel_noise = 0.1
    """Initial joint velocities ~ U(-x, x) rad/s."""

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        if episode_length is not None:
            if int(episode_length) < 1:
                raise ValueError(f"episode_length must be >= 1, got {episode_length}")
            self.episode_length = int(episode_length)
        self.init_physics(mujoco.MjModel.from_xml_path(str(XML_PATH)), physics_impl, warp_worlds)
        self.dt = float(self.mj_model.opt.timestep) * self.frame_skip
        self._tip = self.mj_model.site("fingertip").id

    def prodmp_config(self) -> ProDMPConfig:
        """Suggested decoder: 4 basis per joint + goal, tau = episode duration (1 s)."""
        return ProDMPConfig(num_dof=self.num_dof, num_basis=4, tau=self.duration, dt=self.dt,
                            alpha_phase=3.0, alpha=10.0, basis_bandwidth_factor=3.0,
                            weights_scale=1.0, goal_scale=1.0, auto_scale_basis=True)

    # -- helpers -----------------------------------------------------------------------------
    def fingertip(self, data: mjx.Data) -> jax.Array:
        """[2] fingertip x-z position of a forwarded data."""
        return data.site_xpos[self._tip][jnp.array([0, 2])]

    def _obs(self, data: mjx.Data, goal: jax.Array, time_step: jax.Array) -> jax.Array:
        t = time_step.astype(jnp.float32) / self.episode_length
        return jnp.concatenate([data.qpos, data.qvel, goal / self.reach, self.fingertip(data) / self.reach,
                                t[None]])

    def _metrics(self, data, goal, tau):
        dist = jnp.linalg.norm(self.fingertip(data) - goal)
        ctrl = self.ctrl_cost_weight * jnp.sum(jnp.square(tau / self.torque_limit))
        return {"distance": dist, "is_success": (dist < self.success_radius).astype(jnp.float32),
                "ctrl_cost": ctrl}

    def reward(self, metrics: dict[str, jax.Array]) -> jax.Array:
        """r = -d + precision_weight exp(-(d / precision_scale)^2) - ctrl_cost (metrics after the step)."""
        d = metrics["distance"]
        return -d + self.precision_weight * jnp.exp(-jnp.square(d / self.precision_scale)) - metrics["ctrl_cost"]

    # -- interface ---------------------------------------------------------------------------
    def reset(self, key: jax.Array) -> EnvState:
        """New episode from `key` [2] uint32 (same key -> same episode)."""
        key, k_q, k_v, k_r, k_a = jax.random.split(key, 5)
        q = jax.random.uniform(k_q, (2,), minval=-self.init_pos_noise, maxval=self.init_pos_noise)
        qd = jax.random.uniform(k_v, (2,), minval=-self.init_vel_noise, maxval=self.init_vel_noise)
        r = jax.random.uniform(k_r, (), minval=self.goal_radius_range[0],
                               maxval=self.goal_radius_range[1])
        a = jax.random.uniform(k_a, (), minval=self.goal_angle_range[0], maxval=self.goal_angle_range[1])
        goal = r * jnp.stack([jnp.cos(a), jnp.sin(a)])
        data = self.new_data().replace(qpos=q, qvel=qd)
        data = mjx.forward(self.mjx_model, data)
        time_step = jnp.zeros((), jnp.int32)
        metrics = self._metrics(data, goal, jnp.zeros(2))
        return EnvState(mjx_data=data, obs=self._obs(data, goal, time_step), time_step=time_step,
                        desired_pos=data.qpos, desired_vel=data.qvel,
                        reward=jnp.zeros((), jnp.float32), done=jnp.zeros((), bool),
                        metrics=metrics, info={"goal": goal}, key=key)

    def torque(self, state: EnvState, desired_pos, desired_vel) -> jax.Array:
        """[2] joint torque the PD controller applies in this step."""
        d = state.mjx_data
        return pd_torque(desired_pos, desired_vel, d.qpos, d.qvel, jnp.asarray(self.kp),
                         jnp.asarray(self.kd), d.qfrc_bias, self.pd_limit, self.torque_limit)

    def step(self, state: EnvState, desired_pos: jax.Array, desired_vel: jax.Array) -> EnvState:
        """One control step. desired_pos, desired_vel: [2]."""
        desired_pos = jnp.asarray(desired_pos, jnp.float32)
        desired_vel = jnp.asarray(desired_vel, jnp.float32)
        tau = self.torque(state, desired_pos, desired_vel)
        data = state.mjx_data.replace(ctrl=tau)
        data = jax.lax.fori_loop(0, self.frame_skip,
                                 lambda _, d: mjx.step(self.mjx_model, d), data)
        data = mjx.forward(self.mjx_model, data)  # kinematics + bias of the new state
        goal = state.info["goal"]
        time_step = state.time_step + 1
        metrics = self._metrics(data, goal, tau)
        return state.replace(mjx_data=data, obs=self._obs(data, goal, time_step),
                             time_step=time_step, desired_pos=desired_pos,
                             desired_vel=desired_vel, reward=self.reward(metrics),
                             done=time_step >= self.episode_length, metrics=metrics)

    # -- rendering hook (toperl_jax.envs.render) ---------------------------------------------
    def render_scene(self, model: mujoco.MjModel, data: mujoco.MjData, info: dict) -> list:
        """The goal is not part of the model: draw it as a green sphere in the x-z plane."""
        if "goal" not in info:
            return []
        gx, gz = np.asarray(info["goal"], np.float64)
        return [{"pos": (gx, 0.0, gz), "size": self.success_radius, "rgba": (0.2, 0.8, 0.2, 0.8)}]


def numpy_controller(task: Reacher, m: mujoco.MjModel, d: mujoco.MjData, desired_pos,
                     desired_vel) -> np.ndarray:
    """The same PD + bias controller on a native MuJoCo data (for benchmarks/cross-checks)."""
    u = np.clip(np.asarray(task.kp) * (desired_pos - d.qpos)
                + np.asarray(task.kd) * (desired_vel - d.qvel), -task.pd_limit, task.pd_limit)
    return np.clip(u + d.qfrc_bias, -task.torque_limit, task.torque_limit)
