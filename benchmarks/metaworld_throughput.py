"""Throughput of the MJX Meta-World tasks: jitted, vmapped `rollout` of TCE desired trajectories.

    python benchmarks/metaworld_throughput.py [--tasks reach,drawer-open] [--batches 1,256] [--steps 100]

Per task and batch size: reset a batch, decode ProDMP trajectories of N(0, 1) weights with TOP-ERL's
Meta-World config from each start, and time `jax.jit(jax.vmap(task.rollout))` over the first `--steps`
control steps (5 physics steps each). Prints compile seconds and control steps per second (median of 3
timed calls; 1 above batch 64) and appends to results/metaworld_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

ROOT = pathlib.Path(__file__).parents[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="reach,push,pick-place,door-open,drawer-open,drawer-close,"
                                      "button-press-topdown,peg-insert-side,window-open,window-close")
    p.add_argument("--batches", default="1,256")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--json", default=str(ROOT / "results/metaworld_throughput.json"))
    args = p.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from toperl_jax.envs import make
    from toperl_jax.envs.metaworld import reset_compiler_options
    from toperl_jax.mp import prodmp_trajectory

    path = pathlib.Path(args.json)
    results = json.loads(path.read_text()) if path.exists() else {}
    for name in args.tasks.split(","):
        task = make("metaworld-" + name)
        cfg = task.prodmp_config()
        opts = task.compiler_options()
        times = task.action_times()[: args.steps]
        for b in (int(x) for x in args.batches.split(",")):
            keys = jax.random.split(jax.random.PRNGKey(0), b)
            states = jax.jit(jax.vmap(task.reset), compiler_options=reset_compiler_options(opts))(keys)
            w = jax.random.normal(jax.random.PRNGKey(1), (b, cfg.num_params))
            pos, vel = jax.jit(jax.vmap(lambda w, p, v, cfg=cfg, times=times: prodmp_trajectory(cfg, w, times, 0.0, p, v)))(
                w, states.desired_pos, states.desired_vel)
            desired = jnp.concatenate([pos, vel], -1)
            roll = jax.jit(jax.vmap(task.rollout), compiler_options=opts)
            t0 = time.time()
            jax.block_until_ready(roll(states, desired))
            compile_s = time.time() - t0
            runs = []
            for _ in range(3 if b <= 64 else 1):
                t0 = time.time()
                jax.block_until_ready(roll(states, desired))
                runs.append(time.time() - t0)
            sps = b * args.steps / float(np.median(runs))
            row = {"batch": b, "steps": args.steps, "compile_s": round(compile_s, 1),
                   "control_steps_per_s": round(sps, 1), "physics_steps_per_s": round(sps * task.frame_skip, 1),
                   "backend": jax.default_backend()}
            results.setdefault(name, {})[str(b)] = row
            print(name, json.dumps(row), flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
