"""Seeds split over several devices (`runner.seed_sharding`), shown on CPU with forced host devices
(`--xla_force_host_platform_device_count=4`, which must be set before JAX starts: hence child processes), and over
several processes (`--distributed`, `runner.init_distributed`: two processes on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from toperl_jax import runner

_TOY = r"""
import dataclasses, json, sys
import jax, numpy as np
from tests.test_runner import _Args, _program
from toperl_jax import runner

def go(**kw):
    a = _Args(logdir=sys.argv[1], num_seeds=4, **kw)
    s = runner.run(a, _program(a), verbose=False, max_chunks=None if kw.get("resume") else 2)
    return {"params": np.asarray(s["state"].policy.params).tolist(), "iterations_done": s["iterations_done"],
            "devices": len(s["state"].policy.params.sharding.device_set),
            "diverged": [p.get("diverged_at_iteration") for p in s["per_seed"]]}
print("RESULT" + json.dumps({"first": go(), "resumed": go(resume=True)}))
"""

_TOP_ERL = r"""
import dataclasses, json, sys
import jax, numpy as np
from toperl_jax import runner
from variants import top_erl as te
from tests.test_top_erl import TINY

a = dataclasses.replace(TINY, num_seeds=4, logdir=sys.argv[1], run_name="four", compile_cache=sys.argv[1] + "/xla")
runner.run(a, te.make_train(a), verbose=False, max_chunks=1)
s = runner.run(dataclasses.replace(a, resume=True), te.make_train(a), verbose=False)
print("RESULT" + json.dumps({"history": s["history"], "devices": len(jax.tree.leaves(s["state"])[0].sharding.device_set),
                             "params": [np.asarray(x).tolist() for x in jax.tree.leaves((s["state"].policy.params,
                                                                                        s["state"].critic.params))]}))
"""


def _on_four_devices(code: str, tmp: pathlib.Path) -> dict:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp)], env=env, cwd=pathlib.Path(__file__).parents[1],
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.split("RESULT", 1)[1])


def test_seeds_split_over_four_devices_stop_and_resume(tmp_path):
    """The runner's toy program (tests/test_runner.py) with 4 seeds on 4 forced host devices: each seed's state
    lives on its own device, seed 1 diverges in iterations 5–6 and is stopped, and a run interrupted after 2
    chunks resumes there to the exact values."""
    out = _on_four_devices(_TOY, tmp_path)
    assert out["first"]["devices"] == 4 and out["first"]["iterations_done"] == 4
    assert out["first"]["params"] == [4.0, 4.0, 4.0, 4.0]
    assert out["resumed"]["devices"] == 4 and out["resumed"]["params"] == [8.0, 4.0, 8.0, 8.0]
    assert out["resumed"]["diverged"] == [None, 6, None, None]


@pytest.mark.slow
def test_top_erl_on_four_devices_matches_one_device(tmp_path):
    """TOP-ERL's tiny configuration, 4 seeds split over 4 forced host devices and resumed after the first chunk,
    against the same 4 seeds vmapped on this process's one device: every evaluation and parameter agrees to
    float32 rounding (rtol 1e-4, atol 1e-5, as vmapped vs single-seed runs in test_top_erl.py: the per-device
    batch differs, and XLA may fuse it differently)."""
    import dataclasses

    from tests.test_top_erl import TINY
    from variants import top_erl as te

    four = _on_four_devices(_TOP_ERL, tmp_path)
    a = dataclasses.replace(TINY, num_seeds=4, logdir=str(tmp_path), run_name="one", checkpoint_interval=0)
    one = runner.run(a, te.make_train(a), verbose=False)
    assert four["devices"] == 4
    for x, y in zip(four["history"], one["history"]):
        for n in x:
            if n.startswith("eval/"):
                np.testing.assert_allclose(x[n], y[n], rtol=1e-4, atol=1e-5, err_msg=n)
    ref = jax.tree.leaves((one["state"].policy.params, one["state"].critic.params))
    for x, y in zip(four["params"], ref):
        np.testing.assert_allclose(x, np.asarray(y), rtol=1e-4, atol=1e-5)


_QT = r"""
import dataclasses, json, pathlib, sys
import jax, numpy as np
from tests.test_qt import _reacher_like_dataset
from variants import qt

root = pathlib.Path(sys.argv[1])
a = dataclasses.replace(qt.PRESETS["tiny"], dataset=str(_reacher_like_dataset(root / "reacher-test-v0.hdf5")),
                        logdir=str(root), run_name="four", compile_cache="", num_seeds=4, iterations=3,
                        steps_per_iter=20, selection="first")
qt.run(a, max_chunks=1, verbose=False)
s = qt.run(dataclasses.replace(a, resume=True), verbose=False)
print("RESULT" + json.dumps({"history": s["history"], "devices": len(jax.tree.leaves(s["state"])[0].sharding.device_set),
                             "params": [np.asarray(x).tolist() for x in jax.tree.leaves((s["state"].actor,
                                                                                        s["state"].critic))]}))
"""


@pytest.mark.slow
def test_qt_on_four_devices_matches_one_device(tmp_path):
    """QT (offline, on the same runner) with 4 seeds split over 4 forced host devices, resumed after the first
    chunk: seed 0 equals seed 0 trained alone on one device in every evaluation and parameter, to float32 rounding.
    (η = 1 trains actor and critics; the evaluation runs the first return target (`--selection first`): an argmax
    over an untrained critic's close candidate values flips under float32 rounding and changes an evaluation by
    percents, which would hide what is compared.)"""
    import dataclasses

    from tests.test_qt import _reacher_like_dataset
    from variants import qt

    four = _on_four_devices(_QT, tmp_path)
    a = dataclasses.replace(qt.PRESETS["tiny"], dataset=str(_reacher_like_dataset(tmp_path / "one.hdf5")),
                            logdir=str(tmp_path), run_name="one", compile_cache="", num_seeds=1, iterations=3,
                            steps_per_iter=20, selection="first", checkpoint_interval=0)
    one = qt.run(a, verbose=False)
    assert four["devices"] == 4 and [h["iteration"] for h in four["history"]] == [0, 1, 2, 3]
    assert len({round(r, 5) for r in four["history"][-1]["eval/return"]}) == 4  # the seeds differ
    for x, y in zip(four["history"], one["history"], strict=True):
        for n in x:
            if n.startswith("eval/"):
                np.testing.assert_allclose(x[n][0], y[n][0], rtol=1e-4, atol=1e-5, err_msg=n)
    ref = jax.tree.leaves((one["state"].actor, one["state"].critic))
    for x, y in zip(four["params"], ref, strict=True):
        np.testing.assert_allclose(np.asarray(x)[0], np.asarray(y)[0], rtol=1e-4, atol=1e-5)


_PROCESS = r"""
import os, sys
from tests.test_runner import _Args, _program
from toperl_jax import runner

root, port, pid, max_chunks, die = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "die"
a = _Args(logdir=root, num_seeds=2, distributed=True, coordinator_address="127.0.0.1:" + port, num_processes=2,
          process_id=pid, resume=max_chunks == "resume")
runner.init_distributed(a)
if die and pid == 1:
    os._exit(3)
s = runner.run(a, _program(a), verbose=False, max_chunks=None if max_chunks in ("all", "resume") else int(max_chunks))
w = s["state"].policy.params
print("PROCESS", pid, "DONE", "global", tuple(w.shape), "here", [tuple(x.data.shape) for x in w.addressable_shards],
      flush=True)
"""


def _free_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _processes(code: str, tmp: pathlib.Path, *argv_per_process: list[str]) -> list[subprocess.CompletedProcess]:
    """Run `code` in one process per `argv_per_process` entry at once (JAX_PLATFORMS=cpu, from the repo root) and
    wait for all. Output goes to files, not pipes: a process blocked on a full pipe that nobody reads would stall
    the other in their next collective."""
    root, logs = pathlib.Path(__file__).parents[1], tmp / "process-logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = []
    for i, argv in enumerate(argv_per_process):
        out, err = (open(logs / f"{i}.{n}", "w") for n in ("out", "err"))
        procs.append((subprocess.Popen([sys.executable, "-u", "-c", code, *argv], env=env, cwd=root, stdout=out,
                                       stderr=err, text=True), out, err))
    done = []
    for i, (p, out, err) in enumerate(procs):
        p.wait(timeout=1800)
        out.close(), err.close()
        done.append(subprocess.CompletedProcess(p.args, p.returncode, (logs / f"{i}.out").read_text(),
                                                (logs / f"{i}.err").read_text()))
    return done


def _two_processes(tmp: pathlib.Path, max_chunks: str, die: bool = False) -> list[subprocess.CompletedProcess]:
    port = _free_port()
    return _processes(_PROCESS, tmp, *([str(tmp), port, str(pid), max_chunks, "die" if die else "live"]
                                       for pid in (0, 1)))


@pytest.mark.parametrize("damage", [False, True])
def test_two_processes_share_the_seeds_and_resume(tmp_path, damage):
    """--distributed with 2 processes and 2 seeds, one per process's device (the toy program, seed 1 diverging in
    iterations 5–6): interrupted after 2 chunks and resumed, the run equals one process training both seeds. With
    the newest checkpoint truncated before the resume, both processes skip it together (process 0 names it and
    moves it aside) and continue from the one before, to the same end."""
    outs = _two_processes(tmp_path / "two", "2")
    assert all(o.returncode == 0 and "DONE" in o.stdout for o in outs), [o.stderr[-2000:] for o in outs]
    if damage:
        for f in (tmp_path / "two" / "toy" / "checkpoints" / "2" / "state").rglob("*"):
            if f.is_file():
                f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 3])
    outs = _two_processes(tmp_path / "two", "resume")
    assert all(o.returncode == 0 and "DONE" in o.stdout for o in outs), [o.stderr[-2000:] for o in outs]
    if damage:
        assert "checkpoint 2" in outs[0].stderr and "could not be read" in outs[0].stderr
        skipped = tmp_path / "two" / "toy" / "checkpoints_skipped"
        assert [p.name.split(".")[0] for p in skipped.iterdir()] == ["2"]
    two = json.loads((tmp_path / "two" / "toy" / "summary.json").read_text())
    one_args = dict(logdir=str(tmp_path / "one"), num_seeds=2)
    from tests.test_runner import _Args, _program

    one = runner.run(_Args(**one_args), _program(_Args(**one_args)), verbose=False)
    assert two["seeds"] == one["seeds"] == [0, 1]
    strip = lambda h: [{k: v for k, v in r.items() if k != "wall_time"} for r in h]  # noqa: E731
    assert strip(two["history"]) == strip(one["history"])
    assert [p["final"]["eval/return"] for p in two["per_seed"]] == [8.0, 4.0]
    assert two["per_seed"][1]["diverged_at_iteration"] == 6
    assert all("global (2,) here [(1,)]" in o.stdout for o in outs)  # one seed on each process


@pytest.mark.slow
def test_a_dying_process_stops_the_other(tmp_path):
    """Process 1 exits right after joining; process 0 is stopped by JAX's coordination service (after its
    heartbeat timeout, 100 s) with an error that says another task died — not left waiting."""
    outs = _two_processes(tmp_path, "all", die=True)
    assert outs[1].returncode == 3
    assert outs[0].returncode != 0 and "DONE" not in outs[0].stdout
    assert "another task died" in outs[0].stderr


_LOCAL_DEVICE = r"""
import json, sys, jax
jax.local_devices = lambda *a, **k: jax.devices()[1:2]  # as in process 1 of 2 under jax.distributed
from toperl_jax import envs
on = lambda tree: sorted({d.id for x in jax.tree.leaves(tree) if isinstance(x, jax.Array) for d in x.devices()})
key, out = jax.device_put(jax.random.PRNGKey(0), jax.devices()[1]), {}
for name in ("reacher", "hopper-jump-sparse", "box-pushing-dense", "metaworld-reach"):
    task = envs.make(name)
    out[name] = {"model": on(task.mjx_model), "data": on(jax.jit(task.reset)(key).mjx_data)}
print("RESULT" + json.dumps(out))
"""


def test_the_physics_model_lives_on_this_process_device(tmp_path):
    """MJX puts a model on `jax.devices()[0]` by default, which under `jax.distributed` is process 0's: every other
    process's rollout then closes over arrays it cannot address (a TOP-ERL run over two processes failed at its
    first evaluation). Every task family places its model and data on `jax.local_devices()[0]` (here device 1)."""
    out = _on_four_devices(_LOCAL_DEVICE, tmp_path)
    assert out == {n: {"model": [1], "data": [1]} for n in out} and len(out) == 4


_TOP_ERL_PROCESS = r"""
import dataclasses, json, sys
import jax, numpy as np
from toperl_jax import runner
from variants import top_erl as te
from tests.test_top_erl import TINY

root, port, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
a = dataclasses.replace(TINY, num_seeds=2, logdir=root, run_name="two", compile_cache=root + f"/xla{pid}",
                        distributed=True, coordinator_address="127.0.0.1:" + port, num_processes=2, process_id=pid)
runner.init_distributed(a)
runner.run(a, te.make_train(a), verbose=False, max_chunks=1)
s = runner.run(dataclasses.replace(a, resume=True), te.make_train(a), verbose=False)
leaves = jax.tree.leaves((s["state"].policy.params, s["state"].critic.params))
print("RESULT" + json.dumps({"history": s["history"], "here": [tuple(x.addressable_shards[0].data.shape) for x in leaves[:1]],
                             "params": [np.asarray(x.addressable_shards[0].data).tolist() for x in leaves]}), flush=True)
"""


@pytest.mark.slow
def test_top_erl_over_two_processes_matches_one_process(tmp_path):
    """TOP-ERL's tiny configuration with --distributed over 2 local processes (one seed each), interrupted after
    the first chunk and resumed, against the same 2 seeds vmapped in this process: every evaluation and each
    process's seed's parameters agree to float32 rounding (rtol 1e-4, atol 1e-5, as in the 4-device test)."""
    import dataclasses

    from tests.test_top_erl import TINY
    from variants import top_erl as te

    port = _free_port()
    outs = _processes(_TOP_ERL_PROCESS, tmp_path, *([str(tmp_path), port, str(pid)] for pid in (0, 1)))
    assert all(o.returncode == 0 for o in outs), [o.stderr[-3000:] for o in outs]
    two = [json.loads(o.stdout.split("RESULT", 1)[1]) for o in outs]
    a = dataclasses.replace(TINY, num_seeds=2, logdir=str(tmp_path), run_name="one", checkpoint_interval=0)
    one = runner.run(a, te.make_train(a), verbose=False)
    strip = lambda h: [{k: v for k, v in r.items() if k != "wall_time"} for r in h]  # noqa: E731
    assert strip(two[0]["history"]) == strip(two[1]["history"])  # the metrics are gathered from both processes
    for x, y in zip(two[0]["history"], one["history"], strict=True):
        for n in x:
            if n.startswith("eval/"):
                np.testing.assert_allclose(x[n], y[n], rtol=1e-4, atol=1e-5, err_msg=n)
    ref = jax.tree.leaves((one["state"].policy.params, one["state"].critic.params))
    for pid, t in enumerate(two):
        assert t["here"] == [[1, *np.asarray(ref[0]).shape[1:]]]  # one seed on each process
        for x, y in zip(t["params"], ref, strict=True):
            np.testing.assert_allclose(np.asarray(x)[0], np.asarray(y)[pid], rtol=1e-4, atol=1e-5)


def test_seeds_that_do_not_split_evenly_are_refused():
    cpu = jax.devices()[0]
    assert runner.seed_sharding(3, [cpu]) is None and runner.seed_sharding(1, [cpu, cpu]) is None
    with pytest.raises(runner.UsageError, match=r"--num-seeds: 6 seeds do not split evenly over the 4 devices"):
        runner.seed_sharding(6, [cpu] * 4)
    assert runner.seed_sharding(2, [cpu] * 4).mesh.size == 2  # one seed per device, 2 devices idle
