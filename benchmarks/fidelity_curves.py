"""Ours vs the original TOP-ERL at the same settings: IQM curves with 95 % CIs, a CSV and a table (issue 24).

    python benchmarks/fidelity_curves.py [--task hopper|box] --ours runs/hopper-jump-cpu_s0 [more run dirs] \
        --upstream /path/to/upstream/runs/hopper_e1_s0 /path/to/upstream/runs/hopper_e1_s1 ... \
        --out results/hopper_jump_cpu --plot docs/fidelity_hopper_jump_cpu.png

`--ours` are run directories of `variants/top_erl.py` (their summary.json, or their TensorBoard logs while they
run; the seeds of all of them are pooled);
`--upstream` are the output folders of the original code's runs (one seed each, a `metrics.csv` with
`num_global_steps` and `evaluation_<metric>_mean` columns; docs/fidelity.md says how they were made).
Either side also takes the ours.csv / original.csv of an earlier call (results/), so a side whose runs are gone can
be redrawn or pooled with new seeds (e.g. `--ours results/hopper_jump_e1/ours.csv runs/seeds1-3`). Curves are
compared against env steps (both count the buffer warm-up). Seeds are aligned on the evaluation points every seed
of a side has reached.
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script: the repository root
from benchmarks import reproduce as rp  # noqa: E402

# Per task: {our metric: (the original's metrics.csv column, plot label)}; the first one labels the table's rows.
METRICS = {
    "hopper": {"max_height": ("evaluation_max_height_mean", "max height (m)"),
               "return": ("evaluation_episode_reward_mean", "episode return")},
    "box": {"return": ("evaluation_episode_reward_mean", "episode return"),
            "box_goal_pos_dist": ("evaluation_box_goal_pos_dist_mean", "box-to-goal distance (m)"),
            "is_success": ("evaluation_is_success_mean", "success rate")},
}
REFERENCE_LINES = {"max_height": (1.5, "drop height")}
DIGITS = {"return": 2}  # decimals in the table (4 otherwise: the drop height is 1.4997 m)


def read_csv(path: pathlib.Path, metrics: dict) -> list[dict]:
    """Rows {seed, env_steps, metric...} of a CSV this script wrote (its ours.csv or original.csv), so that a side
    can be redrawn, or pooled with new runs, after its run directories are gone."""
    with open(path) as f:
        got = list(csv.DictReader(f))
    missing = [m for m in metrics if got and m not in got[0]]
    if not got or missing:
        raise SystemExit(f"{path}: no rows, or no column(s) {missing}")
    key = "seed" if "seed" in got[0] else "seed_index"  # earlier CSVs numbered the seeds of a side from 0
    return [{"seed": int(r[key]), "env_steps": float(r["env_steps"]), **{m: float(r[m]) for m in metrics}}
            for r in got]


def align(rows: list[dict], metrics: dict) -> tuple[list[int], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(seeds, {metric: (env_steps [E], scores [seeds, E])}) over the evaluations every seed has."""
    seeds = sorted({r["seed"] for r in rows})
    steps = sorted(set.intersection(*[{r["env_steps"] for r in rows if r["seed"] == s} for s in seeds]))
    out = {}
    for m in metrics:
        table = {(r["seed"], r["env_steps"]): r[m] for r in rows}
        out[m] = np.asarray(steps, float), np.array([[table[s, x] for x in steps] for s in seeds])
    return seeds, out


def read_side(sources: list[pathlib.Path], metrics: dict, flag: str, read_run) -> list[dict]:
    """The rows {seed, env_steps, metric...} of one side: `read_run(folder, position)` for a run folder, `read_csv`
    for a CSV of this script; a seed found in two sources is an error."""
    rows: list[dict] = []
    for i, d in enumerate(sources):
        got = read_csv(d, metrics) if d.suffix == ".csv" else read_run(d, i)
        clash = {r["seed"] for r in got} & {r["seed"] for r in rows}
        if clash:
            raise SystemExit(f"{flag}: seed(s) {sorted(clash)} appear in more than one run directory or CSV")
        rows += got
    return rows


def ours(sources: list[pathlib.Path], metrics: dict) -> list[dict]:
    """Rows of our runs: run directories of `variants/top_erl.py` (the seeds of all of them are pooled, e.g. seed 0
    alone and seeds 1-3 vmapped) or CSVs of this script."""

    def read_run(d: pathlib.Path, _: int) -> list[dict]:
        rows = rp.collect(d, "top_erl")
        if not rows:
            raise SystemExit(f"--ours: no evaluations in {d}")
        return [{"seed": r["seed"], "env_steps": float(r["env_steps"]), **{m: r[f"eval/{m}"] for m in metrics}}
                for r in rows]

    return read_side(sources, metrics, "--ours", read_run)


def upstream(sources: list[pathlib.Path], metrics: dict) -> list[dict]:
    """Rows of the original's runs: output folders (one seed each, numbered in the order given) or CSVs of this
    script."""

    def read_run(d: pathlib.Path, i: int) -> list[dict]:
        with open(d / "metrics.csv") as f:  # one row per iteration; the evaluation's cells are empty in most
            return [{"seed": i, "env_steps": float(r["num_global_steps"]),
                     **{m: float(r[col]) for m, (col, _) in metrics.items()}} for r in csv.DictReader(f)
                    if r["num_global_steps"] and all(r[col] for col, _ in metrics.values())]

    return read_side(sources, metrics, "--upstream", read_run)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=sorted(METRICS), default="hopper", help="which metrics to compare")
    p.add_argument("--ours", type=pathlib.Path, nargs="+", required=True,
                   help="our run directories or ours.csv files of earlier calls (seeds pooled)")
    p.add_argument("--upstream", type=pathlib.Path, nargs="+", required=True,
                   help="the original's run folders or original.csv files of earlier calls")
    p.add_argument("--out", type=pathlib.Path, required=True)
    p.add_argument("--plot", type=pathlib.Path, required=True)
    a = p.parse_args(argv)
    metrics = METRICS[a.task]
    seeds, sides = {}, {}
    for name, rows in (("ours", ours(a.ours, metrics)), ("original", upstream(a.upstream, metrics))):
        seeds[name], sides[name] = align(rows, metrics)
    a.out.mkdir(parents=True, exist_ok=True)
    lines = []
    for side, curves in sides.items():
        steps, first = curves[next(iter(metrics))]
        with open(a.out / f"{side}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["env_steps", "seed", *metrics])
            for j, x in enumerate(steps):
                for s, seed in enumerate(seeds[side]):
                    w.writerow([int(x), seed, *(f"{curves[m][1][s, j]:.6f}" for m in metrics)])
        for m, (steps, scores) in curves.items():
            curves[m] = (steps, scores, *rp.iqm_curve_ci(scores))
        lines.append(f"\n{side} ({first.shape[0]} seeds)\n")
        lines.append("| env steps | " + " | ".join(f"{metrics[m][1]} IQM [95 % CI]" for m in metrics) + " |")
        lines.append("|---:|" + "---|" * len(metrics))
        for j, x in enumerate(steps):
            cells = ["{0:.{3}f} [{1:.{3}f}, {2:.{3}f}]".format(*(curves[m][k][j] for k in (2, 3, 4)), DIGITS.get(m, 4))
                     for m in metrics]
            lines.append(f"| {int(x):,} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    (a.out / "table.md").write_text(table)
    print(table)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.2), squeeze=False)
    for ax, (m, (_, label)) in zip(axes[0], metrics.items()):
        for side, curves in sides.items():
            steps, scores, iqm, lo, hi = curves[m]
            line, = ax.plot(steps, iqm, label=f"{side} (IQM, {scores.shape[0]} seeds)")
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.25, linewidth=0)
        if m in REFERENCE_LINES:
            y, what = REFERENCE_LINES[m]
            ax.axhline(y, color="grey", linestyle=":", linewidth=1, label=what)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.plot, dpi=110)
    print(f"wrote {a.out}/ours.csv, original.csv, table.md and {a.plot}")


if __name__ == "__main__":
    main()
