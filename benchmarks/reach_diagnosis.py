"""Where a trained reach policy fails: its mean policy on many fresh episodes, split by goal radius and angle.

    python benchmarks/reach_diagnosis.py runs/reach_s0                 # a run directory of variants/top_erl.py
    python benchmarks/reach_diagnosis.py runs/reach_s0 --episodes 4096

Loads the run's flags (`args.json`) and its last checkpoint, rolls out `--episodes` fresh episodes of seed 0's
mean policy and prints: success and median final distance overall, per goal-radius band (with the median final
elbow angle against the analytic inverse kinematics of the one-way elbow), per goal-angle band, and the median
fingertip–goal distance over the episode. docs/top_erl.md ("Third tuning round") used it to find the reacher's
two failure modes (elbow branches; the arm leaving the goal at the end).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import tyro

from toperl_jax import checkpoint as ckpt

from variants import top_erl as te


@dataclasses.dataclass(frozen=True)
class Config:
    run_dir: tyro.conf.Positional[pathlib.Path]
    """a run directory of variants/top_erl.py (with args.json and checkpoints/) on the reacher"""
    episodes: int = 1024
    """fresh evaluation episodes"""
    seed: int = 7
    """PRNG seed of the evaluation episodes"""


def _saved_args(run_dir: pathlib.Path) -> te.Args:
    if not (run_dir / "args.json").is_file():
        raise SystemExit(f"{run_dir}: no args.json — not a run directory of variants/top_erl.py")
    saved = json.loads((run_dir / "args.json").read_text())
    return te.Args(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})


def diagnose(cfg: Config) -> dict:
    """Print the breakdown and return it as a dict of floats."""
    args = _saved_args(cfg.run_dir)
    if args.env != "reacher":
        raise SystemExit(f"{cfg.run_dir}: env {args.env!r}; this diagnosis is for the reacher")
    program = te.make_train(args)
    task = program.task
    state = jax.jit(jax.vmap(program.init))(jnp.stack([jax.random.PRNGKey(args.seed)]))
    if not ckpt.has_checkpoint(cfg.run_dir):
        raise SystemExit(f"{cfg.run_dir}: no checkpoint (was it run with --checkpoint-interval 0?)")
    state, meta = ckpt.restore(ckpt.manager(cfg.run_dir), state)
    params = jax.tree.map(lambda x: x[0], state.policy.params)
    episodes, _, stats = jax.jit(lambda p, k: program.rollout(p, k, cfg.episodes, True))(
        params, jax.random.PRNGKey(cfg.seed))

    obs = np.asarray(episodes.states)  # [E, T, 9]: qpos, qvel, goal / reach, fingertip / reach, t
    dist = np.asarray(stats["distance"])  # final fingertip-goal distance
    goal = obs[:, 0, 4:6] * task.reach
    r, angle = np.linalg.norm(goal, axis=1), np.arctan2(goal[:, 1], goal[:, 0])
    elbow = np.asarray(episodes.desired_pos[:, -1, 1])
    l1, l2 = 0.10, 0.11  # link lengths of reacher.xml
    elbow_ik = np.arccos(np.clip((r ** 2 - l1 ** 2 - l2 ** 2) / (2 * l1 * l2), -1.0, 1.0))
    ok = dist < task.success_radius

    out = {"iteration": min(meta["chunk"] * args.eval_interval, args.iterations), "success": float(ok.mean()),
           "median_distance": float(np.median(dist))}
    print(f"{cfg.run_dir} at iteration {out['iteration']}, {cfg.episodes} episodes: success {out['success']:.3f}, "
          f"median final distance {100 * out['median_distance']:.2f} cm")
    lo_r, hi_r = task.goal_radius_range
    for lo, hi in itertools.pairwise(np.linspace(lo_r, hi_r, 5)):
        m = (r >= lo) & (r < hi)
        out[f"success_r_{lo:.3f}"] = float(ok[m].mean())
        print(f"  goal radius {100 * lo:4.1f}-{100 * hi:4.1f} cm: success {ok[m].mean():.2f}, median distance "
              f"{100 * np.median(dist[m]):.2f} cm, final elbow {np.median(elbow[m]):+.2f} rad (IK {np.median(elbow_ik[m]):.2f})")
    lo_a, hi_a = task.goal_angle_range
    for lo, hi in itertools.pairwise(np.linspace(lo_a, hi_a, 7)):
        m = (angle >= lo) & (angle < hi)
        out[f"success_a_{np.degrees(lo):.0f}"] = float(ok[m].mean())
        print(f"  goal angle {np.degrees(lo):+4.0f}..{np.degrees(hi):+4.0f} deg: success {ok[m].mean():.2f}, "
              f"median distance {100 * np.median(dist[m]):.2f} cm")
    over_time = np.linalg.norm(obs[:, :, 6:8] - obs[:, :, 4:6], axis=-1) * task.reach
    steps = [0, 10, 20, 30, 40, obs.shape[1] - 1]
    print("  median distance (cm) at steps " + ", ".join(f"{t}: {100 * np.median(over_time[:, t]):.2f}" for t in steps)
          + f", after the last: {100 * np.median(dist):.2f}")
    return out


if __name__ == "__main__":
    diagnose(tyro.cli(Config))
