"""Readers and writers for the two common offline-RL file layouts (needs the `offline` extra: h5py).

D4RL HDF5 (`load_d4rl_hdf5` / `save_d4rl_hdf5`): one file with flat datasets at the root,
    observations [N, S], actions [N, A], rewards [N], terminals [N], timeouts [N] (older files lack timeouts),
optionally next_observations and an `infos/` group (ignored here). Root attributes are read into
`TrajectoryDataset.metadata`; this project writes `env`, `recipe`, `ref_min_score`, `ref_max_score` (the random
and expert reference returns of D4RL's normalised score), `scale`, `env_targets` and how the data was made.

Minari HDF5 (`load_minari` / `save_minari`): a dataset directory `<id>/data/main_data.hdf5` (or that file
directly) with one group per episode, `episode_<i>`, each holding
    observations [T + 1, S] (the final observation included), actions [T, A], rewards [T],
    terminations [T], truncations [T].
Only flat Box observations are supported (no dict observations), and only the HDF5 storage backend (Minari's
newer Arrow backend is not read). Root attributes are read into the metadata.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from toperl_jax.offline.dataset import DatasetError, TrajectoryDataset

REQUIRED_D4RL = ("observations", "actions", "rewards", "terminals")
REQUIRED_MINARI = ("observations", "actions", "rewards", "terminations", "truncations")


def _h5py():
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading/writing HDF5 datasets needs h5py: pip install -e '.[offline]'") from e
    return h5py


def _open(path: pathlib.Path):
    """`path` opened for reading as HDF5; a file that is not one (or unreadable) is a `DatasetError` naming it."""
    try:
        return _h5py().File(path, "r")
    except OSError as e:
        raise DatasetError(f"{path}: not a readable HDF5 file ({e})") from None


def _attr_value(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _write_attrs(obj, metadata: dict) -> None:
    for k, v in metadata.items():
        obj.attrs[k] = json.dumps(v) if isinstance(v, (dict, list, tuple)) else v


def load_d4rl_hdf5(path: str | pathlib.Path, max_episode_steps: int | None = 1000) -> TrajectoryDataset:
    """Read a D4RL-layout HDF5 file into a validated `TrajectoryDataset`.

    A file without `timeouts` gets all-zero timeouts; `metadata["max_episode_steps"]` then records
    `max_episode_steps`, which `episode_bounds` can use to cut episodes (D4RL's 1000-step convention).
    Raises `DatasetError` naming the key for missing keys, wrong shapes or non-finite values.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no dataset file at {path}")
    with _open(path) as f:
        missing = [k for k in REQUIRED_D4RL if k not in f]
        if missing:
            raise DatasetError(f"{path}: missing key(s) {missing}; a D4RL file needs {list(REQUIRED_D4RL)} "
                               f"(+ optional timeouts), found {sorted(f.keys())}")
        cols = {k: np.asarray(f[k]) for k in REQUIRED_D4RL}
        has_timeouts = "timeouts" in f
        cols["timeouts"] = np.asarray(f["timeouts"]) if has_timeouts else np.zeros(cols["rewards"].shape, bool)
        metadata = {k: _attr_value(v) for k, v in f.attrs.items()}
    # D4RL stores rewards/terminals as [N]; some writers use [N, 1]: accept exactly that, reject anything else.
    for k in ("rewards", "terminals", "timeouts"):
        if cols[k].ndim == 2 and cols[k].shape[1] == 1:
            cols[k] = cols[k][:, 0]
    if not has_timeouts:
        metadata.setdefault("max_episode_steps", max_episode_steps)
    return TrajectoryDataset(**cols, metadata=metadata, source=str(path))


def save_d4rl_hdf5(path: str | pathlib.Path, ds: TrajectoryDataset, metadata: dict | None = None) -> pathlib.Path:
    """Write `ds` in the D4RL layout (gzip-compressed datasets, metadata as root attributes)."""
    h5py = _h5py()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for k in ("observations", "actions", "rewards"):
            f.create_dataset(k, data=getattr(ds, k), compression="gzip")
        f.create_dataset("terminals", data=ds.terminals.astype(bool))
        f.create_dataset("timeouts", data=ds.timeouts.astype(bool))
        _write_attrs(f, {**ds.metadata, **(metadata or {})})
    return path


def _minari_file(path: pathlib.Path) -> pathlib.Path:
    if path.is_dir():
        for cand in (path / "data" / "main_data.hdf5", path / "main_data.hdf5"):
            if cand.is_file():
                return cand
        raise FileNotFoundError(f"{path}: no data/main_data.hdf5 in this Minari dataset directory (only the HDF5 "
                                "backend is supported)")
    if not path.is_file():
        raise FileNotFoundError(f"no Minari dataset at {path}")
    return path


def _episode_key(name: str) -> int:
    try:
        return int(name.split("_", 1)[1])
    except (IndexError, ValueError):
        return -1


def load_minari(path: str | pathlib.Path) -> TrajectoryDataset:
    """Read a Minari-style HDF5 dataset (directory or main_data.hdf5) into a flat `TrajectoryDataset`.

    Per episode the final observation (observations[T]) is dropped: the flat layout keeps only the states in
    which actions were taken. terminations/truncations become terminals/timeouts. Episodes are read in the
    order of their numeric id.
    """
    h5py = _h5py()
    file = _minari_file(pathlib.Path(path))
    episodes = []
    with _open(file) as f:
        names = sorted((n for n in f if n.startswith("episode_")), key=_episode_key)
        if not names:
            raise DatasetError(f"{file}: no episode_<i> groups (found {sorted(f.keys())})")
        for name in names:
            g = f[name]
            where = f"{file}:{name}"
            missing = [k for k in REQUIRED_MINARI if k not in g]
            if missing:
                raise DatasetError(f"{where}: missing key(s) {missing}; a Minari episode needs {list(REQUIRED_MINARI)}")
            if isinstance(g["observations"], h5py.Group):
                raise DatasetError(f"{where}: dict observations are not supported (flat Box observations only)")
            ep = {k: np.asarray(g[k]) for k in REQUIRED_MINARI}
            T = ep["actions"].shape[0]
            if ep["observations"].shape[0] != T + 1:
                raise DatasetError(f"{where}: observations has {ep['observations'].shape[0]} rows, expected "
                                   f"len(actions) + 1 = {T + 1} (shape mismatch)")
            for k in ("rewards", "terminations", "truncations"):
                if ep[k].shape != (T,):
                    raise DatasetError(f"{where}: {k} has shape {ep[k].shape}, expected ({T},) (shape mismatch)")
            episodes.append({"observations": ep["observations"][:-1], "actions": ep["actions"],
                             "rewards": ep["rewards"], "terminals": ep["terminations"],
                             "timeouts": ep["truncations"]})
        metadata = {k: _attr_value(v) for k, v in f.attrs.items()}
    return TrajectoryDataset.from_episodes(episodes, metadata=metadata, source=str(file))


def save_minari(path: str | pathlib.Path, episodes: list[dict[str, np.ndarray]], metadata: dict | None = None
                ) -> pathlib.Path:
    """Write episodes in the Minari HDF5 layout at `path/data/main_data.hdf5`.

    Each episode dict has observations [T + 1, S], actions [T, A], rewards [T], terminations [T], truncations [T].
    """
    h5py = _h5py()
    file = pathlib.Path(path) / "data" / "main_data.hdf5"
    file.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(file, "w") as f:
        for i, ep in enumerate(episodes):
            g = f.create_group(f"episode_{i}")
            g.attrs["id"] = i
            g.attrs["total_steps"] = len(ep["actions"])
            for k in REQUIRED_MINARI:
                g.create_dataset(k, data=np.asarray(ep[k]))
        f.attrs["total_episodes"] = len(episodes)
        f.attrs["total_steps"] = int(sum(len(ep["actions"]) for ep in episodes))
        _write_attrs(f, metadata or {})
    return file


def load_dataset(path: str | pathlib.Path) -> TrajectoryDataset:
    """Read either layout: a directory or a file with `episode_<i>` groups is Minari, anything else D4RL."""
    p = pathlib.Path(path)
    if p.is_dir():
        return load_minari(p)
    if not p.is_file():
        raise FileNotFoundError(f"no dataset at {p}")
    with _open(p) as f:
        minari = any(k.startswith("episode_") for k in f)
    return load_minari(p) if minari else load_d4rl_hdf5(p)
