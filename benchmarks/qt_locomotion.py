"""QT on the brax locomotion datasets: generate them if missing, train QT per dataset, write the table (a GPU job).

    python benchmarks/qt_locomotion.py                                   # 3 envs × medium, medium-replay, medium-expert
    python benchmarks/qt_locomotion.py --envs hopper --recipes medium-replay --num-seeds 3
    python benchmarks/qt_locomotion.py --table-only                      # re-write the table from finished runs

Datasets: `benchmarks/make_locomotion_dataset.py --env <env>` into `--dataset-dir` (skipped when its summary file
exists). QT: `variants/qt.py` with the upstream hyperparameters (its `paper` preset) and the per-dataset η, gradient
clip and context length of specs/qt.md §5 (upstream run.sh), `--num-seeds` seeds vmapped in one run per dataset,
in `<logdir>/qt_locomotion/brax-<env>-<recipe>/`. A run whose summary shows all iterations done is skipped, one
with a checkpoint is resumed. Extra QT flags after `--qt-flags=` apply to every run (e.g. "--iterations 20").

Table (`<out>/table.md`, `<out>/results.json`): the final evaluation's normalised score (dataset references of
this env: 100 (R − random) / (expert − random)) as mean ± std over seeds, next to the paper's D4RL numbers. They
are context, not a target: brax's MJX envs are not D4RL's gym envs and the behaviour agents differ.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shlex
import sys

import numpy as np
import tyro

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository root, for `benchmarks.make_locomotion_dataset`

# specs/qt.md §5 (upstream run.sh): (eta, grad clip, context length) per D4RL dataset
SETTINGS = {
    ("halfcheetah", "medium"): (5.0, 15.0, 5), ("halfcheetah", "medium-replay"): (5.0, 15.0, 5),
    ("halfcheetah", "medium-expert"): (0.4, 15.0, 20),
    ("hopper", "medium"): (1.0, 9.0, 20), ("hopper", "medium-replay"): (3.0, 9.0, 20),
    ("hopper", "medium-expert"): (1.0, 9.0, 20),
    ("walker2d", "medium"): (2.0, 5.0, 20), ("walker2d", "medium-replay"): (2.0, 5.0, 20),
    ("walker2d", "medium-expert"): (2.0, 5.0, 20),
}
# The only QT numbers the spec has (specs/qt.md §6: a third-party README quoting the paper, unverified; D4RL v2)
PAPER = {("hopper", "medium-replay"): "102.0 ± 0.2", ("walker2d", "medium-replay"): "98.5 ± 1.1"}


@dataclasses.dataclass(frozen=True)
class Args:
    envs: tuple[str, ...] = ("hopper", "walker2d", "halfcheetah")
    recipes: tuple[str, ...] = ("medium", "medium-replay", "medium-expert")
    num_seeds: int = 5
    seed: int = 123
    dataset_dir: str = "runs/datasets"
    logdir: str = "runs"
    out: str = "results/qt_locomotion"
    qt_flags: str = ""
    """extra `variants/qt.py` flags for every run, e.g. --qt-flags="--iterations 20 --num-eval-episodes 10\""""
    table_only: bool = False


def check_args(args: Args) -> None:
    bad = [(e, r) for e in args.envs for r in args.recipes if (e, r) not in SETTINGS]
    if bad or not args.envs or not args.recipes:
        raise ValueError(f"--envs/--recipes: no settings for {bad}; envs hopper, walker2d, halfcheetah; recipes "
                         "medium, medium-replay, medium-expert")
    if args.num_seeds < 1:
        raise ValueError(f"--num-seeds: must be ≥ 1, got {args.num_seeds}")


def qt_argv(args: Args, env: str, recipe: str) -> list[str]:
    eta, clip, K = SETTINGS[(env, recipe)]
    ds = pathlib.Path(args.dataset_dir) / f"brax-{env}-{recipe}-v0.hdf5"
    return ["--preset", "paper", "--dataset", str(ds), "--eta", str(eta), "--grad-norm", str(clip),
            "--context-len", str(K), "--num-seeds", str(args.num_seeds), "--seed", str(args.seed),
            "--logdir", str(pathlib.Path(args.logdir) / "qt_locomotion"), "--run-name", f"brax-{env}-{recipe}",
            *shlex.split(args.qt_flags)]


def run_all(args: Args, make_dataset=None, qt=None) -> dict:
    """Generate missing datasets, run or resume every (env, recipe), then write the table. `make_dataset(env)` and
    `qt` (a module with parse_args/run) are injectable for tests."""
    check_args(args)
    if qt is None:
        from variants import qt
    if make_dataset is None:
        from benchmarks import make_locomotion_dataset as mld
        make_dataset = lambda env: mld.main(mld.Args(env=env, out_dir=args.dataset_dir, seed=args.seed))
    if not args.table_only:
        for env in args.envs:
            if not (pathlib.Path(args.dataset_dir) / f"brax-{env}-summary.json").exists():
                make_dataset(env)
            for recipe in args.recipes:
                q = qt.parse_args(qt_argv(args, env, recipe))
                summary = q.run_dir / "summary.json"
                if summary.exists() and json.loads(summary.read_text())["iterations_done"] >= q.iterations:
                    print(f"brax-{env}-{recipe}: done, skipped")
                    continue
                resume = (q.run_dir / "checkpoints").exists()
                qt.run(dataclasses.replace(q, resume=resume))
    return write_table(args, qt)


def write_table(args: Args, qt) -> dict:
    rows, results = [], {}
    for env in args.envs:
        for recipe in args.recipes:
            q = qt.parse_args(qt_argv(args, env, recipe))
            path = q.run_dir / "summary.json"
            if not path.exists():
                rows.append(f"| brax-{env}-{recipe} | not run | {PAPER.get((env, recipe), '–')} |")
                continue
            s = json.loads(path.read_text())
            finals = np.asarray([p["final"][s["score_key"]] for p in s["per_seed"]], np.float64)
            unit = "normalised" if s["score_key"].endswith("normalized_score") else "raw return"
            results[f"brax-{env}-{recipe}"] = {"final": finals.tolist(), "score_key": s["score_key"],
                                               "iterations_done": s["iterations_done"], "eta": s["eta"]}
            rows.append(f"| brax-{env}-{recipe} | {finals.mean():.1f} ± {finals.std():.1f} ({unit}, {finals.size} "
                        f"seeds, η {s['eta']}, {s['iterations_done']} it) | {PAPER.get((env, recipe), '–')} |")
    table = ("| dataset | QT, final evaluation (mean ± std over seeds) | paper, D4RL gym (context only) |\n"
             "|---|---|---|\n" + "\n".join(rows) + "\n")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(table)
    return results


if __name__ == "__main__":
    run_all(tyro.cli(Args))
