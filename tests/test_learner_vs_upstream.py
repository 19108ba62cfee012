"""benchmarks/learner_vs_upstream.py without the original code: its one-line usage errors and the shared inputs.
(The benchmark itself needs a checkout of BruceGeLi/TOP_ERL_ICLR25_Code and a python that runs it.)"""

import sys

import numpy as np
import pytest
import tyro

from benchmarks import learner_vs_upstream as lv
from toperl_jax import cli


def _run(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        cli.main(lambda: lv.main(tyro.cli(lv.Args, args=list(argv))))
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1, err
    return err[0]


def test_usage_errors_are_one_line(capsys, tmp_path):
    assert _run(capsys).startswith("error: --upstream: required: the path of a local checkout of "
                                   "BruceGeLi/TOP_ERL_ICLR25_Code")
    assert "is not a checkout of BruceGeLi/TOP_ERL_ICLR25_Code" in _run(capsys, "--upstream", str(tmp_path))
    agent = tmp_path / "mprl" / "rl" / "agent" / "top_erl_agent.py"
    agent.parent.mkdir(parents=True)
    agent.write_text("")
    assert _run(capsys, "--upstream", str(tmp_path), "--upstream-python", str(tmp_path / "nope")).startswith(
        "error: --upstream-python: required")
    ok = ["--upstream", str(tmp_path), "--upstream-python", sys.executable]
    assert _run(capsys, *ok, "--lengths", "7").startswith("error: --lengths: [7] not candidate lengths of hopper")
    assert _run(capsys, *ok, "--repeats", "0").startswith("error: --repeats: must be >= 1")


def test_shared_inputs():
    rng = np.random.default_rng(0)
    B, T, S, dof, k = 4, 10, 5, 2, 6
    batch = lv.random_batch(rng, B, T, S, dof, k)
    ep = lv.episode(batch)
    assert ep.states.shape == (B, T, S) and ep.actions.shape == (B, T, 2 * dof) and ep.params_L.shape == (B, k, k)
    np.testing.assert_array_equal(batch["step_desired_pos"][:, 0], batch["episode_init_pos"])
    dtype, shape, raw = lv.encode(batch["step_dones"])
    np.testing.assert_array_equal(np.frombuffer(raw, np.dtype(dtype)).reshape(shape), batch["step_dones"])
    L_old, L_new, kl = lv.covariance_factors(rng, k, 5e-4, 10.0)
    d = np.diag(L_new).astype(np.float64) ** 2  # KL(N(0, diag d) ‖ N(0, I)), the covariance part
    assert kl == pytest.approx(5e-3, rel=1e-6) and 0.5 * np.sum(d - 1 - np.log(d)) == pytest.approx(kl, rel=1e-4)
    np.testing.assert_array_equal(L_old, np.eye(k))
