"""The host loop of the TOP-ERL variants: the jitted program in chunks, evaluation, logging, checkpoints.

A variant builds a `Program` (pure single-seed functions) and hands it to `run`, which vmaps it over seeds,
jits it, runs `eval_interval` iterations per call and, between calls, evaluates, logs to TensorBoard, prints
a progress line and saves an orbax checkpoint (`--resume` continues exactly). `run_if` gates an update
inside the jitted iteration.
"""

from __future__ import annotations

import json
import math
import pathlib
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from toperl_jax import checkpoint as ckpt
from toperl_jax.envs import EpisodicTask
from toperl_jax.logger import Progress, RunLogger, git_commit


class Program(NamedTuple):
    """What a variant's `make_train` builds: pure single-seed functions (vmap them over seeds, jit them)."""

    init: Callable  # init(key) -> train state
    run_chunk: Callable  # run_chunk(state, first_it) -> (state, {name: [eval_interval]})
    evaluate: Callable  # evaluate(policy_params, key) -> {name: []}
    rollout: Callable  # rollout(policy_params, key, num_episodes, deterministic) -> (episodes, final, stats)
    task: EpisodicTask
    learner: Any  # the variant's static learner (its T and dt are reported)
    initial_env_steps: int = 0  # env steps `init` takes (a buffer warm-up), counted before iteration 1


def nan_like(fn, *a):
    """The metrics (second output) of `fn(*a)` as float32 NaN, for an iteration or update that is skipped."""
    return jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, jnp.float32), jax.eval_shape(fn, *a)[1])


def run_if(pred, fn: Callable, *operands):
    """`fn(*operands)` → (state, metrics) where `pred`, else (operands[0], NaN metrics); metrics in float32 so
    that both branches of the `lax.cond` agree."""

    def f32(*a):
        state, metrics = fn(*a)
        return state, jax.tree.map(lambda m: m.astype(jnp.float32), metrics)

    return lax.cond(pred, f32, lambda *a: (a[0], nan_like(f32, *a)), *operands)


def _to_host(tree) -> dict[str, np.ndarray]:
    return {n: np.asarray(v, np.float64) for n, v in tree.items()}


def _per_seed_summary(history: list[dict], num_seeds: int) -> list[dict]:
    """Final and best evaluation metrics per seed (best = highest success if the task has it, else return)."""
    key = "eval/is_success" if "eval/is_success" in history[-1] else "eval/return"
    out = []
    for s in range(num_seeds):
        rows = [{n: v[s] if isinstance(v, list) else v for n, v in h.items()} for h in history]
        best = max(rows, key=lambda r: r[key])
        out.append({"seed_index": s, "final": rows[-1], "best": best, "best_by": key})
    return out


def run(args, program: Program, max_chunks: int | None = None, verbose: bool = True, *, title: str = "TOP-ERL",
        render_final: Callable | None = None) -> dict:
    """Train (or continue with `args.resume`) and return the summary dict (also written to run_dir/summary.json).

    `args` is a variant's flags (the fields read here: seed, num_seeds, iterations, num_envs, eval_interval,
    checkpoint_interval, run_dir, resume, compile_cache, task, env, video). `max_chunks` stops after that many
    chunks in this call (a checkpoint is written); `--resume` continues it exactly.
    `render_final(args, program, state, run_dir, say)` renders the final policy for `--video`.
    """
    say = print if verbose else (lambda *a, **k: None)
    if args.compile_cache and jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(args.compile_cache).expanduser()))
    init, run_chunk, evaluate, task = program.init, program.run_chunk, program.evaluate, program.task
    run_dir = args.run_dir
    # A run directory belongs to one run; decided before anything is created or compiled.
    if args.resume and not ckpt.has_checkpoint(run_dir):
        raise ValueError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}")
    if not args.resume and (run_dir / "args.json").exists():
        if not getattr(args, "overwrite", False):
            raise ValueError(f"{run_dir} already holds a run: continue it with --resume, start another with "
                             "--run-name NAME, or replace it with --overwrite")
        remove_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    args_json = ckpt.run_flags(args)
    keys = jnp.stack([jax.random.PRNGKey(args.seed + i) for i in range(args.num_seeds)])
    eval_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0x5EED))(keys)
    opts = task.compiler_options()
    if args.resume:  # only the shapes: the values come from the checkpoint
        state = jax.eval_shape(jax.vmap(init), keys)
    else:
        state = jax.jit(jax.vmap(init), compiler_options=opts)(keys)
    mgr = ckpt.manager(run_dir) if args.checkpoint_interval or args.resume else None
    chunk, history, wall_before = 0, [], 0.0
    if args.resume:
        # a flag added since the run was saved counts as saved with its default
        ckpt.check_same_flags(ckpt.saved_args(run_dir / "args.json", args), args_json)
        state, meta = ckpt.restore(mgr, state)
        chunk, history, wall_before = meta["chunk"], meta["history"], meta["wall_time"]
        say(f"resumed {run_dir} at iteration {min(chunk * args.eval_interval, args.iterations)}")
    else:
        (run_dir / "args.json").write_text(json.dumps(args_json, indent=1))

    chunk_fn = jax.jit(jax.vmap(run_chunk, in_axes=(0, None)), donate_argnums=0, compiler_options=opts)
    eval_fn = jax.jit(jax.vmap(evaluate), compiler_options=opts)
    logger = RunLogger(run_dir, args.num_seeds)
    steps_per_it = args.num_envs * task.episode_length
    progress = Progress(args.iterations, steps_per_it, initial_env_steps=program.initial_env_steps)
    num_chunks = math.ceil(args.iterations / args.eval_interval)
    learner_T = f" (learner: {program.learner.T} steps of {program.learner.dt:g} s)" \
        if program.learner.T != task.episode_length else ""
    say(f"{title} on {task.name} (preset {args.task}): {args.iterations} iterations × {args.num_envs} episodes × "
        f"T={task.episode_length}{learner_T}, {args.num_seeds} seed(s), logs in {run_dir}")

    def do_eval(it):
        m = _to_host(eval_fn(state.policy.params, jax.vmap(lambda k: jax.random.fold_in(k, it))(eval_keys)))
        return {f"eval/{n}": v for n, v in m.items()}

    if chunk == 0:
        ev = do_eval(0)
        logger.scalars(ev, program.initial_env_steps)
        history.append({"iteration": 0, "env_steps": program.initial_env_steps,
                        **{n: v.tolist() for n, v in ev.items()}})
        say(progress.line(0, _headline(ev)))
    t_start, chunks_run, warned = time.perf_counter(), 0, set()
    while chunk < num_chunks and (max_chunks is None or chunks_run < max_chunks):
        first_it = chunk * args.eval_interval + 1
        if chunks_run == 0:
            say(f"compiling and running iterations {first_it}…{min(first_it + args.eval_interval - 1, args.iterations)}"
                " (the first chunk includes compilation)")
        state, metrics = chunk_fn(state, jnp.int32(first_it))
        chunk, chunks_run = chunk + 1, chunks_run + 1
        it = min(chunk * args.eval_interval, args.iterations)
        with np.errstate(all="ignore"):  # all-NaN means: that update has not started yet
            train = {n: np.nanmean(np.asarray(v, np.float64), axis=1) for n, v in metrics.items()}
        ev = do_eval(it)
        wall = wall_before + time.perf_counter() - t_start
        env_steps = program.initial_env_steps + it * steps_per_it
        logger.scalars({**train, **ev, "charts/wall_time": np.full(args.num_seeds, wall),
                        "charts/iteration": np.full(args.num_seeds, it)}, env_steps)
        history.append({"iteration": it, "env_steps": env_steps, "wall_time": wall,
                        **{n: v.tolist() for n, v in ev.items()}})
        if chunks_run == 1:
            progress.start(it)
        say(progress.line(it, _headline(ev, train)))
        for s in nonfinite_seeds(ev, warned):
            warned.add(s)
            print(f"WARNING: seed {args.seed + s} has non-finite evaluation metrics at iteration {it} (diverged: its "
                  "policy parameters are NaN/inf); the other seeds go on. Last finite evaluation: see summary.json",
                  file=sys.stderr)
        logger.flush()
        summary = write_summary(args, run_dir, history)  # every chunk: a crash leaves the run so far
        if mgr is not None and args.checkpoint_interval and (chunk % args.checkpoint_interval == 0
                                                             or chunk == num_chunks or chunks_run == max_chunks):
            ckpt.save(mgr, chunk, state, {"chunk": chunk, "history": history, "wall_time": wall})
    logger.close()
    summary = write_summary(args, run_dir, history)
    if chunk == num_chunks:
        say(f"done: {summary['env_steps']} env steps in {summary['wall_time']:.0f} s; summary in "
            f"{run_dir / 'summary.json'}; TensorBoard: tensorboard --logdir {run_dir}")
        if args.video and render_final is not None:
            render_final(args, program, state, run_dir, say)
    summary["state"] = state
    return summary


RUN_FILES = ("args.json", "summary.json", "checkpoints", "final.mp4")


def remove_run(run_dir: pathlib.Path) -> None:
    """Delete what `run` wrote in `run_dir` (flags, summary, checkpoints, per-seed logs, video), nothing else."""
    for path in [run_dir / n for n in RUN_FILES] + sorted(run_dir.glob("seed_*")):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def write_summary(args, run_dir: pathlib.Path, history: list[dict]) -> dict:
    """run_dir/summary.json from the evaluation history so far (final and best per seed), written atomically."""
    summary = {"task": args.task, "env": args.env, "run_dir": str(run_dir), "iterations_done": history[-1]["iteration"],
               "env_steps": history[-1]["env_steps"], "wall_time": history[-1].get("wall_time", 0.0),
               "seeds": [args.seed + i for i in range(args.num_seeds)],
               "git_commit": git_commit(), "per_seed": _per_seed_summary(history, args.num_seeds),
               "history": history}
    tmp = run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(run_dir / "summary.json")
    return summary


def nonfinite_seeds(ev: dict[str, np.ndarray], already: set[int] = frozenset()) -> list[int]:
    """Seed indices whose evaluation metrics (`{name: [num_seeds]}`) contain NaN/inf, minus `already`."""
    bad = ~np.all([np.isfinite(np.asarray(v, np.float64)) for v in ev.values()], axis=0)
    return [int(i) for i in np.flatnonzero(bad) if int(i) not in already]


def _headline(ev: dict, train: dict | None = None) -> dict[str, float]:
    """A few numbers for the progress line (seed mean)."""
    out = {}
    for name in ("eval/is_success", "eval/max_height", "eval/return"):
        if name in ev:
            out[name.split("/")[1].replace("is_", "")] = float(np.mean(ev[name]))
    if train:
        for name in ("critic/critic_loss", "policy/entropy"):
            v = train.get(name)
            if v is not None and np.isfinite(v).all():
                out[name.split("/")[1]] = float(np.mean(v))
    return out
