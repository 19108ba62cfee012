"""Checks behind benchmarks/make_dataset.py's medium-replay re-simulation on hopper jump (docs/qt.md, "Hopper jump
datasets").

    python benchmarks/hopper_resimulation.py            # ~8 min on a 2-core CPU, mostly two XLA compiles

16 hopper episodes are driven by `offline.actions.record_desired` towards random joint targets (ramped in over
60 steps, so the hopper falls and lands). Printed:
- the start state rebuilt from the first observation (`start_from_obs`) against the true reset state;
- the returns of the same 16 episodes re-run from the rebuilt start states;
- the returns of the same episodes run in a batch of 160 (10 copies) instead of 16, i.e. the re-simulation's
  batch size against a training rollout's, and the first step at which their observations differ by > 1e-3.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from toperl_jax import envs
from toperl_jax.offline import actions as offline_actions


def main(n: int = 16, copies: int = 10, seed: int = 1) -> dict:
    task = envs.make("hopper-jump-sparse")
    T, dof = task.episode_length, task.num_dof
    start = jax.vmap(task.reset)(jax.random.split(jax.random.PRNGKey(seed), n))
    target = jax.random.uniform(jax.random.PRNGKey(seed + 1), (n, 1, dof), minval=-1.0, maxval=1.0)
    ramp = jnp.clip(jnp.arange(T) / 60.0, 0.0, 1.0)[None, :, None]
    pos = start.desired_pos[:, None, :] * (1.0 - ramp) + target * ramp
    desired = jnp.concatenate([pos, jnp.zeros_like(pos)], -1)  # [n, T, 2 dof]

    opts = task.compiler_options()
    run = jax.jit(jax.vmap(lambda s, d: offline_actions.record_desired(task, s, d)), compiler_options=opts)
    rebuild = jax.jit(jax.vmap(lambda o: offline_actions.start_from_obs(task, o)), compiler_options=opts)
    ret = lambda rec: np.asarray(rec.rewards).sum(-1)
    tile = lambda x: jnp.concatenate([x] * copies, 0)

    small = run(start, desired)
    big = run(jax.tree.map(tile, start), tile(desired))
    rebuilt = rebuild(start.obs)
    again = run(rebuilt, desired)
    obs_gap = np.abs(np.asarray(big.obs[:n]) - np.asarray(small.obs)).max(axis=(0, 2))  # [T]
    out = {
        "returns": np.round(ret(small), 3).tolist(),
        "rebuilt_start_max_diff": {name: float(jnp.max(jnp.abs(a - b))) for name, a, b in (
            ("qpos", rebuilt.mjx_data.qpos, start.mjx_data.qpos), ("qvel", rebuilt.mjx_data.qvel, start.mjx_data.qvel),
            ("obs", rebuilt.obs, start.obs))},
        "rebuilt_start_max_return_diff": float(np.abs(ret(again) - ret(small)).max()),
        f"batch_{n * copies}_vs_{n}_max_return_diff": float(np.abs(ret(big).reshape(copies, n) - ret(small)).max()),
        "first_step_obs_diff_above_1e-3": int(np.argmax(obs_gap > 1e-3)) if (obs_gap > 1e-3).any() else None,
    }
    for k, v in out.items():
        print(f"{k}: {v}")
    return out


if __name__ == "__main__":
    main()
