"""Ours vs the original TOP-ERL at the same settings: IQM curves with 95 % CIs, a CSV and a table (issue 24).

    python benchmarks/fidelity_curves.py --ours runs/hopper-jump-cpu_s0 \
        --upstream /path/to/upstream/runs/hopper_cpu_f5_s0 /path/to/upstream/runs/hopper_cpu_f5_s1 ... \
        --out results/hopper_jump_cpu --plot docs/fidelity_hopper_jump_cpu.png

`--ours` is a run directory of `variants/top_erl.py` (its summary.json, or its TensorBoard logs while it runs);
`--upstream` are the output folders of the original code's runs (one seed each, a `metrics.csv` with
`num_global_steps` and `evaluation_<metric>_mean` columns; docs/fidelity.md says how they were made). Curves are
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

METRICS = {"max_height": "max height (m)", "return": "episode return"}


def ours(run_dir: pathlib.Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{metric: (env_steps [E], scores [seeds, E])} over the evaluations every seed has."""
    rows = rp.collect(run_dir, "top_erl")
    seeds = sorted({r["seed"] for r in rows})
    steps = sorted(set.intersection(*[{r["env_steps"] for r in rows if r["seed"] == s} for s in seeds]))
    out = {}
    for m in METRICS:
        table = {(r["seed"], r["env_steps"]): r[f"eval/{m}"] for r in rows}
        out[m] = np.asarray(steps, float), np.array([[table[s, x] for x in steps] for s in seeds])
    return out


def upstream(dirs: list[pathlib.Path]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    runs = []
    for d in dirs:
        with open(d / "metrics.csv") as f:
            runs.append(list(csv.DictReader(f)))
    n = min(len(r) for r in runs)
    steps = np.asarray([float(r["num_global_steps"]) for r in runs[0][:n]])
    return {m: (steps, np.array([[float(row[f"evaluation_{'episode_reward' if m == 'return' else m}_mean"])
                                  for row in r[:n]] for r in runs])) for m in METRICS}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ours", type=pathlib.Path, required=True)
    p.add_argument("--upstream", type=pathlib.Path, nargs="+", required=True)
    p.add_argument("--out", type=pathlib.Path, required=True)
    p.add_argument("--plot", type=pathlib.Path, required=True)
    a = p.parse_args()
    sides = {"ours": ours(a.ours), "original": upstream(a.upstream)}
    a.out.mkdir(parents=True, exist_ok=True)
    lines = []
    for side, curves in sides.items():
        with open(a.out / f"{side}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["env_steps", "seed_index", *METRICS])
            steps = curves["max_height"][0]
            for j, x in enumerate(steps):
                for s in range(curves["max_height"][1].shape[0]):
                    w.writerow([int(x), s, *(f"{curves[m][1][s, j]:.6f}" for m in METRICS)])
        for m, (steps, scores) in curves.items():
            iqm, lo, hi = rp.iqm_curve_ci(scores)
            curves[m] = (steps, scores, iqm, lo, hi)
        lines.append(f"\n{side} ({curves['max_height'][1].shape[0]} seeds)\n")
        lines.append("| env steps | max height IQM [95 % CI] | return IQM [95 % CI] |\n|---:|---|---|")
        for j, x in enumerate(curves["max_height"][0]):
            mh, rt = curves["max_height"], curves["return"]
            lines.append(f"| {int(x):,} | {mh[2][j]:.4f} [{mh[3][j]:.4f}, {mh[4][j]:.4f}] | "
                         f"{rt[2][j]:.2f} [{rt[3][j]:.2f}, {rt[4][j]:.2f}] |")
    table = "\n".join(lines) + "\n"
    (a.out / "table.md").write_text(table)
    print(table)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(12, 4.2))
    for ax, (m, label) in zip(axes, METRICS.items()):
        for side, curves in sides.items():
            steps, scores, iqm, lo, hi = curves[m]
            line, = ax.plot(steps, iqm, label=f"{side} (IQM, {scores.shape[0]} seeds)")
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.25, linewidth=0)
        if m == "max_height":
            ax.axhline(1.5, color="grey", linestyle=":", linewidth=1, label="drop height")
        ax.set_xlabel("environment steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.plot, dpi=110)
    print(f"wrote {a.out}/ours.csv, original.csv, table.md and {a.plot}")


if __name__ == "__main__":
    main()
