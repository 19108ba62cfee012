"""toperl_jax/flags.py: the TOP-ERL family's flags, their checks and the library configs derived from them."""

import dataclasses

import pytest

from toperl_jax import envs, flags
from variants import top_erl as te
from variants import top_erl_replan as tr


def test_both_variants_declare_the_family_flags_once():
    family = [f.name for f in dataclasses.fields(flags.Flags)]
    assert [f.name for f in dataclasses.fields(te.Args)] == family  # TOP-ERL adds no flag, it narrows --task
    replan = [f.name for f in dataclasses.fields(tr.Args)]
    assert replan[:len(family)] == family and "n_splits" in replan[len(family):]
    # every preset of either variant is built from the same numbers
    for name, values in flags.PRESETS.items():
        assert all(getattr(te.PRESETS[name], k) == v for k, v in values.items()), name


def test_flag_names_are_unchanged():
    args = te.parse_args(["--num-basis", "4", "--n-embd", "32", "--mean-bound", "0.2", "--no-auto-scale-basis"])
    assert (args.num_basis, args.n_embd, args.mean_bound, args.auto_scale_basis) == (4, 32, 0.2, False)
    args = tr.parse_args(["--task=box-dense", "--cov-bound", "1e-3", "--n-splits", "2", "--split-strategy", "equal",
                          "--split-sizes"])
    assert (args.task, args.cov_bound, args.n_splits, args.lr_critic) == ("box-dense", 1e-3, 2, 5e-5)


def test_derived_configs_take_every_flag():
    args = te.PRESETS["hopper-jump"]
    task = envs.make(args.env)
    mp = flags.prodmp_config(args, task)
    assert (mp.num_dof, mp.dt) == (task.num_dof, task.dt)
    assert all(getattr(mp, f.name) == getattr(args, f.name) for f in dataclasses.fields(mp)
               if f.name not in ("num_dof", "dt"))
    proj = flags.projection_config(args)
    assert proj.total_train_steps == args.iterations
    assert all(getattr(proj, f.name) == getattr(args, f.name) for f in dataclasses.fields(proj)
               if f.name not in ("total_train_steps", "root_iters", "rtol"))
    critic = flags.critic_network(args, task)
    assert (critic.state_dim, critic.action_dim, critic.n_embd, critic.n_head) == (task.obs_size, task.action_size,
                                                                                   128, 8)
    assert flags.policy_network(args, mp.num_params).action_dim == mp.num_params
    assert flags.learner_grid(dataclasses.replace(args, traj_downsample_factor=5), task) == (
        task.episode_length // 5, task.dt * 5)


def test_prodmp_errors_name_the_flag():
    """ProDMP's own constraints are checked by `ProDMPConfig` and reported under the flag's name."""
    task = envs.make("reacher")
    with pytest.raises(ValueError, match="--num-basis-outside"):
        flags.check_args(dataclasses.replace(te.Args(), num_basis=3, num_basis_outside=1), task)
    with pytest.raises(ValueError, match="--tau"):
        flags.check_args(dataclasses.replace(te.Args(), tau=0.0), task)
