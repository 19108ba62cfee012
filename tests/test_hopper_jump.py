"""Tests of the MJX hopper jump (specs/tasks_fancy_gym.md B) against hand-computed values, planar
forward kinematics by hand, a native MuJoCo (C) episode with the upstream step logic written out in
numpy, and a numpy version of TOP-ERL's make_mdp_reward.

Compiles are the cost on a CPU (single-episode reset ~10 s, rollout ~30 s): every test shares the
module-level jitted functions below; the 1000-episode sweep is `-m slow`.
"""

import functools

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from toperl_jax.envs import make
from toperl_jax.envs.hopper_jump import XML_PATH, HopperJump, numpy_action, redistribute_sparse_reward

TASK = make("hopper-jump-sparse")
DENSE = make("hopper-jump-dense")
T = TASK.episode_length
reset = jax.jit(TASK.reset)
reset_to = jax.jit(TASK.reset_to)
rollout = jax.jit(TASK.rollout)
post_step = jax.jit(TASK.post_step)
post_step_dense = jax.jit(DENSE.post_step)
FOOT_BOTTOM_REST = 0.04  # foot capsule (axis z 0.1, radius 0.06) bottom at qpos = [0, 1.25, 0, 0, 0, 0]


# -- independent references ----------------------------------------------------------------------
def fk_foot_site(qpos):
    """Foot site (x, z) by hand: planar chain, torso pitch about +y, leg joints about -y."""
    def rot(th, v):   # rotation about +y by th acting on (x, z)
        return np.array([v[0] * np.cos(th) + v[1] * np.sin(th), -v[0] * np.sin(th) + v[1] * np.cos(th)])
    x, z, th0, q1, q2, q3 = np.asarray(qpos, np.float64)
    th1, th2 = th0 - q1, th0 - q1 - q2
    th3 = th2 - q3
    p = np.array([x, z]) + rot(th0, (0, -0.2)) + rot(th1, (0, -0.45)) + rot(th2, (0, -0.5))
    return p + rot(th3, (0, -0.06))


def native_episode(qpos0, goal, desired, sparse=True):
    """Upstream's step logic on native MuJoCo (float64, C collision with max-margin semantics)
    over our XML. desired: [n, 6]. Returns per-step arrays (dict)."""
    m = mujoco.MjModel.from_xml_path(str(XML_PATH))
    d = mujoco.MjData(m)
    d.qpos[:] = qpos0
    d.qvel[:] = 0.0
    mujoco.mj_forward(m, d)
    torso, site = m.body("torso").id, m.site("foot_site").id
    floor, foot = m.geom("floor").id, m.geom("foot_geom").id
    max_h, init, left, landed, cd = 0.0, False, False, False, None
    out = {k: [] for k in ("height", "max_height", "goal_dist", "reward", "init", "left", "landed", "healthy")}
    for k, des in enumerate(desired):
        a = np.clip(1.0 * (des[:3] - d.qpos[3:6]) + 0.1 * (des[3:] - d.qvel[3:6]), -1, 1)
        d.ctrl[:] = a
        for _ in range(4):
            mujoco.mj_step(m, d)
        z = d.xpos[torso, 2]
        max_h = max(max_h, z)
        c = False if landed else any({d.contact[i].geom1, d.contact[i].geom2} == {floor, foot}
                                     for i in range(d.ncon))
        if not init:
            init = c
        if init and not left:
            left = not c
        if not landed and left:
            landed = c
        gd = np.linalg.norm(d.site_xpos[site] - goal)
        if cd is None and landed:
            cd = gd
        state = np.concatenate([d.qpos[2:], d.qvel])
        healthy = float(d.qpos[1] > 0.5 and np.all(np.abs(state) < 100))
        cost = 1e-3 * np.sum(a ** 2)
        if sparse:
            r = -cost + (2 * healthy - 3 * gd + 10 * max_h - 2 * (cd or 5) if k == len(desired) - 1 else 0.0)
        else:
            r = healthy - 3 * gd + 3 * z - cost
        for key, v in zip(out, (z, max_h, gd, r, init, left, landed, healthy)):
            out[key].append(v)
    return {k: np.asarray(v) for k, v in out.items()}


def numpy_make_mdp_reward(rewards, event):
    """TOP-ERL's make_mdp_reward re-derived in numpy (argmax of the event mask, masked sum)."""
    rewards, event = np.array(rewards, np.float64), np.asarray(event, bool)
    out = rewards.copy()
    for b in range(rewards.shape[0]):
        k = int(np.argmax(event[b]))
        if k > 0:
            out[b, k] = np.sum(rewards[b] * event[b])
            out[b, k + 1:] = 0.0
    return out


def jump_desired(q0, crouch=(-1.5, -1.5, 0.6), extend=(1.5, 1.5, -1.5), t_crouch=20, t_jump=60):
    """[T, 6] hold the start pose, crouch, then kick the leg straight (saturating the PD)."""
    des = np.zeros((T, 6), np.float32)
    des[:, :3] = q0
    des[t_crouch:t_jump, :3] = crouch
    des[t_jump:, :3] = extend
    return jnp.asarray(des)


def first_step(x):
    x = np.asarray(x) > 0.5
    return int(np.argmax(x)) if x.any() else -1


@functools.cache
def jump_episode():
    s0 = reset(jax.random.PRNGKey(0))
    des = jump_desired(np.asarray(s0.desired_pos))
    return s0, des, *rollout(s0, des)


def _info(**kw):
    info = {"goal": jnp.array([0.8, 0.0, 0.0]), "max_height": jnp.float32(0.0),
            "init_floor_contact": jnp.bool_(False), "has_left_floor": jnp.bool_(False),
            "contact_with_floor": jnp.bool_(False), "contact_dist": jnp.float32(0.0)}
    info.update({k: jnp.asarray(v, info[k].dtype) for k, v in kw.items()})
    return info


# -- tests -----------------------------------------------------------------------------------------
def test_metadata_and_model():
    assert (TASK.num_dof, T, TASK.frame_skip, TASK.obs_size, TASK.action_size) == (3, 250, 4, 17, 6)
    assert TASK.dt == pytest.approx(0.008) and TASK.duration == pytest.approx(2.0)
    assert TASK.sparse and not DENSE.sparse and TASK.name == "hopper-jump-sparse"
    for k in ("max_height", "goal_dist", "height_rew", "healthy_reward", "contact_dist", "has_left_floor", "height"):
        assert k in TASK.metric_names
    cfg = TASK.prodmp_config()
    assert (cfg.num_dof, cfg.num_basis, cfg.tau, cfg.alpha_phase, cfg.alpha, cfg.basis_bandwidth_factor) == (
        3, 3, 0.8, 3.0, 10.0, 3.0)
    assert cfg.weights_scale == cfg.goal_scale == 1.0 and cfg.auto_scale_basis and not cfg.relative_goal
    assert cfg.dt == pytest.approx(0.008)
    m = TASK.mj_model
    assert m.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4 and m.opt.timestep == pytest.approx(0.002)
    np.testing.assert_allclose(m.actuator_gear[:, 0], 200.0)
    np.testing.assert_allclose(m.actuator_ctrlrange, [[-1, 1]] * 3)
    np.testing.assert_allclose(m.jnt_range[3:], [[-2.61799, 0], [-2.61799, 0], [-0.785398, 0.785398]])
    np.testing.assert_allclose(m.qpos0, [0, 1.25, 0, 0, 0, 0])
    # upstream: 0.001 per geom under MuJoCo 2.3.3 (pair margin = max); MuJoCo 4 / MJX add the two
    np.testing.assert_allclose(m.geom_margin, 0.0005)
    np.testing.assert_allclose(np.asarray(TASK.mjx_model.geom_margin), 0.0005)
    assert TASK.mjx_model.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4


def test_reset_distribution_and_observation():
    keys = jax.random.split(jax.random.PRNGKey(1), 512)
    qpos, qvel, goal = jax.jit(jax.vmap(TASK.sample_init))(keys)
    qpos, qvel, goal = map(np.asarray, (qpos, qvel, goal))
    np.testing.assert_array_equal(qpos[:, :3], np.tile([0, 1.5, 0], (512, 1)).astype(np.float32))
    for j, (lo, hi) in zip((3, 4, 5), ((-0.5, 0), (-0.2, 0), (0, 0.785))):
        assert lo <= qpos[:, j].min() < lo + 0.05 and hi - 0.05 < qpos[:, j].max() <= hi
    assert (qvel == 0).all() and (goal[:, 1:] == 0).all()
    assert 0.3 <= goal[:, 0].min() < 0.35 and 1.3 < goal[:, 0].max() <= 1.35

    s = reset(jax.random.PRNGKey(2))
    q, g = np.asarray(s.mjx_data.qpos), np.asarray(s.info["goal"])
    assert s.obs.shape == (17,) and int(s.time_step) == 0 and float(s.obs[-1]) == 0.0
    np.testing.assert_array_equal(s.obs[:6], q)
    np.testing.assert_array_equal(s.obs[6:12], 0.0)
    foot = fk_foot_site(q)
    np.testing.assert_allclose(s.obs[12:15], [foot[0] - g[0], 0.0, foot[1]], atol=2e-6)
    assert float(s.obs[15]) == g[0]
    np.testing.assert_array_equal(s.desired_pos, q[3:6])
    np.testing.assert_array_equal(s.desired_vel, 0.0)
    assert float(s.metrics["height"]) == pytest.approx(1.5) and float(s.metrics["max_height"]) == 0.0
    s_same = reset(jax.random.PRNGKey(2))
    np.testing.assert_array_equal(s.obs, s_same.obs)


def test_floor_contact_at_the_margin():
    """c_t = floor-foot contact with distance below the 0.001 m margin (C MuJoCo's semantics)."""
    def at_gap(gap, pitch=0.0):
        return reset_to(jnp.array([0.0, 1.25 - FOOT_BOTTOM_REST + gap, pitch, 0, 0, 0]), jnp.zeros(6),
                        jnp.zeros(3)).mjx_data

    for gap, expected in ((-0.01, True), (0.0005, True), (0.0009, True), (0.0011, False), (0.05, False)):
        d = at_gap(gap)
        assert bool(TASK.floor_contact(d)) == expected, gap
        # the native C collision agrees on the same pose
        m = TASK.mj_model
        dn = mujoco.MjData(m)
        dn.qpos[:] = np.asarray(d.qpos, np.float64)
        mujoco.mj_forward(m, dn)
        assert any({dn.contact[i].geom1, dn.contact[i].geom2} == {0, 4} for i in range(dn.ncon)) == expected
    # only floor-foot contacts count: mark every non-foot contact as penetrating, the foot ones as far
    d = at_gap(0.05)
    con = d._impl.contact
    is_foot = (con.geom == TASK._foot_geom).any(-1)
    d = d.tree_replace({"_impl.contact": con.replace(dist=jnp.where(is_foot, 1.0, -0.01))})
    assert not bool(TASK.floor_contact(d))
    d = d.tree_replace({"_impl.contact": con.replace(dist=jnp.where(is_foot & (con.geom == 0).any(-1), -0.01, 1.0))})
    assert bool(TASK.floor_contact(d))


def test_reward_terms_hand_computed():
    goal = np.array([0.9, 0.0, 0.0])
    qpos = np.array([0.1, 1.3, 0.2, -0.4, -0.3, 0.5])
    s = reset_to(jnp.asarray(qpos), jnp.zeros(6), jnp.asarray(goal))
    d = s.mjx_data
    foot = fk_foot_site(qpos)
    gd = np.linalg.norm([foot[0] - goal[0], 0.0, foot[1]])
    a = jnp.array([0.5, -1.0, 0.25])
    cost = 1e-3 * (0.25 + 1 + 0.0625)
    z = 1.3

    # sparse, not the last step: only the action cost
    _, met, r = post_step(d, _info(goal=goal, max_height=1.7), a, jnp.int32(10))
    assert float(r) == pytest.approx(-cost, rel=1e-5)
    assert float(met["goal_dist"]) == pytest.approx(gd, abs=2e-6)
    assert float(met["height"]) == pytest.approx(z, abs=1e-6)
    assert float(met["max_height"]) == float(met["height_rew"]) == pytest.approx(1.7)   # max with the past
    assert float(met["healthy"]) == 1.0 and float(met["healthy_reward"]) == 2.0
    assert float(met["ctrl_cost"]) == pytest.approx(cost, rel=1e-5)
    assert float(met["foot_x"]) == pytest.approx(foot[0], abs=2e-6)
    # sparse, last step, no landing (contact_dist unset -> 5)
    _, met, r = post_step(d, _info(goal=goal, max_height=0.2), a, jnp.int32(T))
    assert float(met["max_height"]) == pytest.approx(z)
    assert float(r) == pytest.approx(2 * 1 - 3 * gd + 10 * z - 2 * 5 - cost, abs=1e-5)
    # last step after a landing with contact_dist 0.4
    _, met, r = post_step(d, _info(goal=goal, max_height=1.6, init_floor_contact=True, has_left_floor=True,
                                   contact_with_floor=True, contact_dist=0.4), a, jnp.int32(T))
    assert float(met["contact_dist"]) == pytest.approx(0.4)
    assert float(r) == pytest.approx(2 - 3 * gd + 10 * 1.6 - 2 * 0.4 - cost, abs=1e-5)
    # contact_dist exactly 0 counts as unset (upstream's `contact_dist or 5`)
    _, _, r = post_step(d, _info(goal=goal, max_height=1.6, contact_with_floor=True, contact_dist=0.0), a, jnp.int32(T))
    assert float(r) == pytest.approx(2 - 3 * gd + 10 * 1.6 - 2 * 5 - cost, abs=1e-5)
    # dense: healthy (weight 1) - 3 goal_dist + 3 z_t - cost, no contact term, every step
    _, met, r = post_step_dense(d, _info(goal=goal, max_height=1.7, contact_dist=0.3, contact_with_floor=True), a,
                                jnp.int32(3))
    assert float(r) == pytest.approx(1 - 3 * gd + 3 * z - cost, abs=1e-5)
    assert float(met["healthy_reward"]) == 1.0


@pytest.mark.parametrize("qpos,qvel,healthy", [
    ([0, 0.51, 0, 0, 0, 0], [0] * 6, 1.0),
    ([0, 0.49, 0, 0, 0, 0], [0] * 6, 0.0),              # torso too low
    ([0, 1.2, 7.0, 0, 0, 0], [0] * 6, 1.0),             # any pitch is healthy
    ([0, 1.2, 0, 0, 0, 0], [150.0, 0, 0, 0, 0, 0], 0.0),  # |qvel| >= 100, even the root x velocity
    ([0, 1.2, 0, 0, 0, 0], [0, 0, 0, 0, 0, -99.0], 1.0),
])
def test_healthy(qpos, qvel, healthy):
    d = reset_to(jnp.asarray(qpos, jnp.float32), jnp.asarray(qvel, jnp.float32), jnp.zeros(3)).mjx_data
    assert float(TASK.healthy(d)) == healthy


def test_contact_latches_follow_upstream_logic():
    """A constructed sequence of air/contact states through post_step vs upstream's if-chain."""
    air = reset_to(jnp.array([0.0, 1.25, 0, 0, 0, 0]), jnp.zeros(6), jnp.zeros(3)).mjx_data
    ground = reset_to(jnp.array([0.0, 1.25 - FOOT_BOTTOM_REST, 0, 0, 0, 0]), jnp.zeros(6), jnp.zeros(3)).mjx_data
    pattern = [0, 0, 1, 1, 0, 0, 1, 1, 0, 1]
    goal = np.array([0.3, 0.0, 0.0])
    info = _info(goal=goal)
    init = left = landed = False
    cd = None
    a = jnp.zeros(3)
    for t, c in enumerate(pattern):
        d = ground if c else air
        info, met, _ = post_step(d, info, a, jnp.int32(t + 1))
        c_up = bool(c) and not landed
        if not init:
            init = c_up
        if init and not left:
            left = not c_up
        if not landed and left:
            landed = c_up
        gd = np.linalg.norm(np.asarray(d.site_xpos[TASK._foot_site]) - goal)
        if cd is None and landed:
            cd = gd
        assert (bool(info["init_floor_contact"]), bool(info["has_left_floor"]), bool(info["contact_with_floor"])) \
            == (init, left, landed), t
        assert float(met["contact_dist"]) == pytest.approx(cd or 0.0, abs=1e-6)
        assert float(met["floor_contact"]) == float(c_up)
    assert (init, left, landed) == (True, True, True) and cd == pytest.approx(0.3, abs=1e-6)   # landed foot site: (0, 0, 0)


def test_falls_jumps_and_latches_fire_in_order():
    _s0, _des, final, tr = jump_episode()
    h = np.asarray(tr.metrics["height"])
    # free fall from 1.5 m: z = 1.5 - g t^2 / 2 until the foot (0.29 m above the floor at most) lands
    t = TASK.dt * np.arange(1, 16)
    np.testing.assert_allclose(h[:15], 1.5 - 9.81 * t ** 2 / 2, atol=2e-3)
    k_init = first_step(tr.metrics["init_floor_contact"])
    k_left = first_step(tr.metrics["has_left_floor"])
    k_land = first_step(tr.metrics["contact_with_floor"])
    assert 20 < k_init < k_left < k_land, (k_init, k_left, k_land)
    assert float(tr.metrics["floor_contact"][k_init]) == 1.0 and float(tr.metrics["floor_contact"][k_left]) == 0.0
    assert h[k_left:k_land].max() > h[k_left]                     # it rises after take-off
    np.testing.assert_allclose(tr.metrics["contact_dist"][k_land:], tr.metrics["goal_dist"][k_land])
    assert float(tr.metrics["contact_dist"][k_land - 1]) == 0.0
    np.testing.assert_allclose(tr.metrics["max_height"], np.maximum.accumulate(h), rtol=0)
    # sparse: only action costs before the last step
    np.testing.assert_allclose(tr.rewards[:-1], -np.asarray(tr.metrics["ctrl_cost"][:-1]), rtol=1e-6)
    assert bool(tr.dones[-1]) and not np.asarray(tr.dones[:-1]).any()
    assert float(final.obs[-1]) == 1.0


def test_episode_matches_native_mujoco():
    """MJX (float32) vs native C MuJoCo (float64) with the upstream step logic, same XML and PD."""
    s0, des, _final, tr = jump_episode()
    nat = native_episode(np.asarray(s0.mjx_data.qpos, np.float64), np.asarray(s0.info["goal"], np.float64),
                         np.asarray(des, np.float64))
    for key, ours in (("init", "init_floor_contact"), ("left", "has_left_floor"), ("landed", "contact_with_floor")):
        assert abs(first_step(nat[key]) - first_step(tr.metrics[ours])) <= 1, key
    k_land = first_step(nat["landed"])
    np.testing.assert_allclose(tr.metrics["height"][:k_land], nat["height"][:k_land], atol=5e-3)
    assert float(tr.metrics["max_height"][-1]) == pytest.approx(nat["max_height"][-1], abs=5e-3)
    np.testing.assert_allclose(tr.rewards[:-1], nat["reward"][:-1], atol=1e-5)
    assert float(tr.rewards[-1]) == pytest.approx(nat["reward"][-1], abs=0.15)


def test_redistribution_matches_numpy_reference():
    rng = np.random.default_rng(0)
    n, L = 64, 30
    rewards = rng.normal(size=(n, L)).astype(np.float32)
    k = rng.integers(-1, L, size=n)           # -1: never leaves the floor
    event = (np.arange(L) >= k[:, None]) & (k[:, None] >= 0)
    event[:4] = rng.random((4, L)) < 0.3       # non-latched masks: upstream sums over the mask
    event[4] = True                            # set from step 0: unchanged
    event[5] = False
    event[6, -1] = True
    event[6, :-1] = False                      # only the last step
    got = np.asarray(redistribute_sparse_reward(jnp.asarray(rewards), jnp.asarray(event)))
    np.testing.assert_allclose(got, numpy_make_mdp_reward(rewards, event), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[4], rewards[4])
    np.testing.assert_array_equal(got[5], rewards[5])
    # single episode (no batch dim) and the task method on a real rollout
    np.testing.assert_allclose(redistribute_sparse_reward(rewards[7], event[7]), got[7], rtol=1e-6)
    _, _, _, tr = jump_episode()
    mdp = np.asarray(TASK.mdp_rewards(tr))
    kl = first_step(tr.metrics["has_left_floor"])
    np.testing.assert_allclose(mdp[:kl], tr.rewards[:kl])
    assert mdp[kl] == pytest.approx(float(np.sum(np.asarray(tr.rewards)[kl:])), rel=1e-5)
    assert (mdp[kl + 1:] == 0).all()
    assert mdp.sum() == pytest.approx(float(tr.rewards.sum()), rel=1e-5)


def _random_desired(key):
    k1, k2 = jax.random.split(key)
    pos = jax.random.uniform(k1, (T, 3), minval=-3.0, maxval=3.0)
    return jnp.concatenate([pos, 20.0 * jax.random.normal(k2, (T, 3))], -1)


def test_same_key_same_episode_and_no_nan():
    """Random (wild, saturating) desired trajectories: finite everything; same key, same episode."""
    des = _random_desired(jax.random.PRNGKey(3))
    a = rollout(reset(jax.random.PRNGKey(4)), des)
    b = rollout(reset(jax.random.PRNGKey(4)), des)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if not jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            np.testing.assert_array_equal(x, y)
    for i in range(8):
        key = jax.random.PRNGKey(100 + i)
        _, tr = rollout(reset(key), _random_desired(jax.random.fold_in(key, 1)))
        for leaf in (tr.obs, tr.rewards, *tr.metrics.values()):
            assert np.isfinite(np.asarray(leaf)).all(), i


@pytest.mark.slow
def test_no_nan_over_1000_random_episodes():
    @jax.jit
    def batch(key):
        k1, k2 = jax.random.split(key)
        states = jax.vmap(TASK.reset)(jax.random.split(k1, 100))
        final, tr = jax.vmap(TASK.rollout)(states, jax.vmap(_random_desired)(jax.random.split(k2, 100)))
        finite = jnp.stack([jnp.isfinite(x).all() for x in (tr.obs, tr.rewards, *tr.metrics.values())]).all()
        return finite, final.metrics["max_height"]

    for i in range(10):
        finite, max_h = batch(jax.random.PRNGKey(1000 + i))
        assert bool(finite), i
        assert (np.asarray(max_h) > 0).all()


def test_episode_length_and_errors():
    short = HopperJump(episode_length=5)
    assert short.episode_length == 5 and short.duration == pytest.approx(0.04)
    with pytest.raises(ValueError, match="episode_length"):
        HopperJump(episode_length=0)
    with pytest.raises(ValueError, match=r"desired must have shape \[n, 6\]"):
        TASK.rollout(reset(jax.random.PRNGKey(0)), jnp.zeros((T, 4)))


def test_numpy_action_matches():
    s = reset(jax.random.PRNGKey(5))
    d = s.mjx_data.replace(qvel=jnp.array([0, 0, 0, 1.0, -2.0, 3.0]))
    dp, dv = jnp.array([0.3, -2.0, 0.1]), jnp.array([5.0, 0.0, -40.0])
    ours = np.asarray(TASK.action(d, dp, dv))
    q, v = np.asarray(d.qpos), np.asarray(d.qvel)
    ref = np.clip(1.0 * (np.asarray(dp) - q[3:6]) + 0.1 * (np.asarray(dv) - v[3:6]), -1, 1)
    np.testing.assert_allclose(ours, ref, rtol=1e-6)
    np.testing.assert_allclose(numpy_action(TASK, q, v, dp, dv), ref, rtol=1e-6)
    assert np.abs(ref).max() == 1.0   # saturation exercised
