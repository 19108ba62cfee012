"""Reproduce the paper's learning curves and tables: run a suite for variants × seeds, then aggregate the logs.

    python benchmarks/reproduce.py --suite reach                            # CPU-sized: 8 seeds of the reach preset
    python benchmarks/reproduce.py --suite box-dense --num-seeds 8          # on a GPU: the paper's box pushing
    python benchmarks/reproduce.py --suite reach --num-seeds 2 --iterations 40   # unknown flags go to the variant
    python benchmarks/reproduce.py --suite reach --aggregate-only           # re-aggregate existing runs only
    python benchmarks/reproduce.py --suite reach-switch --num-seeds 4       # replanning vs TOP-ERL (CPU, issue 6)
    python benchmarks/reproduce.py --suite metaworld-mt50                   # on a GPU: 50 tasks × 8 seeds
    python benchmarks/reproduce.py --suite metaworld-mt50 --tasks reach push --num-seeds 4   # a subset of tasks
    python benchmarks/reproduce.py --suite reach --worker-index 1 --num-workers 2   # this process: runs 1, 3, …

A suite is a variant preset (`--task`, or per-variant preset flags) plus the task's metrics and the paper's
numbers. For every variant in `--variants` (default: the suite's; a script `variants/<name>.py` with
`parse_args(argv)` and `run(args, verbose=...)`, as `variants/top_erl.py`) the seeds `--seed … --seed + --num-seeds − 1` are trained in groups of
`--seeds-per-run` vmapped seeds (the variant's `--num-seeds`), each group in its own run directory
`<logdir>/<suite>/<variant>/seeds<a>-<b>/`. A multi-task suite (`metaworld-mt50`) trains one run per task
(`--env <prefix><task>`, upstream's grid over 50 env ids) in `<logdir>/<suite>/<variant>/<task>/seeds<a>-<b>/`,
for the tasks of `--tasks` (default all), and aggregates over tasks × seeds. A group whose `summary.json` shows all
iterations done is skipped; one with a checkpoint is resumed (`--resume`), so a killed suite is continued by running
the same command.

Several processes (SLURM tasks, hosts, shells) share a suite with `--worker-index i --num-workers N` (under `srun`
the defaults come from SLURM_PROCID / SLURM_NTASKS): the suite's runs, in the order variants × tasks × seed groups,
are dealt round-robin, worker i trains runs i, i + N, … (skip and resume as above) and does not aggregate; once all
have finished, `--aggregate-only` writes the table. A run directory is locked (`reproduce.lock`, flock) while a
process trains it, so two processes never train one run. See docs/runs.md, "Suites over many processes and hosts".

The evaluation logs are read back from each run's `summary.json` (its `history`: one entry per evaluation with
per-seed values) or, for a run that has none yet, from its TensorBoard event files (`seed_<i>/`). Written to
`<out>/bench_<suite>/`:
  raw.csv      one row per (variant, seed, evaluation): env steps, iteration, wall time, every eval/* metric;
  table.md     per metric: final IQM with a 95 % stratified-bootstrap CI over seeds (rliable), the paper's value,
               and the env steps at which the IQM curve first reaches each threshold (plus how many seeds did);
  curves.png   IQM curves with CI bands against env steps, the paper's values as reference markers/lines;
  meta.json    the command, git commit, date, machine and the runs aggregated.
Statistics: rliable (`metrics.aggregate_iqm` = the 25 %-trimmed mean over all runs = tasks × seeds,
`library.get_interval_estimates` = the percentile stratified bootstrap: the seeds are resampled within each
task; on a curve every evaluation point is resampled on its own, so the band is pointwise). A multi-task table
also lists every task's final mean over its seeds. rliable 1.2 draws from numpy's global RNG
whatever `random_state` says, so `iqm_curve_ci` seeds it (`--stats-seed`) and restores it afterwards.

Paper values (specs/toperl_results.md, read off the paper's main figure by eye: ±0.02 success, ±0.01 m) are
reference points only: the figure's x-axis is environment interactions, as here.
"""

from __future__ import annotations

import csv
import dataclasses
import contextlib
import datetime
import importlib.util
import itertools
import json
import os
import pathlib
import shlex
import socket
import struct
import sys
import warnings
from typing import Literal

import numpy as np
import tyro

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from timing import cpu_model

from toperl_jax import checkpoint as ckpt
from toperl_jax.envs.metaworld import MT50
from toperl_jax.logger import git_commit

ROOT = pathlib.Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------------------------
# Suites


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str
    """history / TensorBoard tag of the evaluation metric (mean over the evaluation episodes)"""
    label: str
    higher_is_better: bool
    thresholds: tuple[float, ...]
    """report the env steps at which the IQM curve first reaches each of these"""


@dataclasses.dataclass(frozen=True)
class PaperPoint:
    method: str
    env_steps: float
    value: float


@dataclasses.dataclass(frozen=True)
class Suite:
    task: str
    """the variant preset (`--task`)"""
    metrics: tuple[Metric, ...]
    seeds_per_run: int
    """default number of seeds vmapped into one program"""
    paper: dict[str, tuple[PaperPoint, ...]] = dataclasses.field(default_factory=dict)
    """metric key -> the paper's values (TOP-ERL first, then baselines at the end of their curves)"""
    paper_note: str = ""
    variants: tuple[str, ...] = ("top_erl",)
    """the variants a plain `--suite` run trains (`--variants` overrides)"""
    presets: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """variant -> the flags that select its preset, where they are not `--task <task>`"""
    tasks: tuple[str, ...] = ()
    """a multi-task suite's tasks: one run per task (and seed group) with `--env <env_prefix><task>`"""
    env_prefix: str = ""

    def preset_argv(self, variant: str, task: str | None = None) -> list[str]:
        argv = list(self.presets.get(variant, ("--task", self.task)))
        return argv + ["--env", self.env_prefix + task] if task is not None else argv


SUCCESS = "eval/is_success"
_BASE_BOX_X = 5e7  # the figure's x range for box pushing; baselines are read at its right end


def _baselines(x: float, **values: float) -> tuple[PaperPoint, ...]:
    return tuple(PaperPoint(name, x, v) for name, v in values.items())


SUITES: dict[str, Suite] = {
    "reach": Suite(
        task="reach", seeds_per_run=4,
        metrics=(Metric(SUCCESS, "success rate", True, (0.5, 0.8, 0.9)),
                 Metric("eval/distance", "final fingertip distance (m)", False, (0.05, 0.02))),
        paper_note="none: `reach` is this project's CPU-sized task; the paper has no reaching result"),
    "reach-switch": Suite(
        task="reach-switch", seeds_per_run=4, variants=("top_erl", "top_erl_replan"),
        presets={"top_erl": ("--task", "reach", "--env", "reacher-switch")},
        metrics=(Metric(SUCCESS, "success rate", True, (0.3, 0.5, 0.8)),
                 Metric("eval/distance", "final fingertip distance (m)", False, (0.05, 0.02))),
        paper_note="none: the goal-switching reacher is this project's task (issue 6: replanning vs TOP-ERL, same "
                   "budget); top_erl = the `reach` preset on `reacher-switch`, top_erl_replan = its `reach-switch` "
                   "preset (2 equal splits)"),
    "box-dense": Suite(
        task="box-dense", seeds_per_run=4, metrics=(Metric(SUCCESS, "success rate", True, (0.5, 0.7, 0.8)),),
        paper={SUCCESS: (PaperPoint("TOP-ERL", 0.5e7, 0.70), PaperPoint("TOP-ERL", 4e7, 0.84),
                         *_baselines(_BASE_BOX_X, TCE=0.63, BBRL=0.54, gSDE=0.61, PPO=0.03, SAC=0.14, PINK=0.20,
                                     GTrXL=0.5))},
        paper_note="Fig. 4 box pushing dense; TOP-ERL ≈0.84 at the curve's end (≈4e7), 0.7 at ≈0.5e7"),
    "box-sparse": Suite(
        task="box-sparse", seeds_per_run=4, metrics=(Metric(SUCCESS, "success rate", True, (0.5, 0.7)),),
        paper={SUCCESS: (PaperPoint("TOP-ERL", 1e7, 0.70), PaperPoint("TOP-ERL", 4e7, 0.72),
                         *_baselines(_BASE_BOX_X, TCE=0.60, BBRL=0.45, gSDE=0.61, PPO=0.03, SAC=0.0, PINK=0.0,
                                     GTrXL=0.0))},
        paper_note="Fig. 4 box pushing sparse; TOP-ERL ≈0.72 at the curve's end (≈4e7), ≈0.70 by 1e7"),
    "hopper-jump": Suite(
        task="hopper-jump", seeds_per_run=4,
        metrics=(Metric("eval/max_height", "max height (m)", True, (1.5, 1.8, 1.9)),
                 Metric("eval/goal_dist", "goal distance (m)", False, (0.2, 0.1))),
        paper={"eval/max_height": (PaperPoint("TOP-ERL", 1.2e6, 1.91), PaperPoint("TOP-ERL", 3.6e6, 1.91),
                                   *_baselines(3.6e6, TCE=1.89, BBRL=1.86, gSDE=1.84, SAC=1.53, PINK=1.57,
                                               GTrXL=1.50))},
        paper_note="Fig. 4 hopper jump (max height); TOP-ERL ≈1.91 m from ≈1.2e6 on; PPO not readable; the paper "
                   "shows no goal-distance curve"),
    "metaworld-mt50": Suite(
        task="metaworld", tasks=MT50, env_prefix="metaworld-", seeds_per_run=8,
        metrics=(Metric(SUCCESS, "success rate (aggregate of 50 tasks)", True, (0.5, 0.9, 0.95)),),
        paper={SUCCESS: (PaperPoint("TOP-ERL", 0.7e7, 0.95), PaperPoint("TOP-ERL", 2.1e7, 0.985),
                         *_baselines(2.1e7, TCE=0.97, BBRL=0.91, gSDE=0.88, PPO=0.86, SAC=0.85, PINK=0.91,
                                     GTrXL=0.82))},
        paper_note="Fig. 4 Meta-World MT50 (IQM over 50 tasks × seeds); TOP-ERL ≈0.985 at the curve's end (≈2.1e7), "
                   "≈0.95 by 0.7e7"),
}

RESERVED_FLAGS = ("--task", "--seed", "--num-seeds", "--logdir", "--run-name", "--resume", "--overwrite")
TASK_FLAGS = ("--env",)  # set per task by a multi-task suite


@dataclasses.dataclass(frozen=True)
class Args:
    """Run a benchmark suite (or only aggregate its existing runs) and write CSV, table and plot."""

    suite: Literal["reach", "reach-switch", "box-dense", "box-sparse", "hopper-jump", "metaworld-mt50"] = "reach"
    """which suite: a variant preset plus its metrics and the paper's reference numbers"""
    variants: tuple[str, ...] | None = None
    """variant scripts under variants/ (same `parse_args` / `run` API as variants/top_erl.py); default: the
    suite's (top_erl; reach-switch: top_erl and top_erl_replan)"""
    tasks: tuple[str, ...] | None = None
    """a multi-task suite's tasks to train and aggregate (default: all its tasks, e.g. the 50 of metaworld-mt50)"""
    seed: int = 0
    """first seed"""
    num_seeds: int = 8
    """seeds per variant: seed … seed + num_seeds − 1 (the upstream configs use 8 repetitions)"""
    seeds_per_run: int | None = None
    """seeds vmapped into one program (the variant's --num-seeds); default: the suite's (4)"""
    logdir: str = "runs/bench"
    """root of the run directories: <logdir>/<suite>/<variant>/seeds<a>-<b>/"""
    out: str = "runs/results"
    """where the aggregated files go: <out>/bench_<suite>/ (the tables committed in results/ used --out results)"""
    aggregate_only: bool = False
    """do not train; aggregate every run directory found under <logdir>/<suite>/<variant>/"""
    reps: int = 2000
    """bootstrap replications (rliable's default is 50000; 2000 keeps the CIs' Monte-Carlo error ~1 %)"""
    confidence: float = 0.95
    """coverage of the bootstrap intervals"""
    stats_seed: int = 0
    """random state of the bootstrap (fixed, so that a re-aggregation gives the same numbers)"""
    quiet: bool = False
    """no progress lines from the variants"""
    worker_index: int | None = None
    """this process's share of the suite: runs worker_index, worker_index + num_workers, … of the run list (default:
    SLURM_PROCID under srun, else 0)"""
    num_workers: int | None = None
    """processes sharing the suite; with more than one, a worker only trains (aggregate afterwards with
    --aggregate-only) (default: SLURM_NTASKS under srun, else 1; 1 with a variant's --distributed)"""


# ---------------------------------------------------------------------------------------------------------------
# Statistics (rliable)


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of a 1-D array of per-seed scores (rliable: the 25 %-trimmed mean)."""
    from rliable import metrics

    return float(metrics.aggregate_iqm(np.asarray(scores, np.float64)))


def iqm_curve_ci(scores: np.ndarray, reps: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQM over all runs (seeds × tasks) and its stratified-bootstrap CI for every evaluation point.

    Args:
        scores: `[num_seeds, num_evals]` one task's scores, or `[num_seeds, num_tasks, num_evals]`.
    Returns:
        (iqm, lower, upper), each `[num_evals]`.
    """
    from rliable import library, metrics

    scores = np.asarray(scores, np.float64)
    if scores.ndim == 2:
        scores = scores[:, None, :]
    if scores.ndim != 3 or scores.shape[0] < 1 or scores.shape[1] < 1:
        raise ValueError("scores must be [num_seeds >= 1, num_evals] or [num_seeds >= 1, num_tasks >= 1, num_evals], "
                         f"got shape {scores.shape}")

    def func(x):  # x: [seeds, tasks, evals] (a bootstrap resample): rliable's aggregate_iqm per evaluation point,
        # i.e. scipy.stats.trim_mean(·, 0.25) of all runs, in numpy (scipy's per-call overhead dominated the bootstrap)
        x = np.sort(x.reshape(-1, x.shape[-1]), axis=0)
        cut = int(0.25 * x.shape[0])
        return x[cut:x.shape[0] - cut].mean(axis=0)

    assert np.allclose(func(scores), [metrics.aggregate_iqm(scores[..., j]) for j in range(scores.shape[-1])],
                       rtol=1e-12)

    # rliable 1.2's StratifiedBootstrap draws its resampling indices from the *global* numpy RNG
    # (`np.random.choice` in `update_indices`) and ignores `random_state`; seed the global RNG for reproducible
    # intervals and restore its state afterwards.
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():  # arch (under rliable) deprecates `random_state`; rliable 1.2 passes it
            warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
            point, ci = library.get_interval_estimates({"x": scores}, func, reps=reps,
                                                       confidence_interval_size=confidence,
                                                       random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(saved)
    return point["x"], ci["x"][0], ci["x"][1]


def final_iqm_ci(scores: np.ndarray, reps: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """(IQM, lower, upper) of `[num_seeds]` (one task) or `[num_seeds, num_tasks]` final scores."""
    p, lo, hi = iqm_curve_ci(np.asarray(scores, np.float64)[..., None], reps, confidence, seed)
    return float(p[0]), float(lo[0]), float(hi[0])


def first_reach(steps: np.ndarray, curve: np.ndarray, threshold: float, higher_is_better: bool) -> float | None:
    """Env steps of the first evaluation at which `curve` reaches `threshold` (None: never)."""
    hit = curve >= threshold if higher_is_better else curve <= threshold
    return float(steps[np.argmax(hit)]) if hit.any() else None


# ---------------------------------------------------------------------------------------------------------------
# Running


def load_variant(name: str):
    """Import variants/<name>.py (once) and check its API."""
    path = ROOT / "variants" / f"{name}.py"
    if not path.exists():
        have = sorted(p.stem for p in (ROOT / "variants").glob("*.py"))
        raise SystemExit(f"--variants: no variants/{name}.py (have: {', '.join(have)})")
    mod = importlib.import_module(f"variants.{name}")
    for attr in ("parse_args", "run"):
        if not callable(getattr(mod, attr, None)):
            raise SystemExit(f"--variants: variants/{name}.py has no `{attr}` (a variant exposes parse_args(argv) "
                             "and run(args, verbose=...))")
    return mod


def seed_groups(first: int, num: int, per_run: int) -> list[tuple[int, int]]:
    """Contiguous (first seed, count) groups: a variant's `--seed s --num-seeds n` trains s … s + n − 1."""
    return [(s, min(per_run, first + num - s)) for s in range(first, first + num, per_run)]


def machine() -> str:
    import os

    import jax

    cpu = cpu_model()
    desc = f"{cpu}, {os.cpu_count()} CPUs"
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        desc += f"; {dev.device_kind} ({dev.platform})"
    return desc


def suite_tasks(cfg: Args, suite: Suite) -> list[str | None]:
    """The tasks to run: `[None]` for a single-task suite, else `--tasks` (default all the suite's)."""
    if not suite.tasks:
        if cfg.tasks is not None:
            raise SystemExit(f"--tasks: suite {cfg.suite} has one task ({suite.task}); --tasks is for multi-task "
                             f"suites ({', '.join(k for k, v in SUITES.items() if v.tasks)})")
        return [None]
    tasks = list(cfg.tasks) if cfg.tasks is not None else list(suite.tasks)
    unknown = [t for t in tasks if t not in suite.tasks]
    if unknown or not tasks or len(set(tasks)) < len(tasks):
        raise SystemExit(f"--tasks: {'unknown ' + ', '.join(unknown) if unknown else 'give distinct task names'}; "
                         f"suite {cfg.suite} has {', '.join(suite.tasks)}")
    return tasks


def run_parent(cfg: Args, variant: str, task: str | None) -> pathlib.Path:
    """<logdir>/<suite>/<variant>[/<task>]: the parent of a variant's (and task's) seed-group run directories."""
    parent = pathlib.Path(cfg.logdir) / cfg.suite / variant
    return parent if task is None else parent / task


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a suite: a variant's seed group (on one task of a multi-task suite)."""
    variant: str
    task: str | None
    first_seed: int
    num_seeds: int

    @property
    def name(self) -> str:
        return f"seeds{self.first_seed}-{self.first_seed + self.num_seeds - 1}"

    def run_dir(self, cfg: Args) -> pathlib.Path:
        return run_parent(cfg, self.variant, self.task) / self.name

    def __str__(self) -> str:
        return f"{self.variant}{'' if self.task is None else ' ' + self.task} {self.name}"


def suite_runs(cfg: Args, suite: Suite) -> list[Run]:
    """Every run of the suite in a fixed order (variants × tasks × seed groups): the list workers split."""
    per_run = cfg.seeds_per_run or suite.seeds_per_run
    return [Run(variant, task, s0, n) for variant in cfg.variants
            for task, (s0, n) in itertools.product(suite_tasks(cfg, suite),
                                                   seed_groups(cfg.seed, cfg.num_seeds, per_run))]


def worker_share(runs: list[Run], index: int, num: int) -> list[Run]:
    """Worker `index` of `num`: runs index, index + num, … (round-robin, so tasks and seed groups mix)."""
    return runs[index::num]


def resolve_workers(cfg: Args, extra: list[str]) -> tuple[int, int, str]:
    """(worker index, number of workers, where they came from): the flags, else SLURM_PROCID / SLURM_NTASKS (srun),
    else 0 / 1. A variant's --distributed makes every process take part in every run: one worker."""
    distributed = "--distributed" in extra
    slurm = not distributed and "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ
    index, num, source = cfg.worker_index, cfg.num_workers, "--worker-index / --num-workers"
    if slurm and (index is None or num is None):
        source = "SLURM_PROCID / SLURM_NTASKS" if index is None and num is None else "flags and SLURM"
    index = index if index is not None else int(os.environ["SLURM_PROCID"]) if slurm else 0
    num = num if num is not None else int(os.environ["SLURM_NTASKS"]) if slurm else 1
    if num < 1 or not 0 <= index < num:
        raise SystemExit(f"--worker-index / --num-workers: need 0 ≤ index < num, got worker {index} of {num} "
                         f"(from {source})")
    if distributed and num > 1:
        raise SystemExit("--num-workers: with a variant's --distributed every process takes part in every run "
                         "(one run over several processes); give either, not both")
    return index, num, source


@contextlib.contextmanager
def run_lock(run_dir: pathlib.Path, who: str):
    """Hold an exclusive lock on `<run_dir>/reproduce.lock` while training it (released when the process ends,
    also when killed); a run locked by another process is an error naming it."""
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "reproduce.lock").open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            raise SystemExit(f"{run_dir} is being trained by another process ({f.read().strip() or 'unknown'}); two "
                             "processes never train one run: check --worker-index / --num-workers, or wait for the "
                             "other job") from None
        f.seek(0)
        f.truncate()
        f.write(who + "\n")
        f.flush()
        yield


def run_suite(cfg: Args, suite: Suite, extra: list[str]) -> list[dict]:
    """Train every (variant, task, seed group) of this worker's share not yet complete; one record per run."""
    reserved = RESERVED_FLAGS + (TASK_FLAGS if suite.tasks else ())
    bad = [f for f in extra if f.split("=", 1)[0] in reserved]
    if bad:
        raise SystemExit(f"{', '.join(bad)}: set by reproduce.py (use --seed / --num-seeds / --seeds-per-run / "
                         "--logdir" + (" / --tasks" if suite.tasks else "") + " of reproduce.py instead)")
    index, num, source = resolve_workers(cfg, extra)
    runs = suite_runs(cfg, suite)
    mine = worker_share(runs, index, num)
    if num > 1:
        print(f"[reproduce] worker {index} of {num} (from {source}): {len(mine)} of {len(runs)} runs: "
              + (", ".join(map(str, mine)) or "none"), flush=True)
    locked = "--distributed" not in extra  # under --distributed every process of a run shares its directory
    who = f"host {socket.gethostname()}, pid {os.getpid()}, worker {index} of {num}"
    modules = {variant: load_variant(variant) for variant in cfg.variants}
    records = []
    for run in mine:
        variant, task, s0, n = run.variant, run.task, run.first_seed, run.num_seeds
        mod = modules[variant]
        parent = run_parent(cfg, variant, task)
        name = run.name
        run_dir = parent / name
        what = f"{variant}{'' if task is None else ' ' + task} seeds {s0}…{s0 + n - 1}"
        argv = [*suite.preset_argv(variant, task), *extra, "--seed", str(s0), "--num-seeds", str(n), "--logdir",
                str(parent), "--run-name", name]
        vargs = mod.parse_args(argv)
        with run_lock(run_dir, who) if locked else contextlib.nullcontext():
            summary_path = run_dir / "summary.json"
            if (run_dir / "args.json").exists():
                diff = ckpt.flag_diff(ckpt.saved_args(run_dir / "args.json", vargs), ckpt.run_flags(vargs))
                if diff:
                    raise SystemExit(f"{run_dir} holds a run with other flags (saved vs now: {diff}); pass another "
                                     "--logdir or remove it")
            if summary_path.exists() and json.loads(summary_path.read_text())["iterations_done"] >= vargs.iterations:
                print(f"[reproduce] {what}: complete in {run_dir}, skipped")
                records.append({"variant": variant, "task": task, "run_dir": str(run_dir),
                                "status": "skipped (complete)"})
                continue
            resume = ckpt.has_checkpoint(run_dir)
            if resume:
                vargs = mod.parse_args([*argv, "--resume"])
            elif (run_dir / "args.json").exists():  # started before but never checkpointed: start it again
                vargs = mod.parse_args([*argv, "--overwrite"])
            print(f"[reproduce] {what}: {'resuming' if resume else 'training'} in "
                  f"{run_dir}: {variant}.py {shlex.join(argv)}", flush=True)
            run_dir.mkdir(parents=True, exist_ok=True)
            info = {"argv": argv, "commit": git_commit(), "started": _now(), "machine": machine()}
            (run_dir / "reproduce.json").write_text(json.dumps(info, indent=1))
            mod.run(vargs, verbose=not cfg.quiet)
            records.append({"variant": variant, "task": task, "run_dir": str(run_dir),
                            "status": "resumed" if resume else "trained"})
    return records


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------------------------------------------------------
# Collecting evaluation logs


def read_tensorboard_scalars(path: pathlib.Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of the scalars in the event files under `path` (TFRecord framing, Event protos as
    shipped by tensorboardX; CRCs are not checked, a truncated last record is ignored)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, dict[int, float]] = {}
    for f in sorted(path.glob("events.out.tfevents.*")):
        data, pos = f.read_bytes(), 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            start, end = pos + 12, pos + 12 + length
            if end + 4 > len(data):
                break
            ev = event_pb2.Event.FromString(data[start:end])
            pos = end + 4
            for v in ev.summary.value:
                if v.HasField("simple_value"):
                    out.setdefault(v.tag, {})[int(ev.step)] = float(v.simple_value)
    return out


def collect(run_dir: pathlib.Path, variant: str) -> list[dict]:
    """One record per (seed, evaluation) of a run: from summary.json, else from TensorBoard (a run in progress)."""
    rows = []
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        s = json.loads(summary_path.read_text())
        for h in s["history"]:
            for i, seed in enumerate(s["seeds"]):
                row = {"variant": variant, "seed": seed, "iteration": h["iteration"], "env_steps": h["env_steps"],
                       "wall_time": h.get("wall_time", 0.0), "source": "summary.json"}
                row.update({k: (v[i] if isinstance(v, list) else v) for k, v in h.items() if k.startswith("eval/")})
                rows.append(row)
        return rows
    args_path = run_dir / "args.json"
    if not args_path.exists():
        return rows
    a = json.loads(args_path.read_text())
    for i in range(a.get("num_seeds", 1)):
        tags = read_tensorboard_scalars(run_dir / f"seed_{i}")
        steps = sorted(set().union(*[set(v) for t, v in tags.items() if t.startswith("eval/")] or [set()]))
        for step in steps:
            row = {"variant": variant, "seed": a["seed"] + i,
                   "iteration": int(tags.get("charts/iteration", {}).get(step, 0)), "env_steps": step,
                   "wall_time": tags.get("charts/wall_time", {}).get(step, 0.0), "source": "tensorboard"}
            row.update({t: v[step] for t, v in tags.items() if t.startswith("eval/") and step in v})
            rows.append(row)
    return rows


def collect_suite(cfg: Args, suite: Suite) -> tuple[list[dict], list[str]]:
    """Records (with their "task") of every run directory of the requested variants and tasks; duplicate seeds
    keep the longest run."""
    rows, runs = [], []
    for variant, task in itertools.product(cfg.variants, suite_tasks(cfg, suite)):
        base = run_parent(cfg, variant, task)
        by_seed: dict[int, list[dict]] = {}
        for run_dir in sorted(p for p in base.glob("seeds*") if p.is_dir()):
            got = collect(run_dir, variant)
            if got:
                runs.append(str(run_dir))
            for seed in sorted({r["seed"] for r in got}):
                mine = [{**r, "task": task or suite.task} for r in got if r["seed"] == seed]
                if len(mine) > len(by_seed.get(seed, [])):
                    if seed in by_seed:
                        print(f"[reproduce] seed {seed} of {variant} {task or ''} found twice; keeping the run in "
                              f"{run_dir}")
                    by_seed[seed] = mine
        for seed in sorted(by_seed):
            rows.extend(by_seed[seed])
    return rows, runs


# ---------------------------------------------------------------------------------------------------------------
# Aggregation: CSV, table, plot


def curves(rows: list[dict], variant: str, key: str) -> tuple[np.ndarray, np.ndarray, list[int], list[str]]:
    """(env steps [E], scores [seeds, tasks, E], seeds, tasks) over the seeds that every task of `variant` has and
    the evaluation steps that every (seed, task) run has."""
    mine = [r for r in rows if r["variant"] == variant and key in r and np.isfinite(r[key])]
    tasks = list(dict.fromkeys(r["task"] for r in mine))
    if not tasks:
        return np.zeros(0), np.zeros((0, 0, 0)), [], []
    seeds = sorted(set.intersection(*[{r["seed"] for r in mine if r["task"] == t} for t in tasks]))
    per = {(s, t): {r["env_steps"]: r[key] for r in mine if r["seed"] == s and r["task"] == t}
           for s in seeds for t in tasks}
    steps = sorted(set.intersection(*[set(v) for v in per.values()])) if per else []
    scores = np.array([[[per[s, t][x] for x in steps] for t in tasks] for s in seeds]).reshape(
        len(seeds), len(tasks), len(steps))
    return np.array(steps, np.float64), scores, seeds, tasks


def write_csv(rows: list[dict], path: pathlib.Path) -> None:
    metric_cols = sorted({k for r in rows for k in r if k.startswith("eval/")})
    cols = ["variant", "task", "seed", "iteration", "env_steps", "wall_time", "source", *metric_cols]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})


def _fmt_steps(x: float | None) -> str:
    if x is None:
        return "not reached"
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.0f}"


def aggregate(cfg: Args, suite: Suite, rows: list[dict]) -> dict:
    """Per variant and metric: the IQM curve with CI, the final IQM with CI and the threshold crossings (counted
    over runs: seeds, or seeds × tasks)."""
    out = {}
    for variant in cfg.variants:
        for m in suite.metrics:
            steps, scores, seeds, tasks = curves(rows, variant, m.key)
            if not seeds or steps.size == 0:
                continue
            seen = {r["seed"] for r in rows if r["variant"] == variant and m.key in r}
            if len(seen) > len(seeds):
                print(f"[reproduce] {variant} {m.key}: aggregating seeds {seeds} (the ones every task has); seeds "
                      f"{sorted(seen - set(seeds))} miss some tasks")
            point, lo, hi = iqm_curve_ci(scores, cfg.reps, cfg.confidence, cfg.stats_seed)
            crossings = {}
            for thr in m.thresholds:
                per_run = [first_reach(steps, run, thr, m.higher_is_better) for run in scores.reshape(-1, len(steps))]
                crossings[thr] = {"iqm_env_steps": first_reach(steps, point, thr, m.higher_is_better),
                                  "runs_reaching": sum(p is not None for p in per_run)}
            out[(variant, m.key)] = {"steps": steps, "iqm": point, "lo": lo, "hi": hi, "seeds": seeds, "tasks": tasks,
                                     # the final CI from its own bootstrap of the last column (the curve's bands
                                     # resample each evaluation point separately)
                                     "final": final_iqm_ci(scores[..., -1], cfg.reps, cfg.confidence, cfg.stats_seed),
                                     "final_scores": scores[..., -1], "crossings": crossings}
    return out


def paper_reference(suite: Suite, key: str) -> str:
    pts = [p for p in suite.paper.get(key, ()) if p.method == "TOP-ERL"]
    if not pts:
        return "–"
    p = max(pts, key=lambda q: q.env_steps)
    return f"≈{p.value:g} at {_fmt_steps(p.env_steps)}"


def write_table(cfg: Args, suite: Suite, agg: dict, path: pathlib.Path, meta: dict) -> str:
    conf = round(100 * cfg.confidence)
    lines = [f"# Suite `{cfg.suite}`", "",
             (f"Aggregated by `{meta['command']}` on {meta['date']}; machine: {meta['machine']}; "
              f"commit {meta['commit']}."),
             (f"IQM over seeds with {conf} % percentile stratified-bootstrap CIs ({cfg.reps} replications, rliable). "
              f"Paper reference: {suite.paper_note or 'see specs/toperl_results.md'}."), ""]
    for run_dir, info in meta["runs"].items():
        if info:
            lines.append(f"- run `{run_dir}`: started {info.get('started', '?')} at commit {info.get('commit', '?')} "
                         f"with `{pathlib.Path(run_dir).parts[-2]}.py {shlex.join(info.get('argv', []))}`")
    if meta["runs"]:
        lines.append("")
    for m in suite.metrics:
        better = "higher is better" if m.higher_is_better else "lower is better"
        lines += [f"## {m.label} (`{m.key}`, {better})", ""]
        op = "≥" if m.higher_is_better else "≤"
        head = ["variant", "seeds × tasks" if suite.tasks else "seeds", "env steps (final)",
                f"final IQM [{conf} % CI]", "paper TOP-ERL"]
        head += [f"IQM {op} {t:g} at ({'runs' if suite.tasks else 'seeds'} reaching)" for t in m.thresholds]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for variant in cfg.variants:
            a = agg.get((variant, m.key))
            if a is None:
                lines.append(f"| {variant} | 0 | – | no runs | {paper_reference(suite, m.key)} |"
                             + " – |" * len(m.thresholds))
                continue
            f, lo, hi = a["final"]
            runs = len(a["seeds"]) * len(a["tasks"])
            cells = [variant, f"{len(a['seeds'])} × {len(a['tasks'])}" if suite.tasks else str(len(a["seeds"])),
                     _fmt_steps(a["steps"][-1]), f"{f:.3f} [{lo:.3f}, {hi:.3f}]", paper_reference(suite, m.key)]
            for t in m.thresholds:
                c = a["crossings"][t]
                cells.append(f"{_fmt_steps(c['iqm_env_steps'])} ({c['runs_reaching']}/{runs})")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        for variant in cfg.variants if suite.tasks else ():
            a = agg.get((variant, m.key))
            if a is not None:
                per_task = a["final_scores"].mean(0)
                lines += [f"{variant}, per task (final, mean over {len(a['seeds'])} seeds): "
                          + ", ".join(f"{t} {v:.2f}" for t, v in zip(a["tasks"], per_task)) + ".", ""]
    others = sorted({p.method for pts in suite.paper.values() for p in pts} - {"TOP-ERL"})
    if others:
        lines.append("Paper baselines at the end of the figure's x range (drawn as grey ticks in the plot): "
                     + "; ".join(f"{m.key}: " + ", ".join(f"{p.method} {p.value:g}" for p in suite.paper.get(m.key, ())
                                                        if p.method != "TOP-ERL")
                                 for m in suite.metrics if m.key in suite.paper) + ".")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def write_plot(cfg: Args, suite: Suite, agg: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(suite.metrics), figsize=(6.0 * len(suite.metrics), 4.2), squeeze=False)
    for ax, m in zip(axes[0], suite.metrics):
        xmax = 0.0
        for variant in cfg.variants:
            a = agg.get((variant, m.key))
            if a is None:
                continue
            runs = f"{len(a['seeds'])} seeds" + (f" × {len(a['tasks'])} tasks" if suite.tasks else "")
            line, = ax.plot(a["steps"], a["iqm"], label=f"{variant} (IQM, {runs})")
            ax.fill_between(a["steps"], a["lo"], a["hi"], color=line.get_color(), alpha=0.25, linewidth=0)
            xmax = max(xmax, float(a["steps"][-1]))
        pts = suite.paper.get(m.key, ())
        if pts:
            ours = [p for p in pts if p.method == "TOP-ERL"]
            ax.scatter([p.env_steps for p in ours], [p.value for p in ours], marker="*", s=140, color="black",
                       zorder=5, label="paper TOP-ERL (Fig. 4, by eye)")
            ax.axhline(max(ours, key=lambda p: p.env_steps).value, color="black", linestyle=":", linewidth=1)
            if any(p.method != "TOP-ERL" for p in pts):
                ax.plot([], [], marker="_", markersize=14, linestyle="none", color="grey",
                        label="paper baselines (end of their curves)")
            for p in pts:
                if p.method != "TOP-ERL":
                    ax.plot([p.env_steps], [p.value], marker="_", markersize=14, color="grey")
                    ax.annotate(p.method, (p.env_steps, p.value), xytext=(6, -3), textcoords="offset points",
                                fontsize=7, color="grey")
        ax.set_xlabel("environment steps")
        ax.set_ylabel(m.label + " (IQM)")
        ax.set_title(f"{cfg.suite}: {m.label}" + ("" if pts else " (no paper reference)"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        if m.key == SUCCESS:
            ax.set_ylim(-0.03, 1.03)
        if not pts and xmax > 0:
            ax.set_xlim(0, xmax * 1.02)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg, extra = tyro.cli(Args, args=argv, return_unknown_args=True)
    suite = SUITES[cfg.suite]
    cfg = dataclasses.replace(cfg, variants=cfg.variants or suite.variants)
    suite_tasks(cfg, suite)  # rejects a bad --tasks before anything runs
    for name, value in (("num_seeds", cfg.num_seeds), ("reps", cfg.reps), ("seeds_per_run", cfg.seeds_per_run or 1)):
        if value < 1:
            raise SystemExit(f"--{name.replace('_', '-')}: must be ≥ 1, got {value}")
    if not 0 < cfg.confidence < 1:
        raise SystemExit(f"--confidence: must be in (0, 1), got {cfg.confidence}")
    if cfg.aggregate_only and extra:
        raise SystemExit(f"--aggregate-only takes no variant flags, got {' '.join(extra)}")
    records = [] if cfg.aggregate_only else run_suite(cfg, suite, extra)
    index, num, _ = (0, 1, "") if cfg.aggregate_only else resolve_workers(cfg, extra)
    if num > 1:
        print(f"[reproduce] worker {index} of {num}: done ({len(records)} runs: "
              + (", ".join(f"{r['status']} {r['run_dir']}" for r in records) or "none") + "). Not aggregating: once "
              "every worker has finished, run reproduce.py with the same suite flags and --aggregate-only (without "
              "the variant flags)", flush=True)
        return {"out": None, "rows": [], "agg": {}, "table": None, "records": records}
    rows, runs = collect_suite(cfg, suite)
    if not rows:
        raise SystemExit(f"no evaluation logs under {pathlib.Path(cfg.logdir) / cfg.suite} for variants "
                         f"{', '.join(cfg.variants)}")
    out = pathlib.Path(cfg.out) / f"bench_{cfg.suite}"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python benchmarks/reproduce.py " + shlex.join(argv), "date": _now(), "machine": machine(),
            "commit": git_commit(), "runs": {}, "records": records}
    for r in runs:
        p = pathlib.Path(r) / "reproduce.json"
        meta["runs"][r] = json.loads(p.read_text()) if p.exists() else {}
    write_csv(rows, out / "raw.csv")
    agg = aggregate(cfg, suite, rows)
    table = write_table(cfg, suite, agg, out / "table.md", meta)
    write_plot(cfg, suite, agg, out / "curves.png")
    meta["final"] = {f"{v}|{k}": {"iqm": a["final"][0], "ci": a["final"][1:], "seeds": a["seeds"],
                                  "tasks": a["tasks"]}
                     for (v, k), a in agg.items()}
    (out / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    print(table)
    print(f"[reproduce] wrote {out / 'raw.csv'}, {out / 'table.md'}, {out / 'curves.png'}, {out / 'meta.json'}")
    return {"out": out, "rows": rows, "agg": agg, "table": table}


if __name__ == "__main__":
    main()
