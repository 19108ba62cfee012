"""Offline trajectory datasets: the flat D4RL-style container, episode splitting, return-to-go, state statistics.

    ds = TrajectoryDataset(observations=obs, actions=act, rewards=rew, terminals=term, timeouts=tout)
    starts, ends = ds.episode_bounds()           # [E] first / one-past-last index of every episode
    rtg = returns_to_go(ds.rewards, starts, ends)  # [N] undiscounted sum of the rewards from t to the episode end
    mean, std = state_stats(ds.observations)     # std + 1e-6, as QT / DT normalise states

Everything here is numpy on the host: datasets are loaded, validated and preprocessed once, then moved to the
device (`toperl_jax.offline.windows`).

Conventions (those of D4RL's `get_dataset()` dictionaries):
- all fields are flat over steps, N = total steps: observations [N, S], actions [N, A], rewards [N],
  terminals [N] (1 = the episode *terminated* after this step: a true end, no bootstrap), timeouts [N] (1 = the
  episode was *truncated* after this step, e.g. a time limit: the state is not terminal);
- an episode ends after a step with terminals or timeouts set; a trailing piece with neither set (a dataset
  that stops mid-episode) is kept as a last episode;
- `observations[t]` is the state in which `actions[t]` was taken; `rewards[t]` is the reward of that step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from toperl_jax.cli import UsageError

FIELDS = ("observations", "actions", "rewards", "terminals", "timeouts")


class DatasetError(UsageError):
    """A malformed dataset (missing key, shape mismatch, non-finite values); the message names the field."""


def _check_finite(name: str, x: np.ndarray, source: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        idx = np.argwhere(bad)[0].tolist()
        raise DatasetError(f"{source}: {name} has {int(bad.sum())} non-finite value(s) (NaN or inf), first at "
                           f"index {idx}")


@dataclasses.dataclass
class TrajectoryDataset:
    """A flat offline dataset (see the module docstring for the conventions).

    Attributes:
        observations: [N, S] float32 raw (unnormalised) states.
        actions: [N, A] float32 actions.
        rewards: [N] float32 rewards.
        terminals: [N] bool, true termination after the step.
        timeouts: [N] bool, truncation after the step.
        metadata: free-form attributes (e.g. `env`, `recipe`, `ref_min_score`, `ref_max_score`).
        source: where the data came from (used in error messages).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = "dataset"

    def __post_init__(self):
        self.observations = np.asarray(self.observations, np.float32)
        self.actions = np.asarray(self.actions, np.float32)
        self.rewards = np.asarray(self.rewards, np.float32)
        for name in ("terminals", "timeouts"):
            x = np.asarray(getattr(self, name))
            if x.dtype != bool and x.size and not np.isin(x, (0, 1)).all():
                i = int(np.flatnonzero(~np.isin(x, (0, 1)))[0])
                raise DatasetError(f"{self.source}: {name} must be boolean (0 or 1), got {float(x.flat[i])} at step {i}")
            setattr(self, name, x.astype(bool))
        self.validate()

    def validate(self) -> None:
        """Raise `DatasetError` naming the field for wrong ranks, mismatched lengths or non-finite values."""
        src = self.source
        if self.observations.ndim != 2:
            raise DatasetError(f"{src}: observations must be [N, obs_dim], got shape {self.observations.shape}")
        if self.actions.ndim != 2:
            raise DatasetError(f"{src}: actions must be [N, act_dim], got shape {self.actions.shape}")
        n = self.observations.shape[0]
        if n == 0:
            raise DatasetError(f"{src}: the dataset is empty (0 steps)")
        for name in ("actions", "rewards", "terminals", "timeouts"):
            x = getattr(self, name)
            if name != "actions" and x.ndim != 1:
                raise DatasetError(f"{src}: {name} must be [N], got shape {x.shape}")
            if x.shape[0] != n:
                raise DatasetError(f"{src}: {name} has {x.shape[0]} steps but observations has {n} (shape "
                                   f"mismatch)")
        for name in ("observations", "actions", "rewards"):
            _check_finite(name, getattr(self, name), src)

    # -- sizes ------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.observations.shape[0]

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def act_dim(self) -> int:
        return self.actions.shape[1]

    # -- episodes ---------------------------------------------------------------------------------------------
    def episode_bounds(self, max_episode_steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(starts [E], ends [E]) int64: episode e is steps starts[e] … ends[e] − 1.

        Episodes end after a step with `terminals` or `timeouts`; a trailing piece without either is kept.
        `max_episode_steps`: if given and the dataset has no timeouts at all (older D4RL files), episodes are
        also cut every that many steps (D4RL's 1000-step convention; QT's data preparation does the same).
        """
        ends_mask = self.terminals | self.timeouts
        if max_episode_steps is not None and not self.timeouts.any():
            if max_episode_steps < 1:
                raise ValueError(f"max_episode_steps must be ≥ 1, got {max_episode_steps}")
            # count steps since the last end and cut when the count reaches max_episode_steps
            ends_mask = ends_mask.copy()
            run = 0
            for t in range(len(self)):
                run += 1
                if ends_mask[t] or run == max_episode_steps:
                    ends_mask[t] = True
                    run = 0
        ends = np.flatnonzero(ends_mask) + 1
        if ends.size == 0 or ends[-1] != len(self):
            ends = np.append(ends, len(self))
        starts = np.concatenate([[0], ends[:-1]])
        return starts.astype(np.int64), ends.astype(np.int64)

    def episodes(self, max_episode_steps: int | None = None) -> list[dict[str, np.ndarray]]:
        """The episodes as a list of dicts of the five fields (views into the flat arrays)."""
        starts, ends = self.episode_bounds(max_episode_steps)
        return [{f: getattr(self, f)[s:e] for f in FIELDS} for s, e in zip(starts, ends)]

    def episode_returns(self, max_episode_steps: int | None = None) -> np.ndarray:
        """[E] float64 undiscounted return of every episode."""
        starts, ends = self.episode_bounds(max_episode_steps)
        csum = np.concatenate([[0.0], np.cumsum(self.rewards, dtype=np.float64)])
        return csum[ends] - csum[starts]

    def summary(self) -> dict[str, float]:
        """Steps, episodes and return statistics (for logs and docs)."""
        ret = self.episode_returns()
        return {"steps": len(self), "episodes": int(ret.size), "return_mean": float(ret.mean()),
                "return_std": float(ret.std()), "return_min": float(ret.min()), "return_max": float(ret.max())}

    @classmethod
    def from_episodes(cls, episodes: list[dict[str, np.ndarray]], metadata: dict | None = None,
                      source: str = "episodes") -> TrajectoryDataset:
        """Concatenate per-episode dicts with the five fields (terminals/timeouts may be missing: zeros)."""
        if not episodes:
            raise DatasetError(f"{source}: no episodes")
        cols = {}
        for f in FIELDS:
            parts = []
            for i, ep in enumerate(episodes):
                if f in ep:
                    parts.append(np.asarray(ep[f]))
                elif f in ("terminals", "timeouts"):
                    parts.append(np.zeros(len(ep["rewards"]), bool))
                else:
                    raise DatasetError(f"{source}: episode {i} has no '{f}'")
            cols[f] = np.concatenate(parts, axis=0)
        return cls(**cols, metadata=dict(metadata or {}), source=source)


def concatenate(datasets: list[TrajectoryDataset], metadata: dict | None = None) -> TrajectoryDataset:
    """Concatenate datasets step-wise (e.g. medium-expert = medium + expert). Every input must end on an episode
    boundary (its last step has terminals or timeouts set), so that no episode spans two inputs."""
    for d in datasets:
        if not (d.terminals[-1] or d.timeouts[-1]):
            raise DatasetError(f"{d.source}: does not end on an episode boundary; cannot concatenate")
        if d.obs_dim != datasets[0].obs_dim or d.act_dim != datasets[0].act_dim:
            raise DatasetError(f"{d.source}: obs/act dims {d.obs_dim}/{d.act_dim} differ from "
                               f"{datasets[0].obs_dim}/{datasets[0].act_dim}")
    cols = {f: np.concatenate([getattr(d, f) for d in datasets], axis=0) for f in FIELDS}
    return TrajectoryDataset(**cols, metadata=dict(metadata or {}), source="+".join(d.source for d in datasets))


def returns_to_go(rewards: np.ndarray, starts: np.ndarray, ends: np.ndarray, discount: float = 1.0) -> np.ndarray:
    """[N] float32 return-to-go R_t = Σ_{k=t}^{end−1} γ^{k−t} r_k within each episode (float64 accumulation).

    Decision Transformer / QT use the undiscounted form (γ = 1), the default.
    """
    rewards = np.asarray(rewards, np.float64)
    out = np.zeros_like(rewards)
    for s, e in zip(np.asarray(starts), np.asarray(ends)):
        acc = 0.0
        seg = rewards[s:e]
        res = np.empty_like(seg)
        if discount == 1.0:
            res = np.cumsum(seg[::-1])[::-1]
        else:
            for k in range(seg.size - 1, -1, -1):
                acc = seg[k] + discount * acc
                res[k] = acc
        out[s:e] = res
    return out.astype(np.float32)


def state_stats(observations: np.ndarray, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """(mean [S], std [S] + eps) float32 over all steps (QT/DT: normalised state = (s − mean) / std)."""
    obs = np.asarray(observations, np.float64)
    return obs.mean(axis=0).astype(np.float32), (obs.std(axis=0) + eps).astype(np.float32)


def references_usable(ref_min: float | None, ref_max: float | None) -> bool:
    """Whether D4RL's normalised score 100 (R − ref_min) / (ref_max − ref_min) means anything: both references are
    known and the expert's is above the random one (otherwise the score falls as the return rises)."""
    return ref_min is not None and ref_max is not None and ref_max > ref_min


def normalized_score(returns, ref_min: float, ref_max: float):
    """D4RL's normalised score: 100 (R − R_random) / (R_expert − R_random)."""
    if ref_max == ref_min:
        raise ValueError(f"reference returns must differ, got ref_min = ref_max = {ref_min}")
    return 100.0 * (np.asarray(returns, np.float64) - ref_min) / (ref_max - ref_min)
