"""Tests of the episodic task interface and the MJX reacher (CPU, a few seconds of compiles)."""

import functools

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from toperl_jax.envs import EnvState, make, task_names
from toperl_jax.envs.reacher import Reacher
from toperl_jax.envs.reacher import numpy_controller
from toperl_jax.mp import prodmp_trajectory

TASK = make("reacher")
T, DOF = TASK.episode_length, TASK.num_dof
reset = jax.jit(TASK.reset)
step = jax.jit(TASK.step)
rollout = jax.jit(TASK.rollout)


def _hold(state):
    """[T, 2 dof] desired = the start pos, zero velocity."""
    return jnp.concatenate([jnp.tile(state.desired_pos, (T, 1)), jnp.zeros((T, DOF))], -1)


def test_metadata():
    assert (DOF, T, TASK.frame_skip, TASK.obs_size) == (2, 50, 2, 9)
    assert TASK.dt == pytest.approx(0.02) and TASK.duration == pytest.approx(1.0)
    cfg = TASK.prodmp_config()
    assert cfg.num_dof == DOF and cfg.dt == pytest.approx(TASK.dt) and cfg.tau == pytest.approx(1.0)
    np.testing.assert_allclose(TASK.action_times(), 0.02 * np.arange(1, 51), rtol=1e-6)
    assert set(TASK.metric_names) == {"distance", "is_success", "ctrl_cost"}


def test_reset_shapes_and_time_feature():
    s = reset(jax.random.PRNGKey(0))
    assert isinstance(s, EnvState)
    assert s.obs.shape == (9,) and s.obs.dtype == jnp.float32
    assert s.desired_pos.shape == s.desired_vel.shape == (DOF,)
    assert s.time_step.dtype == jnp.int32 and int(s.time_step) == 0 and not bool(s.done)
    assert float(s.obs[-1]) == 0.0
    np.testing.assert_array_equal(s.obs[:2], s.desired_pos)       # measured pos = initial condition
    np.testing.assert_array_equal(s.obs[2:4], s.desired_vel)
    np.testing.assert_allclose(s.obs[4:6], s.info["goal"] / TASK.reach, rtol=1e-6)
    s1 = step(s, s.desired_pos, s.desired_vel)
    assert int(s1.time_step) == 1 and float(s1.obs[-1]) == pytest.approx(1 / T)


def test_same_key_same_episode_different_keys_different_goals():
    a, b = reset(jax.random.PRNGKey(3)), reset(jax.random.PRNGKey(3))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x,
                                      jax.random.key_data(y) if jnp.issubdtype(y.dtype, jax.dtypes.prng_key) else y)
    goals = jax.jit(jax.vmap(TASK.reset))(jax.random.split(jax.random.PRNGKey(4), 8)).info["goal"]
    assert len({tuple(np.round(np.asarray(g), 6)) for g in goals}) == 8
    r = np.linalg.norm(np.asarray(goals), axis=-1)
    assert np.all((r >= 0.05 - 1e-6) & (r <= 0.2 + 1e-6))
    assert np.all(np.asarray(goals)[:, 0] >= 0.0)  # the half plane in front of the shoulder


def test_pd_holds_still_against_gravity():
    """Desired = current pose (zero vel): the bias term cancels gravity, the arm stays put;
    without it the same PD sags visibly (the plane is vertical, gravity acts)."""
    s = reset(jax.random.PRNGKey(1))
    data = s.mjx_data.replace(qvel=jnp.zeros(DOF))
    s = s.replace(mjx_data=data, desired_vel=jnp.zeros(DOF))
    _, tr = rollout(s, _hold(s))
    drift = np.abs(np.asarray(tr.obs[:, :2]) - np.asarray(s.desired_pos)).max()
    assert drift < 1e-3, drift

    class NoBias(Reacher):
        def torque(self, state, dp, dv):
            d = state.mjx_data
            return jnp.clip(jnp.asarray(self.kp) * (dp - d.qpos) + jnp.asarray(self.kd) * (dv - d.qvel), -3, 3)

    nb = NoBias()
    _, tr_nb = jax.jit(nb.rollout)(s, _hold(s))
    assert np.abs(np.asarray(tr_nb.obs[:, :2]) - np.asarray(s.desired_pos)).max() > 0.05


def test_tracks_smooth_prodmp_trajectory():
    cfg = TASK.prodmp_config()

    def one(key):
        k1, k2 = jax.random.split(key)
        s = TASK.reset(k1)
        w = 0.3 * jax.random.normal(k2, (cfg.num_params,))
        # the elbow's weights (its basis and goal, dof-major layout) shifted so that it bends away from its
        # -0.2 rad limit (checked below: the commands stay inside the joint range)
        w = w.at[cfg.params_per_dof:2 * cfg.params_per_dof].add(0.5)
        pos, vel = prodmp_trajectory(cfg, w, TASK.action_times(), 0.0, s.desired_pos, s.desired_vel)
        _, tr = TASK.rollout(s, jnp.concatenate([pos, vel], -1))
        return tr.obs[1:, :2] - pos[:-1], jnp.ptp(pos, axis=0), pos[:, 1]   # obs[k+1] is reached after command k

    err, span, elbow = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(2), 16))
    lo, hi = TASK.mj_model.jnt_range[1]
    assert float(elbow.min()) > lo + 0.05 and float(elbow.max()) < hi - 0.05  # free motion, no limit contact
    rmse = float(jnp.sqrt(jnp.mean(err ** 2)))
    assert float(span.mean()) > 0.3          # the trajectories do move
    assert rmse < 0.05 and float(jnp.abs(err).max()) < 0.2, rmse


def test_reward_and_success_hand_computed():
    s = reset(jax.random.PRNGKey(5))
    goal = jnp.array([0.12, -0.05])
    s = s.replace(info={"goal": goal})
    dp, dv = s.desired_pos + jnp.array([0.2, -0.1]), jnp.array([0.5, 0.0])
    s1 = step(s, dp, dv)
    # independent reference: native MuJoCo with the numpy controller
    m = TASK.mj_model
    d = mujoco.MjData(m)
    d.qpos[:], d.qvel[:] = np.asarray(s.mjx_data.qpos), np.asarray(s.mjx_data.qvel)
    mujoco.mj_forward(m, d)
    tau = numpy_controller(TASK, m, d, np.asarray(dp), np.asarray(dv))
    d.ctrl[:] = tau
    for _ in range(TASK.frame_skip):
        mujoco.mj_step(m, d)
    mujoco.mj_forward(m, d)
    l1, l2 = 0.1, 0.11                                     # forward kinematics by hand (x-z plane)
    q1, q2 = d.qpos
    tip = np.array([l1 * np.cos(q1) + l2 * np.cos(q1 + q2), -(l1 * np.sin(q1) + l2 * np.sin(q1 + q2))])
    np.testing.assert_allclose(d.site_xpos[0][[0, 2]], tip, atol=1e-9)
    np.testing.assert_allclose(s1.obs[:2], d.qpos, atol=1e-4)
    np.testing.assert_allclose(s1.obs[6:8], tip / 0.21, atol=1e-4)  # positions observed in units of the reach
    dist = np.linalg.norm(tip - np.asarray(goal))
    expected = -dist + np.exp(-(dist / 0.03) ** 2) - 0.01 * np.sum((tau / 3.0) ** 2)
    assert float(s1.reward) == pytest.approx(expected, abs=1e-4)
    assert float(s1.metrics["distance"]) == pytest.approx(dist, abs=1e-4)
    assert float(s1.metrics["is_success"]) == 0.0
    # success: put the goal within 1 cm of the current fingertip
    s2 = s1.replace(info={"goal": s1.obs[6:8] * TASK.reach + jnp.array([0.0, 0.01])})
    s3 = step(s2, s2.obs[:2], jnp.zeros(DOF))
    assert float(s3.metrics["distance"]) < TASK.success_radius
    assert float(s3.metrics["is_success"]) == 1.0


def test_rollout_equals_stepping():
    s0 = reset(jax.random.PRNGKey(6))
    desired = jax.random.normal(jax.random.PRNGKey(7), (T, 2 * DOF)) * 0.3
    final, tr = rollout(s0, desired)
    s = s0
    for k in range(T):
        np.testing.assert_allclose(tr.obs[k], s.obs, atol=1e-6)
        np.testing.assert_allclose(tr.desired_pos[k], s.desired_pos, atol=1e-6)
        np.testing.assert_allclose(tr.desired_vel[k], s.desired_vel, atol=1e-6)
        s = step(s, desired[k, :DOF], desired[k, DOF:])
        assert float(tr.rewards[k]) == pytest.approx(float(s.reward), abs=1e-5)
        assert bool(tr.dones[k]) == bool(s.done) == (k == T - 1)
    np.testing.assert_allclose(tr.final_obs, s.obs, atol=1e-5)
    assert float(tr.final_metrics["distance"]) == pytest.approx(float(s.metrics["distance"]), abs=1e-5)
    np.testing.assert_array_equal(tr.init_pos, s0.obs[:2])
    assert float(final.obs[-1]) == 1.0


def test_jit_vmap_batch_and_no_nan():
    @functools.partial(jax.jit, static_argnums=1)
    def batch(key, n):
        k1, k2 = jax.random.split(key)
        states = jax.vmap(TASK.reset)(jax.random.split(k1, n))
        desired = jax.random.uniform(k2, (n, T, 2 * DOF), minval=-4.0, maxval=4.0)
        return jax.vmap(TASK.rollout)(states, desired)

    final, tr = batch(jax.random.PRNGKey(8), 64)
    assert tr.obs.shape == (64, T, 9) and tr.rewards.shape == (64, T) and tr.desired_pos.shape == (64, T, 2)
    assert final.metrics["is_success"].shape == (64,)
    for i in range(2):   # 1000 random episodes in 64-episode batches (one compile)
        for j in range(8):
            final, tr = batch(jax.random.PRNGKey(100 + 8 * i + j), 64)
            assert np.isfinite(np.asarray(tr.obs)).all() and np.isfinite(np.asarray(tr.rewards)).all()


def test_make_error_and_kwargs():
    with pytest.raises(ValueError, match="accepted task names: .*reacher"):
        make("box_pushing_dense_typo")
    assert "reacher" in task_names()
    assert make("reacher", episode_length=10).episode_length == 10
    with pytest.raises(ValueError, match=r"desired must have shape \[n, 4\]"):
        TASK.rollout(reset(jax.random.PRNGKey(0)), jnp.zeros((T, 3)))
