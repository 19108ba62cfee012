"""The day a GPU is lent: one command, ≤ 10 minutes, every number the GPU questions of issue 25 need.

    python benchmarks/gpu_check.py                 # on the GPU machine; writes results/gpu_check_<device>.json
    python benchmarks/gpu_check.py --cpu-smoke     # tiny sizes, ~1 min on a CPU (tests/test_benchmarks.py runs it)
    python benchmarks/gpu_check.py --section-timeout-s 240   # a short lease: each section in a child process,
                                                             # stopped after 240 s so that one stuck compile
                                                             # cannot take the rest

Sections (run in the order iteration, env, steps unless `--sections` says otherwise; each measurement starts only
while `--budget-s` is not spent; one that does not start is recorded as skipped, one that fails is recorded with its
error, and the rest go on):
  steps      one critic step and one policy step of variants/top_erl.py (`critic_step`, `policy_step`, each jitted
             on its own) at the `--step-preset`'s shapes (box-dense: 512 trajectories × T = 100, n_embd 128), on a
             buffer of synthetic random episodes (the cost does not depend on the contents): compile time, median
             step time;
  precision  the same critic and policy step, same inputs and key, compiled as JAX does by default (TF32
             matmuls on Ampere/Hopper GPUs, float32 on a CPU) and under `jax.default_matmul_precision('highest')`
             (float32): the losses and their absolute and relative differences;
  iteration  per `--iteration-presets` (box-dense, hopper-jump): the variant's jitted chunk (`jit(vmap(run_chunk))`
             as the runner runs it, benchmarks/throughput.py's `chunk_throughput`) of `--chunk-iterations`
             iterations with critic and policy updates on, buffer pre-filled with synthetic episodes: seconds per
             iteration, compile time;
  env        env steps/s of the variant's training rollout per task of `--env-tasks` at each of `--batches`
             episodes per call (1024, 64, 4, 1: largest first, all tasks at one batch before the next) (benchmarks/throughput.py's `env_throughput`), physics impl 'jax' and 'warp' (MJX-Warp, sized for
             that batch; reported as not installed where warp-lang is missing);
  memory     the device's peak memory (`device.memory_stats()['peak_bytes_in_use']`; None where the backend
             keeps no statistics, e.g. a CPU) after every section and at the end.
Prints markdown tables to stdout and writes the raw numbers (with device, jax version, XLA_FLAGS, commit) to
`--out` (default results/gpu_check_<device kind>.json) after every measurement, so that a run stopped at a time
limit keeps what it measured; stderr says which measurement is under way, and `timeout -s ABRT` prints where a stuck
one sits. The persistent compilation cache is off (`--compile-cache ''`), so compile times are real. Every program is
compiled as a training run compiles it (`runner.compiler_options`: on a GPU, XLA's Triton GEMM emitter off): with
XLA's defaults, the critic step's compile on an H100 (jax 0.11.2) did not finish in 4 minutes, even at the reach
preset's shapes (docs/performance.md "GPU").

On a machine whose Python already has JAX with CUDA (e.g. an image with jax 0.11 and CUDA 13), install the rest without
touching JAX: `pip install --no-deps mujoco mujoco-core mujoco-studio mujoco-mjx tyro docstring-parser typeguard
shtab tensorboardX trimesh` (plus `metaworld==3.1.1 --no-deps` for metaworld-reach), then run from the repository root
with `PYTHONPATH=.`.
"""

from __future__ import annotations

import dataclasses
import datetime
import faulthandler
import json
import math
import os
import pathlib
import re
import sys
import time
import traceback
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import tyro

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import throughput  # noqa: E402  (benchmarks/throughput.py: env_throughput, chunk_throughput)
from timing import compile_timed, cpu_model, jit_options, time_calls  # noqa: E402

from toperl_jax import buffer as buffer_lib  # noqa: E402
from toperl_jax.logger import git_commit  # noqa: E402

te = throughput.te  # variants/top_erl.py

SMOKE = {  # --cpu-smoke: every section at a size a 2-core CPU runs in about a minute (reacher only)
    "env_tasks": ("reacher",), "batches": (2,), "iteration_presets": ("reach",), "step_preset": "reach",
    "chunk_iterations": 1, "repeats": 2}
TINY_NETS = {"n_embd": 16, "n_head": 2, "n_layer": 1, "policy_hidden_sizes": (16,), "batch_size": 8,
             "buffer_size": 16, "num_envs": 2, "epochs_critic": 1, "epochs_policy": 1, "num_eval_episodes": 2}
"""--cpu-smoke: the presets' networks and batches shrunk to these values (the same code paths)."""


@dataclasses.dataclass(frozen=True)
class Args:
    """Measure on a GPU (or, with --cpu-smoke, check on a CPU) what issue 25 needs from a lent GPU."""

    cpu_smoke: bool = False
    """tiny sizes (reacher, small networks; sections and JSON as on the GPU) for CI: about a minute on a CPU"""
    env_tasks: tuple[str, ...] = ("reacher", "box-pushing-dense", "hopper-jump-sparse", "metaworld-reach")
    """tasks of the env section (each rolled out at its preset's policy/ProDMP settings)"""
    batches: tuple[int, ...] = (1024, 64, 4, 1)
    """episodes per rollout call in the env section, measured in this order (all tasks at one batch, then the next)"""
    iteration_presets: tuple[str, ...] = ("box-dense", "hopper-jump")
    """presets of variants/top_erl.py whose chunk the iteration section times"""
    step_preset: str = "box-dense"
    """preset whose shapes the steps and precision sections use (box-dense: the paper's 512 × T = 100)"""
    chunk_iterations: int = 2
    """iterations per timed chunk in the iteration section"""
    repeats: int = 3
    """timed calls per measurement (after compilation and one warm-up call)"""
    budget_s: float = 480.0
    """no measurement starts after this many seconds (the rest are recorded as skipped); the 10-minute bound"""
    out: str = ""
    """JSON path ('' = results/gpu_check_<device kind>.json)"""
    sections: tuple[Literal["steps", "iteration", "env"], ...] = ("iteration", "env", "steps")
    """sections to run, in this order: by default the iteration times and the rollout's env steps/s first (the
    numbers a short lease must bring back), the update steps and their TF32-vs-float32 losses last"""
    section_timeout_s: float = 0.0
    """> 0: run each section in a child process of this script and stop it after this many seconds (its stacks
    printed, what it measured kept, the section marked timed out), so that one stuck compile cannot take the whole
    lease; the parent never touches the device (0 = everything in this process)"""
    compile_cache: str = ""
    """persistent XLA compilation cache ('' = off, so that compile times are real)"""


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def device_name() -> str:
    """The first device's kind as a file-name part (e.g. NVIDIA_H100_80GB_HBM3, cpu)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", jax.devices()[0].device_kind).strip("_") or jax.devices()[0].platform


def peak_memory_bytes() -> int | None:
    """Peak bytes in use on the first device since start (None where the backend keeps no statistics)."""
    stats = jax.devices()[0].memory_stats()
    return None if not stats else int(stats.get("peak_bytes_in_use", stats.get("bytes_in_use", 0))) or None


def preset(name: str, smoke: bool):
    """A variant preset, shrunk to `TINY_NETS` in smoke mode."""
    args = te.PRESETS[name]
    return dataclasses.replace(args, **TINY_NETS) if smoke else args


def synthetic_fill(program, state, n: int, key):
    """`state` (one seed, or seeds on a leading axis) with `n` synthetic episodes added to its buffer: standard
    normal floats × 0.1, no dones, init_time 0, params_L = I. Timing does not depend on the buffer's contents."""
    learner, task = program.learner, program.task
    spec = buffer_lib.episode_spec(learner.T, task.obs_size, task.num_dof, learner.mp.num_params)
    leaves, tree = jax.tree.flatten(spec)
    keys = jax.random.split(key, len(leaves))
    data = [jnp.zeros((n, *s.shape), s.dtype) if s.dtype == jnp.bool_
            else 0.1 * jax.random.normal(k, (n, *s.shape), s.dtype) for s, k in zip(leaves, keys)]
    episodes = jax.tree.unflatten(tree, data)
    k = learner.mp.num_params
    episodes = episodes.replace(init_time=jnp.zeros((n,)), params_L=jnp.broadcast_to(jnp.eye(k), (n, k, k)))
    if state.buffer.data.rewards.ndim == 3:  # seeds on a leading axis
        return state.replace(buffer=jax.vmap(buffer_lib.add, in_axes=(0, None))(state.buffer, episodes))
    return state.replace(buffer=buffer_lib.add(state.buffer, episodes))


def step_functions(args):
    """(program, state, critic step, policy step): one seed of `args` with a batch of synthetic episodes in the
    buffer; the steps jitted on their own as `f(state, key) -> (new sub-state, metrics)`, at an iteration past
    `policy_update_from` with H₀ from the old policy."""
    args = dataclasses.replace(args, buffer_warmup=False)
    program = te.make_train(args)
    learner, opts = program.learner, jit_options(program.task)
    state = jax.jit(program.init, compiler_options=opts)(jax.random.PRNGKey(0))
    state = synthetic_fill(program, state, args.batch_size, jax.random.PRNGKey(1))
    h0 = te.initial_entropy(learner, state.policy.old_params, state.buffer.data.states[:8, 0])
    it = jnp.int32(args.policy_update_from)
    critic = lambda s, k: te.critic_step(learner, s.critic, s.buffer, s.policy.params, s.policy.old_params, it, h0, k)
    policy = lambda s, k: te.policy_step(learner, s.policy, s.buffer, s.critic.params, it, h0, k)
    return program, state, critic, policy


class Budget:
    """Measurements start only while `seconds` since creation are not spent; each result records its status."""

    def __init__(self, seconds: float):
        self.t0, self.seconds = time.perf_counter(), seconds

    def run(self, what: str, fn, *a) -> dict:
        elapsed = time.perf_counter() - self.t0
        if elapsed > self.seconds:
            return {"status": "skipped (--budget-s spent)"}
        print(f"[{elapsed:.0f} s] measuring {what} …", file=sys.stderr, flush=True)  # where a slow compile sits
        try:
            return {"status": "ok", **fn(*a)}
        except Exception as e:  # noqa: BLE001 - one failed measurement is a result; the others go on
            traceback.print_exc()
            return {"status": f"error: {type(e).__name__}: {str(e)[:2000]}"}


def _finite_tree(tree) -> bool:
    return bool(all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(tree)
                    if np.issubdtype(np.asarray(x).dtype, np.floating)))


# ---------------------------------------------------------------------------------------------------------------
# Sections


def measure_steps(args, repeats: int) -> dict:
    """Compile time and median time of one critic step and one policy step at `args`' shapes ("steps"), and their
    losses on the same inputs and key compiled under 'highest' matmul precision as well ("precision"; the precision
    is fixed when a function is lowered, so 'highest' is a second compile)."""
    program, state, critic, policy = step_functions(args)
    opts = jit_options(program.task)
    steps = {"batch_size": args.batch_size, "n_embd": args.n_embd, "n_layer": args.n_layer, "n_head": args.n_head}
    precision = {"default_means": "what JAX does: TF32 matmuls on Ampere/Hopper GPUs, float32 on a CPU"}
    key = jax.random.PRNGKey(7)
    for name, fn, loss in (("critic_step", critic, "critic_loss"), ("policy_step", policy, "policy_loss")):
        compiled, compile_s = compile_timed(jax.jit(fn, compiler_options=opts), state, key)
        calls = iter(range(100, 100 + repeats + 1))
        jax.block_until_ready(compiled(state, key))  # warm-up
        r = time_calls(lambda: jax.block_until_ready(compiled(state, jax.random.PRNGKey(next(calls)))), repeats)
        steps[name] = {"compile_s": compile_s, **{k: v for k, v in r.items() if k != "times_s"}}
        with jax.default_matmul_precision("highest"):
            highest, _ = compile_timed(jax.jit(fn, compiler_options=opts), state, key)
        values = {}
        for which, c in (("default", compiled), ("highest", highest)):
            new, metrics = c(state, key)
            values[which], values[f"{which}_finite"] = float(metrics[loss]), _finite_tree(new)
        diff = abs(values["default"] - values["highest"])
        precision[name] = {"loss": loss, "default": values["default"], "highest": values["highest"],
                           "abs_diff": diff, "rel_diff": diff / max(abs(values["highest"]), 1e-30),
                           "states_finite": values["default_finite"] and values["highest_finite"]}
    return {"steps": steps, "precision": precision}


def measure_iteration(args, iterations: int, repeats: int) -> dict:
    """Seconds per iteration of the variant's chunk at `args` (one seed), updates on, synthetic buffer fill."""
    args = dataclasses.replace(args, buffer_warmup=False)
    fill = lambda program, state: synthetic_fill(program, state, args.batch_size, jax.random.PRNGKey(1))
    r = throughput.chunk_throughput(args, 1, iterations, repeats, fill=fill)
    return {**r, "iteration_s": r["median_s"] / iterations}


def warp_status() -> str | None:
    """None when the Warp physics backend can be measured, else why not."""
    import importlib.util

    if importlib.util.find_spec("warp") is None:
        return "warp-lang not installed (pip install -e .[gpu])"
    return None


def measure_env(task: str, batch: int, repeats: int, impl: str, smoke: bool) -> dict:
    args = throughput.preset_of(task)
    if smoke:
        args = dataclasses.replace(args, **TINY_NETS)
    if impl != "jax":  # MJX-Warp's contact list is sized for the episodes of one call (`flags.make_task`)
        args = dataclasses.replace(args, physics_impl=impl, num_envs=batch)
    r = throughput.env_throughput(task, batch, repeats, args)
    return {**r, "impl": impl}


# ---------------------------------------------------------------------------------------------------------------
# Main


def _fmt(x, spec=".3g"):
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def child_argv(cfg: Args, **changes) -> list[str]:
    """`cfg` with `changes` as this script's flags (only the fields that differ from `Args()`'s defaults)."""
    argv, default = [], Args()
    for f in dataclasses.fields(Args):
        value, flag = changes.get(f.name, getattr(cfg, f.name)), "--" + f.name.replace("_", "-")
        if value == getattr(default, f.name):
            continue
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, *map(str, value)] if isinstance(value, tuple) else [flag, str(value)]
    return argv


def merge_parts(cfg: Args, parts: dict[str, dict], status: dict[str, str], command: str) -> dict:
    """One result from the sections' child results `parts` (section → its JSON, as far as it got) and each child's
    `status` ('ok', an error, a time-out or a skip): the layout of an in-process run, plus `sections` = `status`.
    A section that did not end 'ok' marks what it did not measure with its status."""
    first = next(iter(parts.values()), {})
    out = {k: first.get(k) for k in ("date", "device", "device_kind", "platform", "jax", "xla_flags", "commit")}
    out.update(command=command, config=dataclasses.asdict(cfg), steps={}, precision={}, iteration=[], env=[],
               memory={}, sections=dict(status))
    for section, part in parts.items():
        for key in (("steps", "precision") if section == "steps" else (section,)):
            out[key] = part.get(key, out[key])
        for key, value in part.get("memory", {}).items():
            if key == "peak_bytes" and out["memory"].get(key) is not None:
                value = max(value or 0, out["memory"][key])
            out["memory"][key] = value
    for section, st in status.items():
        if st == "ok":
            continue
        if section == "steps":
            for key in ("steps", "precision"):
                if not {"critic_step", "policy_step"} <= out[key].keys():
                    out[key] = {**out[key], "status": st}
        elif section == "iteration":
            done = {r.get("preset") for r in out["iteration"]}
            out["iteration"] += [{"preset": p, "status": st} for p in cfg.iteration_presets if p not in done]
        else:
            out["env"].append({"status": st})
    return out


def run_sections_apart(cfg: Args, argv) -> dict:
    """`--section-timeout-s`: each section of `cfg.sections` in a child process of this script (the budget left
    passed on), stopped with SIGABRT (faulthandler prints its stacks) and then SIGKILL after the time-out; the
    children's JSONs merged (`merge_parts`) and written to `--out` (default results/gpu_check_<device>.json)."""
    import signal
    import subprocess
    import tempfile

    t0, parts, status = time.perf_counter(), {}, {}
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="gpu_check_"))
    for section in cfg.sections:
        left = cfg.budget_s - (time.perf_counter() - t0)
        if left <= 0:
            status[section] = "skipped (--budget-s spent)"
            continue
        part = tmp / f"{section}.json"
        cmd = [sys.executable, str(pathlib.Path(__file__).resolve()),
               *child_argv(cfg, sections=(section,), out=str(part), budget_s=left, section_timeout_s=0.0)]
        print(f"[{time.perf_counter() - t0:.0f} s] section {section}: a child process, at most "
              f"{cfg.section_timeout_s:.0f} s", file=sys.stderr, flush=True)
        child = subprocess.Popen(cmd)
        try:
            child.wait(timeout=cfg.section_timeout_s)
            status[section] = "ok" if child.returncode == 0 else f"error: exit status {child.returncode}"
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGABRT)  # the child's faulthandler prints where it is stuck
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            status[section] = f"timed out after {cfg.section_timeout_s:.0f} s (--section-timeout-s)"
        if part.exists():
            parts[section] = json.loads(part.read_text())
    command = "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out = merge_parts(cfg, parts, status, command)
    out["total_s"] = time.perf_counter() - t0
    kind = re.sub(r"[^A-Za-z0-9]+", "_", out["device_kind"] or "unknown").strip("_")
    path = pathlib.Path(cfg.out or f"results/gpu_check_{kind}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print("\nsections: " + ", ".join(f"{k} {v}" for k, v in status.items()) + f"\nraw results: {path}", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    cfg = tyro.cli(Args, args=argv)
    if cfg.cpu_smoke:
        cfg = dataclasses.replace(cfg, **SMOKE)
    for name in ("repeats", "chunk_iterations"):
        if getattr(cfg, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')}: must be ≥ 1, got {getattr(cfg, name)}")
    for name in (cfg.step_preset, *cfg.iteration_presets):
        if name not in te.PRESETS:
            raise SystemExit(f"preset {name!r} unknown; choose from {', '.join(te.PRESETS)}")
    if cfg.section_timeout_s > 0:
        return run_sections_apart(cfg, argv)
    if cfg.compile_cache and jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(cfg.compile_cache).expanduser()))
    dev = jax.devices()[0]
    where = f"{dev.device_kind} ({dev.platform})" if dev.platform != "cpu" else f"{cpu_model()}, {os.cpu_count()} CPUs"
    budget = Budget(cfg.budget_s)
    path = pathlib.Path(cfg.out or f"results/gpu_check_{device_name()}.json")
    path.parent.mkdir(parents=True, exist_ok=True)

    def save():  # after every measurement, so that a run killed at its time limit keeps what it measured
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(out, indent=1, default=lambda o: np.asarray(o).tolist()))
        tmp.replace(path)

    out = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "device": where,
           "device_kind": dev.device_kind, "platform": dev.platform, "jax": jax.__version__,
           "xla_flags": os.environ.get("XLA_FLAGS", ""), "commit": git_commit(("variants/top_erl.py",)),
           "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "config": dataclasses.asdict(cfg), "steps": {}, "precision": {}, "iteration": [], "env": [],
           "memory": {}}
    print(f"# GPU check on {where}, jax {jax.__version__}, {out['date']}"
          f"{' (CPU smoke: tiny sizes)' if cfg.cpu_smoke else ''}\n", flush=True)

    def steps_section():
        step_args = preset(cfg.step_preset, cfg.cpu_smoke)
        r = budget.run("steps", measure_steps, step_args, cfg.repeats)
        for section in ("steps", "precision"):
            out[section] = {"preset": cfg.step_preset, "status": r["status"], **r.get(section, {})}
        out["memory"]["after_steps"] = peak_memory_bytes()
        save()
        s = out["steps"]
        print(f"## Update steps ({cfg.step_preset} shapes; synthetic buffer) — {s['status']}\n")
        print("| step | median (ms) | IQR (ms) | compile (s) |\n|---|---:|---:|---:|")
        for name in ("critic_step", "policy_step"):
            r = s.get(name, {})
            print(f"| {name} | {_fmt(1e3 * r['median_s'] if r else None, '.1f')} | "
                  f"{_fmt(1e3 * r['q25_s'] if r else None, '.1f')}–{_fmt(1e3 * r['q75_s'] if r else None, '.1f')} | "
                  f"{_fmt(r.get('compile_s'), '.1f')} |")
        print(flush=True)

        p = out["precision"]
        print(f"## Matmul precision: 'default' vs 'highest', same inputs — {p['status']}\n")
        print("| step | loss | default | highest | abs diff | rel diff |\n|---|---|---:|---:|---:|---:|")
        for name in ("critic_step", "policy_step"):
            r = p.get(name, {})
            print(f"| {name} | {r.get('loss', '–')} | {_fmt(r.get('default'), '.6g')} | "
                  f"{_fmt(r.get('highest'), '.6g')} | {_fmt(r.get('abs_diff'), '.2e')} | "
                  f"{_fmt(r.get('rel_diff'), '.2e')} |")
        print(flush=True)

    def iteration_section():
        print(f"## One iteration of variants/top_erl.py (jitted chunk of {cfg.chunk_iterations}, updates on)\n")
        print("| preset | critic batch × epochs / policy epochs | s per iteration | compile (s) | status |\n"
              "|---|---|---:|---:|---|", flush=True)
        for name in cfg.iteration_presets:
            a = preset(name, cfg.cpu_smoke)
            r = {"preset": name,
                 **budget.run(f"iteration {name}", measure_iteration, a, cfg.chunk_iterations, cfg.repeats)}
            out["iteration"].append(r)
            save()
            print(f"| {name} | {a.batch_size} × {a.epochs_critic} / {a.epochs_policy} | "
                  f"{_fmt(r.get('iteration_s'))} | {_fmt(r.get('compile_s'), '.1f')} | {r['status'][:60]} |",
                  flush=True)
        out["memory"]["after_iteration"] = peak_memory_bytes()
        print()

    def env_section():
        print("## Env steps/s (training rollout: policy + ProDMP decode + MJX with PD control)\n")
        print("| task | impl | batch | env steps/s | median call (s) | compile (s) | status |\n"
              "|---|---|---:|---:|---:|---:|---|", flush=True)
        warp = warp_status()
        for task in cfg.env_tasks:
            if warp is not None:
                out["env"].append({"task": task, "impl": "warp", "status": warp})
                print(f"| {task} | warp | – | – | – | – | {warp} |", flush=True)
        impls = ("jax",) if warp is not None else ("jax", "warp")
        for b in cfg.batches:  # batch-major: if the budget runs out, every task has its largest batches measured
            for task in cfg.env_tasks:
                for impl in impls:
                    r = {"task": task, "impl": impl, "batch": b,
                         **budget.run(f"env {task} {impl} batch {b}", measure_env, task, b, cfg.repeats, impl,
                                       cfg.cpu_smoke)}
                    out["env"].append(r)
                    save()
                    print(f"| {task} | {impl} | {b} | {_fmt(r.get('env_steps_per_s'), ',.0f')} | "
                          f"{_fmt(r.get('median_s'), '.3f')} | {_fmt(r.get('compile_s'), '.1f')} | "
                          f"{r['status'][:60]} |", flush=True)
        out["memory"]["after_env"] = peak_memory_bytes()

    sections = {"steps": steps_section, "iteration": iteration_section, "env": env_section}
    for section in cfg.sections:
        sections[section]()
    out["memory"]["peak_bytes"] = peak_memory_bytes()
    out["total_s"] = time.perf_counter() - budget.t0
    peak = out["memory"]["peak_bytes"]
    print(f"\npeak device memory: {'n/a (backend keeps no statistics)' if peak is None else f'{peak / 2**30:.2f} GiB'}"
          f"; total {out['total_s']:.0f} s")

    save()
    print(f"raw results: {path}")
    return out


if __name__ == "__main__":
    faulthandler.enable()  # `timeout -s ABRT …` then prints where a stuck compile sits
    main()
