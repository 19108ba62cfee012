"""Offline datasets from this project's MJX tasks, in the D4RL HDF5 layout (issue 7; specs/qt.md §8).

    python benchmarks/make_dataset.py                                # reacher: all five recipes in runs/datasets/
    python benchmarks/make_dataset.py --task hopper-jump --medium-iterations 60 --expert-iterations 200 \
        --behaviour-flags="--num-envs 16 --batch-size 32 --n-embd 64 --n-head 4 --epochs-critic 10 --epochs-policy 5 \
        --lr-policy 2e-3 --lr-critic 3e-4 --old-policy-rate 0.05 --critic-update-from 1 --policy-update-from 5 \
        --buffer-size 2000 --eval-interval 10 --num-eval-episodes 32"     # hopper, CPU-sized agent (docs/qt.md:
                                                                          # 48 min; it never jumps)
    python benchmarks/make_dataset.py --help

Recipes (mirroring D4RL's):
- `random`: i.i.d. uniform actions in [−1, 1] every step.
- `medium`: rollouts of a partially trained TOP-ERL agent (the snapshot after `--medium-iterations`).
- `expert`: rollouts of the agent after `--expert-iterations`.
- `medium-replay`: every episode the TOP-ERL training run collected up to the medium snapshot, i.e. the contents
  of its replay buffer had it never dropped an episode (read from the buffer after every chunk, re-simulated from
  its start state to record the per-step actions; the re-simulated returns are checked against the buffer's).
- `medium-expert`: medium + expert, concatenated.
The behaviour agent is `variants/top_erl.py`'s program (its preset for the task), run here chunk by chunk.
Behaviour rollouts sample the policy (w ~ N(μ(s₀), LLᵀ)) as D4RL's behaviour policies are stochastic;
`--deterministic-behaviour` uses the mean.

Action space (`toperl_jax.offline.actions`): the normalised PD command in [−1, 1]^dof that the task's controller
applies at each step; replaying it through the task's own `step` reproduces the episode. Episodes end at the
task's time limit: `timeouts` = 1 at the last step, `terminals` = 0 (the tasks never terminate early). The
observation contains t / duration, so the time limit is part of the state: the metadata says
`time_in_observation = true`, which `variants/qt.py` reads to not bootstrap past the last step.

Every file records `ref_min_score` (mean return of the random recipe) and `ref_max_score` (mean return of the
expert recipe) for D4RL's normalised score 100 (R − ref_min) / (ref_max − ref_min), the return `scale` and the
evaluation `env_targets` that QT uses, and how the data was made. Files: `<out_dir>/<env>-<recipe>-v0.hdf5`
plus `<out_dir>/<env>-summary.json`.

The brax locomotion datasets are made by `benchmarks/make_locomotion_dataset.py`. Not done: box pushing (no per-step
action map).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shlex
import sys
import time
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import tyro

from variants import top_erl  # the behaviour agent's trainer

from toperl_jax import cli, gaussian
from toperl_jax.mp import prodmp_trajectory
from toperl_jax.offline import actions as offline_actions
from toperl_jax.offline import recipes
from toperl_jax.offline.recipes import RECIPES


@dataclasses.dataclass(frozen=True)
class Args:
    """Generate D4RL-layout offline datasets on an MJX task."""

    task: Literal["reach", "hopper-jump"] = "reach"
    """TOP-ERL preset of `variants/top_erl.py` whose environment and behaviour agent are used"""
    recipes: tuple[str, ...] = RECIPES
    """which datasets to write (random, medium, medium-replay, expert, medium-expert)"""
    out_dir: str = "runs/datasets"
    """output directory (under runs/, which git ignores)"""
    seed: int = 0
    """seed of the behaviour training and of the rollouts"""
    episodes: int = 200
    """episodes per rollout recipe (random, medium, expert; medium-expert has twice as many)"""
    medium_iterations: int = 100
    """TOP-ERL iterations of the medium agent (a multiple of the preset's eval_interval)"""
    expert_iterations: int = 300
    """TOP-ERL iterations of the expert agent (a multiple of the preset's eval_interval)"""
    deterministic_behaviour: bool = False
    """roll out the mean ProDMP weights instead of sampling them"""
    behaviour_flags: str = ""
    """extra `variants/top_erl.py` flags for the behaviour agent on top of its preset, written with `=` because
    they start with dashes: --behaviour-flags="--num-envs 8 --epochs-critic 5" (--seed, --iterations and
    --checkpoint-interval are set by this script)"""
    compile_cache: str = "~/.cache/toperl-jax/xla"
    """persistent XLA compilation cache ('' disables)"""


def check_args(args: Args, te_args: top_erl.Args) -> None:
    def fail(flag, msg):
        raise cli.UsageError(f"--{flag.replace('_', '-')}: {msg}")

    recipes.check_recipes(args.recipes)
    if args.episodes < 1:
        fail("episodes", f"must be ≥ 1, got {args.episodes}")
    every = te_args.eval_interval
    for name in ("medium_iterations", "expert_iterations"):
        v = getattr(args, name)
        if v < every or v % every:
            fail(name, f"must be a positive multiple of the behaviour chunk ({every} iterations), got {v}")
    if args.expert_iterations < args.medium_iterations:
        fail("expert_iterations", f"must be ≥ --medium-iterations={args.medium_iterations}")
    if te_args.traj_downsample_factor != 1:
        # medium-replay re-simulates the buffer's desired trajectories, which a downsampling learner stores at
        # only every F-th step
        fail("behaviour_flags", f"--traj-downsample-factor must be 1 for the behaviour agent (medium-replay is "
                                f"re-simulated from the buffer's full-rate desired trajectories), got "
                                f"{te_args.traj_downsample_factor}")


def _flatten(rec: offline_actions.Recorded, rewards=None) -> dict[str, np.ndarray]:
    """Batched Recorded [n, T, ...] → the flat D4RL columns."""
    obs = np.asarray(rec.obs)
    n, T = obs.shape[:2]
    timeouts = np.zeros((n, T), bool)
    timeouts[:, -1] = True
    return {"observations": obs.reshape(n * T, -1), "actions": np.asarray(rec.actions).reshape(n * T, -1),
            "rewards": np.asarray(rec.rewards if rewards is None else rewards).reshape(n * T),
            "terminals": np.zeros(n * T, bool), "timeouts": timeouts.reshape(n * T)}


def make_rollouts(task, learner):
    """Jitted rollout functions: random actions, and a TOP-ERL policy executed step by step."""
    T, dof = task.episode_length, task.num_dof
    times = task.action_times()

    @jax.jit
    def random_rollout(key, n_keys):
        k_reset, k_act = jax.random.split(key)
        start = jax.vmap(task.reset)(jax.random.split(k_reset, n_keys.shape[0]))
        acts = jax.random.uniform(k_act, (n_keys.shape[0], T, dof), minval=-1.0, maxval=1.0)
        return jax.vmap(lambda s, a: offline_actions.record_actions(task, s, a))(start, acts)

    def policy_rollout(params, key, n: int, deterministic: bool):
        k_reset, k_w = jax.random.split(key)
        start = jax.vmap(task.reset)(jax.random.split(k_reset, n))
        mean, L = learner.policy.apply(params, start.obs)
        w = mean if deterministic else gaussian.sample(k_w, mean, L)
        pos, vel = prodmp_trajectory(learner.mp, w, times, jnp.zeros(n), start.desired_pos, start.desired_vel)
        return jax.vmap(lambda s, d: offline_actions.record_desired(task, s, d))(
            start, jnp.concatenate([pos, vel], -1))

    @jax.jit
    def resimulate(states, desired):
        start = jax.vmap(lambda o: offline_actions.start_from_obs(task, o))(states[:, 0])
        return jax.vmap(lambda s, d: offline_actions.record_desired(task, s, d))(start, desired)

    return random_rollout, jax.jit(policy_rollout, static_argnums=(2, 3)), resimulate


def main(args: Args) -> dict:
    if args.compile_cache and jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(args.compile_cache).expanduser()))
    te_args = top_erl.parse_args(["--task", args.task, *shlex.split(args.behaviour_flags)])
    te_args = dataclasses.replace(te_args, seed=args.seed, iterations=args.expert_iterations, checkpoint_interval=0)
    check_args(args, te_args)
    prog = top_erl.make_train(te_args)
    task, learner = prog.task, prog.learner
    offline_actions.check_supported(task)
    random_rollout, policy_rollout, resimulate = make_rollouts(task, learner)
    key = jax.random.PRNGKey(args.seed)
    k_rand, k_med, k_exp = jax.random.split(jax.random.fold_in(key, 0xDA7A), 3)
    columns: dict[str, dict] = {}
    info: dict = {"task": task.name, "episode_length": task.episode_length, "behaviour_preset": args.task,
                  "deterministic_behaviour": args.deterministic_behaviour}
    t0 = time.perf_counter()

    rec = random_rollout(k_rand, jnp.zeros(args.episodes))
    columns["random"] = _flatten(rec)
    print(f"random: {args.episodes} episodes, mean return {float(np.mean(np.sum(rec.rewards, -1))):.3f}")

    need_agent = True  # always: the expert's mean return is the normaliser of every recipe
    if need_agent:
        opts = task.compiler_options()
        state = jax.jit(prog.init, compiler_options=opts)(jax.random.PRNGKey(args.seed))
        chunk_fn = jax.jit(prog.run_chunk, donate_argnums=0, compiler_options=opts)
        eval_fn = jax.jit(prog.evaluate, compiler_options=opts)
        per_chunk = te_args.eval_interval * te_args.num_envs
        if per_chunk > te_args.buffer_size:
            raise cli.UsageError(f"--eval-interval × --num-envs: a chunk adds {per_chunk} episodes, more than the "
                                 f"buffer holds (--buffer-size {te_args.buffer_size})")
        replay, curve, snapshots = [], [], {}
        for chunk in range(args.expert_iterations // te_args.eval_interval):
            state, _ = chunk_fn(state, jnp.int32(chunk * te_args.eval_interval + 1))
            it = (chunk + 1) * te_args.eval_interval
            if it <= args.medium_iterations:
                cap = te_args.buffer_size
                slots = (np.asarray(state.buffer.insert_pos) - per_chunk + np.arange(per_chunk)) % cap
                ep = jax.tree.map(lambda x, s=slots: x[s], state.buffer.data)
                re = resimulate(ep.states, ep.actions)
                diff = float(jnp.max(jnp.abs(jnp.sum(re.rewards, -1) - jnp.sum(ep.rewards, -1))))
                replay.append((re, diff))
            ev = {n: float(v) for n, v in eval_fn(state.policy.params, jax.random.PRNGKey(10_000 + it)).items()}
            curve.append({"iteration": it, **ev})
            print(f"behaviour TOP-ERL it {it}: eval {json.dumps({k: round(v, 4) for k, v in ev.items()})}"
                  f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
            if it == args.medium_iterations:
                snapshots["medium"] = jax.tree.map(np.array, state.policy.params)  # copies: the state is donated
            if it == args.expert_iterations:
                snapshots["expert"] = jax.tree.map(np.array, state.policy.params)
        info["behaviour_curve"] = curve
        for level, k in (("medium", k_med), ("expert", k_exp)):
            rec = policy_rollout(snapshots[level], k, args.episodes, args.deterministic_behaviour)
            columns[level] = _flatten(rec)
            print(f"{level}: {args.episodes} episodes, mean return {float(np.mean(np.sum(rec.rewards, -1))):.3f}")
        reps = [r for r, _ in replay]
        re_all = jax.tree.map(lambda *x: jnp.concatenate(x, 0), *reps)
        columns["medium-replay"] = _flatten(re_all)
        info["medium_replay_resimulation_max_return_diff"] = max(d for _, d in replay)
        print(f"medium-replay: {re_all.obs.shape[0]} episodes (iterations 1…{args.medium_iterations}); "
              f"re-simulated vs buffer returns differ by at most {info['medium_replay_resimulation_max_return_diff']:.2e}")
        columns["medium-expert"] = recipes.medium_expert(columns)

    meta = {"time_in_observation": True, "max_episode_steps": task.episode_length,
            "action_space": "normalised PD command in [-1, 1] (toperl_jax.offline.actions)",
            "behaviour": f"TOP-ERL preset {args.task} {args.behaviour_flags}, medium {args.medium_iterations} it, "
                         f"expert {args.expert_iterations} it, seed {args.seed}",
            "generator": "benchmarks/make_dataset.py " + " ".join(sys.argv[1:])}
    summary = recipes.write(args.out_dir, task.name, columns, args.recipes, meta, info)
    summary["wall_time_s"] = time.perf_counter() - t0
    recipes.write_summary(args.out_dir, summary)
    return summary


if __name__ == "__main__":
    cli.main(lambda: main(tyro.cli(Args)))
