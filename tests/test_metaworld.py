"""Meta-World MT10 in MJX against the original Meta-World 3.1.1 (MuJoCo 3.3.0, float64).

Reference data: tests/fixtures/metaworld/<task>.npz, written by benchmarks/metaworld_fixtures.py in a venv
with the original Meta-World (states along noisy scripted-policy episodes: qpos, qvel, mocap pose, action,
episode constants, observation, reward, success). On every recorded state our task's kinematics, current
observation, v2 reward and success must equal Meta-World's to float32 precision.

Only kinematics and reward code is compiled here (no physics step), so the whole file stays fast on CPU;
episodes with the scripted policies are in benchmarks/metaworld_parity.py and the slow test at the end.
The `metaworld` package itself (assets only, installed with --no-deps) is required; the tests are skipped
without it.
"""

import functools
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("metaworld") is None,
                                reason="metaworld assets not installed (pip install --no-deps metaworld==3.1.1)")

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "metaworld"
MT10 = ("reach", "push", "pick-place", "door-open", "drawer-open", "drawer-close", "button-press-topdown",
        "peg-insert-side", "window-open", "window-close")
CTX_KEYS = ("goal", "obj_init_pos", "init_tcp", "init_left_pad", "init_right_pad", "peg_head_pos_init",
            "window_handle_pos_init", "obj_to_target_init", "body_pos")


@functools.cache
def _task(name):
    from toperl_jax.envs import make

    return make("metaworld-" + name)


@functools.cache
def _fixture(name):
    return dict(np.load(FIXTURES / f"{name}.npz"))


@functools.cache
def _evaluated(name):
    """Our (current obs [n, 18], reward [n], success [n]) on the fixture's states."""
    from mujoco import mjx

    task, fx = _task(name), _fixture(name)

    def one(qpos, qvel, mocap_pos, mocap_quat, action, prev, ctx):
        data = mjx.make_data(task.mjx_model).replace(qpos=qpos, qvel=qvel, mocap_pos=mocap_pos[None],
                                                     mocap_quat=mocap_quat[None])
        data = task.kinematics(task.model_for(ctx), data)
        cur = task.current_obs(data)
        obs39 = task.clip_obs(jnp.concatenate([cur, prev, ctx["goal"]]))
        reward, success = task.evaluate(data, obs39, action, ctx)
        return cur, reward, success

    def f32(k):
        x = jnp.asarray(fx[k], jnp.float32)
        return x[:, 0] if x.ndim == 2 and x.shape[1] == 1 else x

    ctx = {k: f32(k) for k in CTX_KEYS if k in fx}
    run = jax.jit(jax.vmap(one), compiler_options=task.compiler_options())
    out = run(f32("qpos"), f32("qvel"), f32("mocap_pos"), f32("mocap_quat"), f32("action"), f32("obs")[:, 18:36],
              ctx)
    return tuple(np.asarray(x, np.float64) for x in out)


@pytest.mark.parametrize("name", MT10)
def test_observation_matches_metaworld(name):
    cur, _, _ = _evaluated(name)
    ref = _fixture(name)["obs"][:, :18]
    np.testing.assert_allclose(cur, ref, atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", MT10)
def test_reward_and_success_match_metaworld(name):
    _, reward, success = _evaluated(name)
    fx = _fixture(name)
    assert np.all(success == fx["success"]), np.nonzero(success != fx["success"])
    np.testing.assert_allclose(reward, fx["reward"], atol=1e-4, rtol=1e-4)
    assert np.ptp(fx["reward"]) > 0.5  # the recorded states span the reward's range, not one plateau


@pytest.mark.parametrize("name", MT10)
def test_hand_reset_matches_metaworld(name):
    """Our start (Meta-World's 50-step hand reset simulated on our model) puts the tcp where Meta-World's does."""
    np.testing.assert_allclose(_task(name).hand_reset.tcp, _fixture(name)["init_tcp"][0], atol=2e-3)


@pytest.mark.parametrize("name", MT10)
def test_reset_samples_within_metaworld_ranges(name):
    task = _task(name)
    keys = jax.random.split(jax.random.PRNGKey(0), 256)
    rand = np.asarray(jax.jit(jax.vmap(task.sample_rand_vec), compiler_options=task.compiler_options())(keys))
    low, high = np.asarray(task.rand_low), np.asarray(task.rand_high)
    assert np.all(rand >= low - 1e-7) and np.all(rand <= high + 1e-7)
    spread = np.ptp(rand, 0)
    assert np.all(spread[high - low > 1e-3] > 0.8 * (high - low)[high - low > 1e-3])
    if name in ("reach", "push", "pick-place"):
        assert np.linalg.norm(rand[:, :2] - rand[:, 3:5], axis=1).min() >= 0.15
    if name == "peg-insert-side":
        assert np.linalg.norm(rand[:, :2] - rand[:, 3:5], axis=1).min() >= 0.1
    # Meta-World's own episodes lie in the same ranges
    ref = _fixture(name)["rand_vec"]
    assert np.all(ref >= low - 1e-9) and np.all(ref <= high + 1e-9)
