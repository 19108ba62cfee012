"""Hopper jump: MJX rollout speed and agreement for constraint-solver caps (iterations, ls_iterations).

    python benchmarks/hopper_solver.py [--batch 16] [--scale 2.0] [--settings 100,50 10,10 6,6 4,8]

Rolls out `--batch` episodes from the task's reset (the hopper drops 0.25 m, lands, and is driven by random
ProDMP trajectories, weights ~ scale·N(0, 1)) once per setting, on the same start states and desired
trajectories, and prints the compile time, the control steps per second (median of 3 calls) and the largest
observation difference against the first setting.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from mujoco import mjx

from toperl_jax import envs
from toperl_jax.mp import prodmp_trajectory


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--scale", type=float, default=2.0)
    p.add_argument("--settings", nargs="+", default=["100,50", "10,10", "6,6", "4,8"])
    a = p.parse_args()
    base = envs.make("hopper-jump-sparse")
    mp, n = base.prodmp_config(), a.batch
    start = jax.vmap(base.reset)(jax.random.split(jax.random.PRNGKey(0), n))
    w = a.scale * jax.random.normal(jax.random.PRNGKey(1), (n, mp.num_params))
    pos, vel = prodmp_trajectory(mp, w, base.action_times(), jnp.zeros(n), start.desired_pos, start.desired_vel)
    desired = jnp.concatenate([pos, vel], -1)
    ref = None
    print(f"| iterations / ls_iterations | compile (s) | steps/s (batch {n}) | max obs difference to the first |")
    print("|---|---:|---:|---:|")
    for setting in a.settings:
        it, ls = (int(x) for x in setting.split(","))
        task = envs.make("hopper-jump-sparse")
        task.mj_model.opt.iterations, task.mj_model.opt.ls_iterations = it, ls
        task.mjx_model = mjx.put_model(task.mj_model, impl="jax")
        f = jax.jit(lambda s, d, task=task: jax.vmap(task.rollout)(s, d))
        t0 = time.perf_counter()
        jax.block_until_ready(f(start, desired))
        compile_s = time.perf_counter() - t0
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            _, ro = jax.block_until_ready(f(start, desired))
            times.append(time.perf_counter() - t0)
        obs = np.asarray(ro.obs)
        ref = obs if ref is None else ref
        print(f"| {it} / {ls} | {compile_s:.1f} | {n * task.episode_length / np.median(times):.0f} | "
              f"{np.abs(obs - ref).max():.2e} |", flush=True)


if __name__ == "__main__":
    main()
