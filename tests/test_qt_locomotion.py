"""benchmarks/qt_locomotion.py with stand-ins for the dataset script and QT's run (the real runs are a GPU job):
per-dataset settings reach QT's parser, datasets are made once, finished runs are skipped, the table holds the
seeds' mean ± std."""

import dataclasses
import json
import pathlib
import types

import numpy as np
import pytest


from benchmarks import qt_locomotion as bench
from variants import qt


def test_loop_settings_skip_and_table(tmp_path):
    args = bench.Args(envs=("hopper", "halfcheetah"), recipes=("medium", "medium-replay"), num_seeds=2,
                      dataset_dir=str(tmp_path / "data"), logdir=str(tmp_path / "runs"), out=str(tmp_path / "out"),
                      qt_flags="--iterations 3")
    made, runs = [], []

    def make_dataset(env):
        made.append(env)
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / f"brax-{env}-summary.json").write_text("{}")

    def fake_run(a):
        runs.append(a)
        finals = [10.0 * len(runs), 10.0 * len(runs) + 4.0]
        a.run_dir.mkdir(parents=True, exist_ok=True)
        (a.run_dir / "summary.json").write_text(json.dumps({
            "iterations_done": a.iterations, "eta": a.eta, "score_key": "eval/normalized_score",
            "per_seed": [{"final": {"eval/normalized_score": f}} for f in finals]}))

    stand_in = types.SimpleNamespace(parse_args=qt.parse_args, run=fake_run)
    results = bench.run_all(args, make_dataset=make_dataset, qt=stand_in)
    assert made == ["hopper", "halfcheetah"]
    got = {(pathlib.Path(a.dataset).name, a.eta, a.grad_norm, a.context_len, a.num_seeds, a.iterations, a.resume)
           for a in runs}
    assert got == {("brax-hopper-medium-v0.hdf5", 1.0, 9.0, 20, 2, 3, False),
                   ("brax-hopper-medium-replay-v0.hdf5", 3.0, 9.0, 20, 2, 3, False),
                   ("brax-halfcheetah-medium-v0.hdf5", 5.0, 15.0, 5, 2, 3, False),
                   ("brax-halfcheetah-medium-replay-v0.hdf5", 5.0, 15.0, 5, 2, 3, False)}
    assert all(a.n_layer == 4 and a.n_embd == 256 and a.batch_size == 256 for a in runs)  # the paper preset
    # the table: mean ± std of each run's seeds, the paper's number where the spec has one
    table = (tmp_path / "out" / "table.md").read_text()
    for i, a in enumerate(runs, 1):
        finals = np.array([10.0 * i, 10.0 * i + 4.0])
        assert f"{finals.mean():.1f} ± {finals.std():.1f}" in table
    assert "| brax-hopper-medium-replay |" in table and "102.0 ± 0.2" in table
    assert results["brax-hopper-medium"]["final"] == [10.0, 14.0]
    # a second call makes no dataset and runs nothing
    bench.run_all(args, make_dataset=make_dataset, qt=stand_in)
    assert len(made) == 2 and len(runs) == 4


@pytest.mark.parametrize("change, message", [
    ({"envs": ("ant",)}, r"--envs/--recipes: no settings for \[\('ant', 'medium'\)"),
    ({"recipes": ("expert",)}, r"no settings for \[\('hopper', 'expert'\)"),
    ({"num_seeds": 0}, "--num-seeds: must be ≥ 1"),
])
def test_bad_flags(change, message):
    with pytest.raises(ValueError, match=message):
        bench.check_args(dataclasses.replace(bench.Args(envs=("hopper",)), **change))
