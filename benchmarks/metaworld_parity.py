"""Scripted-policy parity: Meta-World's own scripted policies (`metaworld.policies`) on the original Meta-World
and, step by step, on our MJX tasks, from the same episode starts.

The original runs in its own venv (Meta-World 3.1.1 pins mujoco 3.3.0) as a worker subprocess:

    python3 -m venv /tmp/mwvenv && /tmp/mwvenv/bin/pip install metaworld==3.1.1 packaging
    python benchmarks/metaworld_parity.py --mw-python /tmp/mwvenv/bin/python [--tasks reach,push] [--episodes 20]

Optionally (`--mw4-python`) the original also runs on MuJoCo 4.0.0, the engine version MJX needs, in a third venv:

    python3 -m venv /tmp/mw4venv && /tmp/mw4venv/bin/pip install mujoco==4.0.0 gymnasium==1.4.0 packaging scipy \
        imageio && /tmp/mw4venv/bin/pip install --no-deps metaworld==3.1.1

Worker: `<task>-v3-goal-observable` with new random positions per reset (seeded), the task's scripted policy,
500 steps per episode; records each episode's random vector (`_last_rand_vec`) and per-step success.
Ours: `task.reset_to(rand_vec)` with the same random vectors (paired episodes), then per step the same
policy (imported from the installed metaworld package's `policies` subpackage, which needs only numpy) maps
our 39-observation to a raw action for `task.apply_action`, all episodes of a task batched with vmap.
Reports success at the last step (TOP-ERL's metric) and at any step (Meta-World's usual one), per task.
Writes results/metaworld_parity.json (adding to what it holds) and prints the table (`--report`: only the table).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import subprocess
import sys
import tempfile
import time
import types

import numpy as np

ROOT = pathlib.Path(__file__).parents[1]
MT10 = ("reach", "push", "pick-place", "door-open", "drawer-open", "drawer-close", "button-press-topdown",
        "peg-insert-side", "window-open", "window-close")


# -- worker: runs in the Meta-World venv -------------------------------------------------------------------
def worker(task: str, episodes: int, seed: int, out: str) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import mujoco
    from metaworld import sawyer_xyz_env
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE as envs
    from metaworld.policies import ENV_POLICY_MAP

    if int(mujoco.__version__.split(".")[0]) >= 4:
        # Meta-World 3.1.1 on MuJoCo 4 (the engine MJX needs): its `reset_mocap_welds` assigns MuJoCo 3.3's 11 weld
        # numbers to a whole `eq_data` row, which has 12 in MuJoCo 4 (one spare); write the first 11 instead.
        def reset_mocap_welds(self):
            for i in range(self.model.neq):
                if self.model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
                    self.model.eq_data[i, :11] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0)

        sawyer_xyz_env.SawyerMocapBase.reset_mocap_welds = reset_mocap_welds

    env = envs[f"{task}-v3-goal-observable"](seed=seed)
    env._freeze_rand_vec = False
    env.seeded_rand_vec = True
    policy = ENV_POLICY_MAP[f"{task}-v3"]()
    rand, success, traces, t0 = [], [], [], time.time()
    for _ in range(episodes):
        obs, _ = env.reset()
        rand.append(np.asarray(env._last_rand_vec, np.float64))
        s, o = [], []
        for _ in range(env.max_path_length):
            obs, _, _, _, info = env.step(policy.get_action(obs))
            s.append(info["success"])
            o.append(np.array(obs[:18], np.float32))
        success.append(s)
        traces.append(o)
    np.savez(out, rand=np.array(rand), success=np.array(success), seconds=time.time() - t0, obs=np.array(traces),
             mujoco=mujoco.__version__)


def run_original(python: str, task: str, episodes: int, seed: int) -> dict:
    """The worker's results (rand, success, seconds, obs, mujoco) from the Meta-World venv `python`."""
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/{task}.npz"
        subprocess.run([python, __file__, "--worker", task, str(episodes), str(seed), out], check=True)
        return dict(np.load(out))


def mujoco4_fields(python: str, task: str, episodes: int, seed: int, rand: np.ndarray | None) -> dict:
    ref = run_original(python, task, episodes, seed)
    if rand is not None and not np.array_equal(ref["rand"], rand):
        raise RuntimeError(f"{task}: Meta-World on MuJoCo {ref['mujoco']} drew other episodes than the original")
    return {"mj4_last": float(ref["success"][:, -1].mean()), "mj4_any": float(ref["success"].max(1).mean()),
            "mj4_version": str(ref["mujoco"]), "mj4_run_s": round(float(ref["seconds"]), 1)}


# -- ours --------------------------------------------------------------------------------------------------
def load_policies():
    """metaworld.policies without running metaworld/__init__ (which needs gymnasium and mujoco 3.3)."""
    if "metaworld" not in sys.modules:
        spec = importlib.util.find_spec("metaworld")
        stub = types.ModuleType("metaworld")
        stub.__path__ = list(spec.submodule_search_locations)
        sys.modules["metaworld"] = stub
    from metaworld.policies import ENV_POLICY_MAP

    return ENV_POLICY_MAP


def run_ours(task_name: str, rand: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per-step success [episodes, T] and observations [episodes, T, 18] (hand, gripper, objects) of the
    scripted policy on our task, compile and run seconds."""
    import jax
    import jax.numpy as jnp

    from toperl_jax.envs import make
    from toperl_jax.envs.metaworld import reset_compiler_options

    task = make("metaworld-" + task_name)
    policy = load_policies()[f"{task_name}-v3"]()
    opts = task.compiler_options()
    reset = jax.jit(jax.vmap(task.reset_to), compiler_options=reset_compiler_options(opts))
    step = jax.jit(jax.vmap(task.apply_action), compiler_options=opts)
    t0 = time.time()
    state = reset(jnp.asarray(rand, jnp.float32), jax.random.split(jax.random.PRNGKey(0), len(rand)))
    obs = np.asarray(state.obs, np.float64)
    first = True
    success, traces = [], []
    for _ in range(task.episode_length):
        act = np.stack([policy.get_action(o[:39]) for o in obs]).astype(np.float32)
        state = step(state, jnp.asarray(act))
        obs = np.asarray(state.obs, np.float64)
        success.append(np.asarray(state.metrics["is_success"]))
        traces.append(obs[:, :18].astype(np.float32))
        if first:
            compile_s, t0, first = time.time() - t0, time.time(), False
    return np.stack(success, 1), np.stack(traces, 1), compile_s, time.time() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mw-python", default="/tmp/mwvenv/bin/python")
    p.add_argument("--tasks", default=",".join(MT10))
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=str(ROOT / "results/metaworld_parity.json"))
    p.add_argument("--report", action="store_true", help="only print the table of the results in --json")
    p.add_argument("--mw4-python", default=None,
                   help="also run the original Meta-World on MuJoCo 4 with this venv's python (mujoco==4.0.0 and "
                        "`pip install --no-deps metaworld==3.1.1`): separates engine-version effects from ours")
    p.add_argument("--only-mw4", action="store_true",
                   help="with --mw4-python: only add the MuJoCo 4 columns to the tasks already in --json")
    p.add_argument("--traces", default=None, help="a directory: save both sides' per-step success and observations "
                                                  "(hand, gripper, objects) per task as <task>.npz")
    p.add_argument("--worker", nargs=4, metavar=("TASK", "EPISODES", "SEED", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only_mw4 and not args.mw4_python:
        p.error("--only-mw4 needs --mw4-python")
    if args.worker:
        task, n, seed, out = args.worker
        return worker(task, int(n), int(seed), out)

    path = pathlib.Path(args.json)
    results = json.loads(path.read_text()) if path.exists() else {}
    for task in args.tasks.split(",") if not args.report else ():
        if args.only_mw4:
            if task not in results:
                raise SystemExit(f"--only-mw4: no results for {task} in {path}; run it without --only-mw4 first")
            row = results[task]
            results[task] = {**row, **mujoco4_fields(args.mw4_python, task, row["episodes"], row["seed"], None)}
            print(task, json.dumps(results[task]), flush=True)
            path.write_text(json.dumps(results, indent=1))
            continue
        ref = run_original(args.mw_python, task, args.episodes, args.seed)
        ours, ours_obs, compile_s, run_s = run_ours(task, ref["rand"])
        if args.traces:
            pathlib.Path(args.traces).mkdir(parents=True, exist_ok=True)
            np.savez_compressed(pathlib.Path(args.traces) / f"{task}.npz", rand=ref["rand"],
                                original_success=ref["success"], original_obs=ref["obs"], ours_success=ours,
                                ours_obs=ours_obs)
        row = {"episodes": int(args.episodes), "seed": args.seed,
               "original_last": float(ref["success"][:, -1].mean()),
               "ours_last": float(ours[:, -1].mean()),
               "original_any": float(ref["success"].max(1).mean()),
               "ours_any": float(ours.max(1).mean()),
               "original_first_step_median": float(np.median(np.argmax(ref["success"], 1))),
               "ours_first_step_median": float(np.median(np.argmax(ours, 1))),
               "paired_last_agree": float((ref["success"][:, -1] == ours[:, -1]).mean()),
               "ours_compile_s": round(compile_s, 1), "ours_run_s": round(run_s, 1),
               "original_run_s": round(float(ref["seconds"]), 1)}
        if args.mw4_python:
            row.update(mujoco4_fields(args.mw4_python, task, args.episodes, args.seed, ref["rand"]))
        results[task] = row
        print(task, json.dumps(row), flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1))
    print(report(results))


def verdict(r: dict, key: str, tol: float = 0.1) -> str:
    """"yes": ours within `tol` (2 of 20 episodes) of the original (MuJoCo 3.3) on success rate `key` ("any" or
    "last"); "MuJoCo 4": not, but within `tol` of the original on MuJoCo 4 (an engine-version effect); else "no"."""
    if abs(r[f"ours_{key}"] - r[f"original_{key}"]) <= tol + 1e-6:  # ours are float32 means
        return "yes"
    if f"mj4_{key}" in r and abs(r[f"ours_{key}"] - r[f"mj4_{key}"]) <= tol + 1e-6:
        return "MuJoCo 4"
    return "**no**"


def report(results: dict) -> str:
    """The per-task table (MT50 order first): success at any step (Meta-World's criterion for its scripted
    policies) and at the last step (TOP-ERL's metric) for the original on MuJoCo 3.3, the original on MuJoCo 4
    (where measured) and ours, with `verdict` per metric."""
    from toperl_jax.envs.metaworld import MT50

    g = lambda r, k: f"{r[k]:.2f}" if k in r else "–"
    lines = [("| task | any: original | any: original on MuJoCo 4 | any: ours | verdict | last: original | "
              "last: original on MuJoCo 4 | last: ours | verdict | paired last-step agreement | "
              "median first success step (orig / ours) |"), "|---|---:|---:|---:|:---:|---:|---:|---:|:---:|---:|---:|"]
    order = [t for t in MT50 if t in results] + sorted(set(results) - set(MT50))
    for task in order:
        r = results[task]
        lines.append(f"| {task} | {g(r, 'original_any')} | {g(r, 'mj4_any')} | {g(r, 'ours_any')} | "
                     f"{verdict(r, 'any')} | {g(r, 'original_last')} | {g(r, 'mj4_last')} | {g(r, 'ours_last')} | "
                     f"{verdict(r, 'last')} | {r['paired_last_agree']:.2f} | {r['original_first_step_median']:g} / "
                     f"{r['ours_first_step_median']:g} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
