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

`--trajectories push` replaces the random ProDMPs by scripted pushes (`push_plan`): the rod is lowered
into the box and driven through its wall towards the goal, so that the box moves in every episode.

Solver study (`--settings`, issue 25): the same episodes under a grid of MJX solver settings
IT,LS[,TOL[,CONE]] (iterations, ls_iterations, tolerance, cone), e.g.

    nice -n 10 python benchmarks/box_pushing_parity.py --trajectories push --episodes 24 \
        --settings 4,8 6,6 10,10 100,50 --timing-rounds 3 --json results/box_pushing_solver.json

per setting: MJX rollout steps/s on this CPU (settings interleaved, median of the rounds), compile time, and
the final box position against fancy_gym; also our MJCF in C MuJoCo under the same setting against fancy_gym,
and MJX against itself with the desired joints nudged. The task's own noise floor is fancy_gym against itself
with the desired joint positions nudged by --perturb rad (a constant random +-perturb per episode and joint),
and our MJCF in C MuJoCo (100 / 50) against itself nudged the same way. `--batch-check K` also rolls the first
K episodes out in a batch of K and compares them with the same episodes in the full batch.
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
    # "desired" in both variants; further sets "desired_<tag>" (perturbed copies) in the dense one only,
    # saved as "<tag>_Dense_<key>"
    runs = [("", "Dense", "desired"), ("", "TemporalSparse", "desired")]
    runs += [(k[len("desired_"):] + "_", "Dense", k) for k in data.files if k.startswith("desired_")]
    for prefix, variant, desired_key in runs:
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
            d.qacc_warmstart[:] = 0       # no solver warm start carried over from the previous episode
            mujoco.mj_forward(m, d)
            env._steps, env._episode_energy, env.velocity_profile = 0, 0.0, []
            r_ep, box_ep, q_ep = [], [], []
            for k in range(data[desired_key].shape[1]):
                des = data[desired_key][e, k]
                a = np.clip(KP_UP * (des[:7] - d.qpos[:7]) + KD_UP * (des[7:] - d.qvel[:7]), -1, 1)
                _, r, _, _, info = env.step(a)
                r_ep.append(r)
                box_ep.append(np.r_[d.body("box_0").xpos, d.body("box_0").xquat])
                q_ep.append(d.qpos[:7].copy())
            rewards.append(r_ep), box.append(box_ep), qpos.append(q_ep)
            infos.append([float(info[k]) for k in ("is_success", "box_goal_pos_dist", "box_goal_rot_dist",
                                                   "episode_energy")])
        res[prefix + variant] = {"rewards": np.array(rewards), "box": np.array(box), "qpos": np.array(qpos),
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
    rd, rs, box, q, energy, niter = [], [], [], [], 0.0, []
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
            niter.append(int(d.solver_niter[0]))
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
            "final": np.array(final), "solver_niter": np.array(niter)}


def push_plan(task, state, key, height: float = 0.14, overshoot: float = 0.2):
    """[T, 14] desired joint positions and velocities of a scripted push (jit-able; one episode).

    From the reset pose (tcp 0.15 m above the box centre, the rod's end inside the walls) the tcp goes
    down to `height` above the box origin (default: the rod's end ~1 cm above the box floor), offset
    sideways by U(-3, 3) cm, during steps 0-14; then it moves in a straight line along u, the direction
    to the goal turned by U(-0.3, 0.3) rad, for 3.5 cm (the free way to the inner wall) plus U(0.5, 1.0)
    times the box-goal distance (at most 0.45 m) plus `overshoot` during steps 15-84 (minimum-jerk
    timing), and holds. The overshoot is there because the TCE PD is soft (the wrist's Kp is 1-5 N m/rad):
    without it the rod stalls against the wall in half the episodes after ~5 cm; with 0.2 m the box moves
    0.14-0.57 m. Joint targets: our damped least-squares IK (`inverse_kinematics`) at 11 points of the
    line, each started from the previous solution, interpolated linearly in between; velocities are the
    exact derivatives of that path.
    """
    import jax
    import jax.numpy as jnp

    from toperl_jax.envs.box_pushing import DESIRED_ROD_QUAT

    T = task.episode_length
    n1, n2 = round(0.15 * T), round(0.85 * T)
    k_ang, k_lat, k_len = jax.random.split(key, 3)
    box, goal = state.obs[14:17], state.info["goal_pos"]
    to_goal = goal[:2] - box[:2]
    ang = jnp.arctan2(to_goal[1], to_goal[0]) + jax.random.uniform(k_ang, (), minval=-0.3, maxval=0.3)
    u = jnp.stack([jnp.cos(ang), jnp.sin(ang)])
    u_perp = jnp.stack([-u[1], u[0]])
    lateral = jax.random.uniform(k_lat, (), minval=-0.03, maxval=0.03)
    length = 0.035 + jnp.minimum(jnp.linalg.norm(to_goal) * jax.random.uniform(k_len, (), minval=0.5, maxval=1.0),
                                 0.45) + overshoot
    start = jnp.concatenate([box[:2] + lateral * u_perp, box[2:3] + height])
    knots = 10
    pts = start + jnp.linspace(0.0, 1.0, knots + 1)[:, None] * jnp.concatenate([length * u, jnp.zeros(1)])

    def ik(q, p):
        q, _ = task.inverse_kinematics(p, jnp.asarray(DESIRED_ROD_QUAT), q)
        return q, q

    q0 = state.desired_pos
    _, qs = jax.lax.scan(ik, q0, pts)                                        # [knots + 1, 7]

    def min_jerk(tau):
        tau = jnp.clip(tau, 0.0, 1.0)
        return 10 * tau ** 3 - 15 * tau ** 4 + 6 * tau ** 5, 30 * tau ** 2 - 60 * tau ** 3 + 30 * tau ** 4

    dt = task.dt
    t = task.action_times()                                                  # [T]
    t1, t2 = n1 * dt, n2 * dt
    s1, ds1 = min_jerk(t / t1)
    q_down = q0 + s1[:, None] * (qs[0] - q0)
    v_down = (ds1 / t1)[:, None] * (qs[0] - q0)
    s2, ds2 = min_jerk((t - t1) / (t2 - t1))
    i = jnp.clip(jnp.floor(s2 * knots).astype(jnp.int32), 0, knots - 1)
    frac = s2 * knots - i
    slope = knots * (qs[i + 1] - qs[i])
    q_push = qs[i] + frac[:, None] * (qs[i + 1] - qs[i])
    v_push = (ds2 / (t2 - t1))[:, None] * slope
    down = (t <= t1)[:, None]
    return jnp.concatenate([jnp.where(down, q_down, q_push), jnp.where(down, v_down, v_push)], -1)


# -- solver study ----------------------------------------------------------------------------------
def parse_setting(text: str) -> tuple[int, int, float | None, str | None]:
    """"IT,LS[,TOL[,CONE]]" -> (iterations, ls_iterations, tolerance or None, cone or None); None keeps the MJCF's."""
    parts = text.split(",")
    if not 2 <= len(parts) <= 4 or (len(parts) == 4 and parts[3] not in ("elliptic", "pyramidal")):
        raise SystemExit(f"--settings: expected IT,LS[,TOL[,elliptic|pyramidal]], got {text!r}")
    return (int(parts[0]), int(parts[1]), float(parts[2]) if len(parts) > 2 else None,
            parts[3] if len(parts) > 3 else None)


def solver_task(setting):
    """The dense box-pushing task with its MJX (and C) model's solver options replaced by `setting`."""
    import mujoco

    from toperl_jax.envs import make

    it, ls, tol, cone = setting
    task = make("box-pushing-dense")
    opt = task.mj_model.opt
    if tol is not None:
        opt.tolerance = tol
    if cone is not None:
        opt.cone = {"elliptic": mujoco.mjtCone.mjCONE_ELLIPTIC, "pyramidal": mujoco.mjtCone.mjCONE_PYRAMIDAL}[cone]
    task.set_solver(it, ls)  # also rebuilds the MJX model with the options above
    return task


def final_box_stats(a, b, box0, ret_a=None, ret_b=None) -> dict:
    """Final box poses a, b [n, 7] (pos, quat) against each other; box0 [n, 3] the start position.
    further: how much farther a's box ended from its start than b's (signed, mm)."""
    d = 1000 * np.linalg.norm(a[:, :3] - b[:, :3], axis=-1)
    further = 1000 * (np.linalg.norm(a[:, :2] - box0[:, :2], axis=-1) - np.linalg.norm(b[:, :2] - box0[:, :2], axis=-1))
    rot = 2 * np.arccos(np.minimum(np.abs(np.sum(a[:, 3:] * b[:, 3:], -1)), 1.0))
    out = {"box_pos_median_mm": float(np.median(d)), "box_pos_max_mm": float(d.max()),
           "box_pos_mean_mm": float(d.mean()), "further_median_mm": float(np.median(further)),
           "box_rot_median_rad": float(np.median(rot)), "box_pos_mm": d.round(2).tolist()}
    if ret_a is not None:
        out["return_rel_median"] = float(np.median(np.abs(ret_a - ret_b) / np.abs(ret_b)))
        out["return_rel_max"] = float(np.max(np.abs(ret_a - ret_b) / np.abs(ret_b)))
    return out


def solver_study(args, states, desired) -> None:
    """MJX speed and parity with fancy_gym per solver setting, and the noise floors (module docstring)."""
    import os
    import time

    import jax
    from mujoco import mjx

    from toperl_jax.envs.base import xla_cpu_options

    opts = xla_cpu_options()
    n, T = desired.shape[:2]
    settings = [parse_setting(x) for x in args.settings]
    labels = list(args.settings)
    rng = np.random.default_rng(args.seed)
    delta = args.perturb * rng.choice([-1.0, 1.0], size=(n, 7))
    desired_np = np.asarray(desired, np.float64)
    desired_p = desired_np.copy()
    desired_p[..., :7] += delta[:, None, :]
    box0 = np.asarray(states.obs[:, 14:17], np.float64)
    inputs = {"q0": np.asarray(states.mjx_data.qpos[:, :7], np.float64), "box_pos": box0,
              "box_quat": np.asarray(states.obs[:, 17:21], np.float64),
              "goal_pos": np.asarray(states.info["goal_pos"], np.float64),
              "goal_quat": np.asarray(states.info["goal_quat"], np.float64),
              "desired": desired_np, "desired_nudged": desired_p}
    load = [os.getloadavg()]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = pathlib.Path(tmp, "in.npz"), pathlib.Path(tmp, "out.npz")
        np.savez(inp, **inputs)
        subprocess.run([args.fancy_python, __file__, "--upstream-worker", str(inp), str(out)], check=True)
        up = dict(np.load(out))
    print(f"fancy_gym worker: {time.perf_counter() - t0:.0f} s", flush=True)
    up_final = up["Dense_box"][:, -1]
    up_ret = up["Dense_rewards"].sum(1)
    summary = {"episodes": n, "trajectories": args.trajectories, "perturb_rad": args.perturb, "seed": args.seed,
               "box_displacement_upstream_median_m": float(np.median(np.linalg.norm(up_final[:, :3] - box0, axis=-1))),
               "box_displacement_upstream_min_m": float(np.min(np.linalg.norm(up_final[:, :3] - box0, axis=-1))),
               "noise_floor_fancy_gym": final_box_stats(up["nudged_Dense_box"][:, -1], up_final, box0,
                                                        up["nudged_Dense_rewards"].sum(1), up_ret),
               "settings": {}}
    desired_p32 = jax.numpy.asarray(desired_p, jax.numpy.float32)
    compiled, starts, first_final = {}, {}, None
    for label, setting in zip(labels, settings):
        task = solver_task(setting)
        st = states
        if setting[3] is not None:
            # a cone given explicitly may change the constraint rows' shapes: the start data rebuilt as reset_to
            # builds it, from the same qpos and goal
            def rebuild(s, task=task):
                d = mjx.make_data(task.mj_model).replace(qpos=s.mjx_data.qpos, qvel=s.mjx_data.qvel,
                                                         mocap_pos=s.mjx_data.mocap_pos,
                                                         mocap_quat=s.mjx_data.mocap_quat)
                return s.replace(mjx_data=task._kinematics_and_bias(d))
            st = jax.jit(jax.vmap(rebuild), compiler_options=opts)(states)
        t0 = time.perf_counter()
        f = jax.jit(jax.vmap(task.rollout), compiler_options=opts).lower(st, desired).compile()
        compile_s = time.perf_counter() - t0
        compiled[label], starts[label] = f, st
        _, tr = jax.block_until_ready(f(st, desired))
        _, tr_p = jax.block_until_ready(f(st, desired_p32))
        final = np.asarray(tr.final_obs[:, 14:21], np.float64)
        ret = np.asarray(tr.rewards, np.float64).sum(1)
        nat = [native_rollout(task, np.asarray(states.mjx_data.qpos[e], np.float64), inputs["goal_pos"][e],
                              inputs["goal_quat"][e], desired_np[e]) for e in range(n)]
        nat_p = [native_rollout(task, np.asarray(states.mjx_data.qpos[e], np.float64), inputs["goal_pos"][e],
                                inputs["goal_quat"][e], desired_p[e]) for e in range(n)]
        nat_final = np.stack([r["box"][-1] for r in nat])
        nat_ret = np.stack([r["rewards_dense"].sum() for r in nat])
        niter = np.concatenate([r["solver_niter"] for r in nat])
        row = {"setting": {"iterations": setting[0], "ls_iterations": setting[1], "tolerance": setting[2],
                           "cone": setting[3]},
               "compile_s": compile_s,
               "mjx_vs_fancy_gym": final_box_stats(final, up_final, box0, ret, up_ret),
               "mjx_vs_mjx_nudged": final_box_stats(np.asarray(tr_p.final_obs[:, 14:21], np.float64), final, box0),
               "c_vs_fancy_gym": final_box_stats(nat_final, up_final, box0, nat_ret, up_ret),
               "c_vs_c_nudged": final_box_stats(np.stack([r["box"][-1] for r in nat_p]), nat_final, box0),
               "mjx_vs_c": final_box_stats(final, nat_final, box0, ret, nat_ret),
               "mjx_vs_mjx_first_setting": final_box_stats(final, first_final if summary["settings"] else final, box0),
               "mjx_final_box": final.round(6).tolist(),
               "c_solver_iterations_mean": float(niter.mean()),
               "c_solver_iterations_p99": float(np.percentile(niter, 99)),
               "c_solver_iterations_max": int(niter.max())}
        if args.batch_check:
            k = args.batch_check
            sub = jax.tree.map(lambda x: x[:k], st)
            fk = jax.jit(jax.vmap(task.rollout), compiler_options=opts).lower(sub, desired[:k]).compile()
            _, tr_k = jax.block_until_ready(fk(sub, desired[:k]))
            row[f"batch_{k}_vs_batch_{n}"] = final_box_stats(np.asarray(tr_k.final_obs[:, 14:21], np.float64),
                                                             final[:k], box0[:k])
            row[f"batch_{k}_vs_batch_{n}"]["obs_after_step1_max_abs_diff"] = float(
                np.abs(np.asarray(tr_k.obs[:, 1]) - np.asarray(tr.obs[:k, 1])).max())
            row[f"batch_{k}_vs_batch_{n}"]["obs_after_step5_max_abs_diff"] = float(
                np.abs(np.asarray(tr_k.obs[:, 5]) - np.asarray(tr.obs[:k, 5])).max())
        if not summary["settings"]:
            first_final = final
        summary["settings"][label] = row
        print(f"{label}: compiled in {compile_s:.0f} s; MJX vs fancy_gym "
              f"{row['mjx_vs_fancy_gym']['box_pos_median_mm']:.1f} / {row['mjx_vs_fancy_gym']['box_pos_max_mm']:.1f} mm",
              flush=True)
    load.append(os.getloadavg())
    times = {label: [] for label in labels}
    for _ in range(args.timing_rounds):
        for label in labels:
            t0 = time.perf_counter()
            jax.block_until_ready(compiled[label](starts[label], desired))
            times[label].append(time.perf_counter() - t0)
    load.append(os.getloadavg())
    for label in labels:
        r = summary["settings"][label]
        r["rollout_s"] = times[label]
        r["steps_per_s_median"] = n * T / float(np.median(times[label]))
    summary["load_average_1_5_15"] = [list(x) for x in load]
    summary["upstream_noise_note"] = ("noise floor: fancy_gym vs fancy_gym with desired joints nudged by "
                                      f"+-{args.perturb} rad")

    nf = summary["noise_floor_fancy_gym"]
    print(f"\n{n} {args.trajectories} episodes; fancy_gym box displacement median "
          f"{summary['box_displacement_upstream_median_m']:.3f} m (min {summary['box_displacement_upstream_min_m']:.3f});"
          f" load average {load[0][0]:.1f} / {load[-1][0]:.1f} (start / end)")
    print(f"noise floor, fancy_gym vs itself nudged by {args.perturb:g} rad: final box position "
          f"{nf['box_pos_median_mm']:.1f} / {nf['box_pos_max_mm']:.1f} mm (median / max), further "
          f"{nf['further_median_mm']:+.1f} mm, dense return {100 * nf['return_rel_median']:.2f} %\n")
    print(f"| IT, LS, TOL, cone | compile (s) | MJX steps/s (batch {n}) | MJX vs fancy_gym: final box (mm, median / max) "
          "| further (mm) | dense return rel. diff | MJX vs MJX nudged (mm) | C (our MJCF) vs fancy_gym (mm) "
          f"| C vs C nudged (mm) | C solver iterations (mean / p99) | MJX vs MJX {labels[0]} (mm) |"
          + (" batch K vs n (mm) |" if args.batch_check else ""))
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if args.batch_check else ""))
    for label in labels:
        r = summary["settings"][label]
        a, b, c, cc = r["mjx_vs_fancy_gym"], r["mjx_vs_mjx_nudged"], r["c_vs_fancy_gym"], r["c_vs_c_nudged"]
        line = (f"| {label} | {r['compile_s']:.0f} | {r['steps_per_s_median']:.0f} | {a['box_pos_median_mm']:.1f} / "
                f"{a['box_pos_max_mm']:.1f} | {a['further_median_mm']:+.1f} | {100 * a['return_rel_median']:.2f} % | "
                f"{b['box_pos_median_mm']:.1f} / {b['box_pos_max_mm']:.1f} | {c['box_pos_median_mm']:.1f} / "
                f"{c['box_pos_max_mm']:.1f} | {cc['box_pos_median_mm']:.1f} / {cc['box_pos_max_mm']:.1f} | "
                f"{r['c_solver_iterations_mean']:.1f} / {r['c_solver_iterations_p99']:.0f} | "
                f"{r['mjx_vs_mjx_first_setting']['box_pos_median_mm']:.1f} / "
                f"{r['mjx_vs_mjx_first_setting']['box_pos_max_mm']:.1f} |")
        if args.batch_check:
            bk = r[f"batch_{args.batch_check}_vs_batch_{n}"]
            line += f" {bk['box_pos_median_mm']:.2f} / {bk['box_pos_max_mm']:.1f} (step 1: {bk['obs_after_step1_max_abs_diff']:.1e}) |"
        print(line)
    if args.json:
        pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.json).write_text(json.dumps(summary, indent=1))
        print(f"\nwrote {args.json}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fancy-python", default="/tmp/fgvenv/bin/python",
                   help="python of a venv with fancy_gym==0.3.0 (see the module docstring)")
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the summary here")
    p.add_argument("--trajectories", choices=("prodmp", "push"), default="prodmp",
                   help="desired trajectories: ProDMPs of N(0, 1) weights, or scripted pushes (push_plan)")
    p.add_argument("--weight-scale", type=float, default=1.0,
                   help="ProDMP trajectories: weights ~ N(0, scale^2); 0 gives the zero-weight trajectory of an "
                        "untrained policy's mean (arm driven towards the absolute goal q = 0)")
    p.add_argument("--settings", nargs="+", default=None, metavar="IT,LS[,TOL[,CONE]]",
                   help="solver study: MJX solver settings to compare (e.g. 4,8 10,10,1e-8 100,50,1e-8,elliptic)")
    p.add_argument("--perturb", type=float, default=1e-4,
                   help="solver study: nudge of the desired joint positions for the noise floors (rad)")
    p.add_argument("--timing-rounds", type=int, default=3, help="solver study: interleaved timing rounds")
    p.add_argument("--batch-check", type=int, default=0, metavar="K",
                   help="solver study: also roll out the first K episodes in a batch of K (batch-size dependence)")
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
        if args.trajectories == "push":
            return s, jax.vmap(lambda s, k: push_plan(dense, s, k))(s, jax.random.split(k2, n))
        w = args.weight_scale * jax.random.normal(k2, (n, cfg.num_params))
        pos, vel = jax.vmap(lambda w, p, v: prodmp_trajectory(cfg, w, dense.action_times(), 0.0, p, v))(
            w, s.desired_pos, s.desired_vel)
        return s, jnp.concatenate([pos, vel], -1)

    plan = jax.jit(plan, compiler_options=opts)
    states, desired = plan(jax.random.PRNGKey(args.seed))
    if args.settings:
        return solver_study(args, states, desired)
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
        "return_dense_mean": {k: float(r["dense"].sum(1).mean()) for k, r in runs.items()},
        "energy_mean": {k: float(r["final"][:, 3].mean()) for k, r in runs.items()},
    }
    keys = list(summary["mjx_vs_upstream"])
    print("mean dense return / episode energy: " + ", ".join(
        f"{k} {summary['return_dense_mean'][k]:.1f} / {summary['energy_mean'][k]:.0f}" for k in runs))
    print(f"episodes: {n} ({args.trajectories}); upstream box displacement median "
          f"{summary['box_displacement_upstream_median_m']:.3f} m")
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
