"""benchmarks/reproduce.py end to end on a tiny reach configuration, and its statistics against rliable and numpy.

One tiny training run (2 vmapped seeds, 4 iterations, the same shapes as tests/test_top_erl.py's TINY so the
persistent compilation cache is shared) feeds every end-to-end test; the others use fixed synthetic logs.
"""

import dataclasses
import json
import pathlib
import shutil
import struct
import sys
import time
import zlib

import jax
import numpy as np
import pytest

pytest.importorskip("rliable")
pytest.importorskip("matplotlib")

from benchmarks import reproduce as rp

TINY_FLAGS = ["--iterations", "4", "--eval-interval", "2", "--num-envs", "4", "--batch-size", "8", "--epochs-critic", "2",
              "--epochs-policy", "1", "--critic-update-from", "1", "--policy-update-from", "2", "--buffer-size", "16",
              "--n-embd", "16", "--n-head", "2", "--n-layer", "1", "--policy-hidden-sizes", "16",
              "--num-eval-episodes", "4", "--micro-batch", "4", "--compile-cache", ""]


def _cli(tmp: pathlib.Path, *more: str) -> list[str]:
    return ["--suite", "reach", "--num-seeds", "2", "--seeds-per-run", "2", "--logdir", str(tmp / "runs"),
            "--out", str(tmp / "out"), "--reps", "300", "--quiet", *more]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    result = rp.main(_cli(tmp, *TINY_FLAGS))
    return tmp, result


def _png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, checking the signature and the chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    length, ctype = struct.unpack(">I4s", data[8:16])
    assert ctype == b"IHDR" and length == 13
    body = data[16:16 + length]
    (crc,) = struct.unpack(">I", data[16 + length:20 + length])
    assert zlib.crc32(ctype + body) == crc, "IHDR CRC mismatch"
    return struct.unpack(">II", body[:8])


def _numpy_iqm(x) -> float:
    """Mean of the middle 50 % of the sorted values (len divisible by 4 in the callers, so no fractional trim)."""
    x = np.sort(np.asarray(x, np.float64))
    n = len(x)
    assert n % 4 == 0
    return float(x[n // 4: n - n // 4].mean())


def _read_csv(path):
    import csv

    with path.open() as f:
        return list(csv.DictReader(f))


def test_end_to_end_csv_table_plot(tiny):
    tmp, _ = tiny
    out = tmp / "out" / "bench_reach"
    summary = json.loads((tmp / "runs" / "reach" / "top_erl" / "seeds0-1" / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["iterations_done"] == 4

    rows = _read_csv(out / "raw.csv")
    assert {"variant", "seed", "env_steps", "eval/is_success", "eval/distance"} <= set(rows[0])
    assert len(rows) == 2 * len(summary["history"]) == 6  # 2 seeds × evaluations at iterations 0, 2, 4
    assert sorted({int(r["seed"]) for r in rows}) == [0, 1]
    assert sorted({int(r["env_steps"]) for r in rows}) == [0, 400, 800]  # 4 episodes × 50 steps × 2 iterations
    for r in rows:  # every CSV value is the run's logged value
        h = next(h for h in summary["history"] if h["env_steps"] == int(r["env_steps"]))
        for key in ("eval/is_success", "eval/distance", "eval/return"):
            assert float(r[key]) == pytest.approx(h[key][int(r["seed"])], rel=1e-12)

    table = (out / "table.md").read_text()
    finals = [float(r["eval/distance"]) for r in rows if int(r["env_steps"]) == 800]
    iqm2 = float(np.mean(finals))  # IQM of 2 values: trim_mean(0.25) trims int(0.5) = 0 from each end
    _, lo, hi = rp.final_iqm_ci(np.array(finals), reps=300)
    assert f"| top_erl | 2 | 800 | {iqm2:.3f} [{lo:.3f}, {hi:.3f}] |" in table
    assert "eval/is_success" in table and "the paper has no reaching result" in table
    assert lo <= iqm2 <= hi

    data = (out / "curves.png").read_bytes()
    w, h = _png_size(data)
    assert w > 200 and h > 100
    from PIL import Image

    with Image.open(out / "curves.png") as im:
        im.load()  # decodes every IDAT chunk
        assert im.size == (w, h)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["records"][0]["status"] == "trained"


def test_rerun_skips_complete_runs_and_aggregate_only_matches(tiny, capsys):
    tmp, first = tiny
    summary = tmp / "runs" / "reach" / "top_erl" / "seeds0-1" / "summary.json"
    before = summary.stat().st_mtime_ns
    args_json = summary.parent / "args.json"
    original = args_json.read_text()
    saved = json.loads(original)
    saved["lr_policy"] = 0.5
    args_json.write_text(json.dumps(saved))
    with pytest.raises(SystemExit, match="other flags.*lr_policy"):
        rp.main(_cli(tmp, *TINY_FLAGS))
    del saved["lr_policy"], saved["traj_downsample_factor"]  # as saved before these flags existed: their defaults
    args_json.write_text(json.dumps(saved))
    again = rp.main(_cli(tmp, *TINY_FLAGS))
    args_json.write_text(original)
    assert "complete" in capsys.readouterr().out
    assert summary.stat().st_mtime_ns == before
    only = rp.main(_cli(tmp, "--aggregate-only"))
    body = lambda t: t.split("\n", 3)[3]  # drop the header line with the command and the date
    assert body(only["table"]) == body(again["table"]) == body(first["table"])


def test_tensorboard_fallback_equals_summary(tiny, tmp_path):
    tmp, _ = tiny
    src = tmp / "runs" / "reach" / "top_erl" / "seeds0-1"
    run = tmp_path / "copy"
    shutil.copytree(src, run, ignore=shutil.ignore_patterns("checkpoints"))
    from_summary = rp.collect(run, "top_erl")
    (run / "summary.json").unlink()
    from_tb = rp.collect(run, "top_erl")
    assert {r["source"] for r in from_tb} == {"tensorboard"} and len(from_tb) == len(from_summary)
    key = lambda r: (r["seed"], r["env_steps"])
    for a, b in zip(sorted(from_summary, key=key), sorted(from_tb, key=key)):
        assert key(a) == key(b)
        for m in ("eval/is_success", "eval/distance", "eval/return"):
            assert b[m] == pytest.approx(a[m], rel=1e-6, abs=1e-7)  # TensorBoard stores float32


@pytest.mark.parametrize("n", [8, 12])
def test_iqm_ci_against_rliable_and_numpy(n):
    from rliable import library, metrics

    rng = np.random.default_rng(n)
    scores = np.concatenate([rng.beta(2, 5, size=(n - 2, 6)), rng.uniform(0.9, 1.0, size=(2, 6))])  # outliers

    # rliable called directly (its own aggregate_iqm), same data and seed: the same numbers (rliable 1.2 resamples
    # with the global numpy RNG, whatever random_state says)
    point, lo, hi = rp.iqm_curve_ci(scores, reps=500, seed=7)
    np.random.seed(7)
    ref_p, ref_ci = library.get_interval_estimates(
        {"a": scores[:, None, :]}, lambda x: np.array([metrics.aggregate_iqm(x[..., j]) for j in range(6)]),
        reps=500, random_state=np.random.RandomState(7))
    np.testing.assert_allclose(point, ref_p["a"], rtol=1e-12)
    np.testing.assert_allclose(lo, ref_ci["a"][0], rtol=1e-12)
    np.testing.assert_allclose(hi, ref_ci["a"][1], rtol=1e-12)
    f, flo, fhi = rp.final_iqm_ci(scores[:, -1], reps=1000, seed=3)
    np.random.seed(3)
    ref_p, ref_ci = library.get_interval_estimates({"a": scores[:, -1:]}, lambda x: np.array([metrics.aggregate_iqm(x)]),
                                                   reps=1000, random_state=np.random.RandomState(3))
    np.testing.assert_allclose([f, flo, fhi], [ref_p["a"][0], *ref_ci["a"][:, 0]], rtol=1e-12)

    # independent numpy: IQM = mean of the middle 50 %; CI = percentile bootstrap over seeds
    point, lo, hi = rp.iqm_curve_ci(scores, reps=20000, seed=7)
    np.testing.assert_allclose(point, [_numpy_iqm(scores[:, j]) for j in range(6)], rtol=1e-12)
    assert not np.allclose(point, scores.mean(0))  # the outliers make the IQM differ from the mean
    resampled = np.sort(scores[rng.integers(0, n, (40000, n))], axis=1)  # [reps, n, 6]
    boot = resampled[:, n // 4: n - n // 4].mean(axis=1)
    np_lo, np_hi = np.percentile(boot, [2.5, 97.5], axis=0)
    spread = scores.max() - scores.min()
    np.testing.assert_allclose(lo, np_lo, atol=0.02 * spread)  # Monte-Carlo error of 20000 vs 40000 replications
    np.testing.assert_allclose(hi, np_hi, atol=0.02 * spread)
    assert np.all(lo <= point) and np.all(point <= hi) and np.all(hi - lo > 0)

    again = rp.iqm_curve_ci(scores, reps=20000, seed=7)
    for a, b in zip(again, (point, lo, hi)):
        np.testing.assert_array_equal(a, b)  # reproducible
    assert rp.iqm(scores[:, 0]) == pytest.approx(_numpy_iqm(scores[:, 0]), rel=1e-12)


def test_first_reach():
    steps = np.array([0.0, 10, 20, 30])
    assert rp.first_reach(steps, np.array([0.1, 0.5, 0.4, 0.9]), 0.5, True) == 10
    assert rp.first_reach(steps, np.array([0.1, 0.5, 0.4, 0.9]), 0.95, True) is None
    assert rp.first_reach(steps, np.array([0.3, 0.2, 0.05, 0.01]), 0.05, False) == 20


def test_aggregate_only_with_paper_markers(tmp_path):
    """Synthetic box-dense logs (8 seeds in two groups): table with the paper's value, plot with its markers."""
    rng = np.random.default_rng(3)
    steps = [0, 1_000_000, 2_000_000]
    finals = []
    for s0 in (0, 4):
        run = tmp_path / "runs" / "box-dense" / "top_erl" / f"seeds{s0}-{s0 + 3}"
        run.mkdir(parents=True)
        vals = rng.uniform(0, 1, size=(3, 4))
        finals.extend(vals[-1])
        hist = [{"iteration": i * 100, "env_steps": st, "eval/is_success": vals[i].tolist()}
                for i, st in enumerate(steps)]
        (run / "summary.json").write_text(json.dumps({"seeds": list(range(s0, s0 + 4)), "history": hist,
                                                      "iterations_done": 200}))
    res = rp.main(["--suite", "box-dense", "--num-seeds", "8", "--logdir", str(tmp_path / "runs"), "--out",
                   str(tmp_path / "out"), "--aggregate-only", "--reps", "500"])
    table = res["table"]
    assert f"| top_erl | 8 | 2M | {_numpy_iqm(finals):.3f} [" in table
    assert "≈0.84 at 40M" in table and "TCE 0.63" in table
    _png_size((tmp_path / "out" / "bench_box-dense" / "curves.png").read_bytes())


def test_reach_switch_suite_gives_both_variants_the_same_budget():
    """The replanning comparison (issue 6): plain TOP-ERL on the goal-switching reacher vs the replanning preset,
    with every shared knob equal, so the only difference is the splits."""
    suite = rp.SUITES["reach-switch"]
    assert suite.variants == ("top_erl", "top_erl_replan")
    plain = rp.load_variant("top_erl").parse_args(suite.preset_argv("top_erl"))
    replan = rp.load_variant("top_erl_replan").parse_args(suite.preset_argv("top_erl_replan"))
    assert plain.env == replan.env == "reacher-switch"
    assert replan.n_splits == 2
    shared = set(dataclasses.asdict(plain)) & set(dataclasses.asdict(replan)) - {"task", "run_name"}
    assert {"iterations", "num_envs", "epochs_critic", "lr_policy"} <= shared
    assert {k: getattr(plain, k) for k in shared} == {k: getattr(replan, k) for k in shared}


def _write_summary(run: pathlib.Path, seeds: list[int], steps: list[int], values: np.ndarray, iterations: int):
    """A finished run's summary.json: values [evals, seeds] of eval/is_success."""
    run.mkdir(parents=True, exist_ok=True)
    hist = [{"iteration": i, "env_steps": st, "eval/is_success": values[i].tolist()} for i, st in enumerate(steps)]
    (run / "summary.json").write_text(json.dumps({"seeds": seeds, "history": hist, "iterations_done": iterations}))


def test_multitask_suite_aggregates_over_tasks_and_seeds(tmp_path):
    """metaworld-mt50 on synthetic logs of 3 tasks × 4 seeds: IQM over the 12 runs, the CI of rliable's
    stratified bootstrap (seeds resampled within tasks), per-task means, a task column in the CSV."""
    from rliable import library, metrics

    rng = np.random.default_rng(5)
    tasks, steps = ["reach", "push", "drawer-open"], [0, 500_000, 1_000_000]
    vals = rng.uniform(0, 1, size=(3, len(steps), 4))  # [task, eval, seed]
    vals[1] *= 0.2  # one hard task: the IQM over runs differs from the mean of per-task IQMs
    for t, task in enumerate(tasks):
        _write_summary(tmp_path / "runs" / "metaworld-mt50" / "top_erl" / task / "seeds0-3", [0, 1, 2, 3], steps,
                       vals[t], 100)
    _write_summary(tmp_path / "runs" / "metaworld-mt50" / "top_erl" / "push-wall" / "seeds0-3", [0, 1, 2, 3], steps,
                   np.ones((3, 4)), 100)  # a task not asked for is not aggregated
    res = rp.main(["--suite", "metaworld-mt50", "--tasks", *tasks, "--logdir", str(tmp_path / "runs"), "--out",
                   str(tmp_path / "out"), "--aggregate-only", "--reps", "500", "--stats-seed", "4"])
    finals = vals[:, -1, :]  # [task, seed]
    a = res["agg"][("top_erl", rp.SUCCESS)]
    assert a["tasks"] == tasks and a["seeds"] == [0, 1, 2, 3]
    assert a["final"][0] == pytest.approx(_numpy_iqm(finals.ravel()), rel=1e-12)
    np.random.seed(4)
    ref_p, ref_ci = library.get_interval_estimates({"a": finals.T}, lambda x: np.array([metrics.aggregate_iqm(x)]),
                                                   reps=500, random_state=np.random.RandomState(4))
    np.testing.assert_allclose(a["final"], [ref_p["a"][0], *ref_ci["a"][:, 0]], rtol=1e-12)
    np.testing.assert_allclose(a["iqm"], [_numpy_iqm(vals[:, j].ravel()) for j in range(3)], rtol=1e-12)
    table = res["table"]
    assert f"| top_erl | 4 × 3 | 1M | {a['final'][0]:.3f} [" in table and "IQM ≥ 0.9 at (runs reaching)" in table
    assert "≈0.985 at 21M" in table
    assert ("per task (final, mean over 4 seeds): " + ", ".join(f"{t} {m:.2f}" for t, m in
                                                                zip(tasks, finals.mean(1)))) in table
    rows = _read_csv(tmp_path / "out" / "bench_metaworld-mt50" / "raw.csv")
    assert len(rows) == 3 * 3 * 4 and {r["task"] for r in rows} == set(tasks)


def test_multitask_suite_trains_one_run_per_task(tmp_path, monkeypatch, capsys):
    """The loop of a multi-task suite, with a stand-in variant whose argv parsing is top_erl's: one run per task and
    seed group with `--env metaworld-<task>` and the metaworld preset; a second call skips the finished runs."""
    te = rp.load_variant("top_erl")
    calls = []

    class Variant:
        parse_args = staticmethod(te.parse_args)

        @staticmethod
        def run(args, verbose=True):
            calls.append(args)
            seeds = list(range(args.seed, args.seed + args.num_seeds))
            _write_summary(args.run_dir, seeds, [0, 1000], np.full((2, len(seeds)), 0.5), args.iterations)

    monkeypatch.setattr(rp, "load_variant", lambda name: Variant)
    cli = ["--suite", "metaworld-mt50", "--tasks", "push", "reach", "--num-seeds", "3", "--seeds-per-run", "2",
           "--logdir", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--reps", "100", "--quiet"]
    res = rp.main(cli + ["--iterations", "7"])
    assert [(a.env, a.seed, a.num_seeds) for a in calls] == [
        ("metaworld-push", 0, 2), ("metaworld-push", 2, 1), ("metaworld-reach", 0, 2), ("metaworld-reach", 2, 1)]
    for a in calls:
        assert a == dataclasses.replace(te.PRESETS["metaworld"], env=a.env, iterations=7, seed=a.seed,
                                        num_seeds=a.num_seeds, logdir=a.logdir, run_name=a.run_name)
        assert a.run_dir == tmp_path / "runs" / "metaworld-mt50" / "top_erl" / a.env[len("metaworld-"):] / \
            f"seeds{a.seed}-{a.seed + a.num_seeds - 1}"
    assert "| top_erl | 3 × 2 | 1k | 0.500 [0.500, 0.500] | ≈0.985 at 21M | 0 (6/6) |" in res["table"]
    rp.main(cli + ["--iterations", "7"])
    assert len(calls) == 4 and capsys.readouterr().out.count("complete in") == 4
    with pytest.raises(SystemExit, match="--env.*--tasks"):
        rp.main(cli + ["--env", "metaworld-push"])


def test_the_default_output_leaves_the_committed_results_alone():
    """A suite run with the defaults must not overwrite the tables committed under results/ (the default --out
    was `results` once)."""
    import subprocess

    committed = subprocess.run(["git", "ls-files", "results"], cwd=rp.ROOT, capture_output=True, text=True).stdout
    assert "results/bench_reach/" in committed  # what is protected
    out = (rp.ROOT / rp.Args().out).resolve()
    assert not any((rp.ROOT / f).resolve().is_relative_to(out) for f in committed.split())


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(SystemExit, match="--tasks: unknown pick-and-place; suite metaworld-mt50 has reach, push"):
        rp.main(["--suite", "metaworld-mt50", "--tasks", "reach", "pick-and-place"])
    with pytest.raises(SystemExit, match="--tasks: suite reach has one task"):
        rp.main(["--suite", "reach", "--tasks", "reach"])
    with pytest.raises(SystemExit, match="--task"):
        rp.main(["--suite", "reach", "--logdir", str(tmp_path), "--task", "box-dense"])
    with pytest.raises(SystemExit, match="no variants/nonexistent.py"):
        rp.main(["--suite", "reach", "--logdir", str(tmp_path), "--variants", "nonexistent"])
    with pytest.raises(SystemExit, match="no evaluation logs"):
        rp.main(["--suite", "reach", "--logdir", str(tmp_path), "--aggregate-only"])
    assert rp.seed_groups(0, 8, 3) == [(0, 3), (3, 3), (6, 2)]


def _numbers(tree):
    """Every int/float leaf of a JSON tree (bools excluded)."""
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _numbers(v)]
    if isinstance(tree, list):
        return [x for v in tree for x in _numbers(v)]
    return [tree] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


def test_gpu_check_cpu_smoke(tmp_path, capsys):
    """benchmarks/gpu_check.py --cpu-smoke: every section measured (status ok) and in the JSON, every number finite,
    times positive, the losses equal to float32 rounding under both precisions on a CPU (float32 either way)."""
    from benchmarks import gpu_check

    out = tmp_path / "gpu_check.json"
    result = gpu_check.main(["--cpu-smoke", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result, default=lambda o: np.asarray(o).tolist()))
    for section in ("steps", "precision", "iteration", "env", "memory"):
        assert section in saved, section
    assert all(np.isfinite(x) for x in _numbers(saved))

    for name in ("critic_step", "policy_step"):
        step = saved["steps"][name]
        assert step["median_s"] > 0 and step["compile_s"] > 0
        prec = saved["precision"][name]
        assert prec["states_finite"] and prec["abs_diff"] >= 0
        assert prec["abs_diff"] == abs(prec["default"] - prec["highest"])
        assert prec["rel_diff"] < 1e-5  # a CPU computes f32 matmuls in f32 under either precision
    assert saved["steps"]["status"] == saved["precision"]["status"] == "ok"

    (it,) = saved["iteration"]
    assert it["status"] == "ok" and it["preset"] == "reach" and it["final_state_finite"]
    assert it["iteration_s"] > 0 and it["compile_s"] > 0
    assert it["iteration_s"] == pytest.approx(it["median_s"] / it["iterations_per_call"])

    assert [(r["task"], r["impl"], r["batch"], r["status"]) for r in saved["env"]] == [
        ("reacher", "jax", 2, "ok"), ("reacher", "warp", 2, "ok")]  # warp-lang is in the test extra
    for r in saved["env"]:
        assert r["env_steps_per_s"] == pytest.approx(r["batch"] * r["T"] / r["median_s"]) and r["env_steps_per_s"] > 0
    assert saved["memory"]["peak_bytes"] is None or saved["memory"]["peak_bytes"] > 0

    printed = capsys.readouterr().out
    for heading in ("## Update steps", "## Matmul precision", "## One iteration", "## Env steps/s"):
        assert heading in printed
    assert "| reacher | jax | 2 |" in printed and "| reacher | warp | 2 |" in printed and str(out) in printed


def test_gpu_check_budget_skips_and_errors_are_results():
    """A measurement that fails is recorded with its error and the others go on; past --budget-s nothing starts."""
    from benchmarks import gpu_check

    budget = gpu_check.Budget(1e9)
    assert budget.run("x", lambda: {"a": 1}) == {"status": "ok", "a": 1}
    failed = budget.run("x", lambda: 1 / 0)
    assert failed["status"].startswith("error: ZeroDivisionError")
    assert gpu_check.Budget(-1.0).run("x", lambda: {"a": 1}) == {"status": "skipped (--budget-s spent)"}


# Suites over several processes (issue 27): --worker-index / --num-workers


def test_workers_split_the_run_list_into_a_partition(monkeypatch):
    """Round-robin shares of the run list (variants × tasks × seed groups): disjoint, together the whole list, sizes
    within one of each other, distinct run directories; defaults from SLURM under srun; bad values refused."""
    cfg = rp.Args(suite="metaworld-mt50", variants=("top_erl", "top_erl_replan"), num_seeds=8, seeds_per_run=3)
    runs = rp.suite_runs(cfg, rp.SUITES[cfg.suite])
    assert len(runs) == 2 * 50 * 3 and runs == rp.suite_runs(cfg, rp.SUITES[cfg.suite])
    assert len({r.run_dir(cfg) for r in runs}) == len(runs)
    assert runs[:2] == [rp.Run("top_erl", "reach", 0, 3), rp.Run("top_erl", "reach", 3, 3)]
    for num in (1, 2, 3, 7, 8, 301):
        shares = [rp.worker_share(runs, i, num) for i in range(num)]
        assert sum(len(s) for s in shares) == len(runs) == len({r for s in shares for r in s})  # disjoint
        assert {r for s in shares for r in s} == set(runs)  # and complete
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert rp.worker_share(runs, 0, 1) == runs

    single = rp.Args(suite="reach")
    for var in ("SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    assert rp.resolve_workers(single, []) == (0, 1, "--worker-index / --num-workers")
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert rp.resolve_workers(single, [])[:2] == (5, 8)
    assert rp.resolve_workers(dataclasses.replace(single, worker_index=1, num_workers=2), [])[:2] == (1, 2)
    assert rp.resolve_workers(single, ["--distributed"])[:2] == (0, 1)  # one run over all processes
    with pytest.raises(SystemExit, match="need 0 ≤ index < num, got worker 2 of 2"):
        rp.resolve_workers(dataclasses.replace(single, worker_index=2, num_workers=2), [])
    with pytest.raises(SystemExit, match="--distributed"):
        rp.resolve_workers(dataclasses.replace(single, num_workers=2), ["--distributed"])


def test_a_run_locked_by_another_process_is_refused(tmp_path, monkeypatch):
    """Two processes never train one run directory: the second finds it locked and stops with an error naming the
    holder (before the variant is called)."""
    import fcntl

    calls = []

    class Variant:
        parse_args = staticmethod(rp.load_variant("top_erl").parse_args)

        @staticmethod
        def run(args, verbose=True):
            calls.append(args)

    monkeypatch.setattr(rp, "load_variant", lambda name: Variant)
    run_dir = tmp_path / "runs" / "reach" / "top_erl" / "seeds1-1"
    run_dir.mkdir(parents=True)
    with (run_dir / "reproduce.lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("host elsewhere, pid 1, worker 1 of 2\n")
        held.flush()
        cli = ["--suite", "reach", "--num-seeds", "2", "--seeds-per-run", "1", "--logdir", str(tmp_path / "runs"),
               "--quiet", "--worker-index", "1", "--num-workers", "2"]
        with pytest.raises(SystemExit, match="seeds1-1 is being trained by another process .host elsewhere"):
            rp.main(cli)
        assert calls == []
        assert rp.main([*cli[:-3], "0", "--num-workers", "2"])["table"] is None  # worker 0: seeds0-0, unlocked
        assert [(a.seed, a.num_seeds) for a in calls] == [(0, 1)]


def _strip_times(out: pathlib.Path) -> tuple[list[dict], str]:
    """raw.csv without wall times; table.md without its header (command, date) and run lines (paths, start times)."""
    rows = [{k: v for k, v in r.items() if k != "wall_time"} for r in _read_csv(out / "raw.csv")]
    table = [line for line in (out / "table.md").read_text().splitlines()[3:] if not line.startswith("- run `")]
    return rows, "\n".join(table)


@pytest.mark.slow
def test_two_worker_processes_give_the_table_of_one_process(tmp_path):
    """The tiny reach suite (2 seed groups of 1 seed) trained by 2 worker processes started together, then
    aggregated by --aggregate-only, gives the same raw.csv and table.md numbers as one process."""
    import os
    import subprocess
    import sys
    import time

    import jax

    groups = ["--seeds-per-run", "1"]
    rp.main([*_cli(tmp_path / "one", *groups), *TINY_FLAGS])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(JAX_COMPILATION_CACHE_DIR=str(jax.config.jax_compilation_cache_dir),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.2")
    two = tmp_path / "two"
    t0 = time.time()
    procs = [subprocess.Popen([sys.executable, "benchmarks/reproduce.py", *_cli(two, *groups), "--worker-index",
                               str(i), "--num-workers", "2", *TINY_FLAGS],
                              cwd=rp.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    print(f"two workers: {time.time() - t0:.1f} s")
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, out
        assert f"worker {i} of 2 (from --worker-index / --num-workers): 1 of 2 runs: top_erl seeds{i}-{i}" in out
        assert "Not aggregating" in out
    assert not (two / "out").exists()
    for i in range(2):
        assert json.loads((two / "runs" / "reach" / "top_erl" / f"seeds{i}-{i}" / "reproduce.json").read_text())
    rp.main(_cli(two, "--seeds-per-run", "1", "--aggregate-only"))
    rows_one, table_one = _strip_times(tmp_path / "one" / "out" / "bench_reach")
    rows_two, table_two = _strip_times(two / "out" / "bench_reach")
    assert len(rows_one) == 6 and rows_two == rows_one  # every logged number, as written
    assert table_two == table_one and "| top_erl | 2 | 800 |" in table_one


def _fake_ours(run_dir: pathlib.Path, seeds: list[int], steps: list[int], value) -> None:
    """A finished run's summary.json as `variants/top_erl.py` writes it: eval/<metric> holds one value per seed."""
    run_dir.mkdir(parents=True)
    history = [{"iteration": j, "env_steps": x, **{f"eval/{m}": [value(m, s, x) for s in seeds]
                                                  for m in ("return", "box_goal_pos_dist", "is_success")}}
               for j, x in enumerate(steps)]
    (run_dir / "summary.json").write_text(json.dumps({"seeds": seeds, "history": history}))


def test_fidelity_curves_pools_our_runs_and_reads_the_originals_box_columns(tmp_path):
    """Seeds 0 (alone) and 1-3 (vmapped) pool into one 4-seed side over their common evaluations; the original's
    box columns are read by name from its evaluation rows (rows of other iterations are skipped); the CSV holds
    every (step, seed) and a seed given twice is refused."""
    from benchmarks import fidelity_curves as fc

    value = lambda m, s, x: {"return": 10.0 * s + x / 1000, "box_goal_pos_dist": 0.5 - 0.1 * s,
                             "is_success": float(s == 3)}[m]
    _fake_ours(tmp_path / "s0", [0], [0, 400, 800, 1200], value)
    _fake_ours(tmp_path / "s123", [1, 2, 3], [0, 400, 800], value)
    for s in range(4):
        d = tmp_path / f"up{s}"
        d.mkdir()
        rows = ["num_global_steps,evaluation_episode_reward_mean,evaluation_box_goal_pos_dist_mean,"
                "evaluation_is_success_mean,evaluation_max_height_mean"]
        rows += [f"{x},{value('return', s, x)},{value('box_goal_pos_dist', s, x)},{value('is_success', s, x)},9"
                 for x in (0, 400)]
        rows.insert(2, ",,,,")  # an iteration without an evaluation: the driver leaves its cells empty
        (d / "metrics.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    fc.main(["--task", "box", "--ours", str(tmp_path / "s0"), str(tmp_path / "s123"),
             "--upstream", *(str(tmp_path / f"up{s}") for s in range(4)), "--out", str(out),
             "--plot", str(tmp_path / "p.png")])
    ours = np.loadtxt(out / "ours.csv", delimiter=",", skiprows=1)
    assert ours.shape == (3 * 4, 5)  # the steps all four seeds have × 4 seeds; env_steps, seed, 3 metrics
    assert sorted(set(ours[:, 0])) == [0, 400, 800]
    np.testing.assert_allclose(sorted(ours[ours[:, 0] == 400, 2]), [0.4, 10.4, 20.4, 30.4])
    original = np.loadtxt(out / "original.csv", delimiter=",", skiprows=1)
    assert original.shape == (2 * 4, 5)
    np.testing.assert_allclose(sorted(original[original[:, 0] == 0, 3]), [0.2, 0.3, 0.4, 0.5])
    table = (out / "table.md").read_text()
    assert "ours (4 seeds)" in table and "original (4 seeds)" in table and "success rate" in table
    assert (tmp_path / "p.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="more than one run"):
        fc.main(["--task", "box", "--ours", str(tmp_path / "s0"), str(tmp_path / "s0"), "--upstream",
                 str(tmp_path / "up0"), "--out", str(out), "--plot", str(tmp_path / "p.png")])
    # The CSVs stand in for the runs: redrawn from them alone, both sides come out the same, seeds named by number
    again = tmp_path / "again"
    fc.main(["--task", "box", "--ours", str(out / "ours.csv"), "--upstream", str(out / "original.csv"),
             "--out", str(again), "--plot", str(tmp_path / "p2.png")])
    for side in ("ours", "original"):
        assert (again / f"{side}.csv").read_text() == (out / f"{side}.csv").read_text()
    assert sorted(set(ours[:, 1])) == [0, 1, 2, 3]
    with pytest.raises(SystemExit, match="more than one run"):  # seed 0 is in the CSV and in s0
        fc.main(["--task", "box", "--ours", str(out / "ours.csv"), str(tmp_path / "s0"), "--upstream",
                 str(tmp_path / "up0"), "--out", str(again), "--plot", str(tmp_path / "p2.png")])


def test_benchmarks_compile_with_the_runners_gpu_options(monkeypatch):
    """On a GPU, the programs that gpu_check.py and throughput.py time are jitted with the runner's options (cuBLAS
    GEMMs, XLA's Triton GEMM emitter off), not the task's alone: with the task's options, the critic step's compile on
    an H100 did not finish in 4 minutes, even at the reach preset's shapes (docs/performance.md "GPU")."""
    from benchmarks import gpu_check, throughput
    from toperl_jax import runner

    timing = sys.modules["timing"]  # benchmarks/timing.py, as the scripts import it
    monkeypatch.setattr(timing, "device_platform", lambda: "gpu", raising=False)
    seen = []

    class Jitted(Exception):
        pass

    def first_jit(fn, *a, compiler_options=None, **k):  # record the options of the first jit, compile nothing
        seen.append(compiler_options)
        raise Jitted

    args = dataclasses.replace(throughput.te.PRESETS["reach"], **gpu_check.TINY_NETS)
    calls = (lambda: throughput.env_throughput("reacher", 2, 1, args), lambda: throughput.chunk_throughput(args, 1, 1, 1),
             lambda: gpu_check.measure_steps(args, 1))
    for call in calls:
        with monkeypatch.context() as m:
            m.setattr(jax, "jit", first_jit)
            with pytest.raises(Jitted):
                call()
    assert len(seen) == len(calls)
    for options in seen:
        assert options is not None and runner.GPU_COMPILER_OPTIONS.items() <= options.items()


def test_gpu_check_runs_the_sections_asked_for_in_that_order(tmp_path, monkeypatch, capsys):
    """--sections picks the sections and their order (a short GPU lease can measure the rollout first); a section
    left out leaves its part of the JSON empty."""
    from benchmarks import gpu_check

    order = []
    monkeypatch.setattr(gpu_check, "measure_steps", lambda *a: order.append("steps") or {"steps": {}, "precision": {}})
    monkeypatch.setattr(gpu_check, "measure_iteration", lambda *a: order.append("iteration") or {})
    monkeypatch.setattr(gpu_check, "measure_env", lambda task, b, *a: order.append(f"env {task} {b}") or {})
    out = tmp_path / "g.json"
    saved = gpu_check.main(["--cpu-smoke", "--sections", "env", "steps", "--out", str(out)])
    assert order == ["env reacher 2", "env reacher 2", "steps"]  # reacher at batch 2 for jax and warp, then the steps
    assert saved["iteration"] == [] and saved["steps"]["status"] == "ok" and json.loads(out.read_text())["env"]
    assert "measuring env reacher jax batch 2" in capsys.readouterr().err


def test_gpu_check_sections_apart_merge_and_time_out(tmp_path, capfd):
    """--section-timeout-s: each section runs in a child process; one that outlives the time-out is stopped and
    marked (here every child, given 1 s, which is less than importing JAX takes), the parent still writes the
    merged JSON; and the merge keeps what each child measured, marking what a stopped child did not."""
    from benchmarks import gpu_check

    out = tmp_path / "apart.json"
    t0 = time.perf_counter()
    saved = gpu_check.main(["--cpu-smoke", "--sections", "env", "steps", "--section-timeout-s", "1",
                            "--out", str(out)])
    assert time.perf_counter() - t0 < 60
    assert json.loads(out.read_text()) == json.loads(json.dumps(saved))
    assert list(saved["sections"]) == ["env", "steps"]
    assert all(v.startswith("timed out after 1 s") for v in saved["sections"].values())
    assert saved["steps"]["status"].startswith("timed out") and saved["env"][-1]["status"].startswith("timed out")
    assert saved["iteration"] == []  # not asked for
    assert "section env: a child process" in capfd.readouterr().err

    cfg = gpu_check.Args(iteration_presets=("box-dense", "hopper-jump"))
    assert gpu_check.child_argv(cfg, sections=("env",), budget_s=12.5, cpu_smoke=True) == [
        "--cpu-smoke", "--budget-s", "12.5", "--sections", "env"]  # fields in Args' order, defaults left out
    header = {"date": "d", "device": "H100 (gpu)", "device_kind": "H100", "platform": "gpu", "jax": "0.11.2",
              "xla_flags": "", "commit": "c"}
    parts = {"iteration": {**header, "iteration": [{"preset": "box-dense", "status": "ok", "iteration_s": 1.5}],
                           "memory": {"after_iteration": 10, "peak_bytes": 10}},
             "env": {**header, "env": [{"task": "reacher", "batch": 64, "status": "ok"}],
                     "memory": {"after_env": 20, "peak_bytes": 20}}}
    merged = gpu_check.merge_parts(cfg, parts, {"iteration": "timed out after 9 s", "env": "ok",
                                                "steps": "skipped (--budget-s spent)"}, "cmd")
    assert merged["device_kind"] == "H100" and merged["command"] == "cmd"
    assert merged["iteration"] == [{"preset": "box-dense", "status": "ok", "iteration_s": 1.5},
                                   {"preset": "hopper-jump", "status": "timed out after 9 s"}]
    assert merged["env"] == [{"task": "reacher", "batch": 64, "status": "ok"}]
    assert merged["steps"] == {"status": "skipped (--budget-s spent)"} == merged["precision"]
    assert merged["memory"] == {"after_iteration": 10, "after_env": 20, "peak_bytes": 20}
