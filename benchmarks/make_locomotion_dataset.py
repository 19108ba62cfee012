"""D4RL-style locomotion datasets on brax's MJX hopper, walker2d and halfcheetah, from brax's own trainers (issue 7).

    python benchmarks/make_locomotion_dataset.py --env hopper        # GPU: SAC, 6.6M steps, five 1M-step datasets
    python benchmarks/make_locomotion_dataset.py --env halfcheetah   # GPU: PPO, 50M steps
    python benchmarks/make_locomotion_dataset.py --env hopper --transitions 2000 --rollout-envs 4 \\
        --trainer-flags '{"num_timesteps": 4096, "num_envs": 4, "batch_size": 8, "min_replay_size": 64}'  # smoke test
    python variants/qt.py --dataset runs/datasets/brax-hopper-medium-replay-v0.hdf5 --eta 3 --grad-norm 9

Behaviour agents: brax's training notebook settings per env (numbers carried over: SAC for hopper and walker2d,
PPO for halfcheetah), trained here with `brax.training.agents.{sac,ppo}.train` on `brax.envs.get_environment(env,
backend="mjx")`. The trainer saves a policy snapshot at each of its `--num-evals` evaluations
(`<out_dir>/brax-<env>-behaviour/`) and reports the snapshot's evaluation return.

Recipes (mirroring D4RL's; `--transitions` steps each, 1M as in D4RL, in whole episodes of ≤ 1000 steps):
- `random`: i.i.d. uniform actions in [−1, 1].
- `expert`: the final snapshot (D4RL: the trained agent); `--expert best`: the snapshot with the highest evaluation
  return, for short runs whose last evaluation falls into one of SAC's dips.
- `medium`: the first snapshot whose evaluation return covers `--medium-fraction` (D4RL: "approximately 1/3 the
  performance of the expert") of the way from the untrained policy's evaluation return to the expert snapshot's.
- `medium-replay`: what the learner collected up to the medium snapshot. brax's trainers do not expose their
  rollouts or replay buffer, so this is rebuilt from the snapshots: every snapshot up to the medium one
  contributes an equal share (the evaluations are evenly spaced in env steps) of stochastic-policy episodes, in
  total as many steps as the learner took until the medium snapshot (at most `--transitions`). The granularity
  is therefore one evaluation interval, and SAC's random-action prefill and PPO's partial episodes across
  updates are not reproduced.
- `medium-expert`: medium + expert.
Behaviour rollouts sample the policy (as D4RL's SAC data did); `--deterministic-behaviour` uses the mode.

References: `ref_min_score` = mean return of `random`, `ref_max_score` = mean return of `expert` on this env
(D4RL's constants do not transfer, specs/qt.md §8d). Episodes terminate as brax's env says (hopper, walker2d:
unhealthy → `terminals` = 1) or reach 1000 steps (`timeouts` = 1); the observation has no time feature, so QT
bootstraps through timeouts (`time_in_observation = false`). Files: `<out_dir>/brax-<env>-<recipe>-v0.hdf5` and
`<out_dir>/brax-<env>-summary.json`. The full settings are a GPU job; on a CPU only smoke-sized runs are practical.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import pathlib
import shutil
import sys
import time
from typing import Literal

import jax
import numpy as np
import tyro

from toperl_jax import cli
from toperl_jax.offline import locomotion, recipes
from toperl_jax.offline.recipes import RECIPES

# brax's training notebook (numbers carried over); seed and num_evals are set from this script's flags.
_SAC = {"episode_length": 1000, "normalize_observations": True, "action_repeat": 1, "discounting": 0.997,
        "learning_rate": 6e-4, "num_envs": 128, "max_devices_per_host": 1, "max_replay_size": 1_048_576,
        "min_replay_size": 8192}
TRAINERS = {
    "hopper": ("sac", {**_SAC, "num_timesteps": 6_553_600, "reward_scaling": 30, "batch_size": 512,
                       "grad_updates_per_step": 64}),
    "walker2d": ("sac", {**_SAC, "num_timesteps": 7_864_320, "reward_scaling": 5, "batch_size": 128,
                         "grad_updates_per_step": 32}),
    "halfcheetah": ("ppo", {"num_timesteps": 50_000_000, "reward_scaling": 1, "episode_length": 1000,
                            "normalize_observations": True, "action_repeat": 1, "unroll_length": 20,
                            "num_minibatches": 32, "num_updates_per_batch": 8, "discounting": 0.95,
                            "learning_rate": 3e-4, "entropy_cost": 1e-3, "num_envs": 2048, "batch_size": 512}),
}
EPISODE_LENGTH = 1000  # D4RL's time limit for the gym locomotion tasks


@dataclasses.dataclass(frozen=True)
class Args:
    """Generate D4RL-layout locomotion datasets with brax's trainers on brax's MJX envs."""

    env: Literal["hopper", "walker2d", "halfcheetah"] = "hopper"
    """brax environment (MJX backend); the datasets are named brax-<env>"""
    recipes: tuple[str, ...] = RECIPES
    """which datasets to write (random, medium, medium-replay, expert, medium-expert)"""
    out_dir: str = "runs/datasets"
    """output directory (under runs/, which git ignores)"""
    seed: int = 0
    """seed of the behaviour training and of the rollouts"""
    transitions: int = 1_000_000
    """env steps per rollout recipe (whole episodes, so slightly more); medium-expert has twice as many"""
    rollout_envs: int = 1000
    """episodes rolled out in parallel per batch"""
    medium_fraction: float = 1 / 3
    """the medium snapshot is the first whose evaluation return covers this fraction of the way from the untrained
    policy's to the expert snapshot's"""
    expert: Literal["last", "best"] = "last"
    """expert snapshot: the last (D4RL: the trained agent) or the one with the highest evaluation return"""
    num_evals: int = 40
    """trainer evaluations = policy snapshots (brax's notebook: 20; more gives a finer medium level)"""
    trainer_flags: str = "{}"
    """JSON object of keyword arguments for brax's trainer on top of the notebook settings, e.g.
    '{"num_timesteps": 1000000}' (seed, num_evals and the checkpoint path are set by this script)"""
    deterministic_behaviour: bool = False
    """roll out the policy's mode instead of sampling it"""
    compile_cache: str = "~/.cache/toperl-jax/xla"
    """persistent XLA compilation cache ('' disables)"""


def trainer(args: Args):
    """(name, train function, keyword arguments) of the behaviour agent; flag errors name the flag."""
    from brax.training.agents.ppo import train as ppo
    from brax.training.agents.sac import train as sac

    name, preset = TRAINERS[args.env]
    fn = {"ppo": ppo.train, "sac": sac.train}[name]
    try:
        extra = json.loads(args.trainer_flags)
    except json.JSONDecodeError as e:
        raise cli.UsageError(f"--trainer-flags: not valid JSON ({e}): {args.trainer_flags!r}") from None
    if not isinstance(extra, dict):
        raise TypeError(f"--trainer-flags: must be a JSON object, got {args.trainer_flags!r}")
    allowed = set(inspect.signature(fn).parameters) - {"environment", "progress_fn", "policy_params_fn", "seed",
                                                       "num_evals", "save_checkpoint_path", "checkpoint_logdir"}
    bad = sorted(set(extra) - allowed)
    if bad:
        raise cli.UsageError(f"--trainer-flags: {bad} are not arguments of brax's {name}.train that this script lets "
                             f"you set; accepted: {', '.join(sorted(allowed))}")
    return name, fn, {**preset, **extra}


def check_args(args: Args) -> None:
    def fail(flag, msg):
        raise cli.UsageError(f"--{flag.replace('_', '-')}: {msg}")

    recipes.check_recipes(args.recipes)
    for name in ("transitions", "rollout_envs"):
        if getattr(args, name) < 1:
            fail(name, f"must be ≥ 1, got {getattr(args, name)}")
    if args.num_evals < 2:
        fail("num_evals", f"must be ≥ 2 (the snapshots are the medium and expert candidates), got {args.num_evals}")
    if not 0.0 < args.medium_fraction <= 1.0:
        fail("medium_fraction", f"must be in (0, 1], got {args.medium_fraction}")


def expert_index(returns: list[float], rule: str) -> int:
    """Index of the expert snapshot: the last, or (rule "best") the first with the highest evaluation return."""
    return len(returns) - 1 if rule == "last" else int(np.argmax(returns))


def medium_index(returns: list[float], untrained: float, fraction: float, expert: int = -1) -> int:
    """Index of the first snapshot whose evaluation return covers `fraction` of the way from the untrained policy's
    (step 0) to the expert snapshot's (index `expert`, default the last; for positive returns and an untrained return
    of ~0 this is D4RL's "1/3 of the expert"; measured from the untrained return it also holds for negative returns,
    e.g. halfcheetah's). It is never later than the expert snapshot."""
    threshold = untrained + fraction * (returns[expert] - untrained)
    return next(i for i, r in enumerate(returns) if r >= threshold)


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {f: np.concatenate([p[f] for p in parts]) for f in parts[0]}


def collect(rollout_fn, params, key, target: int, label: str) -> dict[str, np.ndarray]:
    """Batches of `rollout_fn(params, key)` episodes until ≥ target steps; cut after the episode that reaches it."""
    parts, n, i = [], 0, 0
    while n < target:
        cols = locomotion.flatten(rollout_fn(params, jax.random.fold_in(key, i)))
        parts.append(cols)
        n, i = n + cols["rewards"].size, i + 1
    cols = _concat(parts)
    ends = np.flatnonzero(cols["terminals"] | cols["timeouts"])
    cut = ends[np.searchsorted(ends, target - 1)] + 1
    cols = {f: v[:cut] for f, v in cols.items()}
    rets = np.add.reduceat(cols["rewards"].astype(np.float64), np.r_[0, ends[ends < cut - 1] + 1])
    print(f"{label}: {rets.size} episodes, {cut} steps, mean return {rets.mean():.1f}", flush=True)
    return cols


def main(args: Args) -> dict:
    check_args(args)
    algo, train_fn, kwargs = trainer(args)
    if args.compile_cache and jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(args.compile_cache).expanduser()))
    env_name = locomotion.PREFIX + args.env
    env = locomotion.make_env(args.env)
    out = pathlib.Path(args.out_dir)
    ckpt_dir = (out / f"{env_name}-behaviour").resolve()
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # snapshots of an earlier run would mix with this one's
    t0 = time.perf_counter()
    evals: dict[int, float] = {}

    def progress(step, metrics):
        if "eval/episode_reward" in metrics:
            evals[int(step)] = float(metrics["eval/episode_reward"])
            print(f"behaviour {algo.upper()} step {step:,}: eval return {evals[int(step)]:.1f}  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)

    ckpt_kw = {"save_checkpoint_path" if algo == "ppo" else "checkpoint_logdir": str(ckpt_dir)}
    with locomotion.brax_trainer_compat():
        make_policy, _, _ = train_fn(environment=env, progress_fn=progress, seed=args.seed, num_evals=args.num_evals,
                                     **ckpt_kw, **kwargs)
    load = importlib.import_module(f"brax.training.agents.{algo}.checkpoint").load
    steps = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
    if not steps:
        raise RuntimeError(f"brax's {algo} trainer saved no snapshot in {ckpt_dir}")
    curve = [{"env_steps": s, "eval_return": evals.get(s)} for s in steps]
    returns = [evals[s] for s in steps]
    i_exp = expert_index(returns, args.expert)
    i_med = medium_index(returns, evals.get(0, 0.0), args.medium_fraction, i_exp)
    if i_med == i_exp:
        print("WARNING: no snapshot before the expert one reaches the medium level; medium = expert")
    snap = lambda i: load(ckpt_dir / f"{steps[i]:012d}")

    T, n = EPISODE_LENGTH, args.rollout_envs
    det = args.deterministic_behaviour
    policy_rollout = jax.jit(lambda p, k: locomotion.rollout(
        env, lambda o, kk: make_policy(p, deterministic=det)(o, kk)[0], k, n, T))
    random_rollout = jax.jit(lambda _, k: locomotion.rollout(
        env, lambda o, kk: jax.random.uniform(kk, (o.shape[0], env.action_size), minval=-1.0, maxval=1.0), k, n, T))
    key = jax.random.fold_in(jax.random.PRNGKey(args.seed), 0xDA7A)
    k_rand, k_med, k_exp, k_rep = jax.random.split(key, 4)
    columns = {"random": collect(random_rollout, None, k_rand, args.transitions, "random"),
               "medium": collect(policy_rollout, snap(i_med), k_med, args.transitions,
                                 f"medium (snapshot at {steps[i_med]:,} steps, eval {evals[steps[i_med]]:.1f})"),
               "expert": collect(policy_rollout, snap(i_exp), k_exp, args.transitions,
                                 f"expert ({args.expert} snapshot, at {steps[i_exp]:,} steps, eval {returns[i_exp]:.1f})")}
    replay_total = min(steps[i_med], args.transitions)
    share = max(1, -(-replay_total // (i_med + 1)))
    parts = [collect(policy_rollout, snap(i), jax.random.fold_in(k_rep, i), share,
                     f"medium-replay part {i + 1}/{i_med + 1} (snapshot at {steps[i]:,} steps)") for i in range(i_med + 1)]
    columns["medium-replay"] = _concat(parts)
    columns["medium-expert"] = recipes.medium_expert(columns)

    meta = {"time_in_observation": False, "max_episode_steps": T,
            "action_space": "brax action in [-1, 1] (brax.envs MJX backend)",
            "behaviour": f"brax {algo} {json.dumps(kwargs)}, num_evals {args.num_evals}, seed {args.seed}; medium "
                         f"snapshot {steps[i_med]} steps, expert ({args.expert}) {steps[i_exp]} steps",
            "generator": "benchmarks/make_locomotion_dataset.py " + " ".join(sys.argv[1:])}
    info = {"algorithm": algo, "trainer_kwargs": kwargs, "behaviour_curve": curve, "untrained_eval_return": evals.get(0),
            "medium_snapshot": steps[i_med],
            "expert_snapshot": steps[i_exp], "expert_rule": args.expert, "medium_replay_snapshots": steps[:i_med + 1],
            "deterministic_behaviour": det}
    summary = recipes.write(out, env_name, columns, args.recipes, meta, info)
    summary["wall_time_s"] = time.perf_counter() - t0
    recipes.write_summary(out, summary)
    return summary


if __name__ == "__main__":
    cli.main(lambda: main(tyro.cli(Args)))
