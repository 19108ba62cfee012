"""Time one TOP-ERL iteration of a preset, split into rollout, critic updates and policy updates.

    python benchmarks/top_erl_iteration.py --task box-dense            # upstream box-pushing shapes
    python benchmarks/top_erl_iteration.py --task reach --repeats 10

Each part is jitted on its own at the preset's shapes (the rollout of `num_envs` episodes with MJX and the
ProDMP decode; `epochs_critic` critic steps; `epochs_policy` policy steps plus the old-policy update), the
buffer filled with `buffer_size` real episodes of the initial policy first. Printed: compile time, median and
IQR of `--repeats` calls per part, env steps per second of the rollout, the iteration total and the projected
wall time for the preset's whole run (iterations × per-iteration median; the paper's box-pushing budget is
35k iterations = 14M env steps). `--fill-episodes N` puts only N episodes in the buffer first (default: all
`buffer_size`). Flags other than these go to the variant's Args (e.g. `--micro-batch 8`).
`measure_iteration(args, repeats, fill_episodes)` is the importable form (benchmarks/throughput.py uses it).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys

import jax

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from timing import jit_options, time_jitted

from toperl_jax import buffer as buffer_lib
from variants import top_erl as te


def measure_iteration(args, repeats: int = 5, fill_episodes: int | None = None, verbose: bool = True) -> dict:
    """Time the three parts of one iteration of the variant configured by `args` (a `top_erl.Args`).

    `fill_episodes`: real episodes of the initial policy put in the buffer before timing (default: the whole
    `buffer_size`; sampling cost does not depend on how full the buffer is, so fewer are fine where rollouts are
    slow, e.g. box pushing on a CPU). Returns the result dict (also printed when `verbose`).
    """
    program = te.make_train(args)
    task, learner = program.task, program.learner
    opts = jit_options(task)
    state = jax.jit(program.init, compiler_options=opts)(jax.random.PRNGKey(args.seed))
    fill = args.buffer_size if fill_episodes is None else max(1, min(fill_episodes, args.buffer_size))
    rollout_j = jax.jit(lambda params, key: program.rollout(params, key, args.num_envs, False)[0],
                        compiler_options=opts)
    buf = state.buffer
    add = jax.jit(buffer_lib.add)
    for i in range(-(-fill // args.num_envs)):
        buf = add(buf, rollout_j(state.policy.params, jax.random.PRNGKey(1000 + i)))
    h0 = te.initial_entropy(learner, state.policy.old_params, buf.data.states[:8, 0])
    it = args.policy_update_from

    critic_j = jax.jit(lambda c, b, p, k: te.critic_update(learner, c, b, p.params, p.old_params, it, h0, k,
                                                                args.epochs_critic), compiler_options=opts)
    policy_j = jax.jit(lambda p, b, c, k: te.policy_update(learner, p, b, c.params, it, h0, k,
                                                                args.epochs_policy), compiler_options=opts)
    key = lambda i: jax.random.PRNGKey(i)
    parts = {
        "rollout": time_jitted(rollout_j, lambda i: (state.policy.params, key(i)), repeats),
        "critic_updates": time_jitted(critic_j, lambda i: (state.critic, buf, state.policy, key(i)), repeats),
        "policy_updates": time_jitted(policy_j, lambda i: (state.policy, buf, state.critic, key(i)), repeats),
    }
    total = sum(p["median_s"] for p in parts.values())
    steps = args.num_envs * task.episode_length
    result = {"task": args.task, "backend": jax.default_backend(), "device": str(jax.devices()[0]),
              "args": dataclasses.asdict(args), "micro_batch_used": learner.micro_batch, "buffer_filled": fill,
              "parts": {n: {k: v for k, v in p.items() if k != "times_s"} for n, p in parts.items()},
              "iteration_s": total, "rollout_env_steps_per_s": steps / parts["rollout"]["median_s"],
              "critic_steps_per_s": args.epochs_critic / parts["critic_updates"]["median_s"],
              "policy_steps_per_s": args.epochs_policy / parts["policy_updates"]["median_s"],
              "projected_run_h": total * args.iterations / 3600, "env_steps_per_run": steps * args.iterations}
    if verbose:
        print(f"{args.task} on {result['device']} (micro_batch {learner.micro_batch}); medians of {repeats} calls")
        for n, p in parts.items():
            print(f"  {n:15s} {1e3 * p['median_s']:10.1f} ms  (IQR {1e3 * p['q25_s']:.1f}–{1e3 * p['q75_s']:.1f}; "
                  f"compile {p['compile_s']:.1f} s)")
        print(f"  iteration       {1e3 * total:10.1f} ms; rollout {result['rollout_env_steps_per_s']:,.0f} env "
              f"steps/s; {args.iterations} iterations ({result['env_steps_per_run'] / 1e6:.2f}M env steps) ≈ "
              f"{result['projected_run_h']:.1f} h")
    return result


def main(argv: list[str]) -> dict:
    repeats, out, fill = 5, None, None
    if "--repeats" in argv:
        i = argv.index("--repeats")
        repeats = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    if "--json" in argv:
        i = argv.index("--json")
        out = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    if "--fill-episodes" in argv:
        i = argv.index("--fill-episodes")
        fill = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    result = measure_iteration(te.parse_args(argv), repeats, fill)
    if out:
        pathlib.Path(out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
