"""The Sawyer mocap arm of Meta-World as an MJX episodic task (specs/tasks_fancy_gym.md, section C).

A subclass per task (tasks.py) names its MJCF, contacts, sampling ranges, episode constants, objects and
v2 reward; this module has what all tasks share.

Physics: Meta-World's model (assets.py), timestep 0.0025 s, frame_skip 5, so dt = 0.0125 s; T = 500.

Raw action a [4] (`apply_action`, Meta-World's `step`):
    mocap_pos <- clip(mocap_pos + 0.01 clip(a[:3], -1, 1), mocap_low, mocap_high)   (= the task's hand_low/high)
    mocap_quat = (1, 0, 1, 0) / sqrt(2)      (Meta-World writes (1, 0, 1, 0); MuJoCo normalizes mocap quats)
    ctrl = (a[3], -a[3]) on the position actuators r_close, l_close (kp 400, ctrlrange [-1, 1])
    then 5 physics steps and a kinematics pass (Meta-World: `mj_forward`) for observation and reward.

TCE controller (`step`, fancy_gym's `metaworld` controller, spec C/D):
    a = clip([tce_gain (x_des - mocap_pos), g_des], -1, 1), tce_gain = 100,
so the movement primitive sets an absolute Cartesian mocap target (tracked at <= 1 cm per step) plus a raw
gripper command. The measured position is [mocap_pos, qpos(r_close)], the measured velocity 0.

Reset (`reset`, `reset_to`): Meta-World's `_reset_hand` moves the arm for 50 steps with the mocap at
hand_init_pos and the gripper open, from the model's qpos0; that start is deterministic, so it is simulated
once per task in C MuJoCo on our model when the task is made (`HandReset`), including the readings Meta-World
takes right after it (tcp centre, pads, which it reads one physics step stale: after `mj_step` without a
forward; we read them the same way). Each episode then draws Meta-World's random vector
U(rand_low, rand_high) (with the task's rejection rule) and the task places its objects.

Observation [40]: Meta-World's 39 (hand position, gripper opening = |right claw - left claw| / 0.1 clipped
to [0, 1], object 1 position+quaternion, object 2 position+quaternion (zero-padded to 14), the previous
step's 18 (a copy at reset), goal position), clipped like Meta-World's observation space (hand to
[-0.525, 0.348, -0.0525]..[0.525, 1.025, 0.7], goal to the task's goal space), then t / T.
Quaternions of geoms and sites are converted from their rotation matrix as scipy's `Rotation.from_matrix`
does (x, y, z, w order), body quaternions are MuJoCo's xquat (w, x, y, z), as in Meta-World.

Reward and success: the task's v2 `evaluate_state` (0..10), from the clipped 39-observation, the raw
action and the episode constants. Metrics per step: `is_success` (Meta-World's `info["success"]`; TOP-ERL
reports its last-step value: `Rollout.final_metrics["is_success"]`), `success_once` (success at any step so
far: Meta-World's usual evaluation). A step whose physics diverges (non-finite or |qvel| > 1e3) keeps the
last valid state at rest, reward 0 and no success (Meta-World: `_did_see_sim_exception`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from toperl_jax.envs.base import EnvState, EpisodicTask, xla_cpu_options
from toperl_jax.envs.metaworld import assets
from toperl_jax.mp import ProDMPConfig

HAND_SPACE_LOW = (-0.525, 0.348, -0.0525)
HAND_SPACE_HIGH = (0.525, 1.025, 0.7)
MOCAP_QUAT = (1 / np.sqrt(2), 0.0, 1 / np.sqrt(2), 0.0)
FINGERS = ("rightpad_geom", "leftpad_geom", "rightclaw_it", "leftclaw_it")
"""The gripper's collision geoms (pads and claws)."""


def reset_compiler_options(options: dict | None = None, platform: str | None = None) -> dict | None:
    """`options` plus, for a CPU `platform` (default: the backend at hand), LLVM optimisation level 0, for a
    program that only resets these tasks (e.g.
    `jax.jit(jax.vmap(task.reset_to), compiler_options=reset_compiler_options(task.compiler_options()))`).

    jaxlib 0.10.2's CPU backend spends ~200 s at the default level (2) compiling a batched `reset_to` (most of it
    the kinematics of the start state) and ~3 s at level 0 (door-close, batch 20, this project's 2-core CPU; level 1:
    219 s). A reset runs once per episode, so its unoptimised code costs nothing that matters."""
    if (platform or jax.default_backend()) != "cpu":
        return options
    return {**(options or {}), "xla_backend_optimization_level": 0}


def mat_to_quat_xyzw(mat: jax.Array) -> jax.Array:
    """[4] (x, y, z, w) quaternion of a rotation matrix [9] or [3, 3], by scipy's `Rotation.from_matrix`
    branch rule (largest of the diagonal and the trace), normalized; the sign is whatever that branch gives."""
    m = mat.reshape(3, 3)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    decision = jnp.stack([m[0, 0], m[1, 1], m[2, 2], tr])
    choice = jnp.argmax(decision)

    def branch(i):
        j, k = (i + 1) % 3, (i + 2) % 3
        q = [None] * 4
        q[i] = 1 - tr + 2 * m[i, i]
        q[j] = m[j, i] + m[i, j]
        q[k] = m[k, i] + m[i, k]
        q[3] = m[k, j] - m[j, k]
        return jnp.stack(q)

    q_tr = jnp.stack([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1], 1 + tr])
    q = jnp.select([choice == 0, choice == 1, choice == 2], [branch(0), branch(1), branch(2)], q_tr)
    return q / jnp.linalg.norm(q)


@dataclasses.dataclass(frozen=True)
class HandReset:
    """State after Meta-World's `_reset_hand` on our model (numpy, float64)."""

    qpos: np.ndarray
    qvel: np.ndarray
    mocap_pos: np.ndarray
    tcp: np.ndarray
    left_pad: np.ndarray
    right_pad: np.ndarray
    data: mujoco.MjData  # the native data itself (stale kinematics, as Meta-World leaves it)


class SawyerTask(EpisodicTask):
    """Base class of the Meta-World tasks (module docstring). Subclasses set the class attributes below and
    implement `sample_rand_vec` (optional), `episode_init`, `objects` and `evaluate`."""

    # -- set by subclasses ---------------------------------------------------------------------------------
    xml: str
    """MJCF relative to metaworld/assets."""
    pairs: tuple[tuple[str, str], ...]
    """Contacts simulated (assets.build_model)."""
    hand_low: tuple[float, float, float] = (-0.5, 0.40, 0.05)
    hand_high: tuple[float, float, float] = (0.5, 1.0, 0.5)
    """Mocap bounds (Meta-World's mocap_low/high default to hand_low/high)."""
    hand_init_pos: tuple[float, float, float] = (0.0, 0.6, 0.2)
    rand_low: tuple[float, ...]
    rand_high: tuple[float, ...]
    """Meta-World's `_random_reset_space`."""
    goal_low: tuple[float, float, float] | None = None
    goal_high: tuple[float, float, float] | None = None
    """Goal space (observation clip); None: hand_low/high."""
    episode_body: str | None = None
    """A world-fixed body that Meta-World moves per episode through model.body_pos (drawer, door, ...)."""
    option: tuple[tuple[str, float], ...] = ()
    """mjOption overrides (none by default: Meta-World's solver settings)."""
    mesh_geom_quat: tuple[tuple[str, tuple[float, float, float, float]], ...] = ()
    """(geom name, quaternion) pairs: Meta-World's (MuJoCo 3.3's) frame orientation of mesh geoms whose orientation
    is observed. MuJoCo aligns a mesh geom's frame with the mesh's principal axes, and for (nearly) symmetric meshes
    MuJoCo 4 picks axes that differ from 3.3's by up to ~1e-3 rad; `geom_frame` uses these instead."""

    # -- common --------------------------------------------------------------------------------------------
    num_dof = 4
    episode_length = 500
    frame_skip = 5
    obs_size = 40
    metric_names = ("is_success", "success_once")
    action_scale = 0.01
    tce_gain = 100.0
    max_speed = 1000.0
    target_radius = 0.05
    """Meta-World's TARGET_RADIUS."""

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        if episode_length is not None:
            if int(episode_length) < 1:
                raise ValueError(f"episode_length must be >= 1, got {episode_length}")
            self.episode_length = int(episode_length)
        self.init_physics(assets.build_model(self.xml, self.pairs, self.option), physics_impl, warp_worlds)
        m = self.mj_model
        self.dt = float(m.opt.timestep) * self.frame_skip
        self._hand_body = m.body("hand").id
        self._rclaw, self._lclaw = m.body("rightclaw").id, m.body("leftclaw").id
        self._lpad, self._rpad = m.body("leftpad").id, m.body("rightpad").id
        self._r_ee, self._l_ee = m.site("rightEndEffector").id, m.site("leftEndEffector").id
        self._r_close_qpos = int(m.jnt_qposadr[m.joint("r_close").id])
        self._episode_body_id = m.body(self.episode_body).id if self.episode_body else -1
        self.hand_reset = self._simulate_hand_reset()

    # -- static helpers ------------------------------------------------------------------------------------
    def compiler_options(self, platform: str | None = None) -> dict | None:
        return xla_cpu_options(platform)

    def prodmp_config(self) -> ProDMPConfig:
        """TOP-ERL's agent-side ProDMP for Meta-World (spec D): 4 dof, 8 basis, tau 5, bw 5, relative goal,
        weights/goal scale 0.1."""
        return ProDMPConfig(num_dof=4, num_basis=8, tau=5.0, dt=self.dt, alpha_phase=3.0, alpha=10.0,
                            basis_bandwidth_factor=5.0, num_basis_outside=0, weights_scale=0.1, goal_scale=0.1,
                            auto_scale_basis=True, relative_goal=True, disable_goal=False)

    def _simulate_hand_reset(self, steps: int = 50) -> HandReset:
        m = self.mj_model
        d = mujoco.MjData(m)
        mujoco.mj_resetData(m, d)
        for _ in range(steps):
            d.mocap_pos[0] = self.hand_init_pos
            d.mocap_quat[0] = (1.0, 0.0, 1.0, 0.0)
            d.ctrl[:] = (-1.0, 1.0)
            mujoco.mj_step(m, d, nstep=self.frame_skip)
        tcp = (d.site_xpos[self._r_ee] + d.site_xpos[self._l_ee]) / 2
        return HandReset(qpos=d.qpos.copy(), qvel=d.qvel.copy(), mocap_pos=d.mocap_pos[0].copy(), tcp=tcp.copy(),
                         left_pad=d.xpos[self._lpad].copy(), right_pad=d.xpos[self._rpad].copy(), data=d)

    def model_for(self, ctx: dict) -> mjx.Model:
        """The MJX model of an episode (the episode body moved to ctx["body_pos"])."""
        if self._episode_body_id < 0:
            return self.mjx_model
        return self.mjx_model.replace(body_pos=self.mjx_model.body_pos.at[self._episode_body_id].set(
            ctx["body_pos"]))

    def kinematics(self, model: mjx.Model, data: mjx.Data) -> mjx.Data:
        """Positions and orientations of bodies, geoms and sites of data.qpos (and the mocap pose)."""
        return mjx.kinematics(model, data)

    # -- per task ------------------------------------------------------------------------------------------
    min_obj_goal_xy: float | None = None
    """Meta-World's reset loop for tasks that redraw while the object and goal xy (rand[:2], rand[3:5]) are closer
    than this (None: no such rule)."""

    def sample_rand_vec(self, key: jax.Array) -> jax.Array:
        """Meta-World's `_get_state_rand_vec`: U(rand_low, rand_high), redrawn while closer than `min_obj_goal_xy`
        (tasks with another rejection rule override)."""
        if self.min_obj_goal_xy is not None:
            return self._redraw_until(key, lambda v: jnp.linalg.norm(v[:2] - v[3:5]) >= self.min_obj_goal_xy)
        return jax.random.uniform(key, (len(self.rand_low),), minval=jnp.asarray(self.rand_low),
                                  maxval=jnp.asarray(self.rand_high))

    def _redraw_until(self, key: jax.Array, ok) -> jax.Array:
        """Draw rand vecs until ok(vec) (a `lax.while_loop`, like Meta-World's reset loops)."""
        def draw(c):
            k, _ = c
            k, sub = jax.random.split(k)
            return k, JaxUniform(self).draw(sub)

        first = draw((key, jnp.zeros(len(self.rand_low))))
        return jax.lax.while_loop(lambda c: ~ok(c[1]), draw, first)[1]

    def episode_init(self, rand: jax.Array) -> tuple[jax.Array, jax.Array, dict]:
        """(qpos, qvel, ctx) of a new episode from its random vector; ctx holds the episode constants (at least
        "goal" [3]; "body_pos" [3] with an episode body)."""
        raise NotImplementedError

    def episode_context(self, data: mjx.Data, ctx: dict) -> dict:
        """Constants that need the forwarded start state (default: none)."""
        return ctx

    def advance_context(self, data: mjx.Data, obs: jax.Array, ctx: dict) -> dict:
        """Episode constants that Meta-World fixes at the first reward evaluation of an episode (default: none);
        called by `apply_action` before `evaluate` (obs: the clipped 39)."""
        return ctx

    def objects(self, data: mjx.Data) -> jax.Array:
        """[14] object positions and quaternions (zero-padded), as the task's `_get_pos/quat_objects`."""
        raise NotImplementedError

    def evaluate(self, data: mjx.Data, obs: jax.Array, action: jax.Array, ctx: dict
                 ) -> tuple[jax.Array, jax.Array]:
        """(reward [], success [] bool) of the task's v2 `evaluate_state` (obs: the clipped 39)."""
        raise NotImplementedError

    # -- observation ---------------------------------------------------------------------------------------
    def geom_frame(self, data: mjx.Data, name: str) -> tuple[jax.Array, jax.Array]:
        """(position [3], rotation matrix [3, 3]) of geom `name` with its frame in the ORIGINAL model (see
        assets.original_geom_frames), from its body's pose."""
        m = self.mj_model
        body = int(m.geom_bodyid[m.geom(name).id])
        pos, quat = assets.original_geom_frames(self.xml)[name]
        quat = np.asarray(dict(self.mesh_geom_quat).get(name, quat), np.float64)
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, quat / np.linalg.norm(quat))
        bmat = data.xmat[body]
        return (data.xpos[body] + bmat @ jnp.asarray(pos, jnp.float32),
                bmat @ jnp.asarray(rot.reshape(3, 3), jnp.float32))

    def tcp_center(self, data: mjx.Data) -> jax.Array:
        return (data.site_xpos[self._r_ee] + data.site_xpos[self._l_ee]) / 2

    def pads(self, data: mjx.Data) -> tuple[jax.Array, jax.Array]:
        """(left pad, right pad) body positions."""
        return data.xpos[self._lpad], data.xpos[self._rpad]

    def current_obs(self, data: mjx.Data) -> jax.Array:
        """[18] hand position, gripper opening, objects (Meta-World's `_get_curr_obs_combined_no_goal`)."""
        grip = jnp.linalg.norm(data.xpos[self._rclaw] - data.xpos[self._lclaw]) / 0.1
        return jnp.concatenate([data.xpos[self._hand_body], jnp.clip(grip, 0.0, 1.0)[None],
                                self.objects(data)])

    def clip_obs(self, obs39: jax.Array) -> jax.Array:
        """Meta-World's clip to its observation space (hand, gripper, goal)."""
        hl, hh = jnp.asarray(HAND_SPACE_LOW), jnp.asarray(HAND_SPACE_HIGH)
        gl = jnp.asarray(self.goal_low if self.goal_low is not None else self.hand_low)
        gh = jnp.asarray(self.goal_high if self.goal_high is not None else self.hand_high)
        inf = jnp.full(14, jnp.inf)
        low = jnp.concatenate([hl, jnp.array([-1.0]), -inf, hl, jnp.array([-1.0]), -inf, gl])
        high = jnp.concatenate([hh, jnp.array([1.0]), inf, hh, jnp.array([1.0]), inf, gh])
        return jnp.clip(obs39, low, high)

    def _observe(self, cur, prev, goal, time_step):
        obs39 = self.clip_obs(jnp.concatenate([cur, prev, goal]))
        t = time_step.astype(jnp.float32) / self.episode_length
        return obs39, jnp.concatenate([obs39, t[None]])

    # -- interface -----------------------------------------------------------------------------------------
    def reset_to(self, rand: jax.Array, key: jax.Array | None = None) -> EnvState:
        """Episode start from Meta-World's random vector `rand` (e.g. one recorded from Meta-World itself)."""
        rand = jnp.asarray(rand, jnp.float32)
        qpos, qvel, ctx = self.episode_init(rand)
        model = self.model_for(ctx)
        hr = self.hand_reset
        data = self.new_data().replace(
            qpos=qpos.astype(jnp.float32), qvel=qvel.astype(jnp.float32),
            mocap_pos=jnp.asarray(hr.mocap_pos, jnp.float32)[None],
            mocap_quat=jnp.asarray(MOCAP_QUAT, jnp.float32)[None])
        data = self.kinematics(model, data)
        ctx = self.episode_context(data, ctx)
        cur = self.current_obs(data)
        time_step = jnp.zeros((), jnp.int32)
        _, obs = self._observe(cur, cur, ctx["goal"], time_step)
        zero = jnp.zeros((), jnp.float32)
        info = {**ctx, "prev_obs": cur}
        return EnvState(mjx_data=data, obs=obs, time_step=time_step, desired_pos=self.measured_pos(data),
                        desired_vel=jnp.zeros(4, jnp.float32), reward=zero, done=jnp.zeros((), bool),
                        metrics={k: zero for k in self.metric_names}, info=info,
                        key=jax.random.PRNGKey(0) if key is None else key)

    def reset(self, key: jax.Array) -> EnvState:
        """New episode from `key` (same key -> same episode)."""
        key, sub = jax.random.split(key)
        return self.reset_to(self.sample_rand_vec(sub), key)

    def measured_pos(self, data: mjx.Data) -> jax.Array:
        """[4] the TCE controller's current position: mocap position and qpos of r_close."""
        return jnp.concatenate([data.mocap_pos[0], data.qpos[self._r_close_qpos][None]])

    def controller(self, state: EnvState, desired_pos: jax.Array) -> jax.Array:
        """[4] raw action of fancy_gym's Meta-World TCE controller."""
        d = state.mjx_data
        a = jnp.concatenate([self.tce_gain * (desired_pos[:3] - d.mocap_pos[0]), desired_pos[3:]])
        return jnp.clip(a, -1.0, 1.0)

    def step(self, state: EnvState, desired_pos: jax.Array, desired_vel: jax.Array) -> EnvState:
        """One control step tracking desired_pos [4] (xyz mocap target, gripper command); desired_vel is
        stored (the ProDMP initial condition) but not used by the controller."""
        desired_pos = jnp.asarray(desired_pos, jnp.float32)
        desired_vel = jnp.asarray(desired_vel, jnp.float32)
        state = self.apply_action(state, self.controller(state, desired_pos))
        return state.replace(desired_pos=desired_pos, desired_vel=desired_vel)

    def apply_action(self, state: EnvState, action: jax.Array) -> EnvState:
        """One Meta-World step with a raw action [4] (module docstring)."""
        action = jnp.asarray(action, jnp.float32)
        ctx = state.info
        model = self.model_for(ctx)
        d0 = state.mjx_data
        mocap = jnp.clip(d0.mocap_pos[0] + self.action_scale * jnp.clip(action[:3], -1.0, 1.0),
                         jnp.asarray(self.hand_low), jnp.asarray(self.hand_high))
        d = d0.replace(mocap_pos=mocap[None], mocap_quat=jnp.asarray(MOCAP_QUAT, jnp.float32)[None],
                       ctrl=jnp.stack([action[3], -action[3]]))
        d = jax.lax.fori_loop(0, self.frame_skip, lambda _, x: mjx.step(model, x), d)
        stable = (jnp.all(jnp.isfinite(d.qpos)) & jnp.all(jnp.isfinite(d.qvel))
                  & jnp.all(jnp.abs(d.qvel) < self.max_speed))
        rest = d0.replace(qvel=jnp.zeros_like(d0.qvel))
        d = rest.where(stable, d)  # Data.where: MJX-Warp keeps its contact arrays unbatched
        d = self.kinematics(model, d)
        time_step = state.time_step + 1
        cur = self.current_obs(d)
        obs39, obs = self._observe(cur, ctx["prev_obs"], ctx["goal"], time_step)
        ctx = self.advance_context(d, obs39, ctx)
        reward, success = self.evaluate(d, obs39, action, ctx)
        reward = jnp.where(stable, reward, 0.0).astype(jnp.float32)
        success = (success & stable).astype(jnp.float32)
        metrics = {"is_success": success,
                   "success_once": jnp.maximum(state.metrics["success_once"], success)}
        return state.replace(mjx_data=d, obs=obs, time_step=time_step, reward=reward,
                             done=time_step >= self.episode_length, metrics=metrics,
                             info={**ctx, "prev_obs": cur})

    # -- rendering (toperl_jax/envs/render.py hook) ---------------------------------------------------------
    render_camera = "corner"

    def render_scene(self, model: mujoco.MjModel, data: mujoco.MjData, info: dict) -> list:
        if self._episode_body_id >= 0 and "body_pos" in info:
            model.body_pos[self._episode_body_id] = np.asarray(info["body_pos"], np.float64)
        if "goal" in info:
            return [{"pos": np.asarray(info["goal"]), "size": 0.02, "rgba": [0, 0.8, 0, 0.6]}]
        return []


class JaxUniform:
    """U(rand_low, rand_high) draws of a task (for the rejection loops)."""

    def __init__(self, task: SawyerTask):
        self.low, self.high = jnp.asarray(task.rand_low), jnp.asarray(task.rand_high)

    def draw(self, key):
        return jax.random.uniform(key, self.low.shape, minval=self.low, maxval=self.high)
