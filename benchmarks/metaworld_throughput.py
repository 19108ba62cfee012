"""Throughput of the MJX Meta-World tasks: jitted, vmapped `rollout` of TCE desired trajectories.

    python benchmarks/metaworld_throughput.py [--tasks reach,drawer-open] [--batches 1,256] [--steps 100,10]

Per task and batch size: reset a batch, decode ProDMP trajectories of N(0, 1) weights with TOP-ERL's
Meta-World config from each start, compile `jax.jit(jax.vmap(task.rollout))` over the first `--steps` control
steps (5 physics steps each; one count per batch size) and time it. Prints compile seconds and control steps per
second (median of 3 timed calls; 1 above batch 64) and adds them to results/metaworld_throughput.json
(default: all 50 tasks); `--report` prints the table of what the file holds.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

ROOT = pathlib.Path(__file__).parents[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default=None, help="comma-separated task names (default: all 50 of MT50)")
    p.add_argument("--batches", default="1,256")
    p.add_argument("--steps", default="100,10", help="control steps timed, one per batch size")
    p.add_argument("--json", default=str(ROOT / "results/metaworld_throughput.json"))
    p.add_argument("--report", action="store_true", help="only print the table of the results in --json")
    args = p.parse_args()
    if args.report:
        return print(report(json.loads(pathlib.Path(args.json).read_text())))

    import jax
    import jax.numpy as jnp
    import numpy as np

    from toperl_jax.envs import make
    from toperl_jax.envs.metaworld import MT50, reset_compiler_options
    from toperl_jax.mp import prodmp_trajectory

    batches = [int(x) for x in args.batches.split(",")]
    steps = [int(x) for x in args.steps.split(",")]
    if len(steps) != len(batches) or min(batches + steps) < 1:
        raise SystemExit(f"--steps: one positive count per batch size ({args.batches}), got {args.steps}")
    path = pathlib.Path(args.json)
    results = json.loads(path.read_text()) if path.exists() else {}
    for name in args.tasks.split(",") if args.tasks else MT50:
        task = make("metaworld-" + name)
        cfg = task.prodmp_config()
        opts = task.compiler_options()
        for b, n in zip(batches, steps):
            times = task.action_times()[:n]
            keys = jax.random.split(jax.random.PRNGKey(0), b)
            states = jax.jit(jax.vmap(task.reset), compiler_options=reset_compiler_options(opts))(keys)
            w = jax.random.normal(jax.random.PRNGKey(1), (b, cfg.num_params))
            pos, vel = jax.jit(jax.vmap(lambda w, p, v, cfg=cfg, times=times: prodmp_trajectory(cfg, w, times, 0.0, p, v)))(
                w, states.desired_pos, states.desired_vel)
            desired = jnp.concatenate([pos, vel], -1)
            t0 = time.time()
            roll = jax.jit(jax.vmap(task.rollout), compiler_options=opts).lower(states, desired).compile()
            compile_s = time.time() - t0
            runs = []
            for _ in range(3 if b <= 64 else 1):
                t0 = time.time()
                jax.block_until_ready(roll(states, desired))
                runs.append(time.time() - t0)
            sps = b * n / float(np.median(runs))
            row = {"batch": b, "steps": n, "compile_s": round(compile_s, 1),
                   "control_steps_per_s": round(sps, 1), "physics_steps_per_s": round(sps * task.frame_skip, 1),
                   "backend": jax.default_backend(), "device": jax.devices()[0].device_kind}
            results.setdefault(name, {})[str(b)] = row
            print(name, json.dumps(row), flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=1))



def report(results: dict) -> str:
    """Markdown table: per task and batch size, control steps per second and compile seconds."""
    batches = sorted({int(b) for r in results.values() for b in r})
    head = ["task"] + [f"batch {b}: control steps/s" for b in batches] + [f"batch {b}: compile s" for b in batches]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for task, r in results.items():
        cells = [f"{r[str(b)]['control_steps_per_s']:,.0f}" if str(b) in r else "–" for b in batches]
        cells += [f"{r[str(b)]['compile_s']:.0f}" if str(b) in r else "–" for b in batches]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
