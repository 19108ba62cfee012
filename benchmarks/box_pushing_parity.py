"""Box pushing parity: our MJX task vs fancy_gym 0.3.0's BoxPushing{Dense,TemporalSparse} (C MuJoCo,
mesh collisions) driven by the same desired trajectories from the same initial states.

fancy_gym pins mujoco 2.3.3, so it runs in its own virtual environment as a worker subprocess of
this script (fancy_gym is not a dependency of toperl_jax):

    python3 -m venv /tmp/fgvenv && /tmp/fgvenv/bin/pip install fancy_gym==0.3.0 "gymnasium[mujoco]<1.0"
    python benchmarks/box_pushing_parity.py --fancy-python /tmp/fgvenv/bin/python [--episodes 16]

Per episode: our reset (random box pose and goal, our JAX IK) gives the start state; the desired
trajectory is a ProDMP (TOP-ERL's decoder config) with weights ~ N(0, 1), started at that state.
Three simulations execute it with the same TCE PD controller:
  upstream  fancy_gym's env (its meshes, solver: Newton 100 iterations), box and goal poses and
            arm joints overwritten with ours, stepped with a = clip(Kp'(q_d - q) + Kd'(qd_d - qd), +-1);
  native    our MJCF in C MuJoCo (this venv's mujoco), the controller in numpy;
  mjx       our task (`BoxPushing.rollout`).
It reports, per pair, differences of per-step rewards (dense and sparse), box trajectories and final
metrics, plus fancy_gym's own IK from the same box poses vs ours.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

KP_UP = 0.01 * np.array([120.0, 120, 120, 120, 50, 30, 10])   # fancy_gym mp_config ProDMP(_TCE)
KD_UP = 0.01 * np.array([10.0, 10, 10, 10, 6, 5, 3])


# -- worker: runs in the fancy_gym venv (numpy, gymnasium, fancy_gym, mujoco 2.3.3 only) --------
def upstream_worker(inp: str, out: str) -> None:
    import fancy_gym  # noqa: F401  (registers the fancy/ environments)
    import gymnasium as gym
    import mujoco

    data = np.load(inp)
    res = {}
    for variant in ("Dense", "TemporalSparse"):
        env = gym.make(f"fancy/BoxPushing{variant}-v0").unwrapped
        env.reset(seed=0)
        rewards, box, qpos, infos, ik_q, ik_tcp = [], [], [], [], [], []
        for e in range(len(data["box_pos"])):
            m, d = env.model, env.data
            # fancy_gym's own IK from this box pose (its reset does the same from its sample)
            qpos0 = env.init_qpos_box_pushing.copy()
            qpos0[9:12], qpos0[12:16] = data["box_pos"][e], data["box_quat"][e]
            env.set_state(qpos0, np.zeros(15))
            q_ik = env.calculateOfflineIK(data["box_pos"][e] + np.array([0, 0, 0.15]), np.array([0, 1, 0, 0.0]))
            ik_q.append(q_ik)
            d.qpos[:7] = q_ik
            mujoco.mj_forward(m, d)
            ik_tcp.append(np.r_[d.body("tcp").xpos, d.body("tcp").xquat])
            # start state := ours
            qpos0[:7] = data["q0"][e]
            for b in (2, 3):
                m.body_pos[b], m.body_quat[b] = data["goal_pos"][e], data["goal_quat"][e]
            env.set_state(qpos0, np.zeros(15))
            mujoco.mj_forward(m, d)
            env._steps, env._episode_energy, env.velocity_profile = 0, 0.0, []
            r_ep, box_ep, q_ep = [], [], []
            for k in range(data["desired"].shape[1]):
                des = data["desired"][e, k]
                a = np.clip(KP_UP * (des[:7] - d.qpos[:7]) + KD_UP * (des[7:] - d.qvel[:7]), -1, 1)
                _, r, _, _, info = env.step(a)
                r_ep.append(r)
                box_ep.append(np.r_[d.body("box_0").xpos, d.body("box_0").xquat])
                q_ep.append(d.qpos[:7].copy())
            rewards.append(r_ep), box.append(box_ep), qpos.append(q_ep)
            infos.append([float(info[k]) for k in ("is_success", "box_goal_pos_dist", "box_goal_rot_dist",
                                                   "episode_energy")])
        res[variant] = {"rewards": np.array(rewards), "box": np.array(box), "qpos": np.array(qpos),
                            "final": np.array(infos), "ik_q": np.array(ik_q), "ik_tcp": np.array(ik_tcp)}
    np.savez(out, **{f"{v}_{k}": x for v, r in res.items() for k, x in r.items()})


# -- main: our side ------------------------------------------------------------------------------
def native_rollout(task, q0_full, goal_pos, goal_quat, desired):
    """Our MJCF in C MuJoCo with the task's controller in numpy; rewards (dense, sparse) per
    spec A7 in numpy."""
    import mujoco

    from toperl_jax.envs.box_pushing import numpy_controller

    m = task.mj_model
    d = mujoco.MjData(m)
    d.qpos[:], d.qvel[:] = q0_full, 0
    d.mocap_pos[0], d.mocap_quat[0] = goal_pos, goal_quat
    mujoco.mj_forward(m, d)
    T = desired.shape[0]
    rd, rs, box, q, energy = [], [], [], [], 0.0
    qmax = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
    qmin = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
    qdmax = np.array([2.175] * 4 + [2.61] * 3)

    def angle(a, b):
        return 2 * np.arccos(min(abs(float(a @ b)), 1.0))

    for k in range(T):
        tau, tau_cmd = numpy_controller(task, d, desired[k, :7], desired[k, 7:])
        d.ctrl[:] = tau
        for _ in range(task.frame_skip):
            mujoco.mj_step(m, d)
        mujoco.mj_forward(m, d)
        energy += float(tau_cmd @ tau_cmd)
        bp, bq = d.body("box_0").xpos.copy(), d.body("box_0").xquat.copy()
        P = (np.clip(d.qpos[:7] - qmax, 0, None).sum() + np.clip(qmin - d.qpos[:7], 0, None).sum()
             + np.clip(np.abs(d.qvel[:7]) - qdmax, 0, None).sum())
        tip = np.clip(np.linalg.norm(bp - d.site("rod_tip").xpos), 0.05, 100)
        psi = angle(d.body("push_rod").xquat, np.array([0, 1.0, 0, 0]))
        rod = psi / np.pi if psi > np.pi / 4 else 0.0
        dg, phi = np.linalg.norm(bp - goal_pos), angle(bq, goal_quat)
        base = -P - 2 * tip - rod
        rd.append(base - 3.5 * dg - phi / np.pi - 5e-4 * tau_cmd @ tau_cmd)
        end = k == T - 1
        rs.append(base - 0.02 * tau_cmd @ tau_cmd
                  + (-350 * dg - 100 * phi / np.pi - 50 * np.linalg.norm(d.qvel[:7]) if end else 0.0))
        box.append(np.r_[bp, bq])
        q.append(d.qpos[:7].copy())
    final = [float(dg < 0.05 and phi < 0.5), dg, phi, energy]
    return {"rewards_dense": np.array(rd), "rewards_sparse": np.array(rs), "box": np.array(box), "qpos": np.array(q),
                "final": np.array(final)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fancy-python", default="/tmp/fgvenv/bin/python",
                   help="python of a venv with fancy_gym==0.3.0 (see the module docstring)")
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the summary here")
    p.add_argument("--upstream-worker", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.upstream_worker:
        return upstream_worker(*args.upstream_worker)

    import jax
    import jax.numpy as jnp

    from toperl_jax.envs import make
    from toperl_jax.envs.box_pushing import xla_cpu_options
    from toperl_jax.mp import prodmp_trajectory

    dense, sparse = make("box-pushing-dense"), make("box-pushing-sparse")
    n = args.episodes
    cfg = dense.prodmp_config()
    opts = xla_cpu_options()

    def plan(key):
        k1, k2 = jax.random.split(key)
        s = jax.vmap(dense.reset)(jax.random.split(k1, n))
        w = jax.random.normal(k2, (n, cfg.num_params))
        pos, vel = jax.vmap(lambda w, p, v: prodmp_trajectory(cfg, w, dense.action_times(), 0.0, p, v))(
            w, s.desired_pos, s.desired_vel)
        return s, jnp.concatenate([pos, vel], -1)

    plan = jax.jit(plan, compiler_options=opts)
    states, desired = plan(jax.random.PRNGKey(args.seed))
    ours = {}
    for name, task in (("dense", dense), ("sparse", sparse)):
        _, tr = jax.jit(jax.vmap(task.rollout), compiler_options=opts)(states, desired)
        ours[name] = tr
    tr = ours["dense"]
    # [n, T, 7] box pose after each step: obs[k+1] for k < T-1, then final_obs
    mjx_box = np.concatenate([np.asarray(tr.obs[:, 1:, 14:21]), np.asarray(tr.final_obs[:, None, 14:21])], 1)
    mjx_q = np.concatenate([np.asarray(tr.obs[:, 1:, :7]), np.asarray(tr.final_obs[:, None, :7])], 1)
    mjx_final = np.stack([np.asarray(tr.final_metrics[k]) for k in
                          ("is_success", "box_goal_pos_dist", "box_goal_rot_dist", "episode_energy")], -1)
    inputs = {"q0": np.asarray(states.mjx_data.qpos[:, :7], np.float64),
                  "box_pos": np.asarray(states.obs[:, 14:17], np.float64),
                  "box_quat": np.asarray(states.obs[:, 17:21], np.float64),
                  "goal_pos": np.asarray(states.info["goal_pos"], np.float64),
                  "goal_quat": np.asarray(states.info["goal_quat"], np.float64),
                  "desired": np.asarray(desired, np.float64)}

    with tempfile.TemporaryDirectory() as tmp:
        inp, out = pathlib.Path(tmp, "in.npz"), pathlib.Path(tmp, "out.npz")
        np.savez(inp, **inputs)
        subprocess.run([args.fancy_python, __file__, "--upstream-worker", str(inp), str(out)], check=True)
        up = dict(np.load(out))

    nat = [native_rollout(dense, np.asarray(states.mjx_data.qpos[e], np.float64), inputs["goal_pos"][e],
                          inputs["goal_quat"][e], inputs["desired"][e]) for e in range(n)]
    runs = {
        "upstream": {"dense": up["Dense_rewards"], "sparse": up["TemporalSparse_rewards"], "box": up["Dense_box"],
                         "q": up["Dense_qpos"], "final": up["Dense_final"]},
        "native": {"dense": np.stack([r["rewards_dense"] for r in nat]),
                       "sparse": np.stack([r["rewards_sparse"] for r in nat]),
                       "box": np.stack([r["box"] for r in nat]), "q": np.stack([r["qpos"] for r in nat]),
                       "final": np.stack([r["final"] for r in nat])},
        "mjx": {"dense": np.asarray(ours["dense"].rewards), "sparse": np.asarray(ours["sparse"].rewards),
                    "box": mjx_box, "q": mjx_q, "final": mjx_final},
    }

    def stats(a, b):
        box_pos = np.linalg.norm(a["box"][..., :3] - b["box"][..., :3], axis=-1)      # [n, T]
        return {
            "reward_dense_abs_diff_first10_median": float(np.median(np.abs(a["dense"] - b["dense"])[:, :10])),
            "reward_dense_abs_diff_first10_max": float(np.abs(a["dense"] - b["dense"])[:, :10].max()),
            "reward_dense_abs_diff_median": float(np.median(np.abs(a["dense"] - b["dense"]))),
            "return_dense_rel_diff_median": float(np.median(np.abs(a["dense"].sum(1) - b["dense"].sum(1))
                                                            / np.abs(b["dense"].sum(1)))),
            "return_sparse_rel_diff_median": float(np.median(np.abs(a["sparse"].sum(1) - b["sparse"].sum(1))
                                                             / np.abs(b["sparse"].sum(1)))),
            "arm_q_abs_diff_step10_max": float(np.abs(a["q"][:, 9] - b["q"][:, 9]).max()),
            "arm_q_abs_diff_final_median": float(np.median(np.abs(a["q"][:, -1] - b["q"][:, -1]))),
            "box_pos_diff_step10_max_m": float(box_pos[:, 9].max()),
            "box_pos_diff_final_median_m": float(np.median(box_pos[:, -1])),
            "box_pos_diff_final_max_m": float(box_pos[:, -1].max()),
            "final_goal_dist_abs_diff_median_m": float(np.median(np.abs(a["final"][:, 1] - b["final"][:, 1]))),
            "final_rot_dist_abs_diff_median_rad": float(np.median(np.abs(a["final"][:, 2] - b["final"][:, 2]))),
            "final_energy_rel_diff_median": float(np.median(np.abs(a["final"][:, 3] - b["final"][:, 3])
                                                            / b["final"][:, 3])),
            "success_agreement": float(np.mean(a["final"][:, 0] == b["final"][:, 0])),
        }

    box_moved = np.linalg.norm(runs["upstream"]["box"][:, -1, :3] - inputs["box_pos"], axis=-1)
    summary = {
        "episodes": n,
        "box_displacement_upstream_median_m": float(np.median(box_moved)),
        "ik_q_abs_diff_max_rad": float(np.abs(up["Dense_ik_q"] - inputs["q0"]).max()),
        "ik_tcp_pos_diff_max_m": float(np.linalg.norm(up["Dense_ik_tcp"][:, :3] - inputs["box_pos"]
                                                      - [0, 0, 0.15], axis=-1).max()),
        "mjx_vs_upstream": stats(runs["mjx"], runs["upstream"]),
        "native_vs_upstream": stats(runs["native"], runs["upstream"]),
        "mjx_vs_native": stats(runs["mjx"], runs["native"]),
    }
    keys = list(summary["mjx_vs_upstream"])
    print(f"episodes: {n}; upstream box displacement median {summary['box_displacement_upstream_median_m']:.3f} m")
    print(f"fancy_gym IK vs ours from the same box poses: max |dq| {summary['ik_q_abs_diff_max_rad']:.2e} rad, "
          f"fancy_gym tcp error max {summary['ik_tcp_pos_diff_max_m']:.2e} m\n")
    print("| quantity | MJX vs fancy_gym | our MJCF in C MuJoCo vs fancy_gym | MJX vs our MJCF in C MuJoCo |")
    print("|---|---:|---:|---:|")
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{summary[c][k]:.3g}" for c in
                                         ("mjx_vs_upstream", "native_vs_upstream", "mjx_vs_native")) + " |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    sys.exit(main())
