"""The original TOP-ERL's side of benchmarks/learner_vs_upstream.py: a worker process that times the ORIGINAL
PyTorch agent's own update code, one call per request.

It runs under the python of an environment where the original code works (torch, mp_pytorch, fancy_gymnasium,
trust-region-layers with its C++ `cpp_projection`, cw2, …), and takes the path of a local checkout of
BruceGeLi/TOP_ERL_ICLR25_Code (`--upstream PATH`), which it puts first on `sys.path` at run time; nothing of
that code is copied here. Start it through the driver, not by hand:

    python benchmarks/learner_vs_upstream.py --upstream /path/to/TOP_ERL_ICLR25_Code \
        --upstream-python /path/to/upstream-venv/bin/python

What it builds, as upstream's `MPExperimentMultiProcessing.initialize` does: the merged config
(`mprl/config/<task>/seq/entire/shared_*.yaml` with `local_*.yaml`, device cpu), upstream's sampler (only its one
debugging env: `disable_train_env` / `disable_test_env`), `TopErlPolicy`, `TopErlCritic`, `KLProjectionLayer`,
and the agent `TopErlAgent` (the learner code of `TopErlAgentMultiProcessing`, which only adds the sampler
process) with `epochs_critic = epochs_policy = 1`, so that one call of `update_critic()` / `update_policy()` is
one gradient step. Two things are replaced so that both sides see the same inputs:
- the replay buffer: `sample(batch_size)` returns the driver's batch (the same arrays ours gets), so buffer
  sampling (a gather of the batch) is timed on neither side;
- the segmentation: `torch.randint` is answered with the requested (length index, offset) while upstream's own
  `get_random_segments` runs (inside the timed call), so upstream builds its index map for the requested ℓ, o.
The covariance of the policy and of the old policy are set to the driver's factors (`set_cov_variable`), so
that the KL projection is active (upstream skips its C++ covariance solve when the bound holds).

Steps (request name → what is timed):
- `critic_update`: `agent.update_critic()` — segments, `segments_n_step_return_vf` targets (projected policy,
  ProDMP decode, target-critic passes), critic forward, masked MSE, backward, AdamW, Polyak target update;
- `critic_grad`: the same call with `segments_n_step_return_vf` answering prepared random targets of the right
  shape (prepared before the timer);
- `targets`: `get_random_segments(pad_additional=True)` + `segments_n_step_return_vf(dataset, idx)`;
- `policy`: `agent.update_policy()` — `make_new_pred` (policy, old policy, projection, trust-region loss),
  entropy, `q_loss` (segments, ProDMP sampling, critic), backward, Adam, old-policy Polyak copy.

Protocol: pickled dicts over the process's original stdin / stdout (anything upstream prints goes to stderr);
arrays travel as (dtype string, shape, bytes), so that the two sides' numpy versions need not match.
Requests: {"cmd": "setup", ...}, {"cmd": "time", "step", "length", "offset"}, {"cmd": "quit"}; every reply is
{"ok": True, ...} or {"ok": False, "error": str}.
"""

from __future__ import annotations

import argparse
import copy
import os
import pickle
import sys
import time
import traceback

CONFIGS = {  # upstream's config pairs (shared, local), relative to mprl/config
    "box": ("box_push_random_init/seq/entire/shared_dense.yaml", "box_push_random_init/seq/entire/local_dense.yaml"),
    "hopper": ("hopper_jump/seq/entire/shared_hopper.yaml", "hopper_jump/seq/entire/local_hopper.yaml"),
}
STEPS = ("critic_update", "critic_grad", "targets", "policy")


def merged(base: dict, over: dict) -> dict:
    """`over` deep-merged into a copy of `base` (what cw2's `import_path` does with the local yaml)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def set_everywhere(d, key: str, value) -> None:
    """Set every nested `key` (upstream's device and seed entries sit in each component's args)."""
    if isinstance(d, dict):
        for k in d:
            if k == key:
                d[k] = value
            else:
                set_everywhere(d[k], key, value)
    elif isinstance(d, list):
        for x in d:
            set_everywhere(x, key, value)


def load_config(upstream: str, task: str, seed: int) -> dict:
    import yaml

    shared, local = (os.path.join(upstream, "mprl", "config", p) for p in CONFIGS[task])
    with open(shared) as f:
        s = yaml.safe_load(f)
    with open(local) as f:
        loc = yaml.safe_load(f)
    cfg = merged(s["params"], loc.get("params", {}))
    set_everywhere(cfg, "device", "cpu")
    set_everywhere(cfg, "seed", seed)
    return cfg


def array(encoded):
    """(dtype string, shape, bytes) → numpy array (a copy, writable)."""
    import numpy as np

    dtype, shape, raw = encoded
    return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy()


class FixedBatch:
    """Stands in for `TopErlReplayBuffer`: every `sample(batch_size)` returns the driver's batch."""

    def __init__(self):
        self.data, self.size = {}, 0  # set by `Upstream.setup`

    def sample(self, batch_size, normalize=False):
        assert batch_size == self.size, f"agent batch_size {batch_size} != the driver's batch {self.size}"
        return dict(self.data)

    def __len__(self):
        return self.size

    def is_full(self):
        return True


class Upstream:
    def __init__(self, upstream: str, task: str, threads: int, seed: int):
        sys.path.insert(0, upstream)
        import torch

        torch.set_num_threads(threads)
        import mprl.util as util
        from mprl.rl.agent import TopErlAgent
        from mprl.rl.critic import critic_factory
        from mprl.rl.policy import policy_factory
        from mprl.rl.projection import projection_factory
        from mprl.rl.sampler import sampler_factory
        from mprl.seq_mp_exp_multiprocessing import MPExperimentMultiProcessing as Exp

        self.torch, self.util = torch, util
        self.cfg = cfg = load_config(upstream, task, seed)
        util.set_global_random_seed(seed)
        sampler = sampler_factory(cfg["sampler"]["type"], cpu_cores=None, disable_train_env=True,
                                  disable_test_env=True, **cfg["sampler"]["args"])
        state_dim = Exp.get_dim_in(cfg, sampler)
        k = Exp.dim_policy_out(cfg)
        policy = policy_factory(cfg["policy"]["type"], dim_in=state_dim, dim_out=k, **cfg["policy"]["args"])
        critic = critic_factory(cfg["critic"]["type"], state_dim=state_dim, action_dim=2 * policy.num_dof,
                                **cfg["critic"]["args"])
        projection = projection_factory(cfg["projection"]["type"], action_dim=k, **cfg["projection"]["args"])
        self.T = sampler.num_times
        self.batch_size = cfg["agent"]["args"]["batch_size"]
        self.buffer = FixedBatch()
        agent_args = {**cfg["agent"]["args"], "epochs_critic": 1, "epochs_policy": 1}
        self.agent = TopErlAgent(policy=policy, critic=critic, sampler=sampler, replay_buffer=self.buffer,
                                 projection=projection, traj_length=self.T, **agent_args)
        self.agent.log_now = False
        self._get_random_segments = self.agent.get_random_segments  # the bound original
        self._targets = self.agent.segments_n_step_return_vf
        self.agent.get_random_segments = self._segments
        self.forced = None  # (length index, offset) that torch.randint answers inside get_random_segments
        self.lengths = sorted({self.T // n for n in range(1, 26)})  # the order of torch.unique in upstream
        self.info = {"torch": str(torch.__version__), "threads": torch.get_num_threads(), "state_dim": state_dim,
                     "num_dof": policy.num_dof, "num_params": k, "T": self.T, "batch_size": self.batch_size,
                     "dt": float(sampler.dt), "n_embd": cfg["critic"]["args"]["n_embd"],
                     "n_layer": cfg["critic"]["args"]["n_layer"], "n_head": cfg["critic"]["args"]["n_head"],
                     "single_q": cfg["critic"]["args"]["single_q"], "policy_hidden": (
                         cfg["policy"]["args"]["mean_net_args"]["avg_neuron"],
                         cfg["policy"]["args"]["mean_net_args"]["num_hidden"]),
                     "use_old_policy": self.agent.use_old_policy,
                     "use_mix_precision": self.agent.use_mix_precision,
                     "sampler_env": cfg["sampler"]["args"]["env_id"]}

    def _segments(self, pad_additional=False):
        """Upstream's `get_random_segments`, with its two `torch.randint` draws answered by `self.forced`."""
        torch = self.torch
        answers = iter(self.forced)
        real = torch.randint

        def randint(low, high, size, **kw):
            return torch.tensor(next(answers), dtype=kw.get("dtype", torch.long))

        torch.randint = randint
        try:
            return self._get_random_segments(pad_additional=pad_additional)
        finally:
            torch.randint = real

    def setup(self, data: dict, L_old, L_new, iteration: int) -> dict:
        torch = self.torch
        tensors = {}
        for name, x in data.items():
            dtype = torch.bool if "done" in name else torch.long if "idx" in name else torch.float32
            tensors[name] = torch.as_tensor(array(x)).to(dtype)
        L_old, L_new = array(L_old), array(L_new)
        self.buffer.data = tensors
        self.buffer.size = len(tensors["step_states"])
        shapes = {name: tuple(x.shape) for name, x in tensors.items()}
        a = self.agent
        a.policy.set_cov_variable(torch.as_tensor(L_new, dtype=torch.float32))
        a.policy_old.set_cov_variable(torch.as_tensor(L_old, dtype=torch.float32))
        a.num_iterations = iteration  # the entropy schedule's step
        from trust_region_projections.utils.projection_utils import gaussian_kl

        with torch.no_grad():  # the covariance part of KL(policy ‖ old policy) that the projection will see
            d = tensors["step_states"][:1, 0]
            _, kl_cov = gaussian_kl(a.policy, a.policy.policy(d), a.policy_old.policy(d))
        return {**self.info, "data_shapes": shapes, "kl_cov": float(kl_cov.reshape(-1)[0]),
                "cov_bound": float(a.projection.cov_bound)}

    def prepare(self, step: str, length: int, offset: int):
        """Untimed: force (ℓ, o), check upstream's index map, and the fixed targets of `critic_grad`."""
        if length not in self.lengths:
            raise ValueError(f"length {length} is not one of upstream's candidates {self.lengths}")
        self.forced = (self.lengths.index(length), offset)
        idx = self._segments(pad_additional=step != "policy")
        if idx.shape[-1] - 1 != length or int(idx[0, 0]) != offset:
            raise RuntimeError(f"forced segmentation failed: asked ℓ={length}, o={offset}, got index map "
                               f"{tuple(idx.shape)} starting at {int(idx[0, 0])}")
        self.agent.segments_n_step_return_vf = self._targets
        if step == "critic_grad":
            fixed = self.torch.randn(self.batch_size, idx.shape[0], 1 + length)
            self.agent.segments_n_step_return_vf = lambda dataset, idx_in_segments: fixed
        return {"rows": int(idx.shape[0])}

    def run(self, step: str):
        a = self.agent
        if step in ("critic_update", "critic_grad"):
            a.update_critic()
        elif step == "targets":
            idx = a.get_random_segments(pad_additional=True)
            a.segments_n_step_return_vf(a.replay_buffer.sample(a.batch_size), idx)
        elif step == "policy":
            a.update_policy()
        else:
            raise ValueError(f"unknown step {step!r}; known: {STEPS}")

    def time(self, step: str, length: int, offset: int) -> dict:
        info = self.prepare(step, length, offset)
        t0 = time.perf_counter()
        self.run(step)
        seconds = time.perf_counter() - t0
        self.agent.segments_n_step_return_vf = self._targets
        return {"seconds": seconds, **info}


def serve(args) -> None:
    inp = os.fdopen(os.dup(0), "rb")
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever upstream prints (python or C) goes to stderr, not into the protocol
    sys.stdout = sys.stderr
    worker = None
    while True:
        try:
            req = pickle.load(inp)
        except EOFError:
            return
        try:
            cmd = req["cmd"]
            if cmd == "quit":
                reply = {"ok": True}
            elif cmd == "setup":
                worker = Upstream(args.upstream, req["task"], req["threads"], req["seed"])
                reply = {"ok": True, "info": worker.setup(req["data"], req["L_old"], req["L_new"], req["iteration"])}
            elif cmd == "time":
                reply = {"ok": True, **worker.time(req["step"], req["length"], req["offset"])}
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except Exception as e:  # reported to the driver, which stops with the message
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        pickle.dump(reply, out, protocol=4)
        out.flush()
        if req.get("cmd") == "quit":
            return


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True, help="path of a local checkout of BruceGeLi/TOP_ERL_ICLR25_Code")
    serve(p.parse_args())
