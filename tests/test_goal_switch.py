"""Goal-switching box pushing (`box-pushing-{dense,sparse}-switch`, toperl_jax/envs/goal_switch.py) and its
replanning preset. (The goal-switching reacher is tested in tests/test_replan.py.)

Independent expectations: the reward after each step is recomputed with the plain `BoxPushing` task's
`reward_terms`/`reward` on the same physics data and the goal that should be in force (g_A before k_s, g_B from
k_s on). CPU compile time dominates: a short episode (T = 8), one batched reset and one batched step, compiled
once and reused by every test.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toperl_jax import envs
from toperl_jax.envs.box_pushing import BoxPushing, xla_cpu_options
from toperl_jax.envs.goal_switch import BoxPushingSwitch

T, B, SWITCH = 8, 12, (2, 6)
TASK = envs.make("box-pushing-dense-switch", episode_length=T, switch_range=SWITCH)
BASE = BoxPushing("dense", episode_length=T)  # the plain task: the reference rewards
jit = functools.partial(jax.jit, compiler_options=xla_cpu_options())
_reset = jit(jax.vmap(TASK.reset))
_step = jit(jax.vmap(TASK.step))


@jit
def _expected_reward(prev, new, desired_pos, desired_vel, goal_pos, goal_quat):
    """[B] the plain task's reward of the step prev -> new with the given goal (tau_cmd from prev's state)."""
    def one(p, n, dp, dv, gp, gq):
        _, tau_cmd = BASE.torque(p, dp, dv)
        terms = BASE.reward_terms(n.mjx_data, gp, gq, tau_cmd)
        return BASE.reward(terms, n.time_step >= T), terms

    return jax.vmap(one)(prev, new, desired_pos, desired_vel, goal_pos, goal_quat)


def _keys(seed):
    return jax.random.split(jax.random.PRNGKey(seed), B)


@functools.cache
def _episode(seed=0):
    """Reset and T steps towards small random offsets of the start pose: [s_0, …, s_T], desired [T, B, 7]."""
    s = _reset(_keys(seed))
    offsets = 0.05 * jax.random.normal(jax.random.PRNGKey(100 + seed), (T, B, 7))
    states, desired = [s], []
    for k in range(T):
        dp = states[0].desired_pos + offsets[k]
        desired.append(dp)
        s = _step(s, dp, jnp.zeros_like(dp))
        states.append(s)
    return states, desired


def test_registry_names_and_switch_range():
    assert {"box-pushing-dense-switch", "box-pushing-sparse-switch"} <= set(envs.task_names())
    dense = envs.make("box-pushing-dense-switch")
    sparse = envs.make("box-pushing-sparse-switch", random_init=False)
    assert isinstance(dense, BoxPushingSwitch) and isinstance(sparse, BoxPushingSwitch)
    assert (dense.name, dense.reward_type, dense.episode_length) == ("box-pushing-dense-switch", "dense", 100)
    assert (sparse.name, sparse.reward_type, sparse.random_init) == ("box-pushing-sparse-switch",
                                                                     "temporal_sparse", False)
    assert dense.switch_range == sparse.switch_range == (20, 50)  # 20 % … 50 % of T = 100
    assert BoxPushingSwitch(episode_length=4).switch_range == (1, 2)
    assert (dense.obs_size, dense.num_dof, dense.metric_names) == (BASE.obs_size, BASE.num_dof, BASE.metric_names)
    for bad in ((0, 5), (6, 5), (5, 101), (5,)):
        with pytest.raises(ValueError, match="switch_range"):
            BoxPushingSwitch(switch_range=bad)


def test_reset_draws_goal_b_and_switch_step_from_the_key():
    s = _reset(_keys(0))
    info = {k: np.asarray(v) for k, v in s.info.items()}
    k_s = info["switch_step"]
    assert k_s.dtype == np.int32 and ((k_s >= SWITCH[0]) & (k_s <= SWITCH[1])).all() and len(set(k_s)) > 1
    # g_A is the plain task's goal for the same key: the first goal and the whole start state are box pushing's
    plain = jit(jax.vmap(BASE.reset))(_keys(0))
    np.testing.assert_array_equal(info["goal_a_pos"], plain.info["goal_pos"])
    np.testing.assert_array_equal(info["goal_a_quat"], plain.info["goal_quat"])
    np.testing.assert_allclose(s.obs, plain.obs, atol=2e-6)  # IK in two compiled programs: float rounding
    np.testing.assert_array_equal(info["goal_pos"], info["goal_a_pos"])
    # g_B: the task's goal sampler, i.e. a yaw pose in the box range, xy >= 0.3 m from the box start
    box_start = np.asarray(s.obs[:, 14:17])
    gb, qb = info["goal_b_pos"], info["goal_b_quat"]
    assert (np.linalg.norm(gb[:, :2] - box_start[:, :2], axis=1) >= TASK.min_goal_dist).all()
    assert ((gb[:, :2] >= np.array(TASK.box_low)) & (gb[:, :2] <= np.array(TASK.box_high))).all()
    np.testing.assert_allclose(gb[:, 2], TASK.box_z)
    np.testing.assert_allclose(np.linalg.norm(qb, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(qb[:, 1:3], 0.0)
    assert (np.linalg.norm(gb - info["goal_a_pos"], axis=1) > 1e-3).all()
    # same key -> same episode; another key -> another second goal and switch step
    again = _reset(_keys(0))
    jax.tree.map(np.testing.assert_array_equal, again.info, s.info)
    np.testing.assert_array_equal(again.obs, s.obs)
    other = _reset(_keys(1))
    assert not np.allclose(other.info["goal_b_pos"], gb)


def test_observation_shows_goal_a_before_and_goal_b_from_the_switch_on():
    states, _ = _episode()
    info = states[0].info
    k_s = np.asarray(info["switch_step"])
    ga = np.concatenate([info["goal_a_pos"], info["goal_a_quat"]], -1)
    gb = np.concatenate([info["goal_b_pos"], info["goal_b_quat"]], -1)
    for k, s in enumerate(states):  # s_k = the state after k steps
        want = np.where((k >= k_s)[:, None], gb, ga)
        np.testing.assert_array_equal(s.obs[:, 21:28], want, err_msg=f"s_{k}")
        np.testing.assert_array_equal(np.concatenate([s.info["goal_pos"], s.info["goal_quat"]], -1), want)
        if k > 0:  # the goal marker (mocap body) follows the goal in force
            np.testing.assert_array_equal(s.mjx_data.mocap_pos[:, 0], want[:, :3])
            np.testing.assert_array_equal(s.mjx_data.mocap_quat[:, 0], want[:, 3:])
        np.testing.assert_allclose(s.obs[:, -1], k / T)


def test_rewards_use_the_goal_in_force():
    """Every step's reward = the plain task's reward with g_A before k_s and g_B from k_s on (independent of
    the switch task's code path), and differs from the one with the other goal."""
    states, desired = _episode()
    info = states[0].info
    k_s = np.asarray(info["switch_step"])
    for k in range(1, T + 1):
        prev, new, dp = states[k - 1], states[k], desired[k - 1]
        zero = jnp.zeros_like(dp)
        r_a, _ = _expected_reward(prev, new, dp, zero, info["goal_a_pos"], info["goal_a_quat"])
        r_b, terms_b = _expected_reward(prev, new, dp, zero, info["goal_b_pos"], info["goal_b_quat"])
        after = k >= k_s
        np.testing.assert_allclose(new.reward, np.where(after, r_b, r_a), rtol=1e-6, atol=1e-6, err_msg=f"step {k}")
        assert (np.abs(np.asarray(r_a) - np.asarray(r_b)) > 1e-4).all()
        np.testing.assert_allclose(np.asarray(new.info["box_goal_pos_dist"])[after],
                                   np.asarray(terms_b["goal_dist"])[after], rtol=1e-6)
    assert np.isfinite(np.asarray(states[-1].reward)).all()


def test_success_and_final_distances_are_judged_against_goal_b():
    """g_B := the box start pose for half of the batch (holding still -> success at t = T), and g_A := the box
    start pose for the other half (g_B far -> no success): only g_B counts."""
    s = _reset(_keys(2))
    half = jnp.arange(B) < B // 2
    box_pos, box_quat = s.obs[:, 14:17], s.obs[:, 17:21]
    sel = functools.partial(jnp.where, half[:, None])
    s = s.replace(info={**s.info, "goal_b_pos": sel(box_pos, s.info["goal_b_pos"]),
                        "goal_b_quat": sel(box_quat, s.info["goal_b_quat"]),
                        "goal_a_pos": sel(s.info["goal_a_pos"], box_pos),
                        "goal_a_quat": sel(s.info["goal_a_quat"], box_quat)})
    hold, zero = s.desired_pos, jnp.zeros_like(s.desired_pos)
    for _ in range(T):
        s = _step(s, hold, zero)
    np.testing.assert_array_equal(s.done, True)
    np.testing.assert_array_equal(s.metrics["is_success"], np.asarray(half, np.float32))
    d = np.asarray(s.metrics["box_goal_pos_dist"])
    assert (d[:B // 2] < 2e-3).all() and (d[B // 2:] >= 0.25).all()
    box_end = np.asarray(s.obs[:, 14:17])
    np.testing.assert_allclose(d, np.linalg.norm(box_end - np.asarray(s.info["goal_b_pos"]), axis=1), rtol=1e-5)


def test_box_dense_switch_preset():
    from variants import top_erl_replan as tr

    p, box = tr.PRESETS["box-dense-switch"], tr.PRESETS["box-dense"]
    assert (p.task, p.env) == ("box-dense-switch", "box-pushing-dense-switch")
    assert dataclasses.replace(p, task=box.task, env=box.env) == box  # every other knob is box-dense's
    assert tr.parse_args(["--task", "box-dense-switch"]) == p
    assert p.env in envs.task_names()
