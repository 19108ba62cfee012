"""Offline RL data: the flat trajectory dataset, D4RL / Minari HDF5 readers and writers, return-to-go, state
statistics, device-side window sampling for sequence policies, and the per-step action space of the datasets
made from this project's MJX tasks.

    from toperl_jax import offline
    ds = offline.load_dataset("datasets/reacher-medium-replay-v0.hdf5")   # D4RL file or Minari directory
    starts, ends = ds.episode_bounds()
    rtg = offline.returns_to_go(ds.rewards, starts, ends)

The HDF5 readers need the optional extra: `pip install -e '.[offline]'` (h5py).
"""

from toperl_jax.offline.dataset import (
    FIELDS,
    DatasetError,
    TrajectoryDataset,
    concatenate,
    normalized_score,
    references_usable,
    returns_to_go,
    state_stats,
)
from toperl_jax.offline.formats import load_d4rl_hdf5, load_dataset, load_minari, save_d4rl_hdf5, save_minari

__all__ = ["FIELDS", "DatasetError", "TrajectoryDataset", "concatenate", "load_d4rl_hdf5", "load_dataset",
           "load_minari", "normalized_score", "references_usable", "returns_to_go", "save_d4rl_hdf5", "save_minari",
           "state_stats"]
