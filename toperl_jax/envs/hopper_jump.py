"""Hopper jump (MJX): a planar one-legged hopper must jump as high as it can and land its foot on a
goal on the floor. Re-implements fancy_gym's `fancy/HopperJumpSparse-v0` (TOP-ERL's task) and
`fancy/HopperJump-v0` (dense) behind the episodic PD-tracking interface of `base.py`
(specs/tasks_fancy_gym.md, section B; TCE controller, section D).

Physics (`hopper_jump.xml`, the numbers of fancy_gym's hopper_jump.xml): gymnasium Hopper, RK4,
timestep 0.002 s, frame_skip 4, so the control step is dt = 0.008 s; T = 250 control steps (2 s).
qpos = [x, z, pitch, thigh, leg, foot] (z = torso height, rootz has ref 1.25), nv = 6.
Contact pair margin 0.001 m as upstream (MuJoCo 2.3.3 took the max of the geoms' 0.001 margins;
MuJoCo 4 and MJX add them, so the XML gives each geom 0.0005).

Reset (same key -> same episode):
    qpos = [0, 1.5, 0, U(-0.5, 0), U(-0.2, 0), U(0, 0.785)],  qvel = 0   (starts 0.25 m up, drops)
    goal g = (U(0.3, 1.35), 0, 0);  max_height = 0;  all contact latches cleared.

Control (TCE PD on the three leg joints, fancy_gym's defaults Kp = 1.0, Kd = 0.1; no bias term,
unlike `base.pd_torque`: upstream's MotorController feeds the raw PD output to the env):
    a   = clip(Kp (q_d - q[3:6]) + Kd (qd_d - qd[3:6]), -1, 1)       (the env action)
    tau = 200 a  N m   (actuator gear 200, ctrlrange [-1, 1]), held for the 4 substeps.

After the 4 substeps (read from the data exactly as `mjx.step` leaves it, as upstream reads it
after `mj_step`: qpos/qvel are the new state, kinematics and contacts those of the last RK4 stage):
    z_t         = torso body z (xpos);           max_height = max(max_height, z_t)
    p_t         = foot_site position;            goal_dist_t = ||p_t - g||  (3-D)
    c_t         = any floor-foot_geom contact with dist < margin (forced False once
                  contact_with_floor is set, as upstream)
    init_floor_contact |= c_t
    has_left_floor     |= init_floor_contact and not c_t
    contact_with_floor |= has_left_floor and c_t;  contact_dist = goal_dist_t at the step where
                          contact_with_floor becomes True (0 until then)
    healthy_t   = 1[qpos[1] > 0.5 and |qpos[2:]| < 100 and |qvel| < 100]   (strict)

Rewards (a = the clipped action; never terminates, the episode ends at the time limit T):
    sparse:  r_t = -1e-3 ||a||^2                                            for t < T
             r_T = -1e-3 ||a||^2 + 2 healthy - 3 goal_dist + 10 max_height - 2 (contact_dist or 5)
             ("contact_dist or 5": 5 when contact_dist is unset or exactly 0, as Python's `or`)
    dense:   r_t = healthy - 3 goal_dist_t + 3 z_t - 1e-3 ||a||^2
    (upstream gives the sparse term at its 250th step; with episode_length != 250 it is given at
    the last step of the episode.)

TOP-ERL's agent-side redistribution of the sparse reward (`redistribute_sparse_reward`,
top_erl.md §6): with k = first step whose has_left_floor is set, if k > 0:
    r_k <- sum_{t >= k} r_t,   r_t <- 0 for t > k.

Observation [17]: qpos (6), clip(qvel, +-10) (6), foot_site - goal (3), goal_x (1), t / duration (1).
Metrics after each step (float32): see `HopperJump.metric_names`; at the last step TOP-ERL logs
max_height, goal_dist, height_rew, healthy_reward.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from toperl_jax.envs.base import EnvState, EpisodicTask, Rollout, warp_contacts
from toperl_jax.mp import ProDMPConfig

XML_PATH = pathlib.Path(__file__).with_name("hopper_jump.xml")


def redistribute_sparse_reward(rewards: jax.Array, has_left_floor: jax.Array) -> jax.Array:
    """TOP-ERL's `make_mdp_reward` for hopper jump: move the reward earned after take-off to the
    take-off step, so that the value of a state after take-off no longer depends on the past.

    Args:
        rewards: [..., T] per-step rewards of an episode (leading batch dims allowed).
        has_left_floor: [..., T] the has_left_floor latch after each step (bool or 0/1).
    Returns:
        [..., T] rewards: with e_t = has_left_floor_t and k = argmax_t e_t (the first set step),
        if k > 0: r_k <- sum_t e_t r_t (= sum_{t >= k} r_t for the latch), r_t <- 0 for t > k;
        otherwise (never left the floor, or already at step 0) unchanged.
    """
    rewards = jnp.asarray(rewards)
    e = jnp.asarray(has_left_floor).astype(bool)
    k = jnp.argmax(e, axis=-1)
    moved = k > 0
    total = jnp.sum(jnp.where(e, rewards, 0), axis=-1)
    t = jnp.arange(rewards.shape[-1])
    at_k = t == k[..., None]
    after_k = t > k[..., None]
    out = jnp.where(at_k, total[..., None], jnp.where(after_k, 0, rewards))
    return jnp.where(moved[..., None], out, rewards).astype(rewards.dtype)


class HopperJump(EpisodicTask):
    """fancy_gym hopper jump in MJX (see the module docstring for every formula).

    Args:
        sparse: True = `HopperJumpSparse` (TOP-ERL's task, reward at the last step);
            False = `HopperJump` (dense reward every step, healthy weight 1, height weight 3,
            no contact term).
        episode_length: T (default 250).
    """

    num_dof = 3
    episode_length = 250
    """T, control steps per episode."""
    frame_skip = 4
    """Physics substeps (of `timestep` = 0.002 s, RK4) per control step."""
    obs_size = 17
    metric_names = ("height", "max_height", "goal_dist", "height_rew", "healthy", "healthy_reward",
                    "contact_dist", "floor_contact", "init_floor_contact", "has_left_floor",
                    "contact_with_floor", "ctrl_cost", "foot_x")

    kp = 1.0
    """PD position gain (on the normalised action, which is then x200 N m)."""
    kd = 0.1
    """PD velocity gain."""
    ctrl_cost_weight = 1e-3
    """Weight of ||a||^2 (a = clipped action in [-1, 1]^3)."""
    dist_weight = 3.0
    """Weight of the foot-to-goal distance."""
    healthy_z_min = 0.5
    """healthy needs qpos[1] > this."""
    healthy_state_max = 100.0
    """healthy needs |qpos[2:]|, |qvel| < this."""
    obs_vel_clip = 10.0
    """Velocities are clipped to +-this in the observation."""
    init_height = 1.5
    """qpos[1] at reset (the model's rest height is 1.25)."""
    init_joint_range = ((-0.5, 0.0), (-0.2, 0.0), (0.0, 0.785))
    """Uniform ranges of thigh, leg, foot at reset (rad)."""
    goal_x_range = (0.3, 1.35)
    """Uniform range of the goal's x (m)."""
    no_contact_dist = 5.0
    """Stand-in for contact_dist in the sparse reward when there was no landing."""
    render_camera = "track"
    """Camera for toperl_jax.envs.render (follows the centre of mass, side view)."""

    def __init__(self, sparse: bool = True, episode_length: int | None = None,
                 physics_impl: str = "jax", warp_worlds: int = 1):
        self.sparse = bool(sparse)
        self.name = "hopper-jump-sparse" if self.sparse else "hopper-jump-dense"
        # upstream: HopperJumpSparse healthy 2, height 10, contact 2; HopperJump 1, 3, 0
        self.healthy_weight = 2.0 if self.sparse else 1.0
        self.height_weight = 10.0 if self.sparse else 3.0
        self.contact_weight = 2.0 if self.sparse else 0.0
        if episode_length is not None:
            if int(episode_length) < 1:
                raise ValueError(f"episode_length must be >= 1, got {episode_length}")
            self.episode_length = int(episode_length)
        self.init_physics(mujoco.MjModel.from_xml_path(str(XML_PATH)), physics_impl, warp_worlds)
        m = self.mj_model
        self.dt = float(m.opt.timestep) * self.frame_skip
        self._torso = m.body("torso").id
        self._foot_site = m.site("foot_site").id
        self._floor = m.geom("floor").id
        self._foot_geom = m.geom("foot_geom").id
        self.goal_body = m.body("goal_site_body").id
        """Body id of the goal marker (render writes the goal into its body_pos)."""

    def prodmp_config(self) -> ProDMPConfig:
        """TOP-ERL's agent-side decoder (spec D): 3 basis per joint + goal, tau 0.8 s,
        alpha_phase 3, bandwidth 3, alpha 10, weights/goal scale 1, auto basis scaling."""
        return ProDMPConfig(num_dof=self.num_dof, num_basis=3, tau=0.8, dt=self.dt,
                            alpha_phase=3.0, alpha=10.0, basis_bandwidth_factor=3.0,
                            weights_scale=1.0, goal_scale=1.0, auto_scale_basis=True)

    # -- helpers -----------------------------------------------------------------------------
    def floor_contact(self, data: mjx.Data) -> jax.Array:
        """[] bool: any floor-foot_geom contact within the contact margin in `data`'s contacts."""
        if self.physics_impl == "warp":
            geom, _, active = warp_contacts(data)
        else:
            con = data._impl.contact   # MJX 3.17 keeps the contact list on the JAX implementation
            geom, active = con.geom, con.dist < con.includemargin
        g1, g2 = geom[:, 0], geom[:, 1]
        pair = ((g1 == self._floor) & (g2 == self._foot_geom)) | ((g1 == self._foot_geom) & (g2 == self._floor))
        return jnp.any(pair & active)

    def action(self, data: mjx.Data, desired_pos: jax.Array, desired_vel: jax.Array) -> jax.Array:
        """[3] env action a = clip(Kp (q_d - q) + Kd (qd_d - qd), +-1) on qpos/qvel[3:6]."""
        u = self.kp * (desired_pos - data.qpos[3:6]) + self.kd * (desired_vel - data.qvel[3:6])
        return jnp.clip(u, -1.0, 1.0)

    def healthy(self, data: mjx.Data) -> jax.Array:
        """[] bool: qpos[1] > 0.5 and every |qpos[2:]|, |qvel| < 100 (upstream is_healthy)."""
        lim = self.healthy_state_max
        state = jnp.concatenate([data.qpos[2:], data.qvel])
        return (data.qpos[1] > self.healthy_z_min) & jnp.all((state > -lim) & (state < lim))

    def _obs(self, data: mjx.Data, goal: jax.Array, time_step: jax.Array) -> jax.Array:
        t = time_step.astype(jnp.float32) / self.episode_length
        qvel = jnp.clip(data.qvel, -self.obs_vel_clip, self.obs_vel_clip)
        foot = data.site_xpos[self._foot_site]
        return jnp.concatenate([data.qpos, qvel, foot - goal, goal[:1], t[None]])

    def post_step(self, data: mjx.Data, info: dict, a: jax.Array, time_step: jax.Array):
        """Latches, metrics and reward of the state in `data` reached by action `a` [3].

        Args:
            data: physics data after the step; info: the previous state's info (goal [3],
                max_height, contact_dist [] float32; init_floor_contact, has_left_floor,
                contact_with_floor [] bool); time_step: [] int32 steps taken incl. this one.
        Returns:
            (info, metrics {name: [] float32}, reward [] float32).
        """
        z = data.xpos[self._torso, 2]
        foot = data.site_xpos[self._foot_site]
        goal = info["goal"]
        max_height = jnp.maximum(info["max_height"], z)
        c = self.floor_contact(data) & ~info["contact_with_floor"]
        init = info["init_floor_contact"] | c
        left = info["has_left_floor"] | (init & ~c)
        landed = info["contact_with_floor"] | (left & c)
        goal_dist = jnp.linalg.norm(foot - goal)
        contact_dist = jnp.where(landed & ~info["contact_with_floor"], goal_dist, info["contact_dist"])
        healthy = self.healthy(data).astype(jnp.float32)
        ctrl_cost = self.ctrl_cost_weight * jnp.sum(jnp.square(a))
        contact_term = jnp.where(contact_dist != 0, contact_dist, self.no_contact_dist)
        if self.sparse:
            final = (self.healthy_weight * healthy - self.dist_weight * goal_dist
                     + self.height_weight * max_height - self.contact_weight * contact_term)
            reward = jnp.where(time_step >= self.episode_length, final, 0.0) - ctrl_cost
        else:
            reward = (self.healthy_weight * healthy - self.dist_weight * goal_dist + self.height_weight * z
                      - self.contact_weight * contact_term - ctrl_cost)
        info = {**info, "max_height": max_height, "init_floor_contact": init, "has_left_floor": left,
                "contact_with_floor": landed, "contact_dist": contact_dist}
        f = lambda x: jnp.asarray(x, jnp.float32)
        metrics = {"height": f(z), "max_height": f(max_height), "goal_dist": f(goal_dist),
                   "height_rew": f(max_height), "healthy": healthy,
                   "healthy_reward": f(self.healthy_weight * healthy), "contact_dist": f(contact_dist),
                   "floor_contact": f(c), "init_floor_contact": f(init), "has_left_floor": f(left),
                   "contact_with_floor": f(landed), "ctrl_cost": f(ctrl_cost), "foot_x": f(foot[0])}
        return info, metrics, f(reward)

    # -- interface ---------------------------------------------------------------------------
    def sample_init(self, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(qpos [6], qvel [6], goal [3]) of a new episode from `key` (see the module docstring)."""
        k_q, k_g = jax.random.split(key)
        lo, hi = np.asarray(self.init_joint_range, np.float32).T
        joints = jax.random.uniform(k_q, (3,), minval=lo, maxval=hi)
        qpos = jnp.concatenate([jnp.array([0.0, self.init_height, 0.0]), joints])
        gx = jax.random.uniform(k_g, (), minval=self.goal_x_range[0], maxval=self.goal_x_range[1])
        return qpos, jnp.zeros(6), jnp.stack([gx, 0.0, 0.0])

    def reset(self, key: jax.Array) -> EnvState:
        """New episode from `key` [2] uint32 (same key -> same episode)."""
        key, k_init = jax.random.split(key)
        return self.reset_to(*self.sample_init(k_init), key)

    def reset_to(self, qpos: jax.Array, qvel: jax.Array, goal: jax.Array, key: jax.Array | None = None) -> EnvState:
        """Episode start from a given state: qpos [6], qvel [6], goal [3] (for tests and parity)."""
        data = self.new_data().replace(qpos=jnp.asarray(qpos, jnp.float32),
                                                     qvel=jnp.asarray(qvel, jnp.float32))
        data = mjx.forward(self.mjx_model, data)
        goal = jnp.asarray(goal, jnp.float32)
        false = jnp.zeros((), bool)
        info = {"goal": goal, "max_height": jnp.zeros((), jnp.float32), "init_floor_contact": false,
                "has_left_floor": false, "contact_with_floor": false,
                "contact_dist": jnp.zeros((), jnp.float32)}
        time_step = jnp.zeros((), jnp.int32)
        z = data.xpos[self._torso, 2]
        foot = data.site_xpos[self._foot_site]
        healthy = self.healthy(data).astype(jnp.float32)
        zero = jnp.zeros((), jnp.float32)
        metrics = {name: zero for name in self.metric_names}
        metrics.update(height=z, goal_dist=jnp.linalg.norm(foot - goal), healthy=healthy,
                       healthy_reward=self.healthy_weight * healthy, foot_x=foot[0])
        return EnvState(mjx_data=data, obs=self._obs(data, goal, time_step), time_step=time_step,
                        desired_pos=data.qpos[3:6], desired_vel=data.qvel[3:6],
                        reward=zero, done=false, metrics=metrics, info=info,
                        key=jax.random.PRNGKey(0) if key is None else key)

    def step(self, state: EnvState, desired_pos: jax.Array, desired_vel: jax.Array) -> EnvState:
        """One control step tracking desired_pos, desired_vel [3] (thigh, leg, foot).

        `mjx_data` after a step is left as `mjx.step` returns it (see the module docstring)."""
        desired_pos = jnp.asarray(desired_pos, jnp.float32)
        desired_vel = jnp.asarray(desired_vel, jnp.float32)
        a = self.action(state.mjx_data, desired_pos, desired_vel)
        data = state.mjx_data.replace(ctrl=a)
        data = jax.lax.fori_loop(0, self.frame_skip, lambda _, d: mjx.step(self.mjx_model, d), data)
        time_step = state.time_step + 1
        info, metrics, reward = self.post_step(data, state.info, a, time_step)
        return state.replace(mjx_data=data, obs=self._obs(data, info["goal"], time_step),
                             time_step=time_step, desired_pos=desired_pos, desired_vel=desired_vel,
                             reward=reward, done=time_step >= self.episode_length, metrics=metrics,
                             info=info)

    def mdp_rewards(self, rollout: Rollout) -> jax.Array:
        """[..., T] rewards of `rollout` after TOP-ERL's redistribution (`redistribute_sparse_reward`
        on rollout.rewards and rollout.metrics["has_left_floor"]); what the TOP-ERL buffer stores."""
        return redistribute_sparse_reward(rollout.rewards, rollout.metrics["has_left_floor"] > 0.5)

    # -- rendering hook (toperl_jax.envs.render) ---------------------------------------------
    def render_scene(self, model: mujoco.MjModel, data: mujoco.MjData, info: dict) -> list:
        """Put the goal marker at info["goal"] (writes body_pos of a native model copy); no extra
        markers."""
        if "goal" in info:
            model.body_pos[self.goal_body] = np.asarray(info["goal"], np.float64)
        return []


def numpy_action(task: HopperJump, qpos: np.ndarray, qvel: np.ndarray, desired_pos, desired_vel) -> np.ndarray:
    """The same PD on native arrays (for benchmarks and parity): clip(Kp e + Kd e_dot, +-1), [3]."""
    u = task.kp * (np.asarray(desired_pos) - qpos[3:6]) + task.kd * (np.asarray(desired_vel) - qvel[3:6])
    return np.clip(u, -1.0, 1.0)
