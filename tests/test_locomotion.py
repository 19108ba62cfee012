"""brax locomotion datasets (toperl_jax.offline.locomotion, benchmarks/make_locomotion_dataset.py) and QT's
evaluation of terminating envs: the D4RL columns against a loop, the rollout against brax's own step function,
the episode cut, flag errors, the jax-0.10 stand-in for brax's trainers, QT counting rewards until `done`, and
one smoke-sized end-to-end run of the script (brax PPO on halfcheetah; `-m slow`)."""

import dataclasses
import json
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toperl_jax import offline
from toperl_jax.offline import locomotion
from toperl_jax.offline.evaluation import EvalEnv

from benchmarks import make_locomotion_dataset as mld
from variants import qt


def _synthetic_episodes(seed=0, n=4, T=6, S=3, A=2):
    """Episodes with terminations at random steps (one episode never terminates), steps after them invalid."""
    rng = np.random.default_rng(seed)
    end = rng.integers(0, T, n)
    end[0] = T  # runs to the time limit
    t = np.arange(T)
    done = t[None] == end[:, None]
    valid = t[None] <= end[:, None]
    return locomotion.Episodes(obs=rng.normal(size=(n, T, S)), actions=rng.uniform(-1, 1, (n, T, A)),
                               rewards=rng.normal(size=(n, T)), done=done | (t[None] > end[:, None]), valid=valid)


def test_flatten_matches_a_loop_over_episodes():
    ep = _synthetic_episodes()
    n, T = ep.rewards.shape
    rows = []
    for i in range(n):
        for t in range(T):
            if not ep.valid[i, t]:
                break
            term = bool(ep.done[i, t])
            rows.append((ep.obs[i, t], ep.actions[i, t], ep.rewards[i, t], term, t == T - 1 and not term))
    cols = locomotion.flatten(ep)
    np.testing.assert_allclose(cols["observations"], np.stack([r[0] for r in rows]), rtol=1e-6)
    np.testing.assert_allclose(cols["actions"], np.stack([r[1] for r in rows]), rtol=1e-6)
    np.testing.assert_allclose(cols["rewards"], [r[2] for r in rows], rtol=1e-6)
    np.testing.assert_array_equal(cols["terminals"], [r[3] for r in rows])
    np.testing.assert_array_equal(cols["timeouts"], [r[4] for r in rows])
    # every episode ends with exactly one terminal or timeout, and the dataset type splits them back
    ds = offline.TrajectoryDataset(**cols)
    assert len(ds.episode_bounds()[0]) == n
    np.testing.assert_allclose(ds.episode_returns(), locomotion.episode_returns(ep), rtol=1e-5)


def test_collect_cuts_after_the_episode_that_reaches_the_target():
    batches = [_synthetic_episodes(seed=s) for s in range(5)]
    calls = []

    def fake_rollout(params, key):
        calls.append(1)
        return batches[len(calls) - 1]

    sizes = [locomotion.flatten(b)["rewards"].size for b in batches]
    target = sizes[0] + 2  # needs the second batch, ends inside it
    cols = mld.collect(fake_rollout, None, jax.random.PRNGKey(0), target, "test")
    assert len(calls) == 2
    both = {f: np.concatenate([locomotion.flatten(b)[f] for b in batches[:2]]) for f in cols}
    ends = np.flatnonzero(both["terminals"] | both["timeouts"])
    cut = ends[ends >= target - 1][0] + 1  # the first episode end at or after the target-th step
    assert cols["rewards"].size == cut >= target
    for f in cols:
        np.testing.assert_array_equal(cols[f], both[f][:cut])


@pytest.mark.parametrize("flags, exc, message", [
    ('{"num_timestep": 5}', ValueError, r"--trainer-flags: \['num_timestep'\] are not arguments of brax's sac.train"),
    ('{"seed": 5}', ValueError, r"--trainer-flags: \['seed'\]"),
    ("num_timesteps=5", ValueError, "--trainer-flags: not valid JSON"),
    ("[1, 2]", TypeError, "--trainer-flags: must be a JSON object"),
])
def test_trainer_flag_errors(flags, exc, message):
    with pytest.raises(exc, match=message):
        mld.trainer(mld.Args(env="hopper", trainer_flags=flags))


def test_trainer_settings_are_the_notebook_ones_plus_overrides():
    name, fn, kw = mld.trainer(mld.Args(env="halfcheetah", trainer_flags='{"num_timesteps": 1000}'))
    assert name == "ppo" and fn.__module__.endswith("ppo.train")
    assert kw["num_timesteps"] == 1000 and kw["num_envs"] == 2048 and kw["entropy_cost"] == 1e-3
    name, _, kw = mld.trainer(mld.Args(env="walker2d"))
    assert name == "sac" and kw["batch_size"] == 128 and kw["grad_updates_per_step"] == 32


@pytest.mark.parametrize("change, message", [
    ({"recipes": ("medium", "good")}, r"--recipes: unknown recipe\(s\) \['good'\]"),
    ({"transitions": 0}, "--transitions: must be ≥ 1"),
    ({"rollout_envs": 0}, "--rollout-envs: must be ≥ 1"),
    ({"num_evals": 1}, "--num-evals: must be ≥ 2"),
    ({"medium_fraction": 0.0}, r"--medium-fraction: must be in \(0, 1\]"),
])
def test_bad_flags_are_refused_with_the_flag_named(change, message):
    with pytest.raises(ValueError, match=message):
        mld.check_args(dataclasses.replace(mld.Args(), **change))


def test_unknown_locomotion_env():
    with pytest.raises(ValueError, match="unknown locomotion env 'brax-ant'; accepted: brax-hopper"):
        locomotion.make_env("brax-ant")


def test_device_put_replicated_stand_in():
    x = {"a": jnp.arange(6.0).reshape(2, 3), "b": jnp.int32(4)}
    had = hasattr(jax, "device_put_replicated")
    with locomotion.brax_trainer_compat():
        out = jax.device_put_replicated(x, jax.local_devices())
    n = len(jax.local_devices())
    assert out["a"].shape == (n, 2, 3) and out["b"].shape == (n,)
    np.testing.assert_array_equal(out["a"][0], x["a"])
    assert int(out["b"][-1]) == 4
    assert hasattr(jax, "device_put_replicated") == had  # the context leaves jax as it found it
    # brax's pmapped functions take such inputs: one slice per device
    np.testing.assert_array_equal(jax.pmap(lambda t: t["a"].sum())(out), np.full(n, 15.0))


def test_rollout_matches_brax_step_by_step():
    """A fixed linear policy on brax-hopper: the scanned, vmapped rollout equals a Python loop over brax's jitted
    reset/step (observations, rewards, done) until each episode's first `done`, and the hopper falls."""
    env = locomotion.make_env("brax-hopper")
    n, T = 3, 80
    W = jax.random.normal(jax.random.PRNGKey(1), (env.observation_size, env.action_size))
    policy = lambda obs: jnp.tanh(obs @ W)
    ep = jax.jit(lambda k: locomotion.rollout(env, lambda o, _: policy(o), k, n, T))(jax.random.PRNGKey(0))
    k_reset = jax.random.split(jax.random.PRNGKey(0))[0]  # rollout's reset keys
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    valid = np.asarray(ep.valid)
    assert (~valid).any(), "the hopper should fall within 80 steps under this policy"
    for i, k in enumerate(jax.random.split(k_reset, n)):
        s = reset(k)
        for t in range(T):
            if not valid[i, t]:
                break
            np.testing.assert_allclose(ep.obs[i, t], s.obs, rtol=1e-4, atol=1e-4)
            s = step(s, policy(s.obs))
            np.testing.assert_allclose(ep.rewards[i, t], s.reward, rtol=1e-4, atol=1e-4)
            assert bool(ep.done[i, t]) == bool(s.done > 0)
        assert valid[i].all() or not valid[i, t]  # invalid from the step after the first done on
    for f in ep:  # zero padding after the termination (the loop stops once every episode has ended)
        assert not np.asarray(f)[~valid].any()


@pytest.mark.parametrize("returns, untrained, index", [
    ([50.0, 900.0, 1500.0, 3000.0], 0.0, 2),  # threshold 1000: the first at or above it
    ([-250.0, -100.0, 400.0, 2000.0], -300.0, 3),  # negative start: threshold −300 + 2300/3 = 466.7, 400 is below
    ([10.0, 20.0], 0.0, 0),
])
def test_medium_index(returns, untrained, index):
    assert mld.medium_index(returns, untrained, 1 / 3) == index
    thr = untrained + (returns[-1] - untrained) / 3
    assert returns[index] >= thr and all(r < thr for r in returns[:index])


def test_expert_and_medium_snapshots():
    """`--expert last` takes the final snapshot, `best` the highest evaluation; medium is 1/3 of the way to it."""
    returns = [50.0, 500.0, 1000.0, 2700.0, 1200.0]  # the last evaluation fell into a dip
    assert mld.expert_index(returns, "last") == 4 and mld.expert_index(returns, "best") == 3
    assert mld.medium_index(returns, 0.0, 1 / 3, 4) == 1  # threshold 400
    assert mld.medium_index(returns, 0.0, 1 / 3, 3) == 2  # threshold 900


class _FakeState(NamedTuple):
    obs: jax.Array
    reward: jax.Array
    done: jax.Array
    metrics: dict
    t: jax.Array


def test_qt_counts_rewards_until_the_first_done(tmp_path, monkeypatch):
    """An env with reward t (1, 2, 3, …) that says done at step 7 and keeps stepping: QT's evaluation must report
    return 1 + … + 7 = 28 and episode length 7 (an evaluator ignoring `done` would report 210 and 20)."""
    S, A, T = 3, 2, 20
    rng = np.random.default_rng(0)
    N = 4 * 10
    timeouts = np.zeros(N, bool)
    timeouts[9::10] = True
    ds = offline.TrajectoryDataset(
        observations=rng.normal(size=(N, S)), actions=rng.uniform(-1, 1, (N, A)), rewards=rng.normal(size=N),
        terminals=np.zeros(N, bool), timeouts=timeouts,
        metadata={"env": "fake", "scale": 10.0, "env_targets": [5.0]})
    path = offline.save_d4rl_hdf5(tmp_path / "fake-v0.hdf5", ds)

    def reset(key):
        return _FakeState(jnp.zeros(S), jnp.float32(0), jnp.float32(0), {}, jnp.int32(0))

    def step(s, a):
        t = s.t + 1
        return _FakeState(s.obs + a.sum(), t.astype(jnp.float32), (t >= 7).astype(jnp.float32), {}, t)

    monkeypatch.setattr(qt, "make_eval_env", lambda name, *a, **k: EvalEnv(name, S, A, T, reset, step, ()))
    args = dataclasses.replace(qt.PRESETS["tiny"], dataset=str(path), logdir=str(tmp_path), compile_cache="")
    prog = qt.make_train(args)
    state = prog.init(jax.random.PRNGKey(0))
    out = jax.jit(prog.evaluate)((state.actor, state.critic_target), jax.random.PRNGKey(1))
    assert float(out["return"]) == pytest.approx(28.0)
    assert float(out["episode_length"]) == pytest.approx(7.0)

    # Q-candidate diagnostics under a constant critic Q̄ ≡ b: at steps t = 1…6 (alive, after t = 0) the candidate
    # asks for (b − r_{t−1})/γ raw with r_{t−1} = t, mean (b − 3.5)/γ; every row ties, so argmax runs row 0 (share
    # 0) and softmax sampling runs the critic's row 1/C of the time.
    b = 50.0
    flat = dict(state.critic_target["params"])
    for name in ("q1_out", "q2_out"):
        flat[name] = {"kernel": jnp.zeros_like(flat[name]["kernel"]), "bias": jnp.full_like(flat[name]["bias"], b)}
    const = {"params": flat}
    out = jax.jit(prog.evaluate)((state.actor, const), jax.random.PRNGKey(1))
    assert float(out["q_candidate_rtg"]) == pytest.approx((b - 3.5) / args.discount, rel=1e-5)
    assert float(out["q_candidate_share"]) == 0.0
    soft = qt.make_train(dataclasses.replace(args, selection="softmax", num_eval_episodes=200))
    out = jax.jit(soft.evaluate)((state.actor, const), jax.random.PRNGKey(2))
    assert float(out["q_candidate_share"]) == pytest.approx(1 / args.num_candidates, abs=0.06)  # 1200 draws, σ 0.0125
    no_q = qt.make_train(dataclasses.replace(args, q_candidate=False))
    assert "q_candidate_share" not in jax.jit(no_q.evaluate)((state.actor, const), jax.random.PRNGKey(1))


@pytest.mark.slow  # ~200 s on 2 CPU cores (brax PPO, rollouts and QT compiles); the default suite's budget is tight
def test_script_end_to_end_and_qt_on_its_dataset(tmp_path):
    """Smoke-sized brax PPO on halfcheetah → five files whose references, medium-expert and episode ends agree with
    what the files themselves hold; then QT (tiny) trains on medium-replay and evaluates on brax-halfcheetah."""
    args = mld.Args(env="halfcheetah", out_dir=str(tmp_path), transitions=150, rollout_envs=2, num_evals=3,
                    compile_cache="", trainer_flags=json.dumps(
                        {"num_timesteps": 2000, "num_envs": 4, "batch_size": 4, "num_minibatches": 2,
                         "unroll_length": 5, "num_updates_per_batch": 1, "num_eval_envs": 2, "episode_length": 50}))
    summary = mld.main(args)
    files = {r: offline.load_dataset(tmp_path / f"brax-halfcheetah-{r}-v0.hdf5") for r in mld.RECIPES}
    assert files["random"].metadata["ref_min_score"] == pytest.approx(files["random"].episode_returns().mean())
    assert files["expert"].metadata["ref_max_score"] == pytest.approx(files["expert"].episode_returns().mean())
    for r, d in files.items():
        assert d.metadata["env"] == "brax-halfcheetah" and not d.metadata["time_in_observation"]
        assert np.all(np.abs(d.actions) <= 1.0)
        assert not d.terminals.any()  # halfcheetah never terminates: every episode runs into the 1000-step limit
        starts, ends = d.episode_bounds()
        np.testing.assert_array_equal(ends - starts, 1000)
        assert d.rewards.size >= (300 if r == "medium-expert" else 150)
    for f in offline.FIELDS:
        np.testing.assert_array_equal(getattr(files["medium-expert"], f),
                                      np.concatenate([getattr(files["medium"], f), getattr(files["expert"], f)]))
    curve = summary["behaviour_curve"]
    i = [c["env_steps"] for c in curve].index(summary["medium_snapshot"])
    assert i == mld.medium_index([c["eval_return"] for c in curve], summary["untrained_eval_return"], 1 / 3)
    assert summary["medium_replay_snapshots"] == [c["env_steps"] for c in curve[:i + 1]]

    q_args = dataclasses.replace(qt.PRESETS["tiny"], dataset=str(tmp_path / "brax-halfcheetah-medium-replay-v0.hdf5"),
                                 logdir=str(tmp_path / "qt"), compile_cache="", max_ep_len=1000, iterations=1,
                                 checkpoint_interval=0)
    out = qt.run(q_args, verbose=False)
    last = out["history"][-1]
    assert out["env"] == "brax-halfcheetah" and last["eval/episode_length"] == [1000.0]
    assert np.isfinite(last["eval/return"]).all()
