"""Throughput side by side in one process: env steps/s, update steps/s, iteration time, seed scaling.

    python benchmarks/throughput.py                                   # CPU-sized defaults (tens of minutes on 2 cores)
    python benchmarks/throughput.py --reacher-batches 64 1024 4096 --box-batches 64 1024 --hopper-batches 64 1024 \\
        --presets reach box-dense hopper-jump                         # on a GPU: larger batches, the paper's presets

Sections (`--skip` leaves any out):
  env        env steps/s of the training rollout of each task (`Program.rollout` of the variant at the task's
             preset with the initial policy: vmapped reset, policy mean/Cholesky, sampled ProDMP weights, trajectory
             decode, MJX rollout with the PD controller), per batch size (episodes per call);
  iteration  per preset (`--presets`): rollout of `num_envs` episodes, `epochs_critic` critic steps and
             `epochs_policy` policy steps, each jitted on its own (benchmarks/top_erl_iteration.py's
             `measure_iteration`); critic / policy update steps/s = epochs / median time; iteration time = the sum;
  scaling    the variant's jitted chunk (`jit(vmap(run_chunk))`, as `variants/top_erl.py` runs it) of
             `--scaling-iterations` iterations of the `reach` preset (critic and policy updates on) for 1, 2, 4, 8
             vmapped seeds: aggregate env steps/s = seeds × iterations × num_envs × T / median chunk time.
Every time is the median of `--repeats` calls after compilation and one warm-up call (benchmarks/timing.py).
Prints markdown tables and writes the raw numbers to `--json`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import sys
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import tyro

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import top_erl_iteration  # loads variants/top_erl.py as `top_erl_iteration.te`
from timing import compile_timed, cpu_model, jit_options, time_calls, time_jitted

from toperl_jax.logger import git_commit

te = top_erl_iteration.te
TASK_PRESET = {"reacher": "reach", "box-pushing-dense": "box-dense", "hopper-jump-sparse": "hopper-jump"}


@dataclasses.dataclass(frozen=True)
class Args:
    """Measure env, update, iteration and seed-scaling throughput in one process."""

    tasks: tuple[Literal["reacher", "box-pushing-dense", "hopper-jump-sparse"], ...] = (
        "reacher", "box-pushing-dense", "hopper-jump-sparse")
    """tasks of the env section (each rolled out at its preset's policy/ProDMP settings)"""
    reacher_batches: tuple[int, ...] = (1, 16, 64)
    """episodes per rollout call, reacher (T = 50)"""
    box_batches: tuple[int, ...] = (1, 16)
    """episodes per rollout call, box pushing (T = 100; MJX runs ~300 steps/s on a 2-core CPU)"""
    hopper_batches: tuple[int, ...] = (1, 4)
    """episodes per rollout call, hopper jump (T = 250)"""
    presets: tuple[Literal["reach", "box-dense", "box-sparse", "hopper-jump"], ...] = ("reach",)
    """presets of the iteration section (box-dense: 30 critic steps of 512 trajectories, minutes per call on a CPU)"""
    fill_episodes: int = 256
    """episodes in the replay buffer before the update timings (sampling cost does not depend on the fill)"""
    seed_counts: tuple[int, ...] = (1, 2, 4, 8)
    """vmapped seeds of the scaling section"""
    scaling_iterations: int = 2
    """iterations per timed chunk in the scaling section (the chunk length is `eval_interval`)"""
    repeats: int = 3
    """timed calls per measurement"""
    skip: tuple[Literal["env", "iteration", "scaling"], ...] = ()
    """sections to leave out"""
    json: str = "results/bench_throughput.json"
    """raw results ('' = do not write)"""
    compile_cache: str = "~/.cache/toperl-jax/xla"
    """persistent XLA compilation cache ('' disables), as in the variant"""


def preset_of(task_name: str):
    """The variant's preset `Args` whose rollout an env row of `task_name` times (a metaworld-* task: the
    `metaworld` preset with that `--env`)."""
    if task_name.startswith("metaworld-"):
        return dataclasses.replace(te.PRESETS["metaworld"], env=task_name)
    return te.PRESETS[TASK_PRESET[task_name]]


def env_throughput(task_name: str, batch: int, repeats: int, args=None) -> dict:
    """Env steps/s of the variant's training rollout of `batch` episodes on `task_name` (at `args`, default
    `preset_of(task_name)`)."""
    args = preset_of(task_name) if args is None else args
    program = te.make_train(args)
    task = program.task
    params = jax.jit(program.init, compiler_options=jit_options(task))(jax.random.PRNGKey(0)).policy.params
    fn = jax.jit(lambda p, k: program.rollout(p, k, batch, False)[2]["return"],
                 compiler_options=jit_options(task))
    r = time_jitted(fn, lambda i: (params, jax.random.PRNGKey(i)), repeats)
    steps = batch * task.episode_length
    return {"task": task_name, "batch": batch, "T": task.episode_length, "compile_s": r["compile_s"],
            "median_s": r["median_s"], "q25_s": r["q25_s"], "q75_s": r["q75_s"], "env_steps_per_s": steps / r["median_s"]}


def seed_scaling(num_seeds: int, iterations: int, repeats: int) -> dict:
    """Aggregate env steps/s of the reach preset's jitted chunk with `num_seeds` vmapped seeds."""
    return chunk_throughput(te.PRESETS["reach"], num_seeds, iterations, repeats)


def chunk_throughput(args, num_seeds: int, iterations: int, repeats: int, fill=None) -> dict:
    """Aggregate env steps/s of the variant's jitted chunk (`jit(vmap(run_chunk))`, as the runner runs it) of
    `iterations` iterations of `args` with `num_seeds` vmapped seeds, every iteration with critic and policy updates.
    `fill(program, state) -> state`: how the buffer gets at least a batch before the timed calls (default: chunks
    from iteration 1, which is also the warm-up call)."""
    args = dataclasses.replace(args, eval_interval=iterations, num_seeds=num_seeds)
    program = te.make_train(args)
    opts = jit_options(program.task)
    keys = jnp.stack([jax.random.PRNGKey(i) for i in range(num_seeds)])
    state = jax.jit(jax.vmap(program.init), compiler_options=opts)(keys)
    chunk = jax.jit(jax.vmap(program.run_chunk, in_axes=(0, None)), donate_argnums=0, compiler_options=opts)
    # every iteration of the timed chunks has critic and policy updates on
    first_it = jnp.int32(max(args.critic_update_from, args.policy_update_from))
    compiled, compile_s = compile_timed(chunk, state, first_it)
    if fill is None:  # fill the buffer past one batch with a chunk from iteration 1 (also the warm-up call)
        for _ in range(max(1, -(-args.batch_size // (args.num_envs * iterations)))):
            state, _ = compiled(state, jnp.int32(1))
    else:
        state = fill(program, state)
    state = jax.block_until_ready(state)
    holder = {"state": state}

    def call():
        holder["state"], _ = compiled(holder["state"], first_it)
        jax.block_until_ready(holder["state"])

    call()  # warm-up at the timed iteration
    r = time_calls(call, repeats)
    steps = num_seeds * iterations * args.num_envs * program.task.episode_length
    return {"num_seeds": num_seeds, "iterations_per_call": iterations, "num_envs": args.num_envs,
            "episode_length": program.task.episode_length, "batch_size": args.batch_size,
            "epochs_critic": args.epochs_critic, "epochs_policy": args.epochs_policy, "compile_s": compile_s,
            "median_s": r["median_s"], "q25_s": r["q25_s"], "q75_s": r["q75_s"],
            "env_steps_per_s": steps / r["median_s"], "iterations_per_s_per_seed": iterations / r["median_s"],
            "final_state_finite": bool(all(jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(holder["state"])
                                           if jnp.issubdtype(x.dtype, jnp.floating)))}


def main(argv: list[str] | None = None) -> dict:
    cfg = tyro.cli(Args, args=argv)
    for name in ("repeats", "scaling_iterations", "fill_episodes"):
        if getattr(cfg, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')}: must be ≥ 1, got {getattr(cfg, name)}")
    if cfg.compile_cache and jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(cfg.compile_cache).expanduser()))
    dev = jax.devices()[0]
    where = f"{dev.device_kind} ({dev.platform})" if dev.platform != "cpu" else f"{cpu_model()}, {os.cpu_count()} CPUs"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    out = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "device": where,
           "commit": git_commit(("variants/top_erl.py",)),
           "jax": jax.__version__, "command": "python benchmarks/throughput.py " + " ".join(sys.argv[1:] if argv is None
                                                                                           else argv),
           "load_average_start": load, "env": [], "iteration": [], "scaling": []}
    print(f"# Throughput on {where}, jax {jax.__version__}, {out['date']} (load average at start {load:.1f})\n",
          flush=True)

    if "env" not in cfg.skip:
        batches = {"reacher": cfg.reacher_batches, "box-pushing-dense": cfg.box_batches,
                   "hopper-jump-sparse": cfg.hopper_batches}
        print("## Env steps/s (training rollout: policy + ProDMP decode + MJX with PD control)\n")
        print("| task | T | batch (episodes) | env steps/s | median call (s) | compile (s) |")
        print("|---|---:|---:|---:|---:|---:|", flush=True)
        for t in cfg.tasks:
            for b in batches[t]:
                r = env_throughput(t, b, cfg.repeats)
                out["env"].append(r)
                print(f"| {t} | {r['T']} | {b} | {r['env_steps_per_s']:,.0f} | {r['median_s']:.3f} | "
                      f"{r['compile_s']:.1f} |", flush=True)
        print()

    if "iteration" not in cfg.skip:
        print("## Updates and iteration time per preset\n")
        print("| preset | critic batch × epochs | critic steps/s | policy steps/s | rollout (s) | critic updates (s) | "
              "policy updates (s) | iteration (s) | projected run (h) |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|", flush=True)
        for preset in cfg.presets:
            a = te.PRESETS[preset]
            r = top_erl_iteration.measure_iteration(a, cfg.repeats, cfg.fill_episodes, verbose=False)
            r.pop("args")
            r["preset"] = preset
            out["iteration"].append(r)
            p = r["parts"]
            print(f"| {preset} | {a.batch_size} × {a.epochs_critic} / {a.epochs_policy} | "
                  f"{r['critic_steps_per_s']:.2f} | {r['policy_steps_per_s']:.2f} | {p['rollout']['median_s']:.3f} | "
                  f"{p['critic_updates']['median_s']:.2f} | {p['policy_updates']['median_s']:.2f} | "
                  f"{r['iteration_s']:.2f} | {r['projected_run_h']:.2f} |", flush=True)
        print()

    if "scaling" not in cfg.skip:
        reach = te.PRESETS["reach"]
        print(f"## Seed scaling (reach preset: {reach.num_envs} episodes per iteration, batch {reach.batch_size}, "
              f"{reach.epochs_critic} / {reach.epochs_policy} critic / policy steps; jitted chunk of "
              f"{cfg.scaling_iterations} iterations with updates)\n")
        print("| seeds | aggregate env steps/s | × vs 1 seed | iterations/s per seed | median chunk (s) | compile (s) |")
        print("|---:|---:|---:|---:|---:|---:|", flush=True)
        base = None
        for n in cfg.seed_counts:
            r = seed_scaling(n, cfg.scaling_iterations, cfg.repeats)
            out["scaling"].append(r)
            base = base or r["env_steps_per_s"]
            print(f"| {n} | {r['env_steps_per_s']:,.0f} | {r['env_steps_per_s'] / base:.2f} | "
                  f"{r['iterations_per_s_per_seed']:.3f} | {r['median_s']:.2f} | {r['compile_s']:.1f} |", flush=True)
        print()
    out["load_average_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if cfg.json:
        pathlib.Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(cfg.json).write_text(json.dumps(out, indent=1, default=lambda o: np.asarray(o).tolist()))
        print(f"raw results: {cfg.json}")
    return out


if __name__ == "__main__":
    main()
