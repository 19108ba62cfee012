"""Writing a D4RL-style dataset family (random, medium, medium-replay, expert, medium-expert) with its reference
returns, shared by `benchmarks/make_dataset.py` (MJX tasks) and `benchmarks/make_locomotion_dataset.py` (brax).

    summary = recipes.write(out_dir, "reacher", columns, ("random", "medium"), meta={...}, info={...})
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np

from toperl_jax.cli import UsageError
from toperl_jax.offline.dataset import FIELDS, TrajectoryDataset, normalized_score, references_usable
from toperl_jax.offline.formats import save_d4rl_hdf5

RECIPES = ("random", "medium", "medium-replay", "expert", "medium-expert")


def check_recipes(recipes) -> None:
    bad = [r for r in recipes if r not in RECIPES]
    if bad or not recipes:
        raise UsageError(f"--recipes: unknown recipe(s) {bad}; accepted: {', '.join(RECIPES)}")


def medium_expert(columns: dict[str, dict]) -> dict[str, np.ndarray]:
    """D4RL's medium-expert: the medium episodes followed by the expert ones."""
    return {f: np.concatenate([columns["medium"][f], columns["expert"][f]]) for f in FIELDS}


def write(out_dir: str | pathlib.Path, env: str, columns: dict[str, dict], recipes, meta: dict, info: dict) -> dict:
    """Write `<out_dir>/<env>-<recipe>-v0.hdf5` for each recipe; return the summary (`write_summary` saves it).

    columns: {recipe: flat D4RL columns}, including "random" and "expert" (the references):
    ref_min_score = mean random return, ref_max_score = mean expert return. scale = the power of ten below the
    largest |return| (upstream: hopper 3600 → 1000); env_targets = [best episode return, midpoint of the
    references]. `meta` is stored in every file's attributes, `info` in the summary."""
    datasets = {r: TrajectoryDataset(**c, source=r) for r, c in columns.items()}
    ref_min = float(datasets["random"].episode_returns().mean())
    ref_max = float(datasets["expert"].episode_returns().mean())
    if not references_usable(ref_min, ref_max):
        print(f"WARNING: the expert's mean return {ref_max:.3f} is not above the random one {ref_min:.3f}: the behaviour "
              "agent is not trained enough, and normalised scores on these files are meaningless")
    best = max(float(d.episode_returns().max()) for d in datasets.values())
    scale = 10.0 ** math.floor(math.log10(max(abs(best), abs(ref_min), 1e-3)))
    targets = [round(best, 3), round(0.5 * (ref_min + ref_max), 3)]
    refs = {"ref_min_score": ref_min, "ref_max_score": ref_max, "scale": scale, "env_targets": targets}
    summary = {"env": env, **refs, **info, "datasets": {}}
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for recipe in recipes:
        d = datasets[recipe]
        path = save_d4rl_hdf5(out / f"{env}-{recipe}-v0.hdf5", d, {"env": env, "recipe": recipe, **refs, **meta})
        s = d.summary()
        s["normalized_return_mean"] = float(normalized_score(s["return_mean"], ref_min, ref_max))
        summary["datasets"][recipe] = {"path": str(path), **s}
        print(f"wrote {path}: {s['episodes']} episodes, {s['steps']} steps, return {s['return_mean']:.3f} ± "
              f"{s['return_std']:.3f} (normalised {s['normalized_return_mean']:.1f})")
    return summary


def write_summary(out_dir: str | pathlib.Path, summary: dict) -> pathlib.Path:
    path = pathlib.Path(out_dir) / f"{summary['env']}-summary.json"
    path.write_text(json.dumps(summary, indent=1))
    return path
