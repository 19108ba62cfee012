"""toperl_jax/flags.py: the TOP-ERL family's flags, their checks and the library configs derived from them."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import pytest

from toperl_jax import checkpoint as ckpt
from toperl_jax import envs, flags
from toperl_jax.cli import UsageError
from variants import top_erl as te
from variants import top_erl_replan as tr


def test_both_variants_declare_the_family_flags_once():
    family = [f.name for f in dataclasses.fields(flags.Flags)]
    assert [f.name for f in dataclasses.fields(te.Args)] == family  # TOP-ERL only narrows --task
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


def test_target_platform_is_an_argument():
    """Micro-batching and the CPU compiler options follow the platform asked for, not the backend at hand."""
    args = te.PRESETS["reach"]  # batch 64
    assert flags.micro_batch(args, "cpu") == 16 and flags.micro_batch(args, "cuda") is None
    assert flags.micro_batch(args) == flags.micro_batch(args, jax.default_backend())
    assert flags.micro_batch(dataclasses.replace(args, micro_batch=8), "cuda") == 8  # an explicit flag wins
    assert te.make_train(args, platform="cuda").learner.micro_batch is None
    assert tr.make_learner(tr.PRESETS["reach"], envs.make("reacher"), "cuda").micro_batch is None
    assert tr.make_learner(tr.PRESETS["reach"], envs.make("reacher"), "cpu").micro_batch == 16
    box = envs.make("box-pushing-dense")
    assert box.compiler_options("cpu") == {"xla_cpu_use_fusion_emitters": False}
    assert box.compiler_options("cuda") is None
    assert box.compiler_options() == box.compiler_options(jax.default_backend())


@pytest.mark.parametrize("variant", [te, tr], ids=["top_erl", "top_erl_replan"])
def test_matmul_precision_is_applied_around_the_run(variant, monkeypatch):
    """`--matmul-precision` (default 'default': JAX's own) is in force while the runner traces the program."""
    assert variant.parse_args([]).matmul_precision == "default"
    with pytest.raises(SystemExit):
        variant.parse_args(["--matmul-precision", "fast"])
    seen = []

    def fake_runner(args, program, *a, **k):
        seen.append(jax.jit(lambda x: x @ x).lower(jnp.ones((2, 2))).as_text())
        return {}

    monkeypatch.setattr(variant.runner, "run", fake_runner)
    for value in ("highest", "default"):
        variant.run(variant.parse_args(["--matmul-precision", value]))
    assert "precision = [HIGHEST, HIGHEST]" in seen[0]
    assert "HIGHEST" not in seen[1]
    assert jax.config.jax_default_matmul_precision is None  # restored after the run


def test_runs_saved_before_matmul_precision_still_resume(tmp_path):
    """An args.json without the flag (a run from before it existed) compares equal at the default only."""
    args = te.PRESETS["reach"]
    old = json.loads(json.dumps(dataclasses.asdict(args)))
    del old["matmul_precision"]
    (tmp_path / "args.json").write_text(json.dumps(old))
    saved = ckpt.saved_args(tmp_path / "args.json", args)
    ckpt.check_same_flags(saved, dataclasses.asdict(args))
    with pytest.raises(UsageError, match="--matmul-precision: default vs highest"):
        ckpt.check_same_flags(saved, dataclasses.asdict(dataclasses.replace(args, matmul_precision="highest")))


def test_solver_iterations_replace_the_mjcf_budget():
    """--solver-iterations I LS sets the MJX model's constraint-solver budget (the solver study's settings); left out,
    the task keeps its MJCF's (box pushing 4 / 8); below 1 is a one-line flag error."""
    args = te.parse_args(["--task", "box-dense", "--solver-iterations", "6", "8"])
    assert args.solver_iterations == (6, 8)
    task = flags.make_task(args)
    assert (task.mj_model.opt.iterations, task.mj_model.opt.ls_iterations) == (6, 8)
    assert (int(task.mjx_model.opt.iterations), int(task.mjx_model.opt.ls_iterations)) == (6, 8)
    default = flags.make_task(te.parse_args(["--task", "box-dense"]))
    assert (int(default.mjx_model.opt.iterations), int(default.mjx_model.opt.ls_iterations)) == (4, 8)
    with pytest.raises(UsageError, match="--solver-iterations: solver iterations must be >= 1, got 0"):
        flags.make_task(dataclasses.replace(args, solver_iterations=(0, 8)))


def test_token_buckets_flag():
    """--token-buckets K reaches either variant's learner (default 1; the hopper-jump-cpu preset 3); below 1 is a
    one-line error."""
    for variant in (te, tr):
        args = variant.parse_args(["--token-buckets", "2"])
        task = envs.make(args.env)
        assert variant.make_learner(args, task).token_buckets == 2
        assert variant.make_learner(variant.parse_args([]), task).token_buckets == 1
        with pytest.raises(UsageError, match="--token-buckets: must be ≥ 1, got 0"):
            flags.check_args(dataclasses.replace(args, token_buckets=0), task)
    assert te.parse_args(["--task", "hopper-jump-cpu"]).token_buckets == 3
