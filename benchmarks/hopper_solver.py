"""Hopper jump: MJX rollout speed and agreement for constraint-solver settings (iterations, ls_iterations, tolerance).

    python benchmarks/hopper_solver.py [--batch 16] [--scale 2.0] [--settings 100,50 10,10 6,6 4,8]
    python benchmarks/hopper_solver.py --upstream-python /tmp/fgvenv/bin/python --batch 16 --jumps 8 \\
        --settings 100,50 10,10 6,6 4,4 2,4 [--json results/hopper_solver.json]

Settings are IT,LS[,TOL]. Without --upstream-python: `--batch` episodes from the task's reset (the hopper drops
0.25 m, lands, and is driven by random ProDMP trajectories, weights ~ scale·N(0, 1)). With it (fancy_gym 0.3.0 in
its own venv, see benchmarks/hopper_parity.py): the parity cases of hopper_parity.make_cases (the first `--jumps`
are scripted crouch-and-kick jumps, the rest ProDMP decodes of N(0, 1) weights), and per setting the sparse task's
returns, max heights, height paths and latch steps are compared with fancy_gym's on the same start states, goals
and desired trajectories. The noise floor is fancy_gym against itself with the desired joint positions nudged by
`--perturb` rad (a constant random +-perturb per episode and joint); MJX against itself nudged is shown per setting.

Every setting runs on the same start states and desired trajectories; the rollouts of all settings are timed
interleaved (`--rounds` rounds, median), and the compile time and the largest observation difference against
the first setting are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import hopper_parity
from hopper_parity import LATCHES

from toperl_jax import envs
from toperl_jax.mp import prodmp_trajectory


def first_steps(x: np.ndarray) -> np.ndarray:
    """[n, T] latch (0/1) -> [n] first step it is set (-1: never)."""
    x = np.asarray(x) > 0.5
    return np.where(x.any(1), np.argmax(x, 1), -1)


def compare(a: dict, b: dict) -> dict:
    """Sparse-task episodes a vs b (dicts of [n, T] reward, height, max_height and latches)."""
    ret = np.abs(a["reward"].sum(1) - b["reward"].sum(1))
    maxh = np.abs(a["max_height"][:, -1] - b["max_height"][:, -1])
    dh = np.abs(a["height"] - b["height"]).max(1)
    same = np.all([first_steps(a[k]) == first_steps(b[k]) for k in LATCHES], 0)
    return {"return_abs_diff_median": float(np.median(ret)), "return_abs_diff_max": float(ret.max()),
            "max_height_abs_diff_median_m": float(np.median(maxh)), "max_height_abs_diff_max_m": float(maxh.max()),
            "height_path_max_abs_diff_median_m": float(np.median(dh)), "height_path_max_abs_diff_max_m": float(dh.max()),
            "latch_steps_identical": int(same.sum()), "episodes": int(len(ret))}


def run_upstream(python: str, qpos0, goal, desired) -> dict:
    """fancy_gym's sparse hopper (hopper_parity.py's worker) on these cases: dict of [n, T] arrays."""
    up = hopper_parity.run_upstream(python, qpos0, goal, desired)
    return {k: up[f"sparse/{k}"] for k in ("reward", "height", "max_height", *LATCHES)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--scale", type=float, default=2.0)
    p.add_argument("--settings", nargs="+", default=["100,50", "10,10", "6,6", "4,8"])
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    p.add_argument("--upstream-python", default=None,
                   help="python of a venv with fancy_gym==0.3.0: compare each setting with fancy_gym")
    p.add_argument("--jumps", type=int, default=8, help="with --upstream-python: scripted jumps among the cases")
    p.add_argument("--perturb", type=float, default=1e-4, help="nudge of the desired joints for the noise floor (rad)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args()
    base = envs.make("hopper-jump-sparse")
    n = a.batch
    up = up_p = None
    if a.upstream_python:
        qpos0, goal, desired_np = hopper_parity.make_cases(n, a.seed, a.jumps)
        start = jax.vmap(base.reset_to)(jnp.asarray(qpos0), jnp.zeros((n, 6)), jnp.asarray(goal))
        nudge = a.perturb * np.random.default_rng(a.seed).choice([-1.0, 1.0], size=(n, 3))
        desired_p_np = desired_np.copy()
        desired_p_np[..., :3] += nudge[:, None, :].astype(np.float32)
        t0 = time.perf_counter()
        up = run_upstream(a.upstream_python, qpos0, goal, desired_np)
        up_p = run_upstream(a.upstream_python, qpos0, goal, desired_p_np)
        print(f"fancy_gym: {time.perf_counter() - t0:.0f} s; max height median "
              f"{np.median(up['max_height'][:, -1]):.3f} m, max {up['max_height'][:, -1].max():.3f} m", flush=True)
        desired, desired_p = jnp.asarray(desired_np), jnp.asarray(desired_p_np)
    else:
        mp = base.prodmp_config()
        start = jax.vmap(base.reset)(jax.random.split(jax.random.PRNGKey(a.seed), n))
        w = a.scale * jax.random.normal(jax.random.PRNGKey(a.seed + 1), (n, mp.num_params))
        pos, vel = prodmp_trajectory(mp, w, base.action_times(), jnp.zeros(n), start.desired_pos, start.desired_vel)
        desired = desired_p = jnp.concatenate([pos, vel], -1)
    load = [os.getloadavg()]
    fns, rows, ref = {}, {}, None
    for setting in a.settings:
        parts = setting.split(",")
        task = envs.make("hopper-jump-sparse")
        if len(parts) > 2:
            task.mj_model.opt.tolerance = float(parts[2])
        task.set_solver(int(parts[0]), int(parts[1]))  # also rebuilds the MJX model with the tolerance above
        t0 = time.perf_counter()
        f = jax.jit(lambda s, d, task=task: jax.vmap(task.rollout)(s, d)).lower(start, desired).compile()
        row = {"compile_s": time.perf_counter() - t0}
        _, ro = jax.block_until_ready(f(start, desired))
        obs = np.asarray(ro.obs)
        ref = obs if ref is None else ref
        row["max_obs_diff_to_first"] = float(np.abs(obs - ref).max())
        if up is not None:
            ours = {"reward": np.asarray(ro.rewards), **{k: np.asarray(ro.metrics[k])
                                                         for k in ("height", "max_height", *LATCHES)}}
            _, ro_p = jax.block_until_ready(f(start, desired_p))
            ours_p = {"reward": np.asarray(ro_p.rewards), **{k: np.asarray(ro_p.metrics[k])
                                                             for k in ("height", "max_height", *LATCHES)}}
            row["mjx_vs_fancy_gym"] = compare(ours, up)
            row["mjx_vs_mjx_nudged"] = compare(ours_p, ours)
        fns[setting], rows[setting] = f, row
        print(f"{setting}: compiled in {row['compile_s']:.0f} s", flush=True)
    load.append(os.getloadavg())
    times = {s: [] for s in a.settings}
    for _ in range(a.rounds):
        for s in a.settings:
            t0 = time.perf_counter()
            jax.block_until_ready(fns[s](start, desired))
            times[s].append(time.perf_counter() - t0)
    load.append(os.getloadavg())
    for s in a.settings:
        rows[s]["rollout_s"] = times[s]
        rows[s]["steps_per_s_median"] = n * base.episode_length / float(np.median(times[s]))
    print(f"\nload average (1 min) {load[0][0]:.1f} / {load[-1][0]:.1f} (start / end)")
    if up is not None:
        nf = compare(up_p, up)
        print(f"noise floor, fancy_gym vs itself nudged by {a.perturb:g} rad: |Δ return| median / max "
              f"{nf['return_abs_diff_median']:.2e} / {nf['return_abs_diff_max']:.2e}, |Δ max height| "
              f"{1000 * nf['max_height_abs_diff_median_m']:.3f} / {1000 * nf['max_height_abs_diff_max_m']:.3f} mm, "
              f"max |Δ height| {1000 * nf['height_path_max_abs_diff_median_m']:.3f} / "
              f"{1000 * nf['height_path_max_abs_diff_max_m']:.3f} mm, latches identical "
              f"{nf['latch_steps_identical']}/{n}\n")
        print(f"| iterations, ls_iterations[, tol] | compile (s) | steps/s (batch {n}) | max obs difference to the first "
              "| vs fancy_gym: abs Δ return (median / max) | abs Δ max height (mm) | max abs Δ height (mm) | latches "
              "| vs MJX nudged: abs Δ return | abs Δ max height (mm) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for s in a.settings:
            r = rows[s]
            u, q = r["mjx_vs_fancy_gym"], r["mjx_vs_mjx_nudged"]
            print(f"| {s} | {r['compile_s']:.0f} | {r['steps_per_s_median']:.0f} | {r['max_obs_diff_to_first']:.2e} | "
                  f"{u['return_abs_diff_median']:.2e} / {u['return_abs_diff_max']:.2e} | "
                  f"{1000 * u['max_height_abs_diff_median_m']:.3f} / {1000 * u['max_height_abs_diff_max_m']:.3f} | "
                  f"{1000 * u['height_path_max_abs_diff_median_m']:.2f} / {1000 * u['height_path_max_abs_diff_max_m']:.2f} | "
                  f"{u['latch_steps_identical']}/{n} | {q['return_abs_diff_median']:.2e} / {q['return_abs_diff_max']:.2e} | "
                  f"{1000 * q['max_height_abs_diff_median_m']:.3f} / {1000 * q['max_height_abs_diff_max_m']:.3f} |")
        rows = {"noise_floor_fancy_gym": nf, "settings": rows}
    else:
        print(f"| iterations / ls_iterations | compile (s) | steps/s (batch {n}) | max obs difference to the first |")
        print("|---|---:|---:|---:|")
        for s in a.settings:
            r = rows[s]
            print(f"| {s.replace(',', ' / ')} | {r['compile_s']:.1f} | {r['steps_per_s_median']:.0f} | "
                  f"{r['max_obs_diff_to_first']:.2e} |")
        rows = {"settings": rows}
    if a.json:
        rows.update({"load_average_1_5_15": [list(x) for x in load], "batch": n, "args": vars(a)})
        pathlib.Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(a.json).write_text(json.dumps(rows, indent=1))
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
