"""variants/top_erl.py: flags and presets, exact resume, seeds under vmap, and learning on the reach task."""

import dataclasses
import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from toperl_jax import flags, runner
from variants import top_erl as te

# A tiny configuration: every part of an iteration runs (critic from iteration 1, policy from 2), 2 chunks.
TINY = te.Args(iterations=4, eval_interval=2, num_envs=4, batch_size=8, epochs_critic=2, epochs_policy=1,
               critic_update_from=1, policy_update_from=2, buffer_size=16, n_embd=16, n_head=2, n_layer=1,
               policy_hidden_sizes=(16,), num_eval_episodes=4, micro_batch=4)


def _eval_history(summary, seed_index=0):
    return [{n: v[seed_index] for n, v in h.items() if n.startswith("eval/")} for h in summary["history"]]


def _params(summary, seed_index=0):
    return jax.tree.map(lambda x: np.asarray(x[seed_index]), (summary["state"].policy.params,
                                                              summary["state"].critic.params))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    args = dataclasses.replace(TINY, logdir=str(tmp_path_factory.mktemp("runs")), run_name="full")
    return te.run(args, verbose=False)


def test_presets_reproduce_upstream_configs():
    """Values from the upstream YAMLs (mprl/config/*/seq/entire/shared_*.yaml and slurm_*.yaml)."""
    box, sparse, hop = te.PRESETS["box-dense"], te.PRESETS["box-sparse"], te.PRESETS["hopper-jump"]
    for p in (box, sparse):
        assert (p.lr_policy, p.lr_critic, p.wd_policy, p.wd_critic) == (3e-4, 5e-5, 1e-5, 1e-5)
        assert (p.epochs_policy, p.epochs_critic, p.batch_size) == (15, 30, 512)
        assert (p.critic_update_from, p.policy_update_from, p.iterations, p.num_envs) == (300, 2000, 35000, 4)
        assert (p.num_basis, p.tau, p.weights_scale, p.goal_scale, p.basis_bandwidth_factor) == (8, 2.0, .3, .3, 3)
        assert (p.cov_bound, p.entropy_schedule, p.target_entropy, p.temperature) == (5e-4, "linear", 0.0, 0.7)
        assert (p.policy_hidden_sizes, p.min_std, p.n_embd, p.n_layer, p.n_head) == ((256, 256), 1e-5, 128, 2, 8)
        assert (p.dropout, p.use_layer_norm, p.relative_pos, p.double_critic) == (0.0, True, False, False)
        assert (p.old_policy_rate, p.critic_tau, p.entropy_eq, p.discount) == (0.005, 0.005, False, 1.0)
        assert (p.eval_interval, p.num_eval_episodes, p.random_init) == (100, 152, True)
    for p in (box, sparse, hop, te.PRESETS["metaworld"]):
        assert not p.anneal_lr_policy  # not an upstream option; only the reach preset anneals
    assert (box.mean_bound, box.buffer_size, box.env) == (0.05, 5000, "box-pushing-dense")
    assert (sparse.mean_bound, sparse.buffer_size, sparse.env) == (0.005, 7000, "box-pushing-sparse")
    assert (hop.lr_policy, hop.lr_critic, hop.wd_policy, hop.wd_critic) == (1e-4, 1e-4, 5e-5, 5e-5)
    assert (hop.epochs_policy, hop.epochs_critic, hop.batch_size, hop.buffer_size) == (10, 20, 256, 1000)
    assert (hop.critic_update_from, hop.policy_update_from, hop.iterations, hop.num_envs) == (1, 250, 15000, 1)
    assert (hop.num_basis, hop.tau, hop.weights_scale, hop.min_std, hop.policy_hidden_sizes) == (3, .8, 1, 1e-4,
                                                                                               (128, 128))
    assert (hop.mean_bound, hop.cov_bound, hop.entropy_schedule, hop.old_policy_rate) == (0.1, 0.02, "none", 0.005)
    assert hop.reward_redistribution and hop.env == "hopper-jump-sparse"
    for p in (box, sparse, hop):
        assert p.traj_downsample_factor == 1
    # upstream's multi-processing agent (the README's entry point) fills the buffer to a batch before iteration 1
    assert box.buffer_warmup and sparse.buffer_warmup and hop.buffer_warmup and te.PRESETS["metaworld"].buffer_warmup
    assert not te.PRESETS["reach"].buffer_warmup
    # the CPU-scale hopper changes budgets only and keeps the paper's update ratio (docs/fidelity.md)
    cpu = te.PRESETS["hopper-jump-cpu"]
    budgets = {"task", "iterations", "batch_size", "n_embd", "traj_downsample_factor", "eval_interval",
               "num_eval_episodes"}
    speed = {"token_buckets"}  # the learner's passes in 3 token budgets: the same values, less time (docs/critic.md)
    assert {f.name for f in dataclasses.fields(te.Args) if getattr(cpu, f.name) != getattr(hop, f.name)} == (budgets
                                                                                                   | speed)
    assert (cpu.num_envs, cpu.epochs_critic, cpu.epochs_policy, cpu.policy_update_from) == (1, 20, 10, 250)
    # the CPU-scale box: the same budgets plus an earlier start of the updates; the per-iteration ratio stays
    cpu_box = te.PRESETS["box-dense-cpu"]
    changed = {f.name for f in dataclasses.fields(te.Args) if getattr(cpu_box, f.name) != getattr(box, f.name)}
    assert changed == budgets | {"critic_update_from", "policy_update_from"}
    assert (cpu_box.num_envs, cpu_box.epochs_critic, cpu_box.epochs_policy, cpu_box.env) == (4, 30, 15,
                                                                                            "box-pushing-dense")
    # Upstream mprl/config/metaworld/seq/entire/{shared,slurm}_meta.yaml
    mw = te.PRESETS["metaworld"]
    assert (mw.task, mw.env, mw.traj_downsample_factor, mw.iterations, mw.num_envs) == (
        "metaworld", "metaworld-reach", 5, 25000, 2)
    assert (mw.lr_policy, mw.lr_critic, mw.wd_policy, mw.wd_critic) == (1e-3, 5e-5, 1e-5, 1e-5)
    assert (mw.epochs_policy, mw.epochs_critic, mw.batch_size, mw.buffer_size) == (15, 50, 256, 3000)
    assert (mw.critic_update_from, mw.policy_update_from) == (1, 200)
    assert (mw.num_basis, mw.tau, mw.alpha_phase, mw.alpha, mw.basis_bandwidth_factor, mw.num_basis_outside) == (
        8, 5.0, 3.0, 10.0, 5.0, 0)
    assert (mw.weights_scale, mw.goal_scale, mw.auto_scale_basis, mw.relative_goal, mw.disable_goal) == (
        0.1, 0.1, True, True, False)
    assert (mw.policy_hidden_sizes, mw.min_std, mw.contextual_cov) == ((128, 128), 1e-5, False)
    assert (mw.n_embd, mw.n_layer, mw.n_head, mw.block_size, mw.dropout, mw.use_layer_norm) == (
        128, 2, 8, 1024, 0.0, True)
    assert (mw.relative_pos, mw.double_critic, mw.critic_tau, mw.discount) == (False, False, 0.005, 1.0)
    assert (mw.mean_bound, mw.cov_bound, mw.trust_region_coeff, mw.projection) == (0.005, 5e-4, 1.0, True)
    assert (mw.entropy_schedule, mw.target_entropy, mw.entropy_eq, mw.entropy_first) == ("none", 0.0, False, False)
    assert (mw.old_policy_rate, mw.eval_interval, mw.num_eval_episodes) == (0.005, 100, 152)
    assert not mw.reward_redistribution and mw.max_num_segments == 25


def test_metaworld_preset_learner_matches_the_task():
    """The preset's ProDMP is the Meta-World tasks' `prodmp_config()`; the learner sees 500 / 5 = 100 steps of
    5 × 0.0125 s (builds the MuJoCo model of metaworld-reach, no compilation)."""
    from toperl_jax import envs

    args = te.PRESETS["metaworld"]
    task = envs.make(args.env)
    flags.check_args(args, task)
    learner = te.make_learner(args, task)
    assert learner.mp == task.prodmp_config()
    assert (task.episode_length, learner.T) == (500, 100)
    assert learner.dt == pytest.approx(0.0625) and task.dt == pytest.approx(0.0125)
    assert learner.micro_batch in (None, 16)


def test_parse_args_preset_then_overrides():
    args = te.parse_args(["--task", "box-sparse", "--batch-size", "256", "--no-projection", "--segment-length", "25"])
    assert args == dataclasses.replace(te.PRESETS["box-sparse"], batch_size=256, projection=False, segment_length=25)
    assert te.parse_args([]) == te.PRESETS["reach"] == te.Args()
    with pytest.raises(SystemExit):
        te.parse_args(["--task", "box-dens"])
    mw = te.parse_args(["--task", "metaworld", "--env", "metaworld-push"])
    assert mw == dataclasses.replace(te.PRESETS["metaworld"], env="metaworld-push")
    assert mw.run_dir.name == "metaworld-push_s0" and te.PRESETS["box-dense"].run_dir.name == "box-dense_s0"
    assert te.parse_args(["--task=metaworld"]).env == "metaworld-reach"


@pytest.mark.parametrize("change, flag", [
    ({"env": "box_pushing_typo"}, "unknown task"),
    ({"batch_size": 9000}, "--batch-size"),
    ({"num_envs": 9000}, "--num-envs"),
    ({"policy_update_from": 600}, "--policy-update-from"),
    ({"critic_update_from": 30, "policy_update_from": 20}, "--policy-update-from"),
    ({"segment_length": 9}, "--segment-length"),
    ({"micro_batch": 7}, "--micro-batch"),
    ({"n_embd": 30}, "--n-embd"),
    ({"buffer_warmup": True, "batch_size": 64, "num_envs": 48, "buffer_size": 64}, "--buffer-warmup"),  # 96 > 64
    ({"lr_policy": 0.0}, "--lr-policy: must be > 0"),
    ({"lr_critic": -1e-3}, "--lr-critic: must be > 0"),
    ({"old_policy_rate": 0.0}, "--old-policy-rate: must be in"),
    ({"critic_tau": 1.5}, "--critic-tau: must be in"),
    ({"cov_bound": 0.0}, "--cov-bound: must be > 0"),
    ({"wd_critic": -1e-5}, "--wd-critic: must be ≥ 0"),
    ({"traj_downsample_factor": 3}, "--traj-downsample-factor"),  # does not divide the reacher's T = 50
    ({"traj_downsample_factor": 0}, "--traj-downsample-factor"),
    ({"traj_downsample_factor": 25, "max_num_segments": 25}, "--max-num-segments"),  # learner T = 2
    ({"task": "metaworld", "env": "reacher"}, "--env: the metaworld preset needs a Meta-World task"),
    ({"task": "metaworld", "env": "metaworld-rech"}, "--env: unknown task"),
])
def test_bad_flags_fail_before_compiling(change, flag):
    with pytest.raises(ValueError, match=flag):
        te.make_train(dataclasses.replace(te.Args(), **change))


def test_a_bad_flag_prints_one_line(tmp_path):
    """From the command line a user's mistake is one line on stderr and exit status 2, no traceback."""
    out = subprocess.run([sys.executable, "variants/top_erl.py", "--lr-policy", "0", "--logdir", str(tmp_path)],
                         capture_output=True, text=True, cwd=pathlib.Path(__file__).parents[1], timeout=300)
    lines = [ln for ln in out.stderr.splitlines() if "warp" not in ln]  # mujoco's import notes
    assert out.returncode == 2 and lines == ["error: --lr-policy: must be > 0, got 0.0"], out.stderr


def test_buffer_warmup_fills_a_batch_with_the_initial_policy():
    """--buffer-warmup: before iteration 1 the buffer holds ⌈batch / num_envs⌉·num_envs episodes of the initial
    (stochastic) policy, and the run counts their env steps."""
    args = dataclasses.replace(TINY, buffer_warmup=True, batch_size=6, micro_batch=0)  # num_envs 4: 2 rollouts, 8 episodes
    program = te.make_train(args)
    state = jax.jit(program.init)(jax.random.PRNGKey(0))
    assert int(state.buffer.size) == 8 and program.initial_env_steps == 8 * program.task.episode_length
    data = jax.tree.map(lambda x: np.asarray(x[:8]), state.buffer.data)
    mean, _ = program.learner.policy.apply(state.policy.params, data.states[:, 0])
    np.testing.assert_allclose(data.params_mean, np.asarray(mean), rtol=1e-6)  # the initial policy acted
    assert np.abs(data.actions).sum(axis=(1, 2)).min() > 0 and len({float(a) for a in data.actions[:, 5, 0]}) == 8
    assert int(jax.jit(te.make_train(TINY).init)(jax.random.PRNGKey(0)).buffer.size) == 0


def test_existing_run_directory_is_refused(tmp_path):
    """A new run where one exists fails before compiling, naming --resume, --run-name and --overwrite; with
    --overwrite the old run's files (and only those) are removed first."""
    args = dataclasses.replace(TINY, logdir=str(tmp_path), run_name="taken")
    (tmp_path / "taken" / "seed_0").mkdir(parents=True)
    (tmp_path / "taken" / "args.json").write_text("{}")
    with pytest.raises(ValueError, match=r"already holds a run.*--resume.*--run-name.*--overwrite"):
        te.run(args, verbose=False)
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    (tmp_path / "taken" / "summary.json").write_text("{}")
    runner.remove_run(tmp_path / "taken")
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["notes.txt"]


def test_crash_leaves_the_summary_and_logs_so_far(tmp_path, monkeypatch):
    """summary.json and the event files describe every finished chunk, also when the run dies after one."""
    calls = []

    def dying_save(mgr, step, state, meta):
        calls.append(step)
        raise RuntimeError("killed")

    monkeypatch.setattr(runner.ckpt, "save", dying_save)
    args = dataclasses.replace(TINY, logdir=str(tmp_path), run_name="crash")
    with pytest.raises(RuntimeError, match="killed"):
        te.run(args, verbose=False)
    assert calls == [1]
    summary = json.loads((tmp_path / "crash" / "summary.json").read_text())
    assert [h["iteration"] for h in summary["history"]] == [0, 2] and summary["iterations_done"] == 2
    events = list((tmp_path / "crash" / "seed_0").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_run_writes_logs_summary_and_checkpoint(uninterrupted):
    run_dir = pathlib.Path(uninterrupted["run_dir"])
    assert (run_dir / "summary.json").is_file() and (run_dir / "args.json").is_file()
    assert list((run_dir / "seed_0").glob("events.out.tfevents.*"))
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [1, 2]
    s = uninterrupted
    assert [h["iteration"] for h in s["history"]] == [0, 2, 4]
    assert s["env_steps"] == 4 * 4 * 50
    per_seed = s["per_seed"][0]
    assert per_seed["final"]["iteration"] == 4
    assert set(per_seed["final"]) >= {"eval/return", "eval/is_success", "eval/distance"}
    assert all(np.isfinite(v) for v in per_seed["final"].values())


def test_resume_continues_exactly(uninterrupted, tmp_path):
    args = dataclasses.replace(TINY, logdir=str(tmp_path), run_name="split")
    first = te.run(args, max_chunks=1, verbose=False)
    assert first["iterations_done"] == 2
    with pytest.raises(ValueError, match="--lr-policy"):
        te.run(dataclasses.replace(args, resume=True, lr_policy=0.5), verbose=False)
    with pytest.raises(ValueError, match="no checkpoint"):
        te.run(dataclasses.replace(args, resume=True, run_name="never"), verbose=False)
    assert not (tmp_path / "never").exists()  # refused before anything was created
    saved_args = tmp_path / "split" / "args.json"  # a run saved before these flags existed resumes
    old_args = json.loads(saved_args.read_text())
    for added in ("traj_downsample_factor", "matmul_precision"):
        del old_args[added]
    saved_args.write_text(json.dumps(old_args))
    resumed = te.run(dataclasses.replace(args, resume=True), verbose=False)
    assert resumed["iterations_done"] == 4
    assert _eval_history(resumed) == _eval_history(uninterrupted)
    jax.tree.map(np.testing.assert_array_equal, _params(resumed), _params(uninterrupted))
    saved = json.loads((tmp_path / "split" / "summary.json").read_text())
    assert [h["iteration"] for h in saved["history"]] == [0, 2, 4]


def test_two_seeds_equal_two_single_seed_runs(uninterrupted, tmp_path):
    both = te.run(dataclasses.replace(TINY, logdir=str(tmp_path), run_name="both", num_seeds=2,
                                      checkpoint_interval=0), verbose=False)
    second = te.run(dataclasses.replace(TINY, logdir=str(tmp_path), run_name="second", seed=1,
                                        checkpoint_interval=0), verbose=False)
    for i, single in enumerate((uninterrupted, second)):
        for a, b in zip(_eval_history(both, i), _eval_history(single)):
            for n in a:
                np.testing.assert_allclose(a[n], b[n], rtol=1e-4, atol=1e-5, err_msg=n)
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5), _params(both, i),
                     _params(single))
    assert (tmp_path / "both" / "seed_1").is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("task", ["box-dense", "box-sparse", "hopper-jump", "metaworld"])
def test_paper_presets_run_without_nan(task, tmp_path):
    """Smoke test at the full upstream shapes (batch, networks, T, epochs, buffer): 2 iterations with critic
    and policy updates switched on from the start."""
    args = dataclasses.replace(te.PRESETS[task], iterations=2, eval_interval=2, critic_update_from=1,
                               policy_update_from=1, num_eval_episodes=8, logdir=str(tmp_path),
                               checkpoint_interval=0)
    s = te.run(args, verbose=False)
    final = s["per_seed"][0]["final"]
    assert final["iteration"] == 2
    assert all(np.isfinite(v) for v in final.values()), final
    assert task != "metaworld" or {"eval/is_success", "eval/success_once"} <= set(final)
    state = s["state"]
    for leaf in jax.tree.leaves((state.policy.params, state.critic.params)):
        assert np.isfinite(np.asarray(leaf)).all()


def test_reach_learns(tmp_path):
    """A reduced reach configuration clearly beats the random initial policy in a few minutes: the preset for 200
    instead of 400 iterations, with a 32-wide one-layer critic (about 3× cheaper per step) trained 40 instead of
    20 steps per iteration (about 4 minutes on a free core). The mean policy's success rate goes from 0 to ≥ 0.25
    (measured: 0.66 for seed 0, the test's, and 0.55 for seed 1; without the policy-lr annealing seeds 0-3 gave
    0.73 / 0.47 / 0.52 / 0.28; docs/top_erl.md). 413 s on one core beside other jobs."""
    args = dataclasses.replace(te.Args(), iterations=200, n_embd=32, n_layer=1, n_head=2, epochs_critic=40,
                               eval_interval=100, num_eval_episodes=64, checkpoint_interval=0, logdir=str(tmp_path))
    h = te.run(args, verbose=False)["history"]
    before, after = h[0], h[-1]
    assert after["iteration"] == 200
    assert before["eval/is_success"][0] == 0.0
    assert after["eval/is_success"][0] >= 0.25, (before, after)
    assert after["eval/distance"][0] < 0.5 * before["eval/distance"][0], (before, after)  # measured 0.153 -> 0.017 m


@pytest.mark.slow
def test_hopper_jump_cpu_leaves_the_drop_height(tmp_path):
    """Issue 24's bar as a test: the CPU-scale hopper preset (seed 0, one seed; about an hour on a free core) starts at
    the 1.4997 m drop height and jumps: the mean max height of the evaluations at iterations 1400-1600 (0.37-0.42M
    env steps) is ≥ 1.53 m. Measured 2026-12-06 (docs/fidelity.md): seed 0 leaves the drop height at iteration
    ≈ 1200 and reaches 1.57 / 1.60 / 1.63 m at 1400 / 1500 / 1600; the original code at the same settings jumps
    at the same point. At the 6 / 6 solver cap and 3 token buckets (2026-12-07, 1.5 h on one core beside other
    jobs): 1.58 / 1.60 / 1.64 m."""
    args = dataclasses.replace(te.PRESETS["hopper-jump-cpu"], iterations=1600, eval_interval=100,
                               checkpoint_interval=0, logdir=str(tmp_path))
    h = te.run(args, verbose=False)["history"]
    assert h[0]["eval/max_height"][0] == pytest.approx(1.4997, abs=1e-3)
    last = [e["eval/max_height"][0] for e in h[-3:]]
    assert [e["iteration"] for e in h[-3:]] == [1400, 1500, 1600]
    assert np.mean(last) >= 1.53, last


@pytest.mark.slow
def test_reach_preset_reaches_success(tmp_path):
    """The issue's success bar as a test: the default preset (`python variants/top_erl.py`, seed 0; about 14 minutes
    on 2 free cores) takes the mean policy from 0 % success to a mean of ≥ 85 % over the last three evaluations
    (iterations 360-400; measured 2026-11-22 with the quickstart command: 0.00 -> 0.92 / 0.96 / 0.95). The mean of
    three, because one evaluation swings and another machine's XLA numerics give another trajectory of the same
    seed (4 seeds of the preset end at 0.91-0.98, docs/results.md)."""
    args = dataclasses.replace(te.Args(), checkpoint_interval=0, logdir=str(tmp_path))
    h = te.run(args, verbose=False)["history"]
    assert h[0]["eval/is_success"][0] == 0.0
    last = [e["eval/is_success"][0] for e in h[-3:]]
    assert [e["iteration"] for e in h[-3:]] == [360, 380, 400]
    assert np.mean(last) >= 0.85, last


def test_anneal_lr_policy_decays_to_zero():
    """`--anneal-lr-policy`: Adam's step on a constant gradient (size ≈ lr) shrinks linearly to 0 over the run's
    policy steps ((iterations − policy_update_from + 1) × epochs_policy = 3 for TINY)."""
    import jax.numpy as jnp

    from toperl_jax import envs

    args = dataclasses.replace(TINY, anneal_lr_policy=True)
    opt = te.make_learner(args, envs.make("reacher")).policy_optimizer
    params = {"w": jnp.ones(3)}
    state = opt.init(params)
    steps = []
    for _ in range(4):
        upd, state = opt.update({"w": jnp.ones(3)}, state, params)
        steps.append(float(jnp.abs(upd["w"]).max()))
    np.testing.assert_allclose(steps, args.lr_policy * np.array([1, 2 / 3, 1 / 3, 0]), rtol=1e-3, atol=1e-9)
    fixed = te.make_learner(TINY, envs.make("reacher")).policy_optimizer
    upd, _ = fixed.update({"w": jnp.ones(3)}, fixed.init(params), params)
    np.testing.assert_allclose(float(jnp.abs(upd["w"]).max()), TINY.lr_policy, rtol=1e-3)
