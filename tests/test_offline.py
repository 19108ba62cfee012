"""toperl_jax.offline: readers on files written here, malformed-file errors, RTG / stats / windows against numpy
references, and the per-step action map replaying an episode exactly."""

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toperl_jax import envs, offline
from toperl_jax.offline import actions as offline_actions
from toperl_jax.offline.windows import gather_windows, prepare_windows


def _episodes(rng, lengths, S=3, A=2, terminal_last=(False,)):
    eps = []
    for i, T in enumerate(lengths):
        term = np.zeros(T, bool)
        tout = np.zeros(T, bool)
        if terminal_last[i % len(terminal_last)]:
            term[-1] = True
        else:
            tout[-1] = True
        eps.append({"observations": rng.normal(size=(T, S)).astype(np.float32),
                    "actions": rng.uniform(-1, 1, size=(T, A)).astype(np.float32),
                    "rewards": rng.normal(size=T).astype(np.float32), "terminals": term, "timeouts": tout})
    return eps


def _write_d4rl(path, cols, attrs=None):
    """A D4RL-layout file written with plain h5py (independent of save_d4rl_hdf5)."""
    with h5py.File(path, "w") as f:
        for k, v in cols.items():
            f.create_dataset(k, data=v)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v


def _flat(eps):
    return {k: np.concatenate([e[k] for e in eps]) for k in offline.FIELDS}


def test_d4rl_reader_reads_plain_file_and_splits_episodes(tmp_path):
    rng = np.random.default_rng(0)
    lengths = [5, 1, 7, 3]
    eps = _episodes(rng, lengths, terminal_last=(True, False))
    cols = _flat(eps)
    cols["rewards"] = cols["rewards"][:, None]  # some writers store [N, 1]
    _write_d4rl(tmp_path / "d.hdf5", cols, {"env": "reacher", "ref_min_score": -3.5})
    ds = offline.load_d4rl_hdf5(tmp_path / "d.hdf5")
    np.testing.assert_array_equal(ds.observations, cols["observations"])
    np.testing.assert_array_equal(ds.rewards, cols["rewards"][:, 0])
    starts, ends = ds.episode_bounds()
    np.testing.assert_array_equal(ends - starts, lengths)
    assert ds.metadata["env"] == "reacher" and ds.metadata["ref_min_score"] == -3.5
    got = ds.episodes()
    for e, g in zip(eps, got):
        for k in offline.FIELDS:
            np.testing.assert_array_equal(np.asarray(e[k]).astype(g[k].dtype), g[k])
    np.testing.assert_allclose(ds.episode_returns(), [e["rewards"].sum() for e in eps], rtol=1e-5)


def test_d4rl_without_timeouts_cuts_every_max_episode_steps(tmp_path):
    rng = np.random.default_rng(1)
    n = 25
    cols = {"observations": rng.normal(size=(n, 2)), "actions": rng.normal(size=(n, 1)),
            "rewards": rng.normal(size=n), "terminals": np.zeros(n, bool)}
    cols["terminals"][6] = True  # a termination inside the first 10-step block restarts the count
    _write_d4rl(tmp_path / "old.hdf5", cols)
    ds = offline.load_d4rl_hdf5(tmp_path / "old.hdf5", max_episode_steps=10)
    starts, ends = ds.episode_bounds(ds.metadata["max_episode_steps"])
    assert (ends - starts).tolist() == [7, 10, 8]
    assert ds.episode_bounds()[1].tolist() == [7, 25]  # without the cut: termination and trailing piece


def test_d4rl_roundtrip_with_writer(tmp_path):
    rng = np.random.default_rng(2)
    ds = offline.TrajectoryDataset(**_flat(_episodes(rng, [4, 6])), metadata={"env": "x", "env_targets": [1.0, 2.0]})
    offline.save_d4rl_hdf5(tmp_path / "w.hdf5", ds, {"scale": 10.0})
    back = offline.load_dataset(tmp_path / "w.hdf5")
    for k in offline.FIELDS:
        np.testing.assert_array_equal(getattr(ds, k), getattr(back, k))
    assert back.metadata["env_targets"] == [1.0, 2.0] and back.metadata["scale"] == 10.0


def _write_minari(root, eps, final_rows=1):
    """Minari HDF5 layout written with plain h5py: root/data/main_data.hdf5, groups episode_<i>."""
    (root / "data").mkdir(parents=True)
    with h5py.File(root / "data" / "main_data.hdf5", "w") as f:
        f.attrs["env"] = "reacher"
        for i, e in reversed(list(enumerate(eps))):  # written out of order on purpose
            g = f.create_group(f"episode_{i}")
            last = e["observations"][-1:] + 1.0
            g.create_dataset("observations", data=np.concatenate([e["observations"]] + [last] * final_rows))
            g.create_dataset("actions", data=e["actions"])
            g.create_dataset("rewards", data=e["rewards"])
            g.create_dataset("terminations", data=e["terminals"])
            g.create_dataset("truncations", data=e["timeouts"])


def test_minari_reader(tmp_path):
    rng = np.random.default_rng(3)
    eps = _episodes(rng, [3, 5, 2, 11], terminal_last=(False, True))
    _write_minari(tmp_path / "reacher-medium-v0", eps)
    ds = offline.load_dataset(tmp_path / "reacher-medium-v0")
    flat = _flat(eps)
    for k in offline.FIELDS:
        np.testing.assert_array_equal(getattr(ds, k), flat[k].astype(getattr(ds, k).dtype))
    assert ds.metadata["env"] == "reacher"
    assert (np.diff(np.stack(ds.episode_bounds()), axis=0)[0]).tolist() == [3, 5, 2, 11]
    # the writer of this package produces a file the reader reads back identically
    minari_eps = [{"observations": np.concatenate([e["observations"], e["observations"][-1:]]),
                   "actions": e["actions"], "rewards": e["rewards"], "terminations": e["terminals"],
                   "truncations": e["timeouts"]} for e in eps]
    offline.save_minari(tmp_path / "again", minari_eps)
    again = offline.load_minari(tmp_path / "again")
    np.testing.assert_array_equal(again.observations, ds.observations)


@pytest.mark.parametrize("defect, words", [
    ("missing_rewards", ["missing", "rewards"]),
    ("short_actions", ["actions", "mismatch"]),
    ("nan_obs", ["observations", "non-finite"]),
    ("inf_reward", ["rewards", "non-finite"]),
    ("obs_rank", ["observations", "obs_dim"]),
])
def test_d4rl_malformed_files_are_rejected(tmp_path, defect, words):
    rng = np.random.default_rng(4)
    cols = _flat(_episodes(rng, [4, 4]))
    if defect == "missing_rewards":
        del cols["rewards"]
    elif defect == "short_actions":
        cols["actions"] = cols["actions"][:-1]
    elif defect == "nan_obs":
        cols["observations"][5, 1] = np.nan
    elif defect == "inf_reward":
        cols["rewards"][2] = np.inf
    elif defect == "obs_rank":
        cols["observations"] = cols["observations"][:, 0]
    _write_d4rl(tmp_path / "bad.hdf5", cols)
    with pytest.raises(offline.DatasetError) as e:
        offline.load_d4rl_hdf5(tmp_path / "bad.hdf5")
    for w in words:
        assert w in str(e.value)
    assert "bad.hdf5" in str(e.value)


@pytest.mark.parametrize("name, value", [("terminals", 2.5), ("timeouts", -1.0)])
def test_non_boolean_flags_are_rejected(tmp_path, name, value):
    cols = _flat(_episodes(np.random.default_rng(6), [4, 4]))
    cols[name] = cols[name].astype(np.float32)
    cols[name][3] = value
    _write_d4rl(tmp_path / "flags.hdf5", cols)
    with pytest.raises(offline.DatasetError, match=rf"flags.hdf5: {name} must be boolean \(0 or 1\), got "
                                                   rf"{value} at step 3"):
        offline.load_dataset(tmp_path / "flags.hdf5")


def test_a_file_that_is_not_hdf5_is_named(tmp_path):
    (tmp_path / "notes.hdf5").write_text("not a dataset")
    with pytest.raises(offline.DatasetError, match=r"notes.hdf5: not a readable HDF5 file"):
        offline.load_dataset(tmp_path / "notes.hdf5")
    (tmp_path / "empty.hdf5").write_bytes(b"")
    with pytest.raises(offline.DatasetError, match=r"empty.hdf5: not a readable HDF5 file"):
        offline.load_dataset(tmp_path / "empty.hdf5")


def test_minari_malformed_files_are_rejected(tmp_path):
    rng = np.random.default_rng(5)
    eps = _episodes(rng, [3, 4])
    _write_minari(tmp_path / "a", eps, final_rows=0)  # observations without the final one
    with pytest.raises(offline.DatasetError, match="len\\(actions\\) \\+ 1"):
        offline.load_minari(tmp_path / "a")
    _write_minari(tmp_path / "b", eps)
    with h5py.File(tmp_path / "b" / "data" / "main_data.hdf5", "a") as f:
        del f["episode_1"]["truncations"]
    with pytest.raises(offline.DatasetError, match="episode_1.*truncations"):
        offline.load_minari(tmp_path / "b")
    with pytest.raises(FileNotFoundError):
        offline.load_minari(tmp_path / "nowhere")


def _rtg_reference(rewards, lengths, gamma):
    out, i = [], 0
    for T in lengths:
        r = rewards[i:i + T]
        for t in range(T):
            out.append(sum(gamma ** (k - t) * r[k] for k in range(t, T)))
        i += T
    return np.asarray(out)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_returns_to_go_matches_reference(gamma):
    rng = np.random.default_rng(6)
    lengths = [1, 6, 3, 9]
    r = rng.normal(size=sum(lengths)).astype(np.float32)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    np.testing.assert_allclose(offline.returns_to_go(r, starts, ends, gamma), _rtg_reference(r, lengths, gamma),
                               rtol=1e-5, atol=1e-5)


def test_state_stats_and_normalized_score():
    rng = np.random.default_rng(7)
    x = rng.normal(3.0, 2.0, size=(100, 4))
    mean, std = offline.state_stats(x)
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, x.std(0) + 1e-6, rtol=1e-6)
    np.testing.assert_allclose(offline.normalized_score([-2.0, 4.0], -2.0, 6.0), [0.0, 75.0])
    with pytest.raises(ValueError):
        offline.normalized_score(1.0, 2.0, 2.0)


def test_windows_match_reference():
    """Left-padded windows (values, mask, RTG/scale, in-episode timesteps, zero padding) vs a python loop."""
    rng = np.random.default_rng(8)
    lengths = [2, 7, 4]
    eps = _episodes(rng, lengths, terminal_last=(True, False))
    ds = offline.TrajectoryDataset(**_flat(eps))
    data, mean, std = prepare_windows(ds, scale=10.0, max_ep_len=5)
    K = 4
    t0 = np.arange(len(ds))
    w = gather_windows(data, jnp.asarray(t0), K)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    rtg = offline.returns_to_go(ds.rewards, starts, ends) / 10.0
    for b, s0 in enumerate(t0):
        e = ends[np.searchsorted(ends, s0, side="right")]
        st = starts[np.searchsorted(ends, s0, side="right")]
        steps = list(range(s0, min(s0 + K, e)))
        pad = K - len(steps)
        assert w.mask[b].tolist() == [0.0] * pad + [1.0] * len(steps)
        np.testing.assert_allclose(w.obs[b, :pad], 0.0)
        np.testing.assert_allclose(w.obs[b, pad:], (ds.observations[steps] - mean) / std, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(w.actions[b, pad:], ds.actions[steps])
        np.testing.assert_allclose(w.rtg[b, pad:], rtg[steps], rtol=1e-6)
        assert w.timesteps[b].tolist() == [0] * pad + [min(s - st, 4) for s in steps]
        assert bool(w.no_bootstrap[b, -1]) == bool(ds.terminals[steps[-1]])
    # timeouts count as terminal only when asked (tasks with time in the observation)
    data2, _, _ = prepare_windows(ds, scale=10.0, bootstrap_timeouts=False)
    np.testing.assert_array_equal(np.asarray(data2.no_bootstrap), ds.terminals | ds.timeouts)


def test_reacher_action_map_replays_the_episode():
    """Per-step normalised PD commands recorded from a desired trajectory reproduce it through the task's step."""
    task = envs.make("reacher", episode_length=12)

    @jax.jit
    def run(key):
        start = task.reset(key)
        k = jnp.arange(12, dtype=jnp.float32)[:, None]
        desired = jnp.concatenate([start.desired_pos + 0.8 * jnp.sin(0.3 * k + jnp.array([0.0, 1.0])),
                                   0.5 * jnp.cos(0.3 * k) * jnp.ones(2)], axis=-1)
        rec = offline_actions.record_desired(task, start, desired)
        rep = offline_actions.record_actions(task, start, rec.actions)
        # the start state reconstructed from the first observation reproduces the episode too
        rec2 = offline_actions.record_desired(task, offline_actions.start_from_obs(task, rec.obs[0]), desired)
        return rec, rep, rec2

    rec, rep, rec2 = run(jax.random.PRNGKey(0))
    assert float(jnp.max(jnp.abs(rec.actions))) <= 1.0
    assert float(jnp.max(jnp.abs(rec.actions))) > 0.5  # the commands are not trivially zero
    np.testing.assert_allclose(rep.obs, rec.obs, atol=2e-5)
    np.testing.assert_allclose(rep.rewards, rec.rewards, atol=2e-5)
    np.testing.assert_allclose(rec2.rewards, rec.rewards, atol=1e-4)


@pytest.mark.slow
def test_hopper_action_map_replays_the_episode():
    """As for the reacher, on hopper jump (contacts; the action is fancy_gym's clipped env action)."""
    task = envs.make("hopper-jump-sparse", episode_length=40)

    @jax.jit
    def run(key):
        start = task.reset(key)
        k = jnp.arange(40, dtype=jnp.float32)[:, None]
        desired = jnp.concatenate([start.desired_pos + 0.6 * jnp.sin(0.2 * k + jnp.array([0.0, 1.0, 2.0])),
                                   jnp.zeros((40, 3))], axis=-1)
        rec = offline_actions.record_desired(task, start, desired)
        rep = offline_actions.record_actions(task, start, rec.actions)
        rec2 = offline_actions.record_desired(task, offline_actions.start_from_obs(task, rec.obs[0]), desired)
        return rec, rep, rec2

    rec, rep, rec2 = run(jax.random.PRNGKey(3))
    assert float(jnp.max(jnp.abs(rec.actions))) <= 1.0 and float(jnp.max(jnp.abs(rec.actions))) > 0.3
    np.testing.assert_allclose(rep.obs, rec.obs, atol=1e-3)
    np.testing.assert_allclose(rep.rewards, rec.rewards, atol=1e-4)
    np.testing.assert_allclose(rec2.obs, rec.obs, atol=1e-4)


def test_unsupported_task_is_named():
    class Fake:
        name = "box-pushing-dense"

    with pytest.raises(ValueError, match="box-pushing-dense"):
        offline_actions.check_supported(Fake())


@pytest.mark.parametrize("ref_min, ref_max, usable", [(-7.85, 25.73, True), (9.76, 9.04, False), (3.0, 3.0, False),
                                                      (None, 25.7, False), (-7.85, None, False)])
def test_normalised_score_only_with_an_expert_above_random(ref_min, ref_max, usable):
    """An inverted pair (expert below random, e.g. an under-trained behaviour agent) would rank a lower return as a
    higher score, so the run reports raw returns instead."""
    assert offline.references_usable(ref_min, ref_max) is usable
    if usable:  # the score then rises with the return
        assert offline.normalized_score(10.0, ref_min, ref_max) > offline.normalized_score(5.0, ref_min, ref_max)
