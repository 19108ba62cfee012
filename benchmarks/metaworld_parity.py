"""Scripted-policy parity: Meta-World's own scripted policies (`metaworld.policies`) on the original Meta-World
and, step by step, on our MJX tasks, from the same episode starts.

The original runs in its own venv (Meta-World 3.1.1 pins mujoco 3.3.0) as a worker subprocess:

    python3 -m venv /tmp/mwvenv && /tmp/mwvenv/bin/pip install metaworld==3.1.1 packaging
    python benchmarks/metaworld_parity.py --mw-python /tmp/mwvenv/bin/python [--tasks reach,push] [--episodes 20]

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
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE as envs
    from metaworld.policies import ENV_POLICY_MAP

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
    np.savez(out, rand=np.array(rand), success=np.array(success), seconds=time.time() - t0, obs=np.array(traces))


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
    p.add_argument("--traces", default=None, help="a directory: save both sides' per-step success and observations "
                                                  "(hand, gripper, objects) per task as <task>.npz")
    p.add_argument("--worker", nargs=4, metavar=("TASK", "EPISODES", "SEED", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        task, n, seed, out = args.worker
        return worker(task, int(n), int(seed), out)

    path = pathlib.Path(args.json)
    results = json.loads(path.read_text()) if path.exists() else {}
    for task in args.tasks.split(",") if not args.report else ():
        with tempfile.TemporaryDirectory() as tmp:
            out = f"{tmp}/{task}.npz"
            subprocess.run([args.mw_python, __file__, "--worker", task, str(args.episodes), str(args.seed), out],
                           check=True)
            ref = dict(np.load(out))
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
        results[task] = row
        print(task, json.dumps(row), flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1))
    print(report(results))


def report(results: dict) -> str:
    """The per-task table (MT50 order first), each row judged "yes" when the success rates at the last step and at
    any step are both within 0.1 of the original's (2 of 20 episodes)."""
    from toperl_jax.envs.metaworld import MT50

    lines = [("| task | original last | ours last | original any | ours any | paired last-step agreement | "
              "median first success step (orig / ours) | within 0.1 |"), "|---|---:|---:|---:|---:|---:|---:|:---:|"]
    order = [t for t in MT50 if t in results] + sorted(set(results) - set(MT50))
    for task in order:
        r = results[task]
        ok = max(abs(r["ours_last"] - r["original_last"]), abs(r["ours_any"] - r["original_any"])) <= 0.1 + 1e-9
        lines.append(f"| {task} | {r['original_last']:.2f} | {r['ours_last']:.2f} | {r['original_any']:.2f} | "
                     f"{r['ours_any']:.2f} | {r['paired_last_agree']:.2f} | {r['original_first_step_median']:g} / "
                     f"{r['ours_first_step_median']:g} | {'yes' if ok else '**no**'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
