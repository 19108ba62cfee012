"""Run directories shared by the variants: orbax checkpoints (a state pytree plus JSON metadata) and the checks
behind `--resume` (a checkpoint exists; the saved flags equal today's).

A run directory holds `args.json` (the flags, without `RUN_ONLY_FLAGS`) and `checkpoints/<step>/`. Nothing here
runs under `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import time

import jax

from toperl_jax.cli import UsageError

RUN_ONLY_FLAGS = ("resume", "overwrite", "compile_cache", "video", "coordinator_address", "process_id")
"""Flags that may change between a run and its resumption; every other flag must match the saved run."""


def run_flags(args) -> dict:
    """The flags of the dataclass `args` that `args.json` records (JSON-normalised, without `RUN_ONLY_FLAGS`)."""
    return {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(args))).items() if k not in RUN_ONLY_FLAGS}


def saved_args(path: pathlib.Path, args) -> dict:
    """A run's saved flags (`args.json` at `path`), JSON-normalised, with every field of the dataclass `args` that
    the file lacks (a flag added after the run was saved) set to that field's default, so that old runs still
    compare equal to the same command today."""
    saved = json.loads(pathlib.Path(path).read_text())
    added = {f.name: f.default for f in dataclasses.fields(args)
             if f.name not in saved and f.default is not dataclasses.MISSING}
    return {**json.loads(json.dumps(added)), **saved}


LOCATION_FLAGS = ("logdir", "run_name")
"""Flags that say where the run directory is: recorded, but not compared (a moved or copied run still resumes)."""


def flag_diff(saved: dict, flags: dict) -> dict:
    """{flag: (saved value, value now)} for every flag in `flags` (but `LOCATION_FLAGS`) whose saved value
    differs."""
    return {n: (saved.get(n), v) for n, v in json.loads(json.dumps(flags)).items()
            if n not in LOCATION_FLAGS and saved.get(n) != v}


def check_same_flags(saved: dict, flags: dict, what: str = "--resume") -> None:
    """Raise `ValueError` (starting with `what`, the flag that asked) naming every flag whose value differs from
    the saved run's."""
    diff = flag_diff(saved, flags)
    if diff:
        raise UsageError(f"{what}: flags differ from the saved run (flag: saved vs now): "
                         + ", ".join(f"--{n.replace('_', '-')}: {a} vs {b}" for n, (a, b) in diff.items()))


def has_checkpoint(run_dir: pathlib.Path) -> bool:
    """Whether `run_dir/checkpoints` holds a finished checkpoint (a step directory; orbax's temporaries don't
    count). Cheap: creates and loads nothing."""
    ckpt = pathlib.Path(run_dir) / "checkpoints"
    return ckpt.is_dir() and any(p.name.isdigit() for p in ckpt.iterdir())


def manager(run_dir: pathlib.Path):
    """The orbax `CheckpointManager` of `run_dir/checkpoints` (keeps the last 2). Under `jax.distributed` the
    state is one global array per leaf (seeds split over the processes' devices) and orbax writes each process's
    shards into the one checkpoint."""
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(pathlib.Path(run_dir).resolve() / "checkpoints",
                                 options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))


def save(mgr, step: int, state, meta: dict) -> None:
    """Write `state` and the JSON-able `meta` as checkpoint `step` and wait until it is on disk."""
    import orbax.checkpoint as ocp

    mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
    mgr.wait_until_finished()


def restore(mgr, state_like, say=print):
    """The newest intact checkpoint as (state with the structure, shapes and dtypes of `state_like` — arrays or
    `jax.ShapeDtypeStruct`s, e.g. from `jax.eval_shape` — , placed by their shardings where they have one, meta
    dict, step). A newer step that fails to load (truncated, incomplete, unreadable) is named through `say` and
    moved to `checkpoints_skipped/<step>` beside the checkpoints, so that later saves of that step are not
    refused; `ValueError` if none loads. Under `jax.distributed` every process reads its own shards, so the
    processes decide together: a step that fails in any process is skipped by all, and process 0 moves it."""
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
                            state_like)
    root = pathlib.Path(mgr.directory)
    errors = []
    for step in sorted(mgr.all_steps(), reverse=True):
        try:
            out, error = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                   meta=ocp.args.JsonRestore())), None
        except Exception as e:  # noqa: BLE001 — any failure to read a step means: try the one before
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            out, error = None, f"{type(e).__name__}: {first_line}"
        if not _failed_anywhere(error is not None):
            return out["state"], out["meta"], step
        error = error or "could be read here, not in another process"
        errors.append(f"step {step}: {error}")
        if jax.process_index() == 0:
            skipped = root.parent / "checkpoints_skipped"
            skipped.mkdir(exist_ok=True)
            shutil.move(str(root / str(step)), str(skipped / f"{step}.{int(time.time())}"))
            say(f"checkpoint {step} in {root} could not be read ({error}); moved it to {skipped} and trying the "
                "one before")
        barrier(f"toperl-jax: checkpoint {step} skipped")
        mgr.reload()
    raise UsageError(f"--resume: no checkpoint in {root} could be read ({'; '.join(errors) or 'none found'})")


def _failed_anywhere(failed: bool) -> bool:
    """Whether `failed` holds in any process (this one's flag alone without `jax.distributed`)."""
    if jax.process_count() == 1:
        return failed
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array([failed]))))


def barrier(name: str) -> None:
    """Wait until every process (under `jax.distributed`) has reached the barrier `name`."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
