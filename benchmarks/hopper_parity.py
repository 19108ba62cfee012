"""Hopper jump parity: our MJX task vs upstream fancy_gym driven with the same desired trajectories.

Upstream (`fancy/HopperJumpSparse-v0` and `fancy/HopperJump-v0` of fancy_gym 0.3.0, MuJoCo 2.3.3,
float64) runs in a virtual environment of its own, because fancy_gym pins mujoco 2.3.3:

    python3 -m venv /tmp/fgvenv_h && /tmp/fgvenv_h/bin/pip install fancy_gym==0.3.0 "gymnasium[mujoco]<1.0"
    python benchmarks/hopper_parity.py --upstream-python /tmp/fgvenv_h/bin/python [--episodes 8]

This script (in our venv) draws start states and goals with `HopperJump.sample_init`, builds desired
trajectories (one hand-made crouch-and-kick, the rest ProDMP decodes of random weights with
TOP-ERL's hopper config), rolls them out in MJX, then runs itself with `--worker` under the
upstream interpreter: there, each episode is reset, upstream's state and goal are overwritten with
ours (`set_state`, `goal`, the goal body), and every step applies the TCE PD
a = clip(1.0 (q_d - q[3:6]) + 0.1 (qd_d - qd[3:6]), -1, 1) from upstream's own qpos/qvel
before `env.step(a)`. Per-step rewards, heights, goal distances, latches (read from the env's
attributes; 0.3.0 does not put has_left_floor into info) and observations are compared.
Writes results/hopper_parity.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

LATCHES = ("init_floor_contact", "has_left_floor", "contact_with_floor")
PER_STEP = ("reward", "height", "max_height", "goal_dist", "contact_dist", "healthy_reward", *LATCHES)


# -- upstream side (runs under the fancy_gym interpreter; numpy + gymnasium + fancy_gym only) -------
def upstream_worker(inp: str, out: str) -> None:
    import fancy_gym  # noqa: F401  (registers the fancy/ namespace)
    import gymnasium as gym

    data = np.load(inp)
    qpos0, goals, desired = data["qpos0"], data["goal"], data["desired"]
    res = {}
    for env_id in ("fancy/HopperJumpSparse-v0", "fancy/HopperJump-v0"):
        env = gym.make(env_id)
        u = env.unwrapped
        rec = {k: np.zeros(desired.shape[:2]) for k in PER_STEP}
        obs_all = np.zeros(desired.shape[:2] + (16,))
        obs0 = np.zeros((len(qpos0), 16))
        for e in range(len(qpos0)):
            env.reset(seed=e)
            u.goal = goals[e].astype(np.float64).copy()
            u.model.body("goal_site_body").pos[:] = u.goal
            u.set_state(qpos0[e].astype(np.float64), np.zeros(u.model.nv))
            obs0[e] = u._get_obs()
            for t, des in enumerate(desired[e].astype(np.float64)):
                q, v = u.data.qpos, u.data.qvel
                a = np.clip(1.0 * (des[:3] - q[3:6]) + 0.1 * (des[3:] - v[3:6]), -1.0, 1.0)
                obs, r, _, _, info = env.step(a)
                obs_all[e, t] = obs
                vals = {"reward": r, "height": info["height"], "max_height": info["max_height"],
                        "goal_dist": info["goal_dist"], "contact_dist": info["contact_dist"],
                        "healthy_reward": info["healthy_reward"], "init_floor_contact": u.init_floor_contact,
                        "has_left_floor": u.has_left_floor, "contact_with_floor": u.contact_with_floor}
                for k, x in vals.items():
                    rec[k][e, t] = float(x)
        tag = "sparse" if "Sparse" in env_id else "dense"
        res.update({f"{tag}/{k}": v for k, v in rec.items()})
        res[f"{tag}/obs"], res[f"{tag}/obs0"] = obs_all, obs0
    import mujoco
    res["mujoco_version"] = np.array(mujoco.__version__)
    np.savez(out, **res)


# -- our side ------------------------------------------------------------------------------------
def make_cases(n: int, seed: int, jumps: int = 1):
    """(qpos0 [n, 6], goal [n, 3], desired [n, T, 6]): cases 0 .. jumps-1 crouch-and-kick jumps, others ProDMP.

    Case 0 holds the start pose, crouches to (-1.5, -1.5, 0.6) rad in steps 20-59 and kicks to
    (1.5, 1.5, -1.5) from step 60; cases 1 .. jumps-1 scale the crouch by U(0.6, 1) and the kick by
    U(0.7, 1) and start the crouch at step U{10 .. 29} for U{30 .. 49} steps (numpy, seeded by `seed`)."""
    import jax
    import jax.numpy as jnp

    from toperl_jax.envs import make
    from toperl_jax.mp import prodmp_trajectory

    task = make("hopper-jump-sparse")
    cfg = task.prodmp_config()
    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    qpos0, _, goal = jax.vmap(task.sample_init)(keys)
    times = task.action_times()

    def decode(key, q0):
        w = jax.random.normal(key, (cfg.num_params,))
        pos, vel = prodmp_trajectory(cfg, w, times, 0.0, q0[3:6], jnp.zeros(3))
        return jnp.concatenate([pos, vel], -1)

    desired = np.array(jax.jit(jax.vmap(decode))(jax.random.split(jax.random.PRNGKey(seed + 1), n), qpos0))
    T = task.episode_length
    rng = np.random.default_rng(seed)
    for j in range(min(jumps, n)):
        c0, c1, a, b = 20, 60, 1.0, 1.0
        if j:
            c0 = int(rng.integers(10, 30))
            c1 = c0 + int(rng.integers(30, 50))
            a, b = rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0)
        desired[j] = 0.0
        desired[j, :, :3] = np.asarray(qpos0[j, 3:6])
        desired[j, c0:c1, :3] = a * np.array([-1.5, -1.5, 0.6])
        desired[j, c1:, :3] = b * np.array([1.5, 1.5, -1.5])
    assert desired.shape == (n, T, 6)
    return np.asarray(qpos0), np.asarray(goal), desired.astype(np.float32)


def run_ours(qpos0, goal, desired):
    import jax
    import jax.numpy as jnp

    from toperl_jax.envs import make

    out = {}
    for tag in ("sparse", "dense"):
        task = make(f"hopper-jump-{tag}")

        @jax.jit
        def episode(q, g, des, task=task):
            s = task.reset_to(q, jnp.zeros(6), g)
            _, tr = task.rollout(s, des)
            return s.obs, tr

        recs = []
        for e in range(len(qpos0)):
            obs0, tr = episode(qpos0[e], goal[e], desired[e])
            m = {k: np.asarray(v) for k, v in tr.metrics.items()}
            obs = np.concatenate([np.asarray(tr.obs[1:]), np.asarray(tr.final_obs)[None]])   # obs after each step
            recs.append({"reward": np.asarray(tr.rewards), **{k: m[k] for k in PER_STEP if k != "reward"},
                         "obs": obs[:, :16], "obs0": np.asarray(obs0)[:16]})
        for k in recs[0]:
            out[f"{tag}/{k}"] = np.stack([r[k] for r in recs])
    return out


def first(x):
    x = np.asarray(x) > 0.5
    return int(np.argmax(x)) if x.any() else -1


def compare(ours, up, n):
    rows = {}
    for tag in ("sparse", "dense"):
        rows[tag] = []
        for e in range(n):
            g = lambda k, e=e, tag=tag: (ours[f"{tag}/{k}"][e], up[f"{tag}/{k}"][e])
            lat_o = [first(g(k)[0]) for k in LATCHES]
            lat_u = [first(g(k)[1]) for k in LATCHES]
            k_c = min([x for x in lat_u[:1] if x >= 0] or [250])    # first floor contact (upstream)
            ro, ru = g("reward")
            ho, hu = g("height")
            oo, ou = g("obs")
            rows[tag].append({
                "episode": e, "latches_ours": lat_o, "latches_upstream": lat_u,
                "max_abs_dheight_before_contact": float(np.abs(ho[:k_c] - hu[:k_c]).max()) if k_c else 0.0,
                "max_abs_dheight": float(np.abs(ho - hu).max()),
                "max_abs_dobs_before_contact": float(np.abs(oo[:k_c] - ou[:k_c]).max()) if k_c else 0.0,
                "obs0_max_abs_diff": float(np.abs(ours[f"{tag}/obs0"][e] - up[f"{tag}/obs0"][e]).max()),
                "max_abs_dreward_steps_lt_T": float(np.abs(ro[:-1] - ru[:-1]).max()),
                "return_ours": float(ro.sum()), "return_upstream": float(ru.sum()),
                "final_reward_ours": float(ro[-1]), "final_reward_upstream": float(ru[-1]),
                "max_height_ours": float(g("max_height")[0][-1]), "max_height_upstream": float(g("max_height")[1][-1]),
                "goal_dist_ours": float(g("goal_dist")[0][-1]), "goal_dist_upstream": float(g("goal_dist")[1][-1]),
                "contact_dist_ours": float(g("contact_dist")[0][-1]),
                "contact_dist_upstream": float(g("contact_dist")[1][-1]),
            })
    return rows


def print_tables(rows):
    for tag, rs in rows.items():
        print(f"\n### {tag}\n")
        print("| ep | latch steps ours (init, left, land) | upstream | max abs Δheight before contact / all (m) "
              "| return ours | upstream | max_height ours | upstream | goal_dist ours | upstream "
              "| contact_dist ours | upstream |")
        print("|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rs:
            print(f"| {r['episode']} | {r['latches_ours']} | {r['latches_upstream']} | "
                  f"{r['max_abs_dheight_before_contact']:.1e} / {r['max_abs_dheight']:.3f} | "
                  f"{r['return_ours']:.3f} | {r['return_upstream']:.3f} | {r['max_height_ours']:.4f} | "
                  f"{r['max_height_upstream']:.4f} | {r['goal_dist_ours']:.3f} | {r['goal_dist_upstream']:.3f} | "
                  f"{r['contact_dist_ours']:.3f} | {r['contact_dist_upstream']:.3f} |")
        same = sum(r["latches_ours"] == r["latches_upstream"] for r in rs)
        print(f"\nlatch steps identical in {same}/{len(rs)} episodes; max |Δreward| over steps < T: "
              f"{max(r['max_abs_dreward_steps_lt_T'] for r in rs):.2e}; max |Δobs| before first contact: "
              f"{max(r['max_abs_dobs_before_contact'] for r in rs):.2e}; max |Δobs_0|: "
              f"{max(r['obs0_max_abs_diff'] for r in rs):.2e}")


def run_upstream(python: str, qpos0, goal, desired) -> dict:
    """`upstream_worker` under the fancy_gym interpreter `python` on these cases: its arrays by name."""
    with tempfile.TemporaryDirectory() as tmp:
        inp, outp = f"{tmp}/in.npz", f"{tmp}/out.npz"
        np.savez(inp, qpos0=qpos0, goal=goal, desired=desired)
        subprocess.run([python, __file__, "--worker", inp, outp], check=True)
        return dict(np.load(outp))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream-python", default="/tmp/fgvenv_h/bin/python",
                   help="interpreter of a venv with fancy_gym==0.3.0 and gymnasium[mujoco]<1.0")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jumps", type=int, default=1, help="episodes 0 .. jumps-1 are scripted jumps (make_cases)")
    p.add_argument("--out", default="results/hopper_parity.json")
    p.add_argument("--worker", nargs=2, metavar=("IN_NPZ", "OUT_NPZ"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        upstream_worker(*args.worker)
        return
    qpos0, goal, desired = make_cases(args.episodes, args.seed, args.jumps)
    up = run_upstream(args.upstream_python, qpos0, goal, desired)
    ours = run_ours(qpos0, goal, desired)
    rows = compare(ours, up, args.episodes)
    print(f"upstream: fancy_gym 0.3.0, MuJoCo {up['mujoco_version']} (float64); ours: MJX float32")
    print_tables(rows)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"upstream_mujoco": str(up["mujoco_version"]), "rows": rows}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    sys.exit(main())
