"""Box pushing (MJX): a 7-dof Franka Panda with a rod in its hand pushes a box to a goal pose.

Re-implementation of fancy_gym's `BoxPushingRandomInit{Dense,TemporalSparse}` as driven by TOP-ERL
(specs/tasks_fancy_gym.md, section A; TCE controller, section D). Model: `box_pushing.xml` (our
own MJCF: exact Franka kinematics and inertials, primitive collision geoms; see its header).
Physics timestep 0.002 s (Euler), frame_skip 10, so dt = 0.02 s; T = 100 control steps (2 s).

Reset (A4), from `key`:
    qpos = [0, 0, 0, -1.5, 0, 1.5, 0] (arm), box free joint, qvel = 0.
    box: random_init -> xy ~ U([0.3, 0.6] x [-0.45, 0.45]), z = -0.01, theta ~ U(0, 2 pi),
         quat (w, x, y, z) = (sin theta/2, 0, 0, cos theta/2) (a yaw of pi - theta);
         else xy = (0.4, 0.3), z = -0.01, quat (0, 0, 0, 1).
    goal: the same sampler, redrawn (lax.while_loop) until ||xy_goal - xy_box|| >= 0.3.
    arm: damped least-squares IK (`inverse_kinematics`) puts the tcp at box_xyz + (0, 0, 0.15),
         tool pointing down (tcp quat (0, 1, 0, 0)), so the rod tip hangs ~5.5 cm above the
         box centre, inside the walls.

Control per step (A5, A9), from the measured (q, qd) of the arm and the desired (q_d, qd_d):
    tau_cmd = clip(Kp (q_d - q) + Kd (qd_d - qd), -10, 10)          [N m]
    tau     = clip(tau_cmd + qfrc_bias, -[90,90,90,90,12,12,12], +...), held 10 substeps
    Kp = [12, 12, 12, 12, 5, 3, 1], Kd = [1, 1, 1, 1, 0.6, 0.5, 0.3]
    (= fancy_gym's a = clip(Kp' e + Kd' e', +-1) with Kp' = Kp / 10, Kd' = Kd / 10, times 10.)
    The actuators' forcerange additionally caps joints 1-4 at +-87 N m.
    E_ep += ||tau_cmd||^2 (episode energy).

Reward after step t (1-based), all quantities of the state after the step (A7):
    d_tip = clip(||p_box - p_rodtip||, 0.05, 100)
    d_g   = ||p_box - p_goal||                                  (3-D, body origins)
    phi   = 2 acos(min(|<q_box, q_goal>|, 1))                   (box-goal rotation angle)
    psi   = 2 acos(min(|<q_rod, (0, 1, 0, 0)>|, 1))             (rod/hand tilt incl. yaw)
    P     = sum (q - q_max)_+ + sum (q_min - q)_+ + sum (|qd| - qd_max)_+   (Franka limits)
    R_rod = psi / pi if psi > pi/4 else 0
    dense:           r = -P - 2 d_tip - 3.5 d_g - phi/pi - 5e-4 ||tau_cmd||^2 - R_rod
    temporal sparse: r = -P - 2 d_tip - 0.02 ||tau_cmd||^2 - R_rod
                         + [t = T] (-350 d_g - 100 phi/pi - 50 ||qd_arm||)
    r = -50 if the step diverged (non-finite state or |qvel| >= 1000); the state before the step
    is then kept with zero velocity (upstream: a simulation exception gives -50).
(The min(., 1) inside acos only guards float rounding; upstream's numpy would return NaN there.)

End and metrics (A8): the episode ends at t = T (no early termination).
    is_success         = [t = T] [d_g < 0.05] [phi < 0.5]
    box_goal_pos_dist  = [t = T] d_g,   box_goal_rot_dist = [t = T] phi,
    episode_energy     = [t = T] E_ep
i.e. like fancy_gym they are 0 before the last step (TOP-ERL logs last-step values); the running
values are in `state.info` ("box_goal_pos_dist", "box_goal_rot_dist", "episode_energy").

Observation [29] (A6 + time): qpos[0:7], qvel[0:7], box position (3) and quaternion (4), goal
position (3) and quaternion (4), t / T (0 after reset, 1 after the last step).
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from toperl_jax.envs.base import EnvState, EpisodicTask, pd_torque, xla_cpu_options
from toperl_jax.mp import ProDMPConfig

XML_PATH = pathlib.Path(__file__).with_name("box_pushing.xml")


# Franka limits used by the rewards and by the IK (A5; tighter than the XML joint ranges).
Q_MAX = (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973)
Q_MIN = (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973)
QD_MAX = (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)
INIT_ARM_QPOS = (0.0, 0.0, 0.0, -1.5, 0.0, 1.5, 0.0)
DESIRED_ROD_QUAT = (0.0, 1.0, 0.0, 0.0)

# IK constants (A4).
IK_GAIN = (33.9403713446798, 30.9403713446798, 33.9403713446798, 27.69370238555632,
           33.98706171459314, 30.9185531893281)
IK_NULL_GAIN = tuple(5.0 * g for g in (7.675519770796831, 2.676935478437176, 8.539040163444975,
                                       1.270446361314313, 8.87752182480855, 2.186782233762969,
                                       4.414432577659688))
IK_NULL_TARGET = (3.57795216e-09, 1.74532920e-01, 3.30500960e-08, -8.72664630e-01,
                  -1.14096181e-07, 1.22173047e00, 7.85398126e-01)


# -- quaternion helpers (w, x, y, z) --------------------------------------------------------------
def quat_mul(a: jax.Array, b: jax.Array) -> jax.Array:
    """[4] Hamilton product a * b."""
    aw, av = a[0], a[1:]
    bw, bv = b[0], b[1:]
    return jnp.concatenate([(aw * bw - av @ bv)[None], aw * bv + bw * av + jnp.cross(av, bv)])


def quat_to_mat(q: jax.Array) -> jax.Array:
    """[3, 3] rotation matrix of a unit quaternion [4]."""
    w, x, y, z = q
    return jnp.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def rotation_distance(p: jax.Array, q: jax.Array) -> jax.Array:
    """[] angle 2 acos(|<p, q>|) in [0, pi] between unit quaternions [..., 4] (rounding-safe)."""
    return 2.0 * jnp.arccos(jnp.minimum(jnp.abs(jnp.sum(p * q, -1)), 1.0))


def quat_error(current: jax.Array, desired: jax.Array) -> jax.Array:
    """[3] orientation error w_c v_d - w_d v_c - v_d x v_c (Siciliano eq. 3.91, as fancy_gym)."""
    return current[0] * desired[1:] - desired[0] * current[1:] - jnp.cross(desired[1:], current[1:])


def yaw_quat(theta: jax.Array) -> jax.Array:
    """[4] fancy_gym's `rot_to_quat(theta, z)` = (sin theta/2, 0, 0, cos theta/2) (yaw pi - theta)."""
    return jnp.stack([jnp.sin(theta / 2), 0.0 * theta, 0.0 * theta, jnp.cos(theta / 2)])


class BoxPushing(EpisodicTask):
    """Franka box pushing, dense or temporally sparse reward (formulas: module docstring).

    Args:
        reward_type: "dense" or "temporal_sparse".
        random_init: random box start pose (TOP-ERL's `BoxPushingRandomInit*`); else the box
            starts at (0.4, 0.3). The goal is random either way.
        episode_length: T (default 100); the sparse terminal terms and the metrics come at t = T.
    """

    name = "box-pushing"
    num_dof = 7
    episode_length = 100
    frame_skip = 10
    obs_size = 29
    metric_names = ("is_success", "box_goal_pos_dist", "box_goal_rot_dist", "episode_energy")
    reward_types = ("dense", "temporal_sparse")

    kp = (12.0, 12.0, 12.0, 12.0, 5.0, 3.0, 1.0)
    """PD position gains, N m / rad (fancy_gym's 0.01 [120, .., 10] times the action scale 10)."""
    kd = (1.0, 1.0, 1.0, 1.0, 0.6, 0.5, 0.3)
    """PD velocity gains, N m s / rad."""
    pd_limit = 10.0
    """Clip of the PD torque before the bias is added (fancy_gym: 10 clip(a, -1, 1)), N m."""
    torque_limit = (90.0, 90.0, 90.0, 90.0, 12.0, 12.0, 12.0)
    """Clip of PD + bias (fancy_gym's q_torque_max), N m."""
    success_pos = 0.05
    """Success: box-goal distance below this (m) at the last step ..."""
    success_rot = 0.5
    """... and box-goal rotation angle below this (rad)."""
    min_goal_dist = 0.3
    """The goal xy is redrawn until at least this far (m) from the box start."""
    box_low = (0.3, -0.45)
    box_high = (0.6, 0.45)
    box_z = -0.01
    fixed_box_pos = (0.4, 0.3, -0.01)
    fixed_box_quat = (0.0, 0.0, 0.0, 1.0)
    ik_tcp_offset = (0.0, 0.0, 0.15)
    """IK target: tcp at box start position + this, orientation (0, 1, 0, 0)."""
    ik_max_iter = 1000
    """fancy_gym's IT_MAX: stop after more than this many accepted IK iterations."""
    ik_max_attempts = 3000
    """Our cap on accepted + rejected IK iterations (upstream: unbounded; see inverse_kinematics)."""
    ik_eps = 1e-5
    """IK stops when ||e_p||^2 + ||quat_c - quat_d||^2 < ik_eps."""
    max_speed = 1000.0
    """A step whose result has a non-finite state or any |qvel| >= this (rad/s, m/s) counts
    as diverged: reward -50 and the state before the step is kept, at rest."""

    def compiler_options(self, platform: str | None = None) -> dict | None:
        """`xla_cpu_options(platform)`: without it this task's physics compiles ~600x slower on CPU."""
        return xla_cpu_options(platform)

    def __init__(self, reward_type: str = "dense", random_init: bool = True,
                 episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        if reward_type not in self.reward_types:
            raise ValueError(f"reward_type must be one of {self.reward_types}, got {reward_type!r}")
        if episode_length is not None:
            if int(episode_length) < 1:
                raise ValueError(f"episode_length must be >= 1, got {episode_length}")
            self.episode_length = int(episode_length)
        self.reward_type = reward_type
        self.random_init = bool(random_init)
        self.name = "box-pushing-" + ("dense" if reward_type == "dense" else "sparse")
        self.init_physics(mujoco.MjModel.from_xml_path(str(XML_PATH)), physics_impl, warp_worlds)
        self.dt = float(self.mj_model.opt.timestep) * self.frame_skip
        m = self.mj_model
        self._box_body = m.body("box_0").id
        self._rod_body = m.body("push_rod").id
        self._tcp_body = m.body("tcp").id
        self._rod_tip = m.site("rod_tip").id
        self._box_qpos = int(m.jnt_qposadr[m.joint("box_joint").id])
        self._box_dof = int(m.jnt_dofadr[m.joint("box_joint").id])
        self._chain = self._tcp_chain(m)

    # -- config --------------------------------------------------------------------------------
    def prodmp_config(self) -> ProDMPConfig:
        """TOP-ERL's agent-side ProDMP for box pushing (spec D): 8 basis, tau 2 s, scale 0.3."""
        return ProDMPConfig(num_dof=7, num_basis=8, tau=2.0, dt=self.dt, alpha_phase=3.0,
                            alpha=10.0, basis_bandwidth_factor=3.0, num_basis_outside=0,
                            weights_scale=0.3, goal_scale=0.3, auto_scale_basis=True,
                            relative_goal=False, disable_goal=False)

    # -- kinematics of the tcp (IK) ------------------------------------------------------------
    @staticmethod
    def _tcp_chain(m: mujoco.MjModel) -> list[tuple[np.ndarray, np.ndarray, int, np.ndarray]]:
        """Bodies from the world to `tcp`: (body_pos, body_quat, arm joint index or -1, axis)."""
        chain, b = [], m.body("tcp").id
        while b != 0:
            jnt = -1
            axis = np.zeros(3)
            if m.body_jntnum[b] == 1:
                j = m.body_jntadr[b]
                assert m.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE and not m.jnt_pos[j].any()
                jnt, axis = int(m.jnt_qposadr[j]), m.jnt_axis[j].copy()
            else:
                assert m.body_jntnum[b] == 0
            chain.append((m.body_pos[b].copy(), m.body_quat[b].copy(), jnt, axis))
            b = m.body_parentid[b]
        return chain[::-1]

    def tcp_kinematics(self, q: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Forward kinematics of the `tcp` body for arm joints q [7].

        Returns (position [3], quaternion [4] (w first), Jacobian [6, 7] = [J_pos; J_rot] of the
        tcp body origin, as mj_jacBody). Independent of mjx; matches MuJoCo's kinematics of the
        same model (tested).
        """
        p = jnp.zeros(3, q.dtype)
        quat = jnp.array([1.0, 0.0, 0.0, 0.0], q.dtype)
        anchors, axes = [], []
        for pos, bquat, jnt, axis in self._chain:
            p = p + quat_to_mat(quat) @ jnp.asarray(pos, q.dtype)
            quat = quat_mul(quat, jnp.asarray(bquat, q.dtype))
            if jnt >= 0:
                half = 0.5 * q[jnt]
                quat = quat_mul(quat, jnp.concatenate([jnp.cos(half)[None],
                                                       jnp.sin(half) * jnp.asarray(axis, q.dtype)]))
                anchors.append(p)
                axes.append(quat_to_mat(quat) @ jnp.asarray(axis, q.dtype))
            quat = quat / jnp.linalg.norm(quat)
        anchors, axes = jnp.stack(anchors), jnp.stack(axes)          # [7, 3]
        jac = jnp.concatenate([jnp.cross(axes, p - anchors).T, axes.T])  # [6, 7]
        return p, quat, jac

    def inverse_kinematics(self, target_pos: jax.Array, target_quat: jax.Array,
                           q0: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """fancy_gym's `calculateOfflineIK` (A4) as a `lax.while_loop`.

        Args:
            target_pos: [3] desired tcp position; target_quat: [4] desired tcp quaternion.
            q0: [7] start configuration (default: the reset pose).
        Returns:
            (q [7], accepted iterations []). One loop pass = one trial step q + h qd_d:
            accepted if its error E does not exceed the last accepted one (then h *= 1.025,
            stop if E < ik_eps or more than ik_max_iter steps were accepted, else a new
            direction qd_d is computed at q), rejected otherwise (q kept, h *= 0.7). Upstream
            does not bound the rejections; `ik_max_attempts` bounds all passes (rejections
            shrink h geometrically, so a long run of them means the step has stalled anyway).
        """
        dtype = jnp.float32
        q_min, q_max = jnp.asarray(Q_MIN, dtype), jnp.asarray(Q_MAX, dtype)
        gain = jnp.asarray(IK_GAIN, dtype)  # [6] task-space gains (pos, rot)
        null_gain, null_target = jnp.asarray(IK_NULL_GAIN, dtype), jnp.asarray(IK_NULL_TARGET, dtype)
        q0 = jnp.asarray(INIT_ARM_QPOS, dtype) if q0 is None else q0.astype(dtype)
        target_pos, target_quat = target_pos.astype(dtype), target_quat.astype(dtype)

        def direction(q, err):
            _, _, jac = self.tcp_kinematics(q)
            qd_null = null_gain * (null_target - q)
            qd_null = qd_null + jnp.where(q > q_max - 0.1, 20.0 * (q_max - 0.1 - q), 0.0)
            qd_null = qd_null + jnp.where(q < q_min + 0.1, 20.0 * (q_min + 0.1 - q), 0.0)
            jjt = jac @ jac.T + 1e-6 * jnp.eye(6, dtype=dtype)
            return jac.T @ jnp.linalg.solve(jjt, gain * err - jac @ qd_null) + qd_null

        def body(c):
            q, qd_d, h, e_old, i, n, _ = c
            q_try = jnp.clip(q + h * qd_d, q_min, q_max)
            p, quat, _ = self.tcp_kinematics(q_try)
            e_p = jnp.clip(target_pos - p, -0.1, 0.1)
            flip = jnp.linalg.norm(quat - target_quat) > jnp.linalg.norm(quat + target_quat)
            quat = jnp.where(flip, -quat, quat)
            e_o = jnp.clip(quat_error(quat, target_quat), -0.5, 0.5)
            e = jnp.sum(e_p ** 2) + jnp.sum((quat - target_quat) ** 2)
            accept = e <= e_old
            stop = accept & ((e < self.ik_eps) | (i > self.ik_max_iter))
            go_on = accept & ~stop
            qd_new = jax.lax.cond(go_on, lambda: direction(q_try, jnp.concatenate([e_p, e_o])),
                                  lambda: qd_d)
            return (jnp.where(accept, q_try, q), qd_new,
                    jnp.where(accept, 1.025 * h, 0.7 * h), jnp.where(go_on, e, e_old),
                    i + go_on.astype(jnp.int32), n + 1, stop)

        def cond(c):
            return ~c[-1] & (c[5] < self.ik_max_attempts)

        init = (q0, jnp.zeros(7, dtype), jnp.asarray(1e-3, dtype), jnp.asarray(jnp.inf, dtype),
                jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((), bool))
        q, _, _, _, i, _, _ = jax.lax.while_loop(cond, body, init)
        return q, i

    # -- sampling ------------------------------------------------------------------------------
    def sample_pose(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """fancy_gym's `sample_context`: (position [3], quaternion [4])."""
        k_xy, k_th = jax.random.split(key)
        xy = jax.random.uniform(k_xy, (2,), minval=jnp.asarray(self.box_low),
                                maxval=jnp.asarray(self.box_high))
        theta = jax.random.uniform(k_th, (), minval=0.0, maxval=2 * jnp.pi)
        return jnp.concatenate([xy, jnp.full((1,), self.box_z)]), yaw_quat(theta)

    def sample_goal(self, key: jax.Array, box_pos: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Goal pose redrawn until its xy is >= min_goal_dist from box_pos [3] (rejection
        sampling in a `lax.while_loop`; the acceptance probability is >= ~0.35 for every box
        position, so the loop ends after a few draws)."""
        def draw(c):
            k, _, _ = c
            k, sub = jax.random.split(k)
            return (k,) + self.sample_pose(sub)

        def far_enough(c):
            return jnp.linalg.norm(c[1][:2] - box_pos[:2]) >= self.min_goal_dist

        first = draw((key, jnp.zeros(3), jnp.zeros(4)))
        _, pos, quat = jax.lax.while_loop(lambda c: ~far_enough(c), draw, first)
        return pos, quat

    # -- state helpers -------------------------------------------------------------------------
    def _kinematics_and_bias(self, data: mjx.Data) -> mjx.Data:
        """Positions, body poses and qfrc_bias of data.qpos/qvel (no collision or solve; MJX-Warp has no `com_vel` or
        `rne` of its own, so with physics_impl 'warp' this is a full `mjx.forward`, which computes the same fields)."""
        m = self.mjx_model
        if self.physics_impl == "warp":
            return mjx.forward(m, data)
        data = mjx.kinematics(m, data)
        data = mjx.com_pos(m, data)
        data = mjx.com_vel(m, data)
        return mjx.rne(m, data)

    def box_pose(self, data: mjx.Data) -> tuple[jax.Array, jax.Array]:
        """(box position [3], quaternion [4]) of a forwarded data."""
        return data.xpos[self._box_body], data.xquat[self._box_body]

    def _obs(self, data: mjx.Data, info: dict, time_step: jax.Array) -> jax.Array:
        box_pos, box_quat = self.box_pose(data)
        t = time_step.astype(jnp.float32) / self.episode_length
        return jnp.concatenate([data.qpos[:7], data.qvel[:7], box_pos, box_quat,
                                info["goal_pos"], info["goal_quat"], t[None]])

    def reward_terms(self, data: mjx.Data, goal_pos: jax.Array, goal_quat: jax.Array,
                     tau_cmd: jax.Array) -> dict[str, jax.Array]:
        """Per-step quantities of the reward (module docstring) for a forwarded data after a step:
        joint_penalty P, tip_dist d_tip (clipped), goal_dist d_g, rot_dist phi, rod_penalty R_rod,
        energy ||tau_cmd||^2, arm_speed ||qd_arm||. All []."""
        q, qd = data.qpos[:7], data.qvel[:7]
        box_pos, box_quat = self.box_pose(data)
        q_max, q_min, qd_max = (jnp.asarray(x) for x in (Q_MAX, Q_MIN, QD_MAX))
        penalty = (jnp.sum(jnp.maximum(q - q_max, 0.0)) + jnp.sum(jnp.maximum(q_min - q, 0.0))
                   + jnp.sum(jnp.maximum(jnp.abs(qd) - qd_max, 0.0)))
        tip = jnp.clip(jnp.linalg.norm(box_pos - data.site_xpos[self._rod_tip]), 0.05, 100.0)
        psi = rotation_distance(data.xquat[self._rod_body], jnp.asarray(DESIRED_ROD_QUAT))
        return {
            "joint_penalty": penalty,
            "tip_dist": tip,
            "goal_dist": jnp.linalg.norm(box_pos - goal_pos),
            "rot_dist": rotation_distance(box_quat, goal_quat),
            "rod_penalty": jnp.where(psi > jnp.pi / 4, psi / jnp.pi, 0.0),
            "energy": jnp.sum(jnp.square(tau_cmd)),
            "arm_speed": jnp.linalg.norm(qd),
        }

    def reward(self, terms: dict[str, jax.Array], end: jax.Array) -> jax.Array:
        """[] step reward from `reward_terms` and end = [t = T] (module docstring)."""
        r = -terms["joint_penalty"] - 2.0 * terms["tip_dist"] - terms["rod_penalty"]
        if self.reward_type == "dense":
            return (r - 3.5 * terms["goal_dist"] - terms["rot_dist"] / jnp.pi
                    - 5e-4 * terms["energy"])
        final = (-350.0 * terms["goal_dist"] - 100.0 * terms["rot_dist"] / jnp.pi
                 - 50.0 * terms["arm_speed"])
        return r - 0.02 * terms["energy"] + jnp.where(end, final, 0.0)

    def _metrics(self, goal_dist, rot_dist, energy, end) -> dict[str, jax.Array]:
        success = end & (goal_dist < self.success_pos) & (rot_dist < self.success_rot)
        zero = jnp.zeros((), jnp.float32)
        return {"is_success": success.astype(jnp.float32),
                "box_goal_pos_dist": jnp.where(end, goal_dist, zero),
                "box_goal_rot_dist": jnp.where(end, rot_dist, zero),
                "episode_energy": jnp.where(end, energy, zero)}

    # -- interface -----------------------------------------------------------------------------
    def reset_to(self, box_pos: jax.Array, box_quat: jax.Array, goal_pos: jax.Array,
                 goal_quat: jax.Array, key: jax.Array | None = None) -> EnvState:
        """Episode start for a given box pose ([3], [4]) and goal pose ([3], [4]): IK puts the
        rod above the box, qvel = 0. `key` is stored in the state (default PRNGKey(0))."""
        m = self.mjx_model
        target = box_pos + jnp.asarray(self.ik_tcp_offset)
        q_arm, ik_iters = self.inverse_kinematics(target, jnp.asarray(DESIRED_ROD_QUAT))
        qpos = jnp.zeros(m.nq).at[:7].set(q_arm)
        qpos = qpos.at[self._box_qpos:self._box_qpos + 7].set(jnp.concatenate([box_pos, box_quat]))
        data = self.new_data().replace(qpos=qpos, qvel=jnp.zeros(m.nv),
                                        mocap_pos=goal_pos[None], mocap_quat=goal_quat[None])
        data = self._kinematics_and_bias(data)
        info = {"goal_pos": goal_pos, "goal_quat": goal_quat, "ik_iterations": ik_iters,
                "box_goal_pos_dist": jnp.linalg.norm(self.box_pose(data)[0] - goal_pos),
                "box_goal_rot_dist": rotation_distance(self.box_pose(data)[1], goal_quat),
                "episode_energy": jnp.zeros((), jnp.float32)}
        time_step = jnp.zeros((), jnp.int32)
        zero = jnp.zeros((), jnp.float32)
        return EnvState(mjx_data=data, obs=self._obs(data, info, time_step), time_step=time_step,
                        desired_pos=data.qpos[:7], desired_vel=data.qvel[:7], reward=zero,
                        done=jnp.zeros((), bool),
                        metrics={k: zero for k in self.metric_names}, info=info,
                        key=jax.random.PRNGKey(0) if key is None else key)

    def reset(self, key: jax.Array) -> EnvState:
        """New episode from `key` [2] uint32 (same key -> same episode)."""
        key, k_box, k_goal = jax.random.split(key, 3)
        if self.random_init:
            box_pos, box_quat = self.sample_pose(k_box)
        else:
            box_pos, box_quat = jnp.asarray(self.fixed_box_pos), jnp.asarray(self.fixed_box_quat)
        goal_pos, goal_quat = self.sample_goal(k_goal, box_pos)
        return self.reset_to(box_pos, box_quat, goal_pos, goal_quat, key)

    def torque(self, state: EnvState, desired_pos, desired_vel) -> tuple[jax.Array, jax.Array]:
        """(tau [7] applied joint torque, tau_cmd [7] its PD part) for this step."""
        d = state.mjx_data
        kp, kd = jnp.asarray(self.kp), jnp.asarray(self.kd)
        q, qd = d.qpos[:7], d.qvel[:7]
        tau = pd_torque(desired_pos, desired_vel, q, qd, kp, kd, d.qfrc_bias[:7], self.pd_limit,
                        jnp.asarray(self.torque_limit))
        tau_cmd = jnp.clip(kp * (desired_pos - q) + kd * (desired_vel - qd),
                           -self.pd_limit, self.pd_limit)
        return tau, tau_cmd

    def step(self, state: EnvState, desired_pos: jax.Array, desired_vel: jax.Array) -> EnvState:
        """One control step (10 physics substeps). desired_pos, desired_vel: [7]."""
        desired_pos = jnp.asarray(desired_pos, jnp.float32)
        desired_vel = jnp.asarray(desired_vel, jnp.float32)
        tau, tau_cmd = self.torque(state, desired_pos, desired_vel)
        data = state.mjx_data.replace(ctrl=tau)
        data = jax.lax.fori_loop(0, self.frame_skip,
                                 lambda _, d: mjx.step(self.mjx_model, d), data)
        # divergence guard (upstream: a simulation exception gives r = -50): keep the last
        # valid state, at rest, instead of propagating inf/NaN
        stable = (jnp.all(jnp.isfinite(data.qpos)) & jnp.all(jnp.isfinite(data.qvel))
                  & jnp.all(jnp.abs(data.qvel) < self.max_speed))
        rest = state.mjx_data.replace(qvel=jnp.zeros_like(data.qvel))
        data = rest.where(stable, data)  # Data.where: MJX-Warp keeps its contact arrays unbatched
        data = self._kinematics_and_bias(data)
        time_step = state.time_step + 1
        end = time_step >= self.episode_length
        info = state.info
        terms = self.reward_terms(data, info["goal_pos"], info["goal_quat"], tau_cmd)
        energy = info["episode_energy"] + terms["energy"]
        reward = jnp.where(stable, self.reward(terms, end), -50.0)
        info = {**info, "box_goal_pos_dist": terms["goal_dist"],
                "box_goal_rot_dist": terms["rot_dist"], "episode_energy": energy}
        return state.replace(mjx_data=data, obs=self._obs(data, info, time_step),
                             time_step=time_step, desired_pos=desired_pos,
                             desired_vel=desired_vel, reward=reward, done=end,
                             metrics=self._metrics(terms["goal_dist"], terms["rot_dist"],
                                                   energy, end),
                             info=info)


    # -- rendering (toperl_jax/envs/render.py hook) -------------------------------------------
    render_camera = "overview"

    def render_scene(self, model: mujoco.MjModel, data: mujoco.MjData, info: dict) -> list:
        """Put the goal marker (mocap body `goal`) at info["goal_pos"/"goal_quat"]; no extra markers."""
        if "goal_pos" in info:
            data.mocap_pos[0] = np.asarray(info["goal_pos"], np.float64)
        if "goal_quat" in info:
            data.mocap_quat[0] = np.asarray(info["goal_quat"], np.float64)
        return []


def numpy_controller(task: BoxPushing, d: mujoco.MjData, desired_pos, desired_vel):
    """The same PD + bias controller on a native MuJoCo data: (tau [7], tau_cmd [7])."""
    tau_cmd = np.clip(np.asarray(task.kp) * (desired_pos - d.qpos[:7])
                      + np.asarray(task.kd) * (desired_vel - d.qvel[:7]),
                      -task.pd_limit, task.pd_limit)
    lim = np.asarray(task.torque_limit)
    return np.clip(tau_cmd + d.qfrc_bias[:7], -lim, lim), tau_cmd
