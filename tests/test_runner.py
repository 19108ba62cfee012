"""The shared host loop (`toperl_jax.runner`) on a toy program: divergence stops a seed, resume skips an
unreadable checkpoint. The toy's parameter counts its iterations, so every expected value is known exactly."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import types
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from toperl_jax import checkpoint as ckpt
from toperl_jax import runner


class _Policy(NamedTuple):
    params: jax.Array  # the iteration count; NaN once diverged


class _State(NamedTuple):
    policy: _Policy
    seed: jax.Array


@dataclasses.dataclass(frozen=True)
class _Args:
    logdir: str
    run_name: str = "toy"
    seed: int = 0
    num_seeds: int = 3
    iterations: int = 8
    num_envs: int = 1
    eval_interval: int = 2
    checkpoint_interval: int = 1
    resume: bool = False
    overwrite: bool = False
    compile_cache: str = ""
    task: str = "toy"
    env: str = "toy"
    video: bool = False
    distributed: bool = False
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    bad_seed: int = 1  # this seed's parameter turns NaN from iteration `bad_from` on (-1: none)
    bad_from: int = 5

    @property
    def run_dir(self) -> pathlib.Path:
        return pathlib.Path(self.logdir) / self.run_name


def _program(args: _Args) -> runner.Program:
    def init(key):
        return _State(_Policy(jnp.float32(0.0)), key[1].astype(jnp.int32))  # PRNGKey(s) = [0, s]

    def run_chunk(state: _State, first_it):
        def body(s: _State, i):
            it = first_it + i
            w = jnp.where((s.seed == args.bad_seed) & (it >= args.bad_from), jnp.nan, s.policy.params + 1.0)
            return s._replace(policy=_Policy(w)), {"loss": w}

        return lax.scan(body, state, jnp.arange(args.eval_interval))

    def evaluate(params, key):
        return {"return": params}

    task = types.SimpleNamespace(name="toy", episode_length=1, compiler_options=lambda platform: None)
    return runner.Program(init, run_chunk, evaluate, None, task, types.SimpleNamespace(T=1, dt=1.0))


def _run(args: _Args, **kw) -> dict[str, Any]:
    return runner.run(args, _program(args), verbose=False, **kw)


def test_a_diverged_seed_stops_and_keeps_its_last_finite_state(tmp_path, capsys):
    """Seed 1 turns NaN in iteration 5 (chunk 5–6): it is stopped with its state after iteration 4, the others
    train to the end, the summary names the divergence, and the checkpoint holds the finite state."""
    args = _Args(logdir=str(tmp_path))
    s = _run(args)
    np.testing.assert_array_equal(np.asarray(s["state"].policy.params), [8.0, 4.0, 8.0])
    assert capsys.readouterr().err.count("diverged") == 1
    seed1 = s["per_seed"][1]
    assert seed1["diverged_at_iteration"] == 6 and "diverged at iteration 6" in seed1["diverged"]
    assert seed1["final"]["iteration"] == 4 and seed1["final"]["eval/return"] == 4.0
    assert [p["final"]["eval/return"] for p in (s["per_seed"][0], s["per_seed"][2])] == [8.0, 8.0]
    assert "diverged" not in s["per_seed"][0]
    saved = json.loads((tmp_path / "toy" / "summary.json").read_text())
    assert [h["eval/return"][1] for h in saved["history"]] == [0.0, 2.0, 4.0, None, None]  # JSON null, not NaN
    mgr = ckpt.manager(args.run_dir)
    state, meta, step = ckpt.restore(mgr, s["state"])
    assert step == 4 and meta["diverged"] == {"1": [5, 6]}
    np.testing.assert_array_equal(np.asarray(state.policy.params), [8.0, 4.0, 8.0])


def test_the_summary_names_the_commit_the_run_started_from(tmp_path, monkeypatch):
    """A long run outlives commits to its checkout: the summary written after every chunk must name the code
    the run started with, not the checkout's HEAD at the time of writing."""
    commits = iter(f"c{i}" for i in range(100))
    monkeypatch.setattr(runner, "git_commit", lambda: next(commits))
    args = _Args(logdir=str(tmp_path), bad_seed=-1)
    s = _run(args)
    assert s["git_commit"] == "c0"
    assert json.loads((tmp_path / "toy" / "summary.json").read_text())["git_commit"] == "c0"


def test_the_run_stops_when_every_seed_has_diverged(tmp_path):
    s = _run(_Args(logdir=str(tmp_path), num_seeds=1, bad_seed=0, bad_from=3))
    assert s["iterations_done"] == 4  # the chunk in which it diverged; no chunk after it
    assert s["per_seed"][0]["final"]["iteration"] == 2 and s["per_seed"][0]["diverged_at_iteration"] == 4
    np.testing.assert_array_equal(np.asarray(s["state"].policy.params), [2.0])


def test_a_resumed_run_keeps_a_diverged_seed_stopped(tmp_path):
    args = _Args(logdir=str(tmp_path))
    _run(args, max_chunks=3)
    s = _run(dataclasses.replace(args, resume=True))
    np.testing.assert_array_equal(np.asarray(s["state"].policy.params), [8.0, 4.0, 8.0])
    assert s["per_seed"][1]["diverged_at_iteration"] == 6


@pytest.mark.parametrize("damage", ["truncate", "remove_state"])
def test_resume_skips_an_unreadable_newest_checkpoint(tmp_path, capsys, damage):
    """The newest checkpoint truncated or incomplete: `--resume` names it, moves it aside, continues from the one
    before, and ends where an uninterrupted run ends."""
    args = _Args(logdir=str(tmp_path), bad_seed=-1)
    _run(args, max_chunks=2)
    newest = args.run_dir / "checkpoints" / "2"
    if damage == "truncate":
        for f in (newest / "state").rglob("*"):
            if f.is_file():
                f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 3])
    else:
        shutil.rmtree(newest / "state")
    s = _run(dataclasses.replace(args, resume=True))
    err = capsys.readouterr().err
    assert "checkpoint 2" in err and "could not be read" in err
    assert [p.name.split(".")[0] for p in (args.run_dir / "checkpoints_skipped").iterdir()] == ["2"]
    assert [h["iteration"] for h in s["history"]] == [0, 2, 4, 6, 8]
    np.testing.assert_array_equal(np.asarray(s["state"].policy.params), [8.0, 8.0, 8.0])


def test_resume_with_no_readable_checkpoint_is_one_clear_error(tmp_path):
    args = _Args(logdir=str(tmp_path), bad_seed=-1, checkpoint_interval=0)
    _run(dataclasses.replace(args, checkpoint_interval=4), max_chunks=1)  # one checkpoint (the last chunk run)
    shutil.rmtree(args.run_dir / "checkpoints" / "1" / "state")
    with pytest.raises(ValueError, match=r"--resume: no checkpoint in .* could be read \(step 1: "):
        _run(dataclasses.replace(args, resume=True, checkpoint_interval=4))


def test_run_if_traces_its_function_once_and_gives_nan_metrics_when_skipped():
    """`run_if` nested as an update inside an iteration traces each function once (a trace of a TOP-ERL
    iteration costs seconds), under jit and vmap; a skipped call keeps the state and gives float32 NaN metrics
    of the ran call's structure. Under `jax.disable_jit` (a concrete predicate) the skip still works."""
    traces = {"inner": 0, "outer": 0}

    def inner(x, k):
        traces["inner"] += 1
        return x + k, {"m": jnp.sum(x) * k, "n": jnp.arange(3)}

    def outer(x, k):
        traces["outer"] += 1
        x, metrics = runner.run_if(k > 1, inner, x, k)
        return 2 * x, metrics

    f = jax.jit(jax.vmap(lambda x, k: runner.run_if(k > 0, outer, x, k)))
    x, metrics = f(jnp.ones((3, 2)), jnp.array([0, 1, 2]))
    assert traces == {"inner": 1, "outer": 1}
    np.testing.assert_array_equal(x, [[1, 1], [2, 2], [6, 6]])
    np.testing.assert_array_equal(metrics["m"], [np.nan, np.nan, 4.0])
    assert metrics["n"].dtype == jnp.float32 and np.isnan(metrics["n"][:2]).all()
    np.testing.assert_array_equal(metrics["n"][2], [0, 1, 2])
    with jax.disable_jit():
        x, metrics = runner.run_if(jnp.bool_(False), inner, jnp.ones(2), 1)
    np.testing.assert_array_equal(x, [1, 1])
    assert jax.tree.map(jnp.shape, metrics) == {"m": (), "n": (3,)} and np.isnan(metrics["m"])
