"""Tests of toperl_jax.envs.render: episode states, frames of a reacher episode (goal marker via the
task hook), video files, and the hopper's goal hook.

MuJoCo chooses its OpenGL backend when `mujoco` is first imported (MUJOCO_GL), and the test
session has imported it long before this module, so the drawing runs in a subprocess with
MUJOCO_GL=egl (then osmesa); a test is skipped only if neither backend can create a context, with
the error as the reason.
"""

import functools
import os
import pickle
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toperl_jax.envs import make
from toperl_jax.envs.render import episode_states

REACHER = make("reacher")
N = 12   # steps of the rendered episode

_PROBE = "import mujoco; r = mujoco.Renderer(mujoco.MjModel.from_xml_string('<mujoco/>'), 8, 8); r.close()"

_DRAW = textwrap.dedent("""
    import pickle, sys
    import numpy as np
    from toperl_jax.envs import make
    from toperl_jax.envs.render import render_episode, render_qpos
    states, out = pickle.load(open(sys.argv[1], "rb")), sys.argv[2]
    task = make("reacher")
    frames = render_episode(task, states, out + ".gif", width=128, height=96)
    result = {"frames": frames}
    try:
        import av  # noqa: F401
        render_episode(task, states, out + ".mp4", width=128, height=96)
        result["mp4"] = True
    except ImportError:
        result["mp4"] = False
    result["every3"] = render_episode(task, states, every=5, width=64, height=48)
    hopper = make("hopper-jump-sparse")
    q = np.tile(hopper.mj_model.qpos0, (2, 1))
    q[1, 1] = 1.0   # lower the torso in the second frame
    result["hopper"] = render_qpos(hopper, q, {"goal": np.array([[0.3, 0, 0], [0.3, 0, 0]])}, width=64, height=48)
    np.savez(out + ".npz", **result)
""")


@functools.cache
def gl_backend() -> tuple[str | None, str]:
    """(MUJOCO_GL value that creates a context, or None; the last error)."""
    err = ""
    for backend in ("egl", "osmesa"):
        p = subprocess.run([sys.executable, "-c", _PROBE], check=False, env={**os.environ, "MUJOCO_GL": backend},
                           capture_output=True, text=True, timeout=120)
        if p.returncode == 0:
            return backend, ""
        err = f"MUJOCO_GL={backend}: " + (p.stderr.strip().splitlines() or ["?"])[-1]
    return None, err


@functools.cache
def reacher_states():
    s = jax.jit(REACHER.reset)(jax.random.PRNGKey(0))
    desired = jnp.concatenate([jnp.tile(s.desired_pos + jnp.array([1.0, -0.8]), (N, 1)), jnp.zeros((N, 2))], -1)
    fn = jax.jit(lambda s, d: episode_states(REACHER, s, d))
    return s, desired, fn(s, desired)


def test_episode_states_stack_start_and_every_step():
    s, desired, states = reacher_states()
    assert states.obs.shape == (N + 1, REACHER.obs_size) and states.mjx_data.qpos.shape == (N + 1, 2)
    np.testing.assert_array_equal(states.obs[0], s.obs)
    _, tr = jax.jit(REACHER.rollout)(s, desired)
    np.testing.assert_allclose(states.obs[:-1], tr.obs, atol=1e-6)
    np.testing.assert_allclose(states.obs[-1], tr.final_obs, atol=1e-6)
    np.testing.assert_array_equal(states.time_step, np.arange(N + 1))
    np.testing.assert_array_equal(states.info["goal"], np.tile(s.info["goal"], (N + 1, 1)))


def test_render_reacher_episode(tmp_path):
    backend, err = gl_backend()
    if backend is None:
        pytest.skip(f"no headless OpenGL backend: {err}")
    _, _, states = reacher_states()
    with open(tmp_path / "states.pkl", "wb") as f:
        pickle.dump(jax.tree.map(np.asarray, states), f)
    p = subprocess.run([sys.executable, "-c", _DRAW, str(tmp_path / "states.pkl"), str(tmp_path / "ep")],
                       check=False, env={**os.environ, "MUJOCO_GL": backend}, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    res = np.load(tmp_path / "ep.npz")
    frames = res["frames"]
    assert frames.shape == (N + 1, 96, 128, 3) and frames.dtype == np.uint8
    assert frames.std() > 5                                   # not a constant image
    assert np.abs(frames[-1].astype(int) - frames[0]).sum() > 1000   # the arm moved
    # the goal marker (green sphere from Reacher.render_scene) is drawn
    r, g, b = (frames[0, ..., i].astype(int) for i in range(3))
    assert ((g > 120) & (g > r + 60) & (g > b + 60)).sum() > 10
    # every=5 on 13 states: 0, 5, 10 and the last one
    assert res["every3"].shape == (4, 48, 64, 3)
    np.testing.assert_array_equal(res["hopper"].shape, (2, 48, 64, 3))
    assert np.abs(res["hopper"][1].astype(int) - res["hopper"][0]).sum() > 0
    # video files
    from PIL import Image
    with Image.open(tmp_path / "ep.gif") as im:
        assert im.n_frames == N + 1 and im.size == (128, 96)
    if bool(res["mp4"]):
        import av
        with av.open(str(tmp_path / "ep.mp4")) as c:
            decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(decoded) == N + 1 and decoded[0].shape == (96, 128, 3)
        assert np.abs(decoded[0].astype(int) - frames[0]).mean() < 12   # lossy, but the same picture


def test_hopper_hook_writes_goal_into_a_model_copy():
    import copy
    hopper = make("hopper-jump-sparse")
    model = copy.copy(hopper.mj_model)
    assert hopper.render_scene(model, None, {"goal": np.array([0.7, 0.0, 0.0])}) == []
    np.testing.assert_array_equal(model.body_pos[hopper.goal_body], [0.7, 0.0, 0.0])
    np.testing.assert_array_equal(hopper.mj_model.body_pos[hopper.goal_body], 0.0)   # the task's model untouched
    assert REACHER.render_scene(None, None, {"goal": np.array([0.1, -0.05])})[0]["pos"] == (0.1, 0.0, -0.05)


def test_write_video_rejects_bad_input(tmp_path):
    from toperl_jax.envs.render import write_video
    with pytest.raises(ValueError, match="uint8"):
        write_video(np.zeros((2, 8, 8, 3), np.float32), tmp_path / "x.gif", 10)
    with pytest.raises(ValueError, match="accepted: .mp4, .gif"):
        write_video(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / "x.avi", 10)
