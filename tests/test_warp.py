"""MJX-Warp (`physics_impl="warp"`, `--physics-impl warp`) against MJX-JAX, both on the CPU device: a few control
steps of every task family, two episodes side by side in one vmapped call (they share MJX-Warp's contact list,
`envs.base.make_data`), through the tasks' own reset / step / reward code.

Tolerances, absolute, on observations, rewards and metrics of order 1 (measured: docs/envs.md "Physics backends"):
- reacher, box pushing (the box resting on the table), hopper jump (one episode lands): the implementations differ
  by float32 rounding, ≤ 5e-6 over these steps; 1e-4 leaves 20x. The hopper's contact latches must be equal.
- Meta-World reach: the hand is pulled by a mocap weld and the object rests on the table under elliptic cones;
  the two solvers' answers drift apart by up to 1e-4 m (hand), 5e-4 (object quaternion), 8e-4 (reward) in 5
  steps; 5e-3. MJX-JAX is the outlier here: from the same state, 5 physics steps of MJX-JAX differ from C MuJoCo by
  4.9e-4 in qpos, MJX-Warp's by 2.2e-5.
- contact forces (stick-push's pads and objects): total normal force per geom pair to 1 % (measured ≤ 0.33 %).

MJX-Warp on a CPU runs its kernels one after another on the host (~50 ms per reacher control step, ~0.2 s per box
pushing step), hence the short episodes. Most of this file's time is compiling the MJX-JAX reference programs.
The warp packages are in the `test` extra (as in the `gpu` extra), so CI runs this file.
"""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toperl_jax import envs
from toperl_jax.cli import UsageError
from toperl_jax.envs import base
from toperl_jax.envs.metaworld.sawyer import reset_compiler_options

BATCH = 2
SMOOTH = 1e-4
"""Tolerance where the implementations differ by float32 rounding (module docstring)."""
METAWORLD = 5e-3
"""Tolerance of Meta-World's weld-driven hand and resting object (module docstring)."""


def run_both(name: str, start_fn, desired_fn):
    """{impl: (start states, final states, rollouts)} of `BATCH` episodes of `name` on each implementation:
    start_fn(task, i) → EnvState of episode i, desired_fn(task, start, i) → [steps, 2 dof]."""
    out = {}
    for impl in base.PHYSICS_IMPLS:
        task = envs.make(name, physics_impl=impl, warp_worlds=BATCH)

        def episode(i):
            start = start_fn(task, i)
            return (start,) + task.rollout(start, desired_fn(task, start, i))

        out[impl] = jax.jit(jax.vmap(episode), compiler_options=task.compiler_options())(jnp.arange(BATCH))
    return out


def assert_close(out, atol: float, exact_metrics: tuple[str, ...] = ()):
    (s_j, f_j, r_j), (s_w, f_w, r_w) = out["jax"], out["warp"]
    np.testing.assert_allclose(s_w.obs, s_j.obs, rtol=0, atol=atol, err_msg="start observation")
    np.testing.assert_allclose(r_w.obs, r_j.obs, rtol=0, atol=atol, err_msg="observations")
    np.testing.assert_allclose(f_w.obs, f_j.obs, rtol=0, atol=atol, err_msg="final observation")
    np.testing.assert_allclose(r_w.rewards, r_j.rewards, rtol=0, atol=atol, err_msg="rewards")
    for k in r_j.metrics:
        if k in exact_metrics:
            np.testing.assert_array_equal(r_w.metrics[k], r_j.metrics[k], err_msg=k)
        else:
            np.testing.assert_allclose(r_w.metrics[k], r_j.metrics[k], rtol=0, atol=atol, err_msg=k)


def ramp(task, start, i, num_steps, speed):
    """Desired positions moving every joint at `speed` (rad/s, sign by joint and episode) from the start."""
    t = task.dt * jnp.arange(1, num_steps + 1)[:, None]
    v = speed * jnp.where(jnp.arange(task.num_dof) % 2 == i % 2, 1.0, -1.0)
    return jnp.concatenate([start.desired_pos + t * v, jnp.broadcast_to(v, t.shape[:1] + v.shape)], axis=-1)


def test_reacher():
    out = run_both("reacher", lambda task, i: task.reset(jax.random.PRNGKey(i)),
                   lambda task, s, i: ramp(task, s, i, 10, 2.0))
    assert_close(out, SMOOTH)


@pytest.mark.slow  # ~65 s on a CPU; the default suite keeps the contact cases of hopper and stick-push
def test_box_pushing():
    """The box rests on the table (contacts from the first step on) while the arm moves."""
    out = run_both("box-pushing-dense", lambda task, i: task.reset(jax.random.PRNGKey(i)),
                   lambda task, s, i: ramp(task, s, i, 5, 0.5))
    assert_close(out, SMOOTH)


def test_hopper_jump_lands():
    """Episode 0 starts 1.5 cm above the floor and lands within the steps, episode 1 stays in the air: the floor
    contact read from MJX-Warp's shared contact list belongs to the right episode."""
    heights = jnp.array([1.19, 1.5])

    def start(task, i):
        qpos = jnp.array([0.0, 0.0, 0.0, -0.2, -0.1, 0.3]).at[1].set(heights[i])
        return task.reset_to(qpos, jnp.zeros(6), jnp.array([1.0, 0.0, 0.0]))

    out = run_both("hopper-jump-sparse", start, lambda task, s, i: ramp(task, s, i, 12, 1.0))
    contact = out["jax"][2].metrics["floor_contact"]
    assert contact[0].any() and not contact[1].any()  # the test sees a landing, and only in episode 0
    assert_close(out, SMOOTH, exact_metrics=("floor_contact", "init_floor_contact", "has_left_floor",
                                           "contact_with_floor"))


needs_metaworld = pytest.mark.skipif(importlib.util.find_spec("metaworld") is None,
                                     reason="metaworld assets not installed (pip install --no-deps metaworld==3.1.1)")


@pytest.mark.slow  # ~60 s on a CPU; test_metaworld_stick_push_contacts covers Meta-World's model by default
@needs_metaworld
def test_metaworld_reach():
    """Meta-World: mocap weld, elliptic cones, the object resting on the table."""
    out = run_both("metaworld-reach", lambda task, i: task.reset(jax.random.PRNGKey(i)),
                   lambda task, s, i: ramp(task, s, i, 5, 0.5))
    assert_close(out, METAWORLD)


def pair_force(geom, force, active, pair) -> jax.Array:
    """[...] total first-row (normal) force of the active contacts between the geoms `pair`, per episode."""
    a, b = pair
    hit = ((geom[..., 0] == a) & (geom[..., 1] == b)) | ((geom[..., 0] == b) & (geom[..., 1] == a))
    return jnp.sum(jnp.where(hit & active, force, 0.0), axis=-1)


@needs_metaworld
def test_metaworld_stick_push_contacts():
    """`warp_contacts` against MJX-JAX's contact list, and stick-push's `touching` (Meta-World's
    `touching_main_object`, read from contact forces) on forwarded states: in episode 0 the stick is put across the
    open gripper, into both pads and claws; in episode 1 it lies on the table (no contact)."""
    out = {}
    for impl in base.PHYSICS_IMPLS:
        task = envs.make("metaworld-stick-push", physics_impl=impl, warp_worlds=BATCH)
        hand = task.hand_reset
        across = jnp.concatenate([jnp.asarray((hand.left_pad + hand.right_pad) / 2, jnp.float32),
                                  jnp.array([np.cos(np.pi / 4), 0.0, 0.0, np.sin(np.pi / 4)], jnp.float32)])

        def forwarded(i):
            s = task.reset(jax.random.PRNGKey(i))
            qpos = s.mjx_data.qpos.at[9:16].set(jnp.where(i == 0, across, s.mjx_data.qpos[9:16]))
            d = task.kinematics(task.model_for(s.info), s.mjx_data.replace(qpos=qpos))
            return d, task.touching(d)

        opts = reset_compiler_options(task.compiler_options())  # a reset-like program: LLVM -O0 compiles faster
        out[impl] = jax.jit(jax.vmap(forwarded), compiler_options=opts)(jnp.arange(BATCH))
    (d_j, touch_j), (d_w, touch_w) = out["jax"], out["warp"]
    np.testing.assert_array_equal(touch_j, [True, False])
    np.testing.assert_array_equal(touch_w, touch_j)
    geom_w, force_w, first_w = jax.vmap(base.warp_contacts)(d_w)
    con = d_j._impl.contact
    active_j = con.dist < con.includemargin
    force_j = jnp.where(con.efc_address >= 0, d_j._impl.efc_force[:, np.maximum(con.efc_address, 0)], 0.0)
    pairs_w = {tuple(sorted(p)) for p in np.asarray(geom_w)[np.asarray(first_w)].tolist()}
    pairs_j = {tuple(sorted(p)) for p in np.asarray(con.geom)[np.asarray(active_j)].tolist()}
    assert pairs_w == pairs_j and len(pairs_j) == 4  # both pads and both claws on the stick
    for pair in pairs_j:
        np.testing.assert_allclose(pair_force(geom_w, force_w, first_w, pair),
                                   pair_force(con.geom, force_j, active_j, pair), rtol=1e-2, atol=1e-3,
                                   err_msg=f"normal force between geoms {pair}")


def test_warp_missing_is_one_line(monkeypatch):
    """Without warp-lang, asking for MJX-Warp fails at once and names the extra to install."""
    from mujoco.mjx import warp as mjx_warp

    from toperl_jax import flags

    monkeypatch.setattr(mjx_warp, "WARP_INSTALLED", False)
    with pytest.raises(ValueError, match=r"\[gpu\]"):
        envs.make("reacher", physics_impl="warp")
    with pytest.raises(UsageError, match=r"--physics-impl.*\[gpu\]"):
        flags.check_env(flags.Flags(physics_impl="warp"))
    with pytest.raises(ValueError, match="physics_impl must be one of jax, warp"):
        envs.make("reacher", physics_impl="cuda")
