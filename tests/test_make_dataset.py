"""benchmarks/make_dataset.py: flag validation and the flat D4RL columns (no compilation; the end-to-end recipes are
measured in docs/qt.md)."""

import dataclasses
import pathlib

import numpy as np
import pytest

from toperl_jax.offline import actions as offline_actions

from benchmarks import make_dataset as md


def _te(*flags):
    return md.top_erl.parse_args(["--task", "reach", *flags])


@pytest.mark.parametrize("change, flags, message", [
    ({"recipes": ("random", "good")}, (), r"--recipes: unknown recipe\(s\) \['good'\]"),
    ({"episodes": 0}, (), "--episodes: must be ≥ 1"),
    ({"medium_iterations": 30}, ("--eval-interval", "20"),
     r"--medium-iterations: must be a positive multiple of the behaviour chunk \(20 iterations\), got 30"),
    ({"medium_iterations": 40, "expert_iterations": 20}, ("--eval-interval", "20"),
     "--expert-iterations: must be ≥ --medium-iterations=40"),
    ({}, ("--traj-downsample-factor", "5"), "--behaviour-flags: --traj-downsample-factor must be 1"),
])
def test_bad_flags_are_refused_with_the_flag_named(change, flags, message):
    args = dataclasses.replace(md.Args(medium_iterations=20, expert_iterations=40), **change)
    with pytest.raises(ValueError, match=message):
        md.check_args(args, _te(*flags))


@pytest.mark.parametrize("script, flags, message", [
    ("make_dataset", ["--episodes", "0"], "error: --episodes: must be ≥ 1"),
    ("make_dataset", ["--recipes", "medium", "nonsense"], "error: --recipes: unknown recipe(s) ['nonsense']"),
    ("make_locomotion_dataset", ["--trainer-flags", "num_timesteps=5"], "error: --trainer-flags: not valid JSON"),
])
def test_a_bad_flag_is_one_line_not_a_traceback(script, flags, message):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, f"benchmarks/{script}.py", *flags], capture_output=True, text=True,
                         cwd=pathlib.Path(__file__).parents[1], timeout=300)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith(message), out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_good_flags_pass():
    md.check_args(md.Args(medium_iterations=20, expert_iterations=40), _te("--eval-interval", "20"))


def test_flatten_matches_a_loop_over_episodes():
    rng = np.random.default_rng(0)
    n, T, S, A = 3, 4, 5, 2
    rec = offline_actions.Recorded(obs=rng.normal(size=(n, T, S)), actions=rng.uniform(-1, 1, (n, T, A)),
                                   rewards=rng.normal(size=(n, T)), dones=None, final_obs=None,
                                   final_metrics={})
    cols = md._flatten(rec)
    rows = [(rec.obs[i, t], rec.actions[i, t], rec.rewards[i, t], t == T - 1) for i in range(n) for t in range(T)]
    np.testing.assert_array_equal(cols["observations"], np.stack([r[0] for r in rows]))
    np.testing.assert_array_equal(cols["actions"], np.stack([r[1] for r in rows]))
    np.testing.assert_array_equal(cols["rewards"], np.array([r[2] for r in rows]))
    np.testing.assert_array_equal(cols["timeouts"], np.array([r[3] for r in rows]))
    assert not cols["terminals"].any()
