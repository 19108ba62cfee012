"""The common episodic-task interface: state pytree, PD tracking controller, `lax.scan` rollout.

A task is a small Python object (static under `jax.jit`: close over it, never pass it as an
argument) with pure methods over an `EnvState` pytree:

    state = task.reset(key)                              # observation s_0, measured pos/vel
    state = task.step(state, desired_pos, desired_vel)   # one control step (PD + frame_skip substeps)
    final, traj = task.rollout(state, desired)           # T control steps via lax.scan

Every method works on a single episode; batch with `jax.vmap` (e.g. `jax.vmap(task.reset)(keys)`).

Controller (mirrors fancy_gym's box pushing, see specs/tasks_fancy_gym.md A5/A9):
    u   = clip(Kp (q_d - q) + Kd (qd_d - qd), -pd_limit, pd_limit)
    tau = clip(u + qfrc_bias, -torque_limit, torque_limit)
computed once per control step from the measured (q, qd) and held for `frame_skip` physics
substeps. `qfrc_bias` (gravity + Coriolis/centrifugal) is taken from a data that is kept forwarded,
i.e. consistent with the current qpos/qvel (upstream reads it one substep stale; the difference is
one physics substep).
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
from flax import struct
from mujoco import mjx
from mujoco.mjx import warp as mjx_warp

from toperl_jax.mp import ProDMPConfig


def xla_cpu_options(platform: str | None = None) -> dict[str, bool] | None:
    """Compiler options to pass as `jax.jit(f, compiler_options=xla_cpu_options())` for the target `platform`
    ('cpu', 'cuda', 'tpu', …; default: the backend at hand, `jax.default_backend()`).

    jaxlib 0.10.2's CPU backend compiles MJX's kinematics of an arm (box pushing's 7-link Franka, Meta-World's
    Sawyer) with its new MLIR fusion emitters into fusions that recompute shared subexpressions: one batch-64
    physics step of box pushing takes ~7 s instead of ~11 ms (measured on this project's 2-core CPU; docs/envs.md).
    Disabling them (`xla_cpu_use_fusion_emitters=False`, or the same in XLA_FLAGS before jax starts) restores
    normal speed. Returns None for other platforms (the flag is CPU-only).
    """
    return {"xla_cpu_use_fusion_emitters": False} if (platform or jax.default_backend()) == "cpu" else None


PHYSICS_IMPLS = ("jax", "warp")
"""MJX implementations a task runs on (its `physics_impl` argument, `--physics-impl`): 'jax' (MJX in pure JAX, any
device) or 'warp' (MJX-Warp: MuJoCo Warp kernels called from JAX, on a CUDA GPU or, slowly, the CPU; needs the
optional `gpu` extra). docs/envs.md "Physics backends"."""


def check_physics_impl(impl: str) -> None:
    """Reject an unknown `impl`, and 'warp' without warp-lang installed, with a one-line message."""
    if impl not in PHYSICS_IMPLS:
        raise ValueError(f"physics_impl must be one of {', '.join(PHYSICS_IMPLS)}, got {impl!r}")
    if impl == "warp" and not mjx_warp.WARP_INSTALLED:
        raise ValueError("physics_impl 'warp' needs warp-lang, which is not installed: install the `gpu` extra "
                         "(pip install -e '.[gpu]')")


def put_model(mj_model: mujoco.MjModel, impl: str = "jax") -> mjx.Model:
    """`mjx.put_model` with implementation `impl` ('jax' or 'warp', see `PHYSICS_IMPLS`) onto this process's first
    device. MJX's default is `jax.devices()[0]`, which under `jax.distributed` belongs to process 0: every other
    process would close its jitted programs over arrays it cannot address (the model's arrays are constants of
    every rollout)."""
    check_physics_impl(impl)
    return mjx.put_model(mj_model, impl=impl, device=jax.local_devices()[0])


def make_data(mj_model: mujoco.MjModel, impl: str = "jax", warp_worlds: int = 1) -> mjx.Data:
    """`mjx.make_data` for `impl` on this process's first device (see `put_model`). It takes the `MjModel`, not the
    `mjx.Model`: MJX-Warp allocates its data from the MjModel only.

    MJX-Warp batches its constraint rows per episode, but keeps ONE contact list for all the episodes that a
    vmapped call steps together (its "worlds"; `contact__worldid` says whose a contact is), sized when the data is
    made. `warp_worlds` is that number of episodes (the product of all vmapped axes, an upper bound is fine); per
    episode, the contact list and the constraint rows get MJX-JAX's capacity (every contact its collision functions
    can produce, every row), at least MJX-Warp's default. MJX-Warp drops contacts beyond the list (and prints a
    warning)."""
    device = jax.local_devices()[0]
    if impl != "warp":
        return mjx.make_data(mj_model, impl=impl, device=device)
    from mujoco.mjx.third_party.mujoco_warp._src import io as mjw_io  # MJX's copy of MuJoCo Warp (needs warp-lang)

    full = jax.eval_shape(lambda: mjx.make_data(mj_model, impl="jax"))._impl
    nconmax = max(full.contact.dist.shape[0], mjw_io._default_nconmax(mj_model))
    njmax = max(full.efc_J.shape[0], mjw_io._default_njmax(mj_model))
    return mjx.make_data(mj_model, impl="warp", device=device, naconmax=warp_worlds * nconmax, njmax=njmax)


def warp_contacts(data: mjx.Data) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The active contacts of one episode's MJX-Warp data, one entry per constraint row: (geom [njmax, 2] the
    contact's geom pair, force [njmax] the force of its first constraint row (the normal force with elliptic cones),
    first [njmax] bool: the row is the first row of a contact). Active: dist < includemargin, i.e. the contact has
    constraint rows. The episode's own contacts are those its (per-episode) constraint rows point at, since the
    contact list is shared by all episodes of a vmapped call (`make_data`)."""
    impl = data._impl
    rows = jnp.arange(impl.efc__type.shape[-1])
    kinds = [mujoco.mjtConstraint.mjCNSTR_CONTACT_FRICTIONLESS, mujoco.mjtConstraint.mjCNSTR_CONTACT_PYRAMIDAL,
             mujoco.mjtConstraint.mjCNSTR_CONTACT_ELLIPTIC]
    is_contact = jnp.isin(impl.efc__type, jnp.asarray([int(k) for k in kinds])) & (rows < jnp.squeeze(impl.nefc))
    con = jnp.where(is_contact, impl.efc__id, 0)
    first = is_contact & (impl.contact__efc_address[con, 0] == rows)
    return impl.contact__geom[con], impl.efc__force, first


@struct.dataclass
class EnvState:
    """State of one episode (add leading batch dims with vmap).

    Fields:
        mjx_data: physics state, always forwarded (kinematics, qfrc_bias match qpos/qvel).
        obs: [obs_size] observation of the current state, incl. the time feature t / duration.
        time_step: [] int32, number of control steps taken (0 after reset).
        desired_pos, desired_vel: [dof] desired pos/vel in force when `obs` was observed: the
            measured joint pos/vel after reset, the commanded ones after a step. They are the
            ProDMP initial condition for a (re)plan starting at this state.
        reward: [] reward of the last step (0 after reset).
        done: [] bool, True once time_step == T (time limit; reacher has no early termination).
        metrics: {name: []} float32 metrics of the current state (names: task.metric_names).
        info: {name: array} task-specific data (e.g. the goal).
        key: PRNG key owned by the episode (for tasks with in-episode randomness).
    """

    mjx_data: mjx.Data
    obs: jax.Array
    time_step: jax.Array
    desired_pos: jax.Array
    desired_vel: jax.Array
    reward: jax.Array
    done: jax.Array
    metrics: dict[str, jax.Array]
    info: dict[str, Any]
    key: jax.Array


@struct.dataclass
class Rollout:
    """Data of one episode executed by `EpisodicTask.rollout` (TOP-ERL spec §1 layout).

    Fields (T = number of executed steps):
        obs: [T, obs_size] states s_0 .. s_{T-1} (s_0 = the observation the rollout started from).
        actions: [T, 2 dof] executed desired positions then velocities.
        rewards: [T] float32; dones: [T] bool (done after the step).
        desired_pos, desired_vel: [T, dof] in force when s_k was observed (k = 0: the start
            state's, i.e. the measured pos/vel after reset).
        metrics: {name: [T]} metrics after each step.
        final_obs: [obs_size] s_T, the observation after the last step.
        final_metrics: {name: []} metrics after the last step (e.g. is_success).
    """

    obs: jax.Array
    actions: jax.Array
    rewards: jax.Array
    dones: jax.Array
    desired_pos: jax.Array
    desired_vel: jax.Array
    metrics: dict[str, jax.Array]
    final_obs: jax.Array
    final_metrics: dict[str, jax.Array]

    @property
    def init_pos(self) -> jax.Array:
        """[dof] episode initial condition (measured pos at the start state)."""
        return self.desired_pos[..., 0, :]

    @property
    def init_vel(self) -> jax.Array:
        """[dof] episode initial condition (measured vel at the start state)."""
        return self.desired_vel[..., 0, :]


def pd_torque(desired_pos, desired_vel, pos, vel, kp, kd, bias, pd_limit, torque_limit):
    """PD tracking torque with bias compensation, all arrays [..., dof].

    tau = clip(clip(kp (q_d - q) + kd (qd_d - qd), +-pd_limit) + bias, +-torque_limit).
    """
    u = jnp.clip(kp * (desired_pos - pos) + kd * (desired_vel - vel), -pd_limit, pd_limit)
    return jnp.clip(u + bias, -torque_limit, torque_limit)


class EpisodicTask(abc.ABC):
    """Base class of the episodic MJX tasks. Subclasses set the metadata and implement
    `reset` and `step`; `rollout` is shared.

    Metadata (class or instance attributes):
        name: registry name.
        num_dof: controlled joints (the ProDMP dof); actions are [2 num_dof].
        episode_length: T, control steps per episode.
        dt: control step in seconds (= physics timestep * frame_skip).
        frame_skip: physics substeps per control step.
        obs_size: observation length (incl. the time feature, last entry).
        metric_names: keys of EnvState.metrics.
    Physics (set by `init_physics` in the constructor): mj_model (the MuJoCo model), mjx_model (it on the device),
    physics_impl ('jax' or 'warp', `PHYSICS_IMPLS`), warp_worlds (MJX-Warp: episodes stepped together, `make_data`).
    """

    name: str
    num_dof: int
    episode_length: int
    dt: float
    frame_skip: int
    obs_size: int
    metric_names: tuple[str, ...]
    mj_model: mujoco.MjModel
    mjx_model: mjx.Model
    physics_impl: str
    warp_worlds: int

    def init_physics(self, mj_model: mujoco.MjModel, physics_impl: str = "jax", warp_worlds: int = 1) -> None:
        """Set the task's physics: `mj_model`, its MJX model on implementation `physics_impl` ('jax' or 'warp') and,
        for 'warp', `warp_worlds`: the most episodes one vmapped call steps together (see `make_data`)."""
        check_physics_impl(physics_impl)
        if int(warp_worlds) < 1:
            raise ValueError(f"warp_worlds must be >= 1, got {warp_worlds}")
        self.mj_model, self.physics_impl, self.warp_worlds = mj_model, physics_impl, int(warp_worlds)
        self.mjx_model = put_model(mj_model, physics_impl)

    def set_solver(self, iterations: int, ls_iterations: int) -> None:
        """Replace the MJCF's constraint-solver budget (`opt.iterations`, `opt.ls_iterations`) and rebuild the MJX
        model. The defaults are the MJCF's (box pushing 4 / 8, hopper jump 6 / 6); docs/envs.md's solver study
        gives the speed and the parity with fancy_gym of other settings (e.g. MuJoCo's own 100 / 50)."""
        for name, value in (("iterations", iterations), ("ls_iterations", ls_iterations)):
            if int(value) < 1:
                raise ValueError(f"solver {name} must be >= 1, got {value}")
        self.mj_model.opt.iterations, self.mj_model.opt.ls_iterations = int(iterations), int(ls_iterations)
        self.mjx_model = put_model(self.mj_model, self.physics_impl)

    def new_data(self) -> mjx.Data:
        """Fresh physics data of the task's model for its implementation (`make_data`; qpos = qpos0, at rest)."""
        return make_data(self.mj_model, self.physics_impl, self.warp_worlds)

    @property
    def action_size(self) -> int:
        """2 num_dof: desired positions then desired velocities."""
        return 2 * self.num_dof

    @property
    def duration(self) -> float:
        """Episode duration in seconds, T dt."""
        return self.episode_length * self.dt

    def action_times(self, init_time: float = 0.0) -> jax.Array:
        """[T] times of the desired pos/vel executed at steps 0..T-1: init_time + (k+1) dt."""
        return init_time + self.dt * jnp.arange(1, self.episode_length + 1, dtype=jnp.float32)

    @abc.abstractmethod
    def prodmp_config(self) -> ProDMPConfig:
        """Suggested ProDMP decoder config for this task."""

    @abc.abstractmethod
    def reset(self, key: jax.Array) -> EnvState:
        """A new episode from `key`."""

    @abc.abstractmethod
    def step(self, state: EnvState, desired_pos: jax.Array, desired_vel: jax.Array) -> EnvState:
        """One control step tracking (desired_pos, desired_vel)."""

    def compiler_options(self, platform: str | None = None) -> dict | None:
        """XLA options for `jax.jit(..., compiler_options=...)` of programs that step this task, compiled for
        `platform` (default: the backend at hand; default None; box pushing and Meta-World turn off jaxlib's CPU
        fusion emitters, see `xla_cpu_options`)."""
        return None

    def mdp_rewards(self, rollout: Rollout) -> jax.Array:
        """[T] rewards the learner stores for `rollout` (default: the env rewards unchanged).

        Tasks whose learner-side reward differs from the env reward override this (hopper jump moves its
        sparse final reward to the take-off step, top_erl.md §6).
        """
        return rollout.rewards

    def rollout(self, state: EnvState, desired: jax.Array) -> tuple[EnvState, Rollout]:
        """Execute a desired trajectory with `lax.scan` over `step`.

        Args:
            state: start state (typically `reset(key)`).
            desired: [n, 2 dof] desired positions then velocities for n steps (n = T for a
                whole episode); no early stop (tasks here terminate only at the time limit).
        Returns:
            (final state, Rollout).
        """
        dof = self.num_dof
        if desired.ndim != 2 or desired.shape[-1] != 2 * dof:
            raise ValueError(f"desired must have shape [n, {2 * dof}] (positions then velocities"
                             f" of {dof} dof), got {desired.shape}")
        desired = desired.astype(jnp.float32)

        def body(s: EnvState, a):
            out = (s.obs, s.desired_pos, s.desired_vel)
            s = self.step(s, a[:dof], a[dof:])
            return s, out + (s.reward, s.done, s.metrics)

        final, (obs, dpos, dvel, rew, done, metrics) = jax.lax.scan(body, state, desired)
        return final, Rollout(obs=obs, actions=desired, rewards=rew, dones=done,
                              desired_pos=dpos, desired_vel=dvel, metrics=metrics,
                              final_obs=final.obs, final_metrics=final.metrics)
