"""variants/qt.py: n-step targets vs a numpy reference, causal masking of the DT policy, argmax candidate
selection, EMA / cosine schedules, flag errors, and a tiny end-to-end run on a dataset written here."""

import dataclasses
import json
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toperl_jax import offline, runner
from toperl_jax.cli import UsageError

from variants import qt


def _reacher_like_dataset(path, n_eps=6, T=50, seed=0, action_scale=1.0):
    """A random dataset with the reacher's shapes (obs 9, act 2), written in the D4RL layout."""
    rng = np.random.default_rng(seed)
    N = n_eps * T
    timeouts = np.zeros(N, bool)
    timeouts[T - 1::T] = True
    ds = offline.TrajectoryDataset(
        observations=rng.normal(size=(N, 9)), actions=action_scale * rng.uniform(-1, 1, size=(N, 2)),
        rewards=rng.normal(-0.1, 0.1, size=N), terminals=np.zeros(N, bool), timeouts=timeouts,
        metadata={"env": "reacher", "scale": 10.0, "env_targets": [5.0, 0.0], "ref_min_score": -8.0,
                  "ref_max_score": 10.0, "time_in_observation": True})
    return offline.save_d4rl_hdf5(path, ds)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("qt")
    path = _reacher_like_dataset(root / "reacher-test-v0.hdf5")
    return dataclasses.replace(qt.PRESETS["tiny"], dataset=str(path), logdir=str(root / "runs"), compile_cache="")


@pytest.fixture(scope="module")
def prog(tiny):
    return qt.make_train(tiny)


def _nstep_reference(rewards, mask, q_boot, no_boot, gamma, keep):
    B, K = rewards.shape
    y = np.zeros((B, K))
    lm = np.zeros((B, K))
    for b in range(B):
        d = float(no_boot[b])
        for t in range(K):
            if t < K - 1:
                acc = sum(gamma ** (k - t) * rewards[b, k] for k in range(t, K - 1))
                if keep and d:
                    acc += gamma ** (K - 1 - t) * rewards[b, K - 1]
                else:
                    acc += gamma ** (K - 1 - t) * (1 - d) * q_boot[b]
                y[b, t] = acc
                lm[b, t] = mask[b, t]
            else:
                y[b, t] = rewards[b, t] if (keep and d) else (1 - d) * q_boot[b]
                lm[b, t] = mask[b, t] if (keep and d) else 0.0
    return y, lm


@pytest.mark.parametrize("keep", [True, False])
def test_nstep_targets_match_reference(keep):
    rng = np.random.default_rng(0)
    B, K = 6, 5
    rewards = rng.normal(size=(B, K)).astype(np.float32)
    L = np.array([5, 3, 1, 5, 2, 4])
    mask = (np.arange(K)[None] >= (K - L)[:, None]).astype(np.float32)
    rewards *= mask
    q_boot = rng.normal(size=B).astype(np.float32) * 10
    no_boot = np.array([False, True, False, True, True, False])
    y, lm = qt.nstep_targets(jnp.asarray(rewards), jnp.asarray(mask), jnp.asarray(q_boot), jnp.asarray(no_boot),
                             0.9, keep)
    y_ref, lm_ref = _nstep_reference(rewards, mask, q_boot, no_boot, 0.9, keep)
    np.testing.assert_array_equal(np.asarray(lm), lm_ref)
    np.testing.assert_allclose(np.asarray(y) * lm_ref, y_ref * lm_ref, rtol=1e-5, atol=1e-5)


def test_causal_masking_of_the_policy(prog, tiny):
    """Changing step p's tokens leaves the predictions at earlier steps unchanged; the state token at p changes
    the action predicted at p, and a padded step's inputs change nothing at valid steps."""
    K, S, A = tiny.context_len, 9, 2
    actor = prog.learner.actor
    params = actor.init(jax.random.PRNGKey(1), jnp.zeros((1, K, S)), jnp.zeros((1, K, A)), jnp.zeros((1, K)),
                        jnp.zeros((1, K), jnp.int32), jnp.ones((1, K)))
    rng = np.random.default_rng(2)
    obs = jnp.asarray(rng.normal(size=(1, K, S)), jnp.float32)
    act = jnp.asarray(rng.uniform(-1, 1, size=(1, K, A)), jnp.float32)
    rtg = jnp.asarray(rng.normal(size=(1, K)), jnp.float32)
    ts = jnp.arange(K, dtype=jnp.int32)[None]
    mask = jnp.ones((1, K))
    f = jax.jit(lambda o, a, r, m: actor.apply(params, o, a, r, ts, m))
    a0, s0 = f(obs, act, rtg, mask)
    p = 2
    for field in ("obs", "act", "rtg"):
        o2 = obs.at[0, p].add(1.0) if field == "obs" else obs
        a2 = act.at[0, p].set(-act[0, p]) if field == "act" else act
        r2 = rtg.at[0, p].add(30.0) if field == "rtg" else rtg
        a1, s1 = f(o2, a2, r2, mask)
        np.testing.assert_allclose(a1[0, :p], a0[0, :p], atol=1e-6, err_msg=field)
        np.testing.assert_allclose(s1[0, :p], s0[0, :p], atol=1e-6, err_msg=field)
        if field in ("obs", "rtg"):  # these tokens precede the state token of step p
            assert float(jnp.max(jnp.abs(a1[0, p] - a0[0, p]))) > 1e-4, field
        else:  # the action token of step p follows its state token: â_p unchanged, ŝ_{p+1} changes
            np.testing.assert_allclose(a1[0, p], a0[0, p], atol=1e-6)
            assert float(jnp.max(jnp.abs(s1[0, p] - s0[0, p]))) > 1e-4
    # left padding: the first step is padded; its inputs must not reach the valid steps
    padded = mask.at[0, 0].set(0.0)
    b0, _ = f(obs, act, rtg, padded)
    b1, _ = f(obs.at[0, 0].add(5.0), act.at[0, 0].set(0.3), rtg.at[0, 0].add(4.0), padded)
    np.testing.assert_allclose(b1[0, 1:], b0[0, 1:], atol=1e-6)


def test_argmax_selection_picks_the_highest_q_candidate(prog, tiny):
    K, S, A, E, C = tiny.context_len, 9, 2, 3, tiny.num_candidates
    st = jax.jit(prog.init)(jax.random.PRNGKey(0))
    rng = np.random.default_rng(3)
    obs = jnp.asarray(rng.normal(size=(E, C, K, S)), jnp.float32)
    acts = jnp.asarray(rng.uniform(-1, 1, size=(E, C, K, A)), jnp.float32)
    rtg = jnp.asarray(rng.normal(size=(E, C, K)) * 3, jnp.float32)  # candidates differ in their RTGs
    ts = jnp.broadcast_to(jnp.arange(K, dtype=jnp.int32), (E, C, K))
    mask = jnp.ones((E, C, K))
    s_now = obs[:, 0, -1]
    a, idx, q, cands = jax.jit(prog.learner.choose_action)(st.actor, st.critic, obs, acts, rtg, ts, mask, s_now,
                                                   jax.random.PRNGKey(4))
    # independent: Q of every candidate with the critic directly
    q_ref = np.min(np.asarray(prog.learner.critic.apply(st.critic, jnp.broadcast_to(s_now[:, None], (E, C, S)),
                                                        cands)), 0)
    np.testing.assert_allclose(np.asarray(q), q_ref, rtol=1e-5, atol=1e-6)
    assert np.asarray(idx).tolist() == np.argmax(q_ref, axis=1).tolist()
    np.testing.assert_allclose(np.asarray(a), np.asarray(cands)[np.arange(E), np.argmax(q_ref, 1)], atol=1e-6)
    assert len({tuple(np.round(np.asarray(cands)[0, c], 5)) for c in range(C)}) > 1  # candidates really differ
    # upstream's rule samples ∝ softmax(q): with widely separated q it picks the max, with ties it spreads
    q_sep = jnp.array([[0.0, 50.0, 1.0, -3.0]])
    assert int(qt.select_candidate(q_sep, jax.random.PRNGKey(0), "softmax")[0]) == 1
    picks = jax.vmap(lambda k: qt.select_candidate(jnp.zeros((1, 4)), k, "softmax"))(
        jax.random.split(jax.random.PRNGKey(1), 200))
    assert len(set(np.asarray(picks).ravel().tolist())) == 4


def test_ema_and_cosine_schedules(tiny):
    args = dataclasses.replace(tiny, ema_start=10, ema_every=5, ema_decay=0.9)
    ema, p = {"w": jnp.array(0.0)}, {"w": jnp.array(1.0)}
    assert float(qt._ema_update(jnp.int32(3), ema, p, args)["w"]) == 1.0  # copy before ema_start
    assert float(qt._ema_update(jnp.int32(12), ema, p, args)["w"]) == 0.0  # not a multiple of 5
    np.testing.assert_allclose(float(qt._ema_update(jnp.int32(15), ema, p, args)["w"]), 0.1, rtol=1e-6)
    sched = qt.cosine_lr(3e-4, 1000, 100)
    for count, i in ((0, 0), (999, 0), (1000, 1), (50_500, 50), (10**6, 100)):
        np.testing.assert_allclose(float(sched(jnp.int32(count))), 3e-4 * 0.5 * (1 + np.cos(np.pi * i / 100)),
                                   rtol=1e-5, atol=1e-12)
    assert qt.cosine_lr(3e-4, 1000, None) == 3e-4


@pytest.mark.parametrize("flags, flag", [
    (["--n-embd", "15", "--n-head", "2"], "--n-embd"),
    (["--eta", "-1"], "--eta"),
    (["--lr", "0"], "--lr: must be > 0"),
    (["--lr-critic", "-3e-4"], "--lr-critic: must be > 0"),
    (["--tau", "1.5"], "--tau: must be in"),
    (["--ema-decay", "1"], "--ema-decay: must be in"),
    (["--weight-decay", "-1e-4"], "--weight-decay: must be ≥ 0"),
    (["--context-len", "0"], "--context-len"),
    (["--dataset", "/nonexistent/x.hdf5"], "--dataset"),
    (["--eval-seed", "3"], "--eval-seed: only used with --evaluate-only"),
    (["--evaluate-only", "--resume"], "--evaluate-only: .* cannot be combined with --resume"),
])
def test_bad_flags_name_the_flag(tiny, flags, flag):
    args = qt.parse_args(["--preset", "tiny", "--dataset", tiny.dataset, *flags])
    with pytest.raises(ValueError, match=flag):
        qt.check_args(args)


def test_actions_outside_the_tanh_range_are_refused(tiny, tmp_path):
    path = _reacher_like_dataset(tmp_path / "loud-v0.hdf5", action_scale=50.0)
    with pytest.raises(UsageError, match=r"--dataset: actions must lie in \[-1, 1\].*got \|a\| = 4\d\.\d+ at step"):
        qt.make_train(dataclasses.replace(tiny, dataset=str(path)))


def test_the_evaluation_env_takes_the_physics_impl(tiny, monkeypatch):
    """--physics-impl reaches the evaluation env's task, with MJX-Warp's contact list sized for every episode of
    every seed (num_seeds × num_eval_episodes); brax's locomotion envs refuse 'warp' with a one-line flag error."""
    from toperl_jax import envs
    from toperl_jax.offline import evaluation

    made = []
    real = envs.make
    monkeypatch.setattr(envs, "make", lambda name, **kw: made.append((name, kw)) or real(name))
    env = evaluation.make_eval_env("reacher", "warp", warp_worlds=6)
    assert made == [("reacher", {"physics_impl": "warp", "warp_worlds": 6})] and env.name == "reacher"
    with pytest.raises(ValueError, match="brax's brax-hopper runs on MJX-JAX only"):
        evaluation.make_eval_env("brax-hopper", "warp")

    seen = []

    def record(name, physics_impl="jax", warp_worlds=1):
        seen.append((name, physics_impl, warp_worlds))
        raise ValueError("unknown evaluation env (stop here)")

    monkeypatch.setattr(qt, "make_eval_env", record)
    args = dataclasses.replace(tiny, physics_impl="warp", num_seeds=3, num_eval_episodes=5)
    with pytest.raises(UsageError, match="--env: unknown evaluation env"):
        qt.make_train(args)
    assert seen == [("reacher", "warp", 15)]
    assert "physics_impl" in qt.INFERENCE_FLAGS  # --evaluate-only may score a run on the other physics


@pytest.mark.parametrize("content, words", [
    ("not a dataset", "notes.hdf5: not a readable HDF5 file"),
    (None, "--lr: must be > 0"),
])
def test_user_mistakes_print_one_line(tiny, tmp_path, content, words):
    """From the command line a bad flag or file is one line on stderr and exit status 2, no traceback."""
    dataset = tmp_path / "notes.hdf5"
    if content is not None:
        dataset.write_text(content)
    flags = ["--dataset", str(dataset)] if content is not None else ["--dataset", tiny.dataset, "--lr", "0"]
    out = subprocess.run([sys.executable, "variants/qt.py", "--preset", "tiny", "--logdir", str(tmp_path), *flags],
                         capture_output=True, text=True, cwd=pathlib.Path(__file__).parents[1], timeout=300)
    lines = [ln for ln in out.stderr.splitlines() if "warp" not in ln]  # mujoco's import notes
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: --") and words in lines[0], \
        out.stderr


def test_eta0_is_plain_dt(tiny):
    args = dataclasses.replace(tiny, eta=0.0)
    assert args.resolved_selection == "first" and not args.train_critic
    assert qt.parse_args(["--preset", "tiny", "--eta", "0"]).eta == 0.0


@pytest.fixture(scope="module")
def uninterrupted(tiny):
    """Three iterations (an evaluation and a checkpoint after each), in one call."""
    args = dataclasses.replace(tiny, iterations=3, steps_per_iter=20, run_name="e2e")
    return qt.run(args, verbose=False)


def test_tiny_end_to_end_run(tiny, prog, uninterrupted):
    """Three iterations with evaluation, logs, checkpoint and summary; parameters finite, the critic trained."""
    summary, args = uninterrupted, dataclasses.replace(tiny, run_name="e2e")
    run_dir = pathlib.Path(args.logdir) / "e2e"
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["score_key"] == "eval/normalized_score"
    final = saved["per_seed"][0]["final"]
    assert final["iteration"] == 3 and saved["iterations_done"] == 3 and np.isfinite(final["eval/return"])
    np.testing.assert_allclose(final["eval/normalized_score"], 100 * (final["eval/return"] + 8.0) / 18.0, rtol=1e-6)
    assert saved["per_seed"][0]["best_by"] == "eval/normalized_score" and "best" in saved["per_seed"][0]
    assert [h["iteration"] for h in saved["history"]] == [0, 1, 2, 3]  # and the untrained policy's evaluation
    assert (run_dir / "checkpoints").is_dir() and list((run_dir / "seed_0").glob("events.*"))
    st = summary["state"]
    assert int(st.step[0]) == 60
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves((st.actor, st.critic)))
    # the critic and its target moved (eta > 0 trains them)
    init = jax.jit(prog.init)(jax.random.PRNGKey(args.seed))  # the run's initial state (same seed and shapes)
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a[0] - b))), st.critic, init.critic)
    assert max(jax.tree.leaves(moved)) > 1e-4


def _tensorboard_scalars(seed_dir: pathlib.Path, prefix: str = "eval/") -> dict[str, dict[int, float]]:
    """{tag: {step: value}} from the event files in `seed_dir` (TFRecord frames of tensorboardX Event protos)."""
    from tensorboardX.proto import event_pb2

    out = {}
    for f in sorted(seed_dir.glob("events.out.tfevents.*")):
        data, pos = f.read_bytes(), 0
        while pos + 12 <= len(data):
            n = int.from_bytes(data[pos:pos + 8], "little")
            ev = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in ev.summary.value:
                if v.tag.startswith(prefix):
                    assert int(ev.step) not in out.get(v.tag, {}), (v.tag, ev.step)  # no step logged twice
                    out.setdefault(v.tag, {})[int(ev.step)] = v.simple_value
    return out


def test_resume_continues_exactly(tiny, uninterrupted, tmp_path):
    """Two iterations, then `--resume` in a new call for the third: the same evaluations, best, TensorBoard curve
    and final state (parameters, optimiser states, EMA actor, target critics, key, step) as the uninterrupted run,
    bit for bit. Flags or a dataset that differ from the saved run's are refused before compiling."""
    data = tmp_path / "copy.hdf5"
    shutil.copy(tiny.dataset, data)  # same contents under another path: replaced below
    args = dataclasses.replace(tiny, iterations=3, steps_per_iter=20, logdir=str(tmp_path), run_name="split",
                               dataset=str(data))
    first = qt.run(args, max_chunks=2, verbose=False)
    assert first["iterations_done"] == 2 and int(first["state"].step[0]) == 40
    on_disk = json.loads((tmp_path / "split" / "summary.json").read_text())  # written at every chunk
    assert on_disk["iterations_done"] == 2 and on_disk["history"] == first["history"]
    with pytest.raises(ValueError, match="split already holds a run: continue it with --resume"):
        qt.run(args, verbose=False)  # a new run where one is: refused, nothing touched
    with pytest.raises(ValueError, match="--resume: flags differ .*--lr: 0.0003 vs 0.5"):
        qt.run(dataclasses.replace(args, resume=True, lr=0.5), verbose=False)
    with pytest.raises(ValueError, match="--iterations: 3 vs 4"):
        qt.run(dataclasses.replace(args, resume=True, iterations=4), verbose=False)
    resumed = qt.run(dataclasses.replace(args, resume=True, compile_cache="~/elsewhere"), verbose=False)
    assert resumed["iterations_done"] == 3
    evals = lambda s: [{n: v for n, v in h.items() if n.startswith("eval/") or n == "iteration"} for h in s["history"]]
    assert evals(resumed) == evals(uninterrupted) and len(evals(resumed)) == 4
    final = lambda s: (s["final_mean"], s["final_std"], [  # final and best per seed, without wall times
        {k: {n: x for n, x in v.items() if n != "wall_time"} if isinstance(v, dict) else v for k, v in p.items()}
        for p in s["per_seed"]])
    assert final(resumed) == final(uninterrupted)
    jax.tree.map(np.testing.assert_array_equal, resumed["state"], uninterrupted["state"])
    tb = _tensorboard_scalars(tmp_path / "split" / "seed_0")
    assert tb == _tensorboard_scalars(pathlib.Path(tiny.logdir) / "e2e" / "seed_0")
    assert sorted(tb["eval/return"]) == [0, 20, 40, 60]
    # a different dataset at the saved path
    _reacher_like_dataset(data, seed=1)
    with pytest.raises(ValueError, match="--resume: the dataset .* is not the one the run was trained on"):
        qt.run(dataclasses.replace(args, resume=True), verbose=False)


def test_evaluate_only_scores_the_last_checkpoint(tiny, uninterrupted, tmp_path, monkeypatch):
    """`--evaluate-only` restores the run's last checkpoint and evaluates it without touching the run: given the
    training loop's key of the last iteration it reproduces the run's logged final evaluation; with held-out keys
    and another selection rule it equals that rule's evaluation of the final state; other training flags, an
    η = 0 run asked for Q-based selection, and a missing checkpoint are refused before compiling (the η = 0 run is
    a copy under another directory: where a run lives is not compared with the saved flags)."""
    run_dir = pathlib.Path(tiny.logdir) / "e2e"
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    args = dataclasses.replace(tiny, iterations=3, steps_per_iter=20, run_name="e2e", evaluate_only=True)
    with monkeypatch.context() as m:  # the training loop's evaluation key of iteration 3
        m.setattr(qt, "heldout_eval_keys", lambda ek, seed: jax.vmap(lambda k: jax.random.fold_in(k, 3))(ek))
        same = qt.run(args, verbose=False)
    final = uninterrupted["history"][-1]
    assert same["checkpoint_iteration"] == 3 and same["selection"] == "argmax"
    np.testing.assert_allclose(same["per_seed"][0]["return"], final["eval/return"][0], rtol=1e-6)
    np.testing.assert_allclose(same["mean"], final["eval/normalized_score"][0], rtol=1e-6)

    other = dataclasses.replace(args, selection="first", num_eval_episodes=3, eval_seed=5)
    res = qt.run(other, verbose=False)
    st = uninterrupted["state"]
    _, eval_keys = runner.seed_keys(other.seed, other.num_seeds, qt.EVAL_SALT)
    direct = jax.jit(jax.vmap(qt.make_train(other).evaluate))((st.actor, st.critic_target),
                                                                qt.heldout_eval_keys(eval_keys, 5))
    np.testing.assert_allclose(res["per_seed"][0]["return"], float(direct["return"][0]), rtol=1e-6)
    assert res["num_candidates"] == 1 and res["num_eval_episodes"] == 3
    assert json.loads((run_dir / "eval_first_3ep_seed5.json").read_text())["mean"] == res["mean"]
    # results under other inference flags land in other files (names spell every flag that acts)
    no_q = qt.run(dataclasses.replace(args, q_candidate=False), verbose=False)
    assert json.loads((run_dir / "eval_argmax_c4_noise0.1_qcand_2ep_seed0.json").read_text())["mean"] == same["mean"]
    saved_no_q = json.loads((run_dir / "eval_argmax_c4_noise0.1_noqcand_2ep_seed0.json").read_text())
    assert saved_no_q["mean"] == no_q["mean"] and saved_no_q["q_candidate"] is False
    assert {p: p.stat().st_mtime_ns for p in before if p.exists()} == before  # checkpoints, logs, summary as they were

    with pytest.raises(ValueError, match="--evaluate-only: flags differ .*--lr: 0.0003 vs 0.5"):
        qt.run(dataclasses.replace(args, lr=0.5), verbose=False)
    dt_dir = tmp_path / "dt"  # the same run, as if trained with --eta 0 (no critic)
    shutil.copytree(run_dir, dt_dir)
    saved = json.loads((dt_dir / "args.json").read_text())
    (dt_dir / "args.json").write_text(json.dumps({**saved, "eta": 0.0, "selection": None}))
    dt = dataclasses.replace(args, logdir=str(tmp_path), run_name="dt", eta=0.0)
    with pytest.raises(ValueError, match="--selection: the run .* trained no critic .* got argmax"):
        qt.run(dataclasses.replace(dt, selection="argmax"), verbose=False)
    with pytest.raises(ValueError, match="--evaluate-only: no checkpoint in .*never/checkpoints"):
        qt.run(dataclasses.replace(args, run_name="never"), verbose=False)


def test_a_diverging_run_is_stopped_with_its_last_finite_state(tiny, tmp_path):
    """Rewards of 1e30 overflow the critic's squared error in the first iteration: both seeds are stopped with
    their initial state (the runner's divergence guard), the run ends there, and the summary names the iteration
    and keeps the untrained policy's evaluation as the final one."""
    path = tmp_path / "huge-v0.hdf5"
    ds = offline.load_dataset(_reacher_like_dataset(path))
    offline.save_d4rl_hdf5(path, dataclasses.replace(ds, rewards=np.full_like(ds.rewards, 1e30)))
    args = dataclasses.replace(tiny, dataset=str(path), logdir=str(tmp_path), num_seeds=2, iterations=3)
    s = qt.run(args, verbose=False)
    assert s["iterations_done"] == 1 and [p["diverged_at_iteration"] for p in s["per_seed"]] == [1, 1]
    assert [p["final"]["iteration"] for p in s["per_seed"]] == [0, 0]
    assert s["history"][-1]["eval/return"] == [None, None]
    assert int(s["state"].step[0]) == 0 and all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(s["state"]))


def test_resume_without_checkpoint_is_a_clear_error(tiny, tmp_path):
    args = qt.parse_args(["--preset", "tiny", "--dataset", tiny.dataset, "--logdir", str(tmp_path), "--run-name",
                          "never", "--resume"])
    with pytest.raises(ValueError, match="--resume: no checkpoint in .*never/checkpoints"):
        qt.run(args, verbose=False)
    assert not (tmp_path / "never").exists()  # a failed resume creates nothing
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)  # e.g. interrupted before the first save
    with pytest.raises(ValueError, match="--resume: no checkpoint in .*empty/checkpoints"):
        qt.run(dataclasses.replace(args, run_name="empty"), verbose=False)
