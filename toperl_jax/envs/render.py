"""Render episodes of the MJX tasks to RGB frames and video files, headless.

    states = jax.jit(lambda s, d: episode_states(task, s, d))(task.reset(key), desired)  # EnvState [T+1]
    frames = render_states(task, states)                       # [T+1, H, W, 3] uint8
    write_video(frames, "episode.mp4", fps=1 / task.dt)        # or render_episode(task, states, "x.mp4")

Frames come from MuJoCo's OpenGL renderer (`mujoco.Renderer`) on the task's native `mj_model`:
for every frame the recorded qpos (and mocap pose, if the model has mocap bodies) is written into
a native MjData, `mj_forward` runs, the scene is drawn. The MJX data itself is never rendered,
so stale derived quantities in a stored state do not matter.

Headless OpenGL: MuJoCo picks its GL backend from the environment variable MUJOCO_GL when
`mujoco` is first imported, so set it before (e.g. `MUJOCO_GL=egl python script.py`):
`egl` (Mesa's EGL or a GPU driver; works on this project's CPU machines) or `osmesa` (software,
needs libosmesa6). Without a display the default (glfw) fails; `render_states` then raises an
error that says so.

Task hook (optional, duck-typed): `task.render_scene(model, data, info) -> list[Marker]` is
called for every frame with a private copy of the native model, the native data after qpos is
set and before `mj_forward`, and that frame's `info` dict (numpy arrays). It may write into the
model/data (e.g. a goal body's `body_pos`), and returns extra marker spheres to draw, each a dict
`{"pos": [3], "size": radius, "rgba": [4]}` (e.g. a goal that is not part of the model). A task
may also set `render_camera` (a camera name in its MJCF); otherwise the model's first camera is
used, or MuJoCo's free camera if it has none.

Video files (`write_video`): `.mp4` (H.264) needs PyAV (`pip install toperl-jax[render]`, the
optional `render` extra); `.gif` uses Pillow if it is installed.
"""

from __future__ import annotations

import copy
import os
import pathlib
from typing import Any

import jax
import mujoco
import numpy as np

from toperl_jax.envs.base import EnvState, EpisodicTask


def episode_states(task: EpisodicTask, state: EnvState, desired: jax.Array) -> EnvState:
    """Every state of an episode, for rendering (jit-able; close over `task`).

    Args:
        state: start state (e.g. `task.reset(key)`).
        desired: [n, 2 dof] desired positions then velocities, as for `task.rollout`.
    Returns:
        EnvState with a leading axis [n + 1]: the start state, then the state after each step.
    """
    dof = task.num_dof

    def body(s, a):
        s = task.step(s, a[:dof], a[dof:])
        return s, s

    _, traj = jax.lax.scan(body, state, desired)
    return jax.tree.map(lambda x0, xs: jax.numpy.concatenate([x0[None], xs]), state, traj)


def _camera(task: EpisodicTask, model: mujoco.MjModel, camera: str | int | None) -> str | int:
    if camera is not None:
        return camera
    name = getattr(task, "render_camera", None)
    if name is not None:
        return name
    return 0 if model.ncam > 0 else -1


def _add_markers(scene: mujoco.MjvScene, markers) -> None:
    for mk in markers:
        if scene.ngeom >= scene.maxgeom:
            raise RuntimeError("render: scene is full; pass a larger max_geom")
        mujoco.mjv_initGeom(scene.geoms[scene.ngeom], mujoco.mjtGeom.mjGEOM_SPHERE,
                            np.full(3, float(mk["size"])), np.asarray(mk["pos"], np.float64),
                            np.eye(3).ravel(), np.asarray(mk["rgba"], np.float32))
        scene.ngeom += 1


def _numpy_tree(x):
    return jax.tree.map(np.asarray, x)


def render_qpos(task: EpisodicTask, qpos: np.ndarray, info: dict[str, Any] | None = None, *,
                mocap_pos: np.ndarray | None = None, mocap_quat: np.ndarray | None = None,
                camera: str | int | None = None, width: int = 480, height: int = 360,
                max_geom: int = 1000) -> np.ndarray:
    """Frames of a sequence of configurations.

    Args:
        task: the task whose `mj_model` is drawn (and whose `render_scene` hook is called).
        qpos: [F, nq] joint positions, one frame each.
        info: {name: [F, ...]} per-frame task info handed to the hook (or None).
        mocap_pos, mocap_quat: [F, nmocap, 3] / [F, nmocap, 4] mocap poses (or None).
        camera: camera name or id (-1: free camera); default see the module docstring.
        width, height: pixels (at most the model's offscreen buffer, 640 x 480 by default).
    Returns:
        [F, height, width, 3] uint8 RGB frames.
    """
    qpos = np.asarray(qpos, np.float64)
    model = copy.copy(task.mj_model)   # the hook may write into it
    if qpos.ndim != 2 or qpos.shape[1] != model.nq:
        raise ValueError(f"qpos must have shape [frames, {model.nq}], got {qpos.shape}")
    data = mujoco.MjData(model)
    hook = getattr(task, "render_scene", None)
    cam = _camera(task, model, camera)
    try:
        renderer = mujoco.Renderer(model, height=height, width=width, max_geom=max_geom)
    except Exception as err:   # any GL failure: explain the headless setup
        raise RuntimeError(
            f"render: could not create an OpenGL context with MUJOCO_GL={os.environ.get('MUJOCO_GL', '(unset)')!r}"
            f" ({type(err).__name__}: {err}). Without a display set MUJOCO_GL=egl (or osmesa) in the"
            " environment before mujoco is first imported.") from err
    frames = np.empty((len(qpos), height, width, 3), np.uint8)
    with renderer:
        for f in range(len(qpos)):
            data.qpos[:] = qpos[f]
            if mocap_pos is not None:
                data.mocap_pos[:] = mocap_pos[f]
            if mocap_quat is not None:
                data.mocap_quat[:] = mocap_quat[f]
            markers = []
            if hook is not None:
                frame_info = {} if info is None else {k: np.asarray(v)[f] for k, v in info.items()}
                markers = hook(model, data, frame_info) or []
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera=cam)
            _add_markers(renderer.scene, markers)
            frames[f] = renderer.render()
    return frames


def render_states(task: EpisodicTask, states: EnvState, *, every: int = 1, **kwargs) -> np.ndarray:
    """Frames of an EnvState trajectory (leading axis [F], e.g. from `episode_states`).

    Args:
        states: EnvState [F] of one episode (no batch axis).
        every: draw every `every`-th state (the last one is always drawn).
        kwargs: camera, width, height, max_geom (see `render_qpos`).
    Returns:
        [ceil(F / every) (+1), height, width, 3] uint8 frames.
    """
    qpos = np.asarray(states.mjx_data.qpos)
    if qpos.ndim != 2:
        raise ValueError(f"states must have one leading time axis, got qpos of shape {qpos.shape}")
    idx = np.arange(0, len(qpos), every)
    if idx[-1] != len(qpos) - 1:
        idx = np.append(idx, len(qpos) - 1)
    info = {k: v[idx] for k, v in _numpy_tree(states.info).items() if np.ndim(v) >= 1 and len(v) == len(qpos)}
    mocap = {}
    if task.mj_model.nmocap > 0:
        mocap = {"mocap_pos": np.asarray(states.mjx_data.mocap_pos)[idx],
                 "mocap_quat": np.asarray(states.mjx_data.mocap_quat)[idx]}
    return render_qpos(task, qpos[idx], info, **mocap, **kwargs)


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: float) -> pathlib.Path:
    """Write [F, H, W, 3] uint8 frames to `path`: .mp4 (H.264, yuv420p; needs PyAV, the optional
    `render` extra) or .gif (needs Pillow). Returns the path."""
    path = pathlib.Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be [F, H, W, 3] uint8, got {frames.shape} {frames.dtype}")
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        try:
            import av
        except ImportError as err:
            raise ImportError("write_video: .mp4 needs PyAV: pip install 'toperl-jax[render]' (or pip install av);"
                              " or write a .gif") from err
        from fractions import Fraction
        h, w = frames.shape[1] - frames.shape[1] % 2, frames.shape[2] - frames.shape[2] % 2   # yuv420p: even
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame[:h, :w], format="rgb24")))
            container.mux(stream.encode())
    elif suffix == ".gif":
        try:
            from PIL import Image
        except ImportError as err:
            raise ImportError("write_video: .gif needs Pillow (pip install pillow)") from err
        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    else:
        raise ValueError(f"write_video: unsupported file type {suffix!r}; accepted: .mp4, .gif")
    return path


def render_episode(task: EpisodicTask, states: EnvState, path: str | os.PathLike | None = None, *,
                   every: int = 1, fps: float | None = None, **kwargs) -> np.ndarray:
    """Frames of one episode (`render_states`), written to `path` if given (`write_video`, at
    real time by default: fps = 1 / (task.dt * every)). Returns the frames."""
    frames = render_states(task, states, every=every, **kwargs)
    if path is not None:
        write_video(frames, path, fps if fps is not None else 1.0 / (task.dt * every))
    return frames
