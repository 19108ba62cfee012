"""Reward-parity fixtures from the original Meta-World (runs in a venv of its own, NOT this project's).

Meta-World 3.1.1 pins mujoco==3.3.0 (this project needs mujoco>=4 for MJX), so it lives in its own venv:

    python3 -m venv /tmp/mwvenv && /tmp/mwvenv/bin/pip install metaworld==3.1.1 packaging
    /tmp/mwvenv/bin/python benchmarks/metaworld_fixtures.py [--tasks reach,push] [--out tests/fixtures/metaworld]

For every task it runs goal-observable Meta-World (`<task>-v3-goal-observable`, new random positions per
reset, seeded) for 2 episodes of 500 steps, with Meta-World's scripted policy plus Gaussian noise (sd 0.3,
clipped to [-1, 1]) so that grasps, contacts and near-misses all occur, and records every 10th step:
the state (qpos, qvel, mocap pose), the action, the episode constants the reward reads (`_target_pos`,
`obj_init_pos`, `init_tcp`, ...), the 39-observation, the reward and `info["success"]`, plus the episode's random
vector and first observation. Written to `<out>/<task>.npz`; tests/test_metaworld.py recomputes reward and
success from the states with our JAX task, and the episode constants and first observation from the vectors.
"""

from __future__ import annotations

import argparse
import pathlib
import warnings

import numpy as np

# The task lists of toperl_jax.envs.metaworld, repeated because this script runs where toperl_jax is not installed
# (tests/test_metaworld.py checks that they are equal).
MT10 = ("reach", "push", "pick-place", "door-open", "drawer-open", "drawer-close", "button-press-topdown",
        "peg-insert-side", "window-open", "window-close")
MORE = ("door-close", "button-press", "button-press-wall", "button-press-topdown-wall", "reach-wall",
        "push-wall", "pick-place-wall", "plate-slide", "plate-slide-side", "plate-slide-back",
        "plate-slide-back-side", "handle-press", "handle-press-side", "handle-pull", "handle-pull-side",
        "faucet-open", "faucet-close", "coffee-button", "door-lock", "door-unlock")
"""Tasks beyond MT10 ported so far (in the order they were ported)."""
REST = ("dial-turn", "lever-pull", "coffee-push", "coffee-pull", "box-close", "peg-unplug-side", "push-back",
        "sweep", "sweep-into", "soccer", "pick-out-of-hole", "shelf-place", "basketball", "bin-picking",
        "hand-insert", "hammer", "stick-push", "stick-pull", "assembly", "disassemble")
"""The remaining MT50 tasks ported so far (in the order they were ported)."""
EPISODE_BODY = {"door-open": "door", "drawer-open": "drawer", "drawer-close": "drawer",
                "button-press-topdown": "box", "peg-insert-side": "box", "window-open": "window",
                "window-close": "window",
                "door-close": "door", "button-press": "box", "button-press-wall": "box",
                "button-press-topdown-wall": "box", "plate-slide": "puck_goal", "plate-slide-back-side": "puck_goal",
                "handle-press": "box", "handle-press-side": "box", "handle-pull": "box", "handle-pull-side": "box",
                "faucet-open": "faucetBase", "faucet-close": "faucetBase",
                "coffee-button": "coffee_machine", "door-lock": "door", "door-unlock": "door",
                "dial-turn": "dial", "lever-pull": "lever", "coffee-push": "coffee_machine",
                "coffee-pull": "coffee_machine", "box-close": "boxbody", "peg-unplug-side": "box",
                "soccer": "goal_whole", "shelf-place": "shelf", "basketball": "basket_goal", "assembly": "peg",
                "disassemble": "peg"}
NOISE = {"handle-press-side": 0.1}
"""Per-task policy noise (default --noise): with 0.3 handle-press-side's policy reaches no success state among the
recorded steps."""
CONSTANTS = {"goal": "_target_pos", "obj_init_pos": "obj_init_pos", "init_tcp": "init_tcp",
             "init_left_pad": "init_left_pad", "init_right_pad": "init_right_pad",
             "peg_head_pos_init": "peg_head_pos_init", "window_handle_pos_init": "window_handle_pos_init",
             "obj_to_target_init": "_obj_to_target_init", "handle_init_pos": "_handle_init_pos",
             "dial_push_position": "dial_push_position", "target_to_obj_init": "_target_to_obj_init",
             "stick_init_pos": "stick_init_pos"}


def make_env(task: str, seed: int):
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE as envs

    env = envs[f"{task}-v3-goal-observable"](seed=seed)
    env._freeze_rand_vec = False  # new object/goal positions every reset (spec C)
    env.seeded_rand_vec = True
    return env


def record(task: str, seed: int, episodes: int, every: int, noise: float) -> dict[str, np.ndarray]:
    from metaworld.policies import ENV_POLICY_MAP

    env = make_env(task, seed)
    policy = ENV_POLICY_MAP[f"{task}-v3"]()
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {}
    for _ in range(episodes):
        obs, _ = env.reset()
        rand_vec = np.array(env._last_rand_vec, np.float64)
        reset_obs = np.array(obs[:18], np.float64)  # the episode's first observation (hand, objects)
        for k in range(env.max_path_length):
            # copy: some scripted policies edit views of the observation in place
            a = np.clip(policy.get_action(obs.copy()) + noise * rng.standard_normal(4), -1, 1)
            obs, r, _, _, info = env.step(a)
            if k % every == every - 1:
                # the constants as the reward reads them at this step (copies: some are live views of the
                # simulation data in Meta-World, e.g. pick-place's init_left_pad / init_right_pad)
                consts = {key: np.array(getattr(env, v), np.float64).reshape(-1)
                          for key, v in CONSTANTS.items() if getattr(env, v, None) is not None}
                if task in EPISODE_BODY:
                    consts["body_pos"] = env.model.body(EPISODE_BODY[task]).pos.copy()
                consts["rand_vec"] = rand_vec
                consts["reset_obs"] = reset_obs
                row = {"qpos": env.data.qpos.copy(), "qvel": env.data.qvel.copy(),
                       "mocap_pos": env.data.mocap_pos[0].copy(), "mocap_quat": env.data.mocap_quat[0].copy(),
                       "action": np.asarray(a, np.float64), "obs": np.array(obs, np.float64),
                       "reward": float(r), "success": float(info["success"]), "step": k + 1, **consts}
                for key, v in row.items():
                    rows.setdefault(key, []).append(v)
    return {k: np.asarray(v) for k, v in rows.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default=",".join(MT10 + MORE + REST))
    p.add_argument("--out", default=str(pathlib.Path(__file__).parents[1] / "tests/fixtures/metaworld"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=2)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--noise", type=float, default=0.3)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    import metaworld
    import mujoco

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for task in args.tasks.split(","):
        data = record(task, args.seed, args.episodes, args.every, NOISE.get(task, args.noise))
        np.savez_compressed(out / f"{task}.npz", **data,
                            versions=np.array([metaworld.__version__ if hasattr(metaworld, "__version__")
                                               else "3.1.1", mujoco.__version__]))
        print(f"{task}: {len(data['reward'])} states, success {data['success'].mean():.2f}, "
              f"reward {data['reward'].min():.3f}..{data['reward'].max():.3f}")


if __name__ == "__main__":
    main()
