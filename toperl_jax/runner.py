"""The host loop of every variant: the jitted program in chunks, evaluation, logging, checkpoints.

A variant builds a `Program` (pure single-seed functions) and hands it to `run`, which vmaps it over seeds,
jits it, runs `eval_interval` iterations per call and, between calls, evaluates, logs to TensorBoard, prints
a progress line and saves an orbax checkpoint (`--resume` continues exactly). `run_if` gates an update
inside the jitted iteration. The TOP-ERL variants use `Program`'s defaults; QT (offline, evaluated by its own
policy's rollouts, counting gradient steps) sets its optional fields.
"""

from __future__ import annotations

import json
import math
import pathlib
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from toperl_jax import checkpoint as ckpt
from toperl_jax.cli import UsageError
from toperl_jax.envs import EpisodicTask
from toperl_jax.logger import Progress, RunLogger, git_commit


class Program(NamedTuple):
    """What a variant's `make_train` builds: pure single-seed functions (vmap them over seeds, jit them)."""

    init: Callable  # init(key) -> train state
    run_chunk: Callable  # run_chunk(state, first_it) -> (state, {name: [eval_interval]})
    evaluate: Callable  # evaluate(eval_params(state), key) -> {name: []}
    rollout: Callable | None  # rollout(policy_params, key, num_episodes, deterministic) -> (episodes, final, stats)
    task: EpisodicTask  # or any env with `name` and `episode_length` (`compiler_options` if it has them)
    learner: Any  # the variant's static learner (the default header reports its T and dt)
    initial_env_steps: int = 0  # env steps `init` takes (a buffer warm-up), counted before iteration 1
    # --- optional; the defaults are the TOP-ERL family's
    eval_params: Callable | None = None  # state -> what `evaluate` evaluates (default: state.policy.params)
    eval_salt: int = 0x5EED  # folded into seed i's key PRNGKey(seed + i) to derive its evaluation keys
    host_metrics: Callable | None = None  # {name: [seeds] float64} of an evaluation -> more metrics, on the host
    steps_per_iteration: int | None = None  # the x-axis steps of an iteration (default: num_envs × episode length)
    step_unit: str = "env_steps"  # their name in the history, summary.json and the progress line
    score: str | None = None  # the evaluation metric that ranks (best, final_mean; default: is_success, else return)
    headline: tuple[str, ...] = ("eval/is_success", "eval/max_height", "eval/return", "critic/critic_loss",
                                 "policy/entropy")  # the metrics on the progress line, where logged
    saved_info: dict | None = None  # set-up facts args.json records beside the flags; --resume requires them equal
    summary_info: dict | None = None  # the head of summary.json (default: the flags task and env)
    header: str | None = None  # the run's description on the first console line (default: task, budget, T)


def nan_like(fn, *a):
    """The metrics (second output) of `fn(*a)` as float32 NaN, for an iteration or update that is skipped."""
    return jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, jnp.float32), jax.eval_shape(fn, *a)[1])


def run_if(pred, fn: Callable, *operands):
    """`fn(*operands)` → (state, metrics) where `pred`, else (operands[0], NaN metrics); metrics in float32 so
    that both branches of the `lax.cond` agree. `fn` is traced once: the skip branch takes the metrics' shapes
    from that trace (`lax.cond` traces its true branch first), falling back to `nan_like` (a second trace) where
    it is traced alone (a concrete `pred` under `jax.disable_jit`). Nested `run_if`s (an update inside an
    iteration) would otherwise trace the inner `fn` 2^depth times."""
    shapes = []

    def f32(*a):
        state, metrics = fn(*a)
        metrics = jax.tree.map(lambda m: m.astype(jnp.float32), metrics)
        shapes.append(jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), metrics))
        return state, metrics

    def skip(*a):
        if not shapes:
            return a[0], nan_like(f32, *a)
        return a[0], jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, jnp.float32), shapes[-1])

    return lax.cond(pred, f32, skip, *operands)


def all_finite(tree) -> jax.Array:
    """Whether every floating-point leaf of `tree` is finite (a scalar bool; integer leaves such as keys and
    counters are not checked)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def guarded(run_chunk: Callable) -> Callable:
    """`run_chunk` that stops a diverged seed: (state, first_it, stopped) → (state, metrics, ok). Where the new
    state has a non-finite leaf (parameters, optimiser moments, buffer), or the seed was `stopped` before, the
    state before the chunk is kept and `ok` is False."""

    def chunk(state, first_it, stopped):
        new, metrics = run_chunk(state, first_it)
        ok = ~stopped & all_finite(new)
        return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state), metrics, ok

    return chunk


def seed_sharding(num_seeds: int, devices=None) -> NamedSharding | None:
    """The sharding that splits the seed axis (axis 0 of every state leaf) over min(num_seeds, #devices) of
    `devices` (default: every device, of every process under `jax.distributed`); None where that is one device,
    which keeps the single-device program. Seeds are independent, so the sharded program needs no communication."""
    devices = list(jax.devices() if devices is None else devices)
    d = min(len(devices), num_seeds)
    if d <= 1:
        return None
    if num_seeds % d:
        raise UsageError(f"--num-seeds: {num_seeds} seeds do not split evenly over the {d} devices; use a "
                         f"multiple of {d} (or expose fewer devices, e.g. CUDA_VISIBLE_DEVICES)")
    return NamedSharding(Mesh(np.array(devices[:d]), ("seeds",)), PartitionSpec("seeds"))


GPU_COMPILER_OPTIONS = {"xla_gpu_enable_triton_gemm": False}
"""XLA options of every program compiled for a GPU: the GEMMs go to cuBLAS, not to XLA's Triton GEMM emitter. Compiled
without autotuning (deviceless for an H100, jax 0.10.2), the Triton GEMM fusion fails on a dot whose operand is a
transposed [..., features, tokens] tensor when the tokens per row are not a multiple of 16 ("Couldn't find output
tile sizes that satisfy hlo"): the critic's backward pass in the critic and policy steps (box-dense: 125 tokens per
row). docs/performance.md "GPU" has the reproduction (tests/test_gpu_compile.py)."""


def compiler_options(task, platform: str) -> dict | None:
    """XLA options for the programs that step `task` on `platform` (a jax device's platform, 'cpu' / 'gpu', or a
    lowering platform, 'cuda'): the task's own (`task.compiler_options`), plus `GPU_COMPILER_OPTIONS` on a GPU."""
    options = getattr(task, "compiler_options", None)
    opts = options(platform=platform) if options else None
    if platform in ("gpu", "cuda", "rocm"):
        opts = {**(opts or {}), **GPU_COMPILER_OPTIONS}
    return opts


def _jit(fn, sharded: tuple[bool, ...], sharding: NamedSharding | None, **kw):
    """`jax.jit(fn)`, with its arguments (`sharded[i]`: split over seeds, else replicated) and outputs (split)
    placed by `sharding` when there is one. `fn` (vmapped over seeds) then runs under `shard_map`: every device
    runs the single-device program on its own seeds, so nothing that loops or switches over the seed axis (e.g.
    the critic's row attention, `chunks.switch`) is partitioned across devices by the compiler."""
    if sharding is None:
        return jax.jit(fn, **kw)
    rep = NamedSharding(sharding.mesh, PartitionSpec())
    local = jax.shard_map(fn, mesh=sharding.mesh, in_specs=tuple(PartitionSpec("seeds") if s else PartitionSpec()
                                                                for s in sharded),
                          out_specs=PartitionSpec("seeds"), check_vma=False)
    return jax.jit(local, in_shardings=tuple(sharding if s else rep for s in sharded), out_shardings=sharding, **kw)


def _to_host(tree) -> dict[str, np.ndarray]:
    return {n: np.asarray(v, np.float64) for n, v in _gather(tree).items()}


class _NoLogger:
    """The logger of a process other than 0 under `jax.distributed` (process 0 logs every seed)."""

    def scalars(self, *a):
        pass

    flush = close = scalars


def _score_key(history: list[dict], score: str | None) -> str:
    """The evaluation metric that ranks: `score`, else success if the task has it, else return."""
    return score or ("eval/is_success" if "eval/is_success" in history[-1] else "eval/return")


def _per_seed_summary(history: list[dict], num_seeds: int, diverged: dict[int, list[int]], key: str) -> list[dict]:
    """Final and best evaluation metrics per seed (best = highest `key`); a diverged seed's are its last finite
    ones (its later entries in `history` are null)."""
    out = []
    for s in range(num_seeds):
        rows = [{n: v[s] if isinstance(v, list) else v for n, v in h.items()} for h in history]
        rows = [r for r in rows if r[key] is not None]
        best = max(rows, key=lambda r: r[key])
        out.append({"seed_index": s, "final": rows[-1], "best": best, "best_by": key})
        if s in diverged:
            first, last = diverged[s]
            out[-1]["diverged"] = (f"diverged at iteration {last} (non-finite state after iterations {first}–{last}); "
                                   f"stopped there with its state and evaluation of iteration {first - 1}")
            out[-1]["diverged_at_iteration"] = last
    return out


def init_distributed(args) -> None:
    """With `--distributed`, start `jax.distributed` (SLURM / Open MPI detected, else --coordinator-address,
    --num-processes, --process-id); call it before anything touches JAX (the variants' `run` does). The run is then
    one SPMD program over every process's devices: `seed_sharding` splits the seeds over all of them, process 0
    writes the run directory (flags, logs, summary) and orbax writes each process's shards. A process that dies
    stops the others (JAX's coordination service: "another task died")."""
    if not getattr(args, "distributed", False) or jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes: gathers and barriers
    try:
        jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    except ValueError as e:  # no cluster detected and no explicit address
        raise UsageError(f"--distributed: {e} (outside SLURM / Open MPI give --coordinator-address, "
                         "--num-processes and --process-id)") from None


def _gather(tree):
    """A pytree of (global) arrays as numpy arrays of their full values, on every process."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def use_compile_cache(args) -> None:
    """Point JAX's persistent compilation cache at `args.compile_cache` ('' disables; a cache dir already set wins)."""
    if args.compile_cache and jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(args.compile_cache).expanduser()))


def seed_keys(seed: int, num_seeds: int, eval_salt: int = 0x5EED) -> tuple[np.ndarray, np.ndarray]:
    """(training keys, evaluation keys) [num_seeds, 2] on the host: seed i of a run uses PRNGKey(seed + i), its
    evaluation keys fold_in(that key, eval_salt) (and the evaluation after iteration it: fold_in(…, it))."""
    keys = np.stack([np.asarray(jax.random.PRNGKey(seed + i)) for i in range(num_seeds)])
    return keys, np.asarray(jax.vmap(lambda k: jax.random.fold_in(k, eval_salt))(keys))


def run(args, program: Program, max_chunks: int | None = None, verbose: bool = True, *, title: str = "TOP-ERL",
        render_final: Callable | None = None, devices=None) -> dict:
    """Train (or continue with `args.resume`) and return the summary dict (also written to run_dir/summary.json).

    `args` is a variant's flags (the fields read here: seed, num_seeds, iterations, eval_interval,
    checkpoint_interval, run_dir, resume, compile_cache; overwrite, video, distributed where they exist; task, env
    and num_envs unless `program` says otherwise). `max_chunks` stops after that many chunks in this call (a
    checkpoint is written); `--resume` continues it exactly.
    `render_final(args, program, state, run_dir, say)` renders the final policy for `--video`. The seeds are
    split over `devices` (default: all devices; `seed_sharding`); under `jax.distributed` (`init_distributed`)
    every process runs this loop in step, and process 0 writes the run directory.
    """
    lead = jax.process_index() == 0
    commit = git_commit()  # the code this run starts with (HEAD may move while it runs)
    say = print if verbose and lead else (lambda *a, **k: None)
    warn = (lambda m: print(m, file=sys.stderr)) if lead else (lambda m: None)
    use_compile_cache(args)
    init, run_chunk, evaluate, task = program.init, program.run_chunk, program.evaluate, program.task
    eval_params = program.eval_params or (lambda s: s.policy.params)
    run_dir = args.run_dir
    # A run directory belongs to one run; decided before anything is created or compiled.
    if args.resume and not ckpt.has_checkpoint(run_dir):
        raise UsageError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}")
    taken = not args.resume and (run_dir / "args.json").exists()
    if taken and not getattr(args, "overwrite", False):
        raise UsageError(f"{run_dir} already holds a run: continue it with --resume, start another with "
                         "--run-name NAME, or replace it with --overwrite")
    ckpt.barrier("toperl-jax: run directory checked")  # by every process, before process 0 changes it
    if taken and lead:
        remove_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    args_json = {**ckpt.run_flags(args), **(program.saved_info or {})}
    shard = seed_sharding(args.num_seeds, devices)
    # host values (the same on every process) → the seed-split arrays
    place = jnp.asarray if shard is None else (lambda x: jax.device_put(np.asarray(x), shard))
    host_keys, eval_keys = seed_keys(args.seed, args.num_seeds, program.eval_salt)
    keys = place(host_keys)
    opts = compiler_options(task, (devices or jax.devices())[0].platform)
    if args.resume:  # only the shapes (and placement): the values come from the checkpoint
        state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shard),
                             jax.eval_shape(jax.vmap(init), keys))
    else:
        state = _jit(jax.vmap(init), (True,), shard, compiler_options=opts)(keys)
    mgr = ckpt.manager(run_dir) if args.checkpoint_interval or args.resume else None
    chunk, history, wall_before, diverged = 0, [], 0.0, {}
    if args.resume:
        # a flag added since the run was saved counts as saved with its default
        ckpt.check_same_flags(ckpt.saved_args(run_dir / "args.json", args), args_json)
        state, meta, _ = ckpt.restore(mgr, state, say=warn)
        if "chunk" not in meta:
            raise UsageError(f"--resume: the checkpoint in {run_dir / 'checkpoints'} was written by an older host "
                             "loop (QT's own, before it used this runner); resume it with that version of the code, "
                             "or start the run again with --overwrite")
        chunk, history, wall_before = meta["chunk"], meta["history"], meta["wall_time"]
        diverged = {int(i): v for i, v in meta.get("diverged", {}).items()}
        say(f"resumed {run_dir} at iteration {min(chunk * args.eval_interval, args.iterations)}")
    elif lead:
        (run_dir / "args.json").write_text(json.dumps(args_json, indent=1))

    chunk_fn = _jit(jax.vmap(guarded(run_chunk), in_axes=(0, None, 0)), (True, False, True), shard,
                    donate_argnums=0, compiler_options=opts)
    eval_fn = _jit(jax.vmap(evaluate), (True, True), shard, compiler_options=opts)
    logger = RunLogger(run_dir, args.num_seeds) if lead else _NoLogger()
    steps_per_it = program.steps_per_iteration
    if steps_per_it is None:
        steps_per_it = args.num_envs * task.episode_length
    unit = program.step_unit
    progress = Progress(args.iterations, steps_per_it, initial_env_steps=program.initial_env_steps,
                        unit=unit.replace("_", " "))
    num_chunks = math.ceil(args.iterations / args.eval_interval)
    on = "" if shard is None else f" on {shard.mesh.size} devices"
    header = program.header
    if header is None:
        learner_T = f" (learner: {program.learner.T} steps of {program.learner.dt:g} s)" \
            if program.learner.T != task.episode_length else ""
        header = (f"{task.name} (preset {args.task}): {args.iterations} iterations × {args.num_envs} episodes × "
                  f"T={task.episode_length}{learner_T}")
    say(f"{title} on {header}, {args.num_seeds} seed(s){on}, logs in {run_dir}")

    def do_eval(it):
        m = _to_host(eval_fn(eval_params(state), place(jax.vmap(lambda k: jax.random.fold_in(k, it))(eval_keys))))
        if program.host_metrics is not None:
            m.update(program.host_metrics(m))
        return {f"eval/{n}": v for n, v in m.items()}

    if chunk == 0:
        ev = do_eval(0)
        logger.scalars(ev, program.initial_env_steps)
        history.append({"iteration": 0, unit: program.initial_env_steps, **{n: v.tolist() for n, v in ev.items()}})
        say(progress.line(0, _headline(program.headline, ev)))
    t_start, chunks_run = time.perf_counter(), 0
    stopped = np.isin(np.arange(args.num_seeds), list(diverged))
    while chunk < num_chunks and (max_chunks is None or chunks_run < max_chunks) and not stopped.all():
        first_it = chunk * args.eval_interval + 1
        if chunks_run == 0:
            say(f"compiling and running iterations {first_it}…{min(first_it + args.eval_interval - 1, args.iterations)}"
                " (the first chunk includes compilation)")
        state, metrics, ok = chunk_fn(state, jnp.int32(first_it), place(stopped))
        metrics, ok = _gather((metrics, ok))
        chunk, chunks_run = chunk + 1, chunks_run + 1
        it = min(chunk * args.eval_interval, args.iterations)
        for s in np.flatnonzero(~np.asarray(ok) & ~stopped):
            diverged[int(s)] = [first_it, it]
            warn(f"WARNING: seed {args.seed + s} diverged (a non-finite parameter or optimiser state after "
                 f"iterations {first_it}–{it}): stopped with its state of iteration {first_it - 1}"
                 + (", the other seeds go on" if not stopped.all() and args.num_seeds > 1 else ""))
        stopped = np.isin(np.arange(args.num_seeds), list(diverged))
        with np.errstate(all="ignore"), warnings.catch_warnings():  # all-NaN: that update has not started yet
            warnings.simplefilter("ignore", RuntimeWarning)
            train = {n: np.where(stopped, np.nan, np.nanmean(np.asarray(v, np.float64), axis=1))
                     for n, v in metrics.items()}
        ev = {n: np.where(stopped, np.nan, v) for n, v in do_eval(it).items()}
        wall = wall_before + time.perf_counter() - t_start
        steps = program.initial_env_steps + it * steps_per_it
        logger.scalars({**train, **ev, "charts/wall_time": np.full(args.num_seeds, wall),
                        "charts/iteration": np.full(args.num_seeds, it)}, steps)
        history.append({"iteration": it, unit: steps, "wall_time": wall,
                        **{n: [None if d else x for x, d in zip(v.tolist(), stopped)] for n, v in ev.items()}})
        if chunks_run == 1:
            progress.start(it)
        say(progress.line(it, _headline(program.headline, ev, train)))
        logger.flush()
        # every chunk: a crash keeps the run
        summary = write_summary(args, run_dir, history, diverged, commit, lead, program)
        if mgr is not None and args.checkpoint_interval and (chunk % args.checkpoint_interval == 0 or stopped.all()
                                                             or chunk == num_chunks or chunks_run == max_chunks):
            ckpt.save(mgr, chunk, state, {"chunk": chunk, "history": history, "wall_time": wall,
                                          "diverged": {str(i): v for i, v in diverged.items()}})
    logger.close()
    summary = write_summary(args, run_dir, history, diverged, commit, lead, program)
    if stopped.all():
        say(f"stopped: every seed diverged; the last finite evaluations are in {run_dir / 'summary.json'}")
    elif chunk == num_chunks:
        say(f"done: {summary[unit]} {unit.replace('_', ' ')} in {summary['wall_time']:.0f} s; summary in "
            f"{run_dir / 'summary.json'}; TensorBoard (pip install tensorboard): tensorboard --logdir {run_dir}")
        if getattr(args, "video", False) and render_final is not None and jax.process_count() == 1:
            render_final(args, program, state, run_dir, say)
    summary["state"] = state
    return summary


RUN_FILES = ("args.json", "summary.json", "checkpoints", "checkpoints_skipped", "final.mp4")


def remove_run(run_dir: pathlib.Path) -> None:
    """Delete what `run` wrote in `run_dir` (flags, summary, checkpoints, per-seed logs, video), nothing else."""
    for path in [run_dir / n for n in RUN_FILES] + sorted(run_dir.glob("seed_*")):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def write_summary(args, run_dir: pathlib.Path, history: list[dict], diverged: dict[int, list[int]], commit: str,
                  write: bool = True, program: Program | None = None) -> dict:
    """run_dir/summary.json from the evaluation history so far (final and best per seed, the mean and std of the
    finals of the ranking metric; `diverged`: seed index → [first, last] iteration of the chunk after which its
    state was non-finite; `commit`: `git_commit()` when the run started), written atomically if `write`.
    `program` supplies the head, step unit and score."""
    unit = program.step_unit if program else "env_steps"
    key = _score_key(history, program.score if program else None)
    head = program.summary_info if program and program.summary_info is not None else {"task": args.task,
                                                                                       "env": args.env}
    per_seed = _per_seed_summary(history, args.num_seeds, diverged, key)
    finals = np.asarray([p["final"][key] for p in per_seed], np.float64)
    summary = {**head, "run_dir": str(run_dir), "iterations_done": history[-1]["iteration"],
               unit: history[-1][unit], "wall_time": history[-1].get("wall_time", 0.0),
               "seeds": [args.seed + i for i in range(args.num_seeds)], "git_commit": commit,
               "score_key": key, "final_mean": float(finals.mean()), "final_std": float(finals.std()),
               "per_seed": per_seed, "history": history}
    if write:
        tmp = run_dir / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1))
        tmp.replace(run_dir / "summary.json")
    return summary


def _headline(names: tuple[str, ...], ev: dict, train: dict | None = None) -> dict[str, float]:
    """The metrics `names` for the progress line (mean over the seeds still running): evaluation ones wherever
    logged, training ones where finite for some seed."""
    out = {}
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # every seed stopped: the mean is NaN
        for name in names:
            v = ev.get(name) if name in ev else (train or {}).get(name)
            if v is not None and (name in ev or np.isfinite(v).any()):
                out[name.split("/")[1].replace("is_", "")] = float(np.nanmean(v))
    return out
