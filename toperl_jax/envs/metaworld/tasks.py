"""Meta-World tasks: all of MT50 (MT10 first, then the other 40; v2 reward functions as kept in Meta-World 3.x's
`*_v3` environments).

Each class states Meta-World's numbers (ranges, offsets, thresholds) and its reward in a few lines; the
formulas are in the `evaluate` docstrings. Constants an episode fixes at reset live in `ctx` (EnvState.info):
"goal" (Meta-World's `_target_pos`), "obj_init_pos", "init_tcp", ... so that a state plus its ctx determine
reward and success (tests/test_metaworld.py checks them against Meta-World on recorded states).

Contacts (`pairs`): the geom pairs that Meta-World's scripted policies touch in the original simulation
(counted over 5 episodes per task with MuJoCo 3.3, docs/metaworld.md; 3 noisy episodes for the last 20 ported),
plus the gripper against the table and the task objects against the table where an object can rest on it; in the
*-wall tasks, the wall against the gripper, the hand and the object. The table top is a plane at z = 0 except in
sweep-into and hand-insert, whose table has a hole and collides as its own boxes.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from toperl_jax.envs.base import warp_contacts
from toperl_jax.envs.metaworld.assets import HAND_MESH_GEOM, TABLE_GEOM, collision_geom
from toperl_jax.envs.metaworld.rewards import gripper_caging, hamacher_product, rect_prism_tolerance, tolerance
from toperl_jax.envs.metaworld.sawyer import FINGERS, SawyerTask, mat_to_quat_xyzw


def _pairs(a, b) -> tuple[tuple[str, str], ...]:
    return tuple((x, y) for x in a for y in b)


def _object_at(task, pos):
    """The hand-reset state with the free object (the first free joint, qpos[9:12]) at `pos`, at rest."""
    qpos = jnp.asarray(task.hand_reset.qpos, jnp.float32).at[9:12].set(pos)
    return qpos, jnp.asarray(task.hand_reset.qvel, jnp.float32).at[9:15].set(0.0)


def _norm(x):
    return jnp.linalg.norm(x)


def _settled(task: SawyerTask, hr):
    """The hand reset `hr` followed by one more control step's physics (frame_skip steps, mocap and ctrl as the hand
    reset left them), as some of Meta-World's resets run; init_tcp and the pads stay the hand reset's readings."""
    d = hr.data
    mujoco.mj_step(task.mj_model, d, nstep=task.frame_skip)
    return dataclasses.replace(hr, qpos=d.qpos.copy(), qvel=d.qvel.copy(), mocap_pos=d.mocap_pos[0].copy())


def _gripping_caging(obj, tcp, left_pad, right_pad, obj_init, init_tcp, *, obj_radius: float, grip_margin: float,
                     xz_margin: float):
    """The `_gripper_caging_reward` that push-back, sweep, sweep-into and soccer override: caging as pick-place's (pad
    y distances in [obj_radius, 0.05]; margins from the pads' "initial" positions, live views of the current ones),
    xz = tol(|tcp_xz - obj_xz|, [0, xz_margin], |obj_init_xz - init_tcp_xz| - xz_margin); caging = H(y, xz);
    gripping = H of the pads' y distances in [obj_radius, obj_radius + grip_margin] if caging > 0.95, else 0;
    result (caging + gripping) / 2 (the action is not used)."""
    right, left = obj[1] - right_pad[1], left_pad[1] - obj[1]
    right_m, left_m = jnp.abs(jnp.abs(right) - 0.05), jnp.abs(jnp.abs(left) - 0.05)
    caging_y = hamacher_product(tolerance(right, (obj_radius, 0.05), right_m, "long_tail"),
                                tolerance(left, (obj_radius, 0.05), left_m, "long_tail"))
    bounds = (obj_radius, obj_radius + grip_margin)
    gripping_y = hamacher_product(tolerance(right, bounds, right_m, "long_tail"),
                                  tolerance(left, bounds, left_m, "long_tail"))
    xz = jnp.array([0, 2])
    caging_xz = tolerance(_norm(tcp[xz] - obj[xz]), (0.0, xz_margin), _norm(obj_init[xz] - init_tcp[xz]) - xz_margin,
                          "long_tail")
    caging = hamacher_product(caging_y, caging_xz)
    return (caging + jnp.where(caging > 0.95, gripping_y, 0.0)) / 2


# -- puck tasks: reach, push, pick-place ------------------------------------------------------------------
class _PuckTask(SawyerTask):
    """A puck (cylinder r 0.02, half-height 0.02, free joint qpos[9:16]) on the table; rand = (puck xyz, goal
    xyz), redrawn while their xy are closer than 0.15."""

    pairs = _pairs(FINGERS, ("objGeom", TABLE_GEOM)) + (("objGeom", TABLE_GEOM),)
    rand_low = (-0.1, 0.6, 0.02, -0.1, 0.8, 0.05)
    rand_high = (0.1, 0.7, 0.02, 0.1, 0.9, 0.3)
    goal_low, goal_high = (-0.1, 0.8, 0.05), (0.1, 0.9, 0.3)
    min_obj_goal_xy = 0.15

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        m = self.mj_model
        self._obj_body = m.body("obj").id

    def _place_puck(self, obj_pos):
        qpos, qvel = _object_at(self, obj_pos)
        return qpos, qvel

    def episode_init(self, rand):
        obj, goal = rand[:3], rand[3:6]
        qpos, qvel = self._place_puck(obj)
        return qpos, qvel, {"goal": goal, "obj_init_pos": obj, "init_tcp": jnp.asarray(self.hand_reset.tcp,
                                                                                         jnp.float32)}

    def objects(self, data):
        _, rot = self.geom_frame(data, "objGeom")
        return jnp.concatenate([data.xpos[self._obj_body], mat_to_quat_xyzw(rot), jnp.zeros(7)])


class Reach(_PuckTask):
    """reach-v2: move the tcp to the goal; the puck is only an obstacle."""

    name = "metaworld-reach"
    xml = "sawyer_xyz/sawyer_reach_v3.xml"

    def evaluate(self, data, obs, action, ctx):
        """d = |tcp - goal|; r = 10 tol(d, [0, 0.05], margin |hand_init_pos - goal|, long tail);
        success d <= 0.05."""
        d = _norm(self.tcp_center(data) - ctx["goal"])
        margin = _norm(jnp.asarray(self.hand_init_pos) - ctx["goal"])
        return 10.0 * tolerance(d, (0.0, self.target_radius), margin, "long_tail"), d <= 0.05


class Push(_PuckTask):
    """push-v2: push the puck to a goal on the table (goal z = the puck's resting height)."""

    name = "metaworld-push"
    xml = "sawyer_xyz/sawyer_push_v3.xml"
    rand_low = (-0.1, 0.6, 0.02, -0.1, 0.8, 0.01)
    rand_high = (0.1, 0.7, 0.02, 0.1, 0.9, 0.02)
    goal_low, goal_high = (-0.1, 0.8, 0.01), (0.1, 0.9, 0.02)

    def episode_init(self, rand):
        z = jnp.asarray(self.hand_reset.data.xpos[self._obj_body][2], jnp.float32)  # fix_extreme_obj_pos
        obj = jnp.stack([rand[0], rand[1], z])
        goal = jnp.stack([rand[3], rand[4], z])
        qpos, qvel = self._place_puck(obj)
        return qpos, qvel, {"goal": goal, "obj_init_pos": obj,
                            "init_tcp": jnp.asarray(self.hand_reset.tcp, jnp.float32)}

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7], tcp_opened = obs[3]; in_place = tol(|obj - goal|, [0, 0.05], |obj_init - goal|);
        g = caging(obj radius 0.015, pad thresh 0.05, xz thresh 0.005, high density); r = 2g;
        if |obj - tcp| < 0.02 and tcp_opened > 0: r = 2r + 1 + 5 in_place; r = 10 if |obj - goal| < 0.05.
        success |obj - goal| <= 0.05."""
        obj, opened, tcp = obs[4:7], obs[3], self.tcp_center(data)
        tcp_to_obj, to_target = _norm(obj - tcp), _norm(obj - ctx["goal"])
        in_place = tolerance(to_target, (0.0, self.target_radius), _norm(ctx["obj_init_pos"] - ctx["goal"]),
                             "long_tail")
        lp, rp = self.pads(data)
        grasped = gripper_caging(action, obj, tcp, lp, rp, ctx["obj_init_pos"], ctx["init_tcp"],
                                 obj_radius=0.015, pad_success_thresh=0.05, object_reach_radius=0.01,
                                 xz_thresh=0.005, high_density=True)
        r = 2.0 * grasped
        r = jnp.where((tcp_to_obj < 0.02) & (opened > 0), 2.0 * r + 1.0 + 5.0 * in_place, r)
        r = jnp.where(to_target < self.target_radius, 10.0, r)
        return r, to_target <= self.target_radius


class PickPlace(_PuckTask):
    """pick-place-v2: grasp the puck and bring it to a goal in the air."""

    name = "metaworld-pick-place"
    xml = "sawyer_xyz/sawyer_pick_place_v3.xml"

    @staticmethod
    def caging(action, obj, tcp, left_pad, right_pad, ctx):
        """pick-place's own `_gripper_caging_reward` (always high density). Its margins are meant to use the pads'
        y at reset, but Meta-World stores `init_left_pad`/`init_right_pad` as live views of the simulation
        data (`data.body(...).xpos`), so they are the CURRENT pad positions; we reproduce that."""
        pad_margin, xz_margin, radius = 0.05, 0.005, 0.015
        right_m = jnp.abs(jnp.abs(obj[1] - right_pad[1]) - pad_margin)
        left_m = jnp.abs(jnp.abs(obj[1] - left_pad[1]) - pad_margin)
        right = tolerance(obj[1] - right_pad[1], (radius, pad_margin), right_m, "long_tail")
        left = tolerance(left_pad[1] - obj[1], (radius, pad_margin), left_m, "long_tail")
        y = hamacher_product(left, right)
        xz = jnp.array([0, 2])
        margin = _norm(ctx["obj_init_pos"][xz] - ctx["init_tcp"][xz]) - xz_margin
        x_z = tolerance(_norm(tcp[xz] - obj[xz]), (0.0, xz_margin), margin, "long_tail")
        closed = jnp.clip(action[-1], 0.0, 1.0)
        caging = hamacher_product(y, x_z)
        cg = hamacher_product(caging, jnp.where(caging > 0.97, closed, 0.0))
        return (cg + caging) / 2

    def evaluate(self, data, obs, action, ctx):
        """in_place = tol(|obj - goal|, [0, 0.05], |obj_init - goal|); g = caging; r = H(g, in_place);
        if |obj - tcp| < 0.02 and opened > 0 and obj_z - 0.01 > obj_init_z: r += 1 + 5 in_place;
        r = 10 if |obj - goal| < 0.05. success |obj - goal| <= 0.07."""
        obj, opened, tcp = obs[4:7], obs[3], self.tcp_center(data)
        to_target, tcp_to_obj = _norm(obj - ctx["goal"]), _norm(obj - tcp)
        in_place = tolerance(to_target, (0.0, 0.05), _norm(ctx["obj_init_pos"] - ctx["goal"]), "long_tail")
        lp, rp = self.pads(data)
        grasped = self.caging(action, obj, tcp, lp, rp, ctx)
        r = hamacher_product(grasped, in_place)
        lifted = (tcp_to_obj < 0.02) & (opened > 0) & (obj[2] - 0.01 > ctx["obj_init_pos"][2])
        r = jnp.where(lifted, r + 1.0 + 5.0 * in_place, r)
        r = jnp.where(to_target < 0.05, 10.0, r)
        return r, to_target <= 0.07


class _PuckWall:
    """Mixin of the puck tasks behind a wall (`wall` body at (0.1, 0.75, 0.06), two coincident 0.24 x 0.02 x 0.12
    boxes that both collide in the original): gripper, hand and puck collide with it; smaller ranges."""

    wall = ("wall/g0", "wall/g1")
    pairs = _PuckTask.pairs + _pairs(FINGERS + (HAND_MESH_GEOM, "objGeom"), wall)
    rand_low = (-0.05, 0.6, 0.015, -0.05, 0.85, 0.05)
    rand_high = (0.05, 0.65, 0.015, 0.05, 0.9, 0.3)
    goal_low, goal_high = (-0.05, 0.85, 0.05), (0.05, 0.9, 0.3)


class ReachWall(_PuckWall, Reach):
    """reach-wall-v2: reach (same reward) with a wall between the start and the goal; puck r 0.03, half-height
    0.015."""

    name = "metaworld-reach-wall"
    xml = "sawyer_xyz/sawyer_reach_wall_v3.xml"


class PushWall(_PuckWall, Push):
    """push-wall-v2: push the puck around the wall to a goal on the table (goal z = obj_init z = the puck's z after
    the hand reset on our model, as push; Meta-World's puck rests 0.56 mm deeper there)."""

    name = "metaworld-push-wall"
    xml = "sawyer_xyz/sawyer_push_wall_v3.xml"
    rand_low = (-0.05, 0.6, 0.015, -0.05, 0.85, 0.01)
    rand_high = (0.05, 0.65, 0.015, 0.05, 0.9, 0.02)
    goal_low, goal_high = (-0.05, 0.85, 0.01), (0.05, 0.9, 0.02)

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7]; mid = (-0.05, 0.77, obj_z), s = (3, 1, 1); part1 = tol(|(obj - mid) s|, [0, 0.05],
        |(obj_init - mid) s|); part2 = tol(|obj - goal|, [0, 0.05], |obj_init - goal|); g = caging as push;
        r = 2g; if |obj - tcp| < 0.02 and opened > 0: r = 2g + 1 + 4 part1, or 2g + 5 + 3 part2 if obj_y > 0.75;
        r = 10 if |obj - goal| < 0.05; success |obj - goal| <= 0.07."""
        obj, opened, tcp = obs[4:7], obs[3], self.tcp_center(data)
        mid, scale = jnp.stack([-0.05, 0.77, obj[2]]), jnp.array([3.0, 1.0, 1.0])
        to_target = _norm(obj - ctx["goal"])
        part1 = tolerance(_norm((obj - mid) * scale), (0.0, self.target_radius),
                          _norm((ctx["obj_init_pos"] - mid) * scale), "long_tail")
        part2 = tolerance(to_target, (0.0, self.target_radius), _norm(ctx["obj_init_pos"] - ctx["goal"]), "long_tail")
        lp, rp = self.pads(data)
        grasped = gripper_caging(action, obj, tcp, lp, rp, ctx["obj_init_pos"], ctx["init_tcp"],
                                 obj_radius=0.015, pad_success_thresh=0.05, object_reach_radius=0.01,
                                 xz_thresh=0.005, high_density=True)
        near = (_norm(obj - tcp) < 0.02) & (opened > 0)
        r = jnp.where(near, jnp.where(obj[1] > 0.75, 2.0 * grasped + 5.0 + 3.0 * part2,
                                      2.0 * grasped + 1.0 + 4.0 * part1), 2.0 * grasped)
        r = jnp.where(to_target < self.target_radius, 10.0, r)
        return r, to_target <= 0.07


class PickPlaceWall(_PuckWall, _PuckTask):
    """pick-place-wall-v2: pick the puck up, over the wall, to a goal in the air."""

    name = "metaworld-pick-place-wall"
    xml = "sawyer_xyz/sawyer_pick_place_wall_v3.xml"

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7]; mid = (goal_x, 0.77, 0.25), s = (1, 1, 3); part1 = tol(|(obj - mid) s|, [0, 0.05],
        |(obj_init - mid) s|); part2 = tol(|obj - goal|, [0, 0.05], |obj_init - goal|); g = caging(obj radius
        0.015, pad thresh 0.05, xz 0.005, neither density: H(caging, gripping)); gp = H(g, part1); r = gp;
        if |obj - tcp| < 0.02, opened > 0 and obj_z - 0.015 > obj_init_z: r = gp + 1 + 4 part1, or
        gp + 5 + 3 part2 if obj_y > 0.75; r = 10 if |obj - goal| < 0.05; success |obj - goal| <= 0.07."""
        obj, opened, tcp, goal = obs[4:7], obs[3], self.tcp_center(data), ctx["goal"]
        mid, scale = jnp.stack([goal[0], 0.77, 0.25]), jnp.array([1.0, 1.0, 3.0])
        to_target = _norm(obj - goal)
        part1 = tolerance(_norm((obj - mid) * scale), (0.0, self.target_radius),
                          _norm((ctx["obj_init_pos"] - mid) * scale), "long_tail")
        part2 = tolerance(to_target, (0.0, self.target_radius), _norm(ctx["obj_init_pos"] - goal), "long_tail")
        lp, rp = self.pads(data)
        grasped = gripper_caging(action, obj, tcp, lp, rp, ctx["obj_init_pos"], ctx["init_tcp"],
                                 obj_radius=0.015, pad_success_thresh=0.05, object_reach_radius=0.01,
                                 xz_thresh=0.005)
        gp = hamacher_product(grasped, part1)
        lifted = (_norm(obj - tcp) < 0.02) & (opened > 0) & (obj[2] - 0.015 > ctx["obj_init_pos"][2])
        r = jnp.where(lifted, jnp.where(obj[1] > 0.75, gp + 5.0 + 3.0 * part2, gp + 1.0 + 4.0 * part1), gp)
        r = jnp.where(to_target < self.target_radius, 10.0, r)
        return r, to_target <= 0.07


# -- articulated objects ----------------------------------------------------------------------------------
class _BodyTask(SawyerTask):
    """An articulated object whose base body is moved per episode to rand (model.body_pos)."""

    def _qpos_qvel(self):
        return (jnp.asarray(self.hand_reset.qpos, jnp.float32), jnp.asarray(self.hand_reset.qvel, jnp.float32))

    def _ctx(self, rand, goal):
        return {"goal": goal, "obj_init_pos": rand, "body_pos": rand,
                "init_tcp": jnp.asarray(self.hand_reset.tcp, jnp.float32)}


class _Door(_BodyTask):
    """The door of `sawyer_door_pull.xml` (hinge `doorjoint`, opening = negative angle); the door body is moved to
    rand, the hinge starts at `door_angle`; the object is the handle geom."""

    xml = "sawyer_xyz/sawyer_door_pull.xml"
    door_handle = tuple(f"door_link/g{k}" for k in (5, 6, 7, 8))
    episode_body = "door"
    rand_low, rand_high = (0.0, 0.85, 0.15), (0.1, 0.95, 0.15)
    door_angle = 0.0
    goal_offset: tuple[float, float, float]

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        m = self.mj_model
        self._door_qpos = int(m.jnt_qposadr[m.joint("doorjoint").id])
        self._door_dof = int(m.jnt_dofadr[m.joint("doorjoint").id])

    def episode_init(self, rand):
        qpos, qvel = self._qpos_qvel()
        qpos, qvel = qpos.at[self._door_qpos].set(self.door_angle), qvel.at[self._door_dof].set(0.0)
        return qpos, qvel, self._ctx(rand, rand + jnp.asarray(self.goal_offset))

    def objects(self, data):
        pos, rot = self.geom_frame(data, "handle")
        return jnp.concatenate([pos, mat_to_quat_xyzw(rot), jnp.zeros(7)])


class DoorOpen(_Door):
    """door-open-v2: pull the door open by its handle."""

    name = "metaworld-door-open"
    pairs = (_pairs(FINGERS, _Door.door_handle) + _pairs((HAND_MESH_GEOM,), _Door.door_handle)
             + (("door_link/g9", "doorlockB/g1"),))
    goal_low, goal_high = (-0.3, 0.4, 0.1499), (-0.2, 0.5, 0.1501)
    goal_offset = (-0.3, -0.45, 0.0)

    def evaluate(self, data, obs, action, ctx):
        """hand = obs[:3], door = obs[4:7] - (0.05, 0, 0), theta = door angle; grab = (clip(a_g) + 1) / 2;
        radius = |hand_xy - door_xy|, floor = 0 if radius <= 0.12 else 0.04 ln(radius - 0.12) + 0.4;
        above = 1 if hand_z >= floor else tol(floor - hand_z, [0, 0.01], floor / 2);
        in_place = tol(|hand - door - (0.05, 0.03, -0.01)|, [0, 0.06], 0.5); ready = H(above, in_place);
        opened = 0.2 [theta < -pi/90] + 0.8 tol(2pi/3 + theta, [0, 0.5], pi/3);
        r = 2 H(ready, grab) + 8 opened; r = 10 if |obs[4] - goal_x| <= 0.08 (= success)."""
        theta = data.qpos[self._door_qpos]
        grab = (jnp.clip(action[3], -1.0, 1.0) + 1.0) / 2.0
        hand, door = obs[:3], obs[4:7] + jnp.array([-0.05, 0.0, 0.0])
        radius = _norm(hand[:2] - door[:2])
        floor = jnp.where(radius <= 0.12, 0.0, 0.04 * jnp.log(jnp.maximum(radius - 0.12, 1e-30)) + 0.4)
        above = jnp.where(hand[2] >= floor, 1.0,
                          tolerance(floor - hand[2], (0.0, 0.01), floor / 2.0, "long_tail"))
        in_place = tolerance(_norm(hand - door - jnp.array([0.05, 0.03, -0.01])), (0.0, 0.06), 0.5, "long_tail")
        ready = hamacher_product(above, in_place)
        opened = 0.2 * (theta < -jnp.pi / 90.0) + 0.8 * tolerance(
            jnp.pi / 2.0 + jnp.pi / 6 + theta, (0.0, 0.5), jnp.pi / 3.0, "long_tail")
        success = jnp.abs(obs[4] - ctx["goal"][0]) <= 0.08
        r = 2.0 * hamacher_product(ready, grab) + 8.0 * opened
        return jnp.where(success, 10.0, r), success


class DoorClose(_Door):
    """door-close-v2: push the door (open by 90 degrees at reset) closed; the hand starts at the far left."""

    name = "metaworld-door-close"
    door_panel = "door_link/g9"
    pairs = (_pairs(FINGERS, _Door.door_handle)
             + _pairs((HAND_MESH_GEOM,), (door_panel, "doorlockB/g2", "doorlockB/g3"))
             + ((door_panel, "doorlockB/g1"),))
    hand_init_pos = (-0.5, 0.6, 0.2)
    goal_low, goal_high = (0.2, 0.65, 0.1499), (0.3, 0.75, 0.1501)
    goal_offset = (0.2, -0.2, 0.0)
    door_angle = -1.5708

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7]; d = |obj - goal|; in_place = tol(d, [0, 0.05], |obj_init - goal|, gaussian);
        hand = tol(|tcp - goal|, [0, 0.0125], |hand_init_pos - obj| + 0.1, gaussian);
        r = 3 hand + 6 in_place, 10 if d < 0.05; success d <= 0.08."""
        obj, tcp = obs[4:7], self.tcp_center(data)
        d = _norm(obj - ctx["goal"])
        in_place = tolerance(d, (0.0, self.target_radius), _norm(ctx["obj_init_pos"] - ctx["goal"]), "gaussian")
        hand = tolerance(_norm(tcp - ctx["goal"]), (0.0, 0.25 * self.target_radius),
                         _norm(jnp.asarray(self.hand_init_pos) - obj) + 0.1, "gaussian")
        r = jnp.where(d < self.target_radius, 10.0, 3.0 * hand + 6.0 * in_place)
        return r, d <= 0.08


class _Drawer(_BodyTask):
    xml = "sawyer_xyz/sawyer_drawer.xml"
    episode_body = "drawer"
    handle = "drawer_link/g8"
    rand_low, rand_high = (-0.1, 0.9, 0.0), (0.1, 0.9, 0.0)

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        m = self.mj_model
        self._drawer_link = m.body("drawer_link").id
        self._slide_qpos = int(m.jnt_qposadr[m.joint("goal_slidey").id])


class DrawerOpen(_Drawer):
    """drawer-open-v2: pull the drawer out by 0.2 m."""

    name = "metaworld-drawer-open"
    pairs = _pairs(FINGERS + (HAND_MESH_GEOM,), ("drawer_link/g8",))
    max_dist = 0.2

    def episode_init(self, rand):
        qpos, qvel = self._qpos_qvel()
        return qpos, qvel, self._ctx(rand, rand + jnp.array([0.0, -0.16 - self.max_dist, 0.09]))

    def objects(self, data):
        return jnp.concatenate([data.xpos[self._drawer_link] + jnp.array([0.0, -0.16, 0.0]),
                                data.xquat[self._drawer_link], jnp.zeros(7)])

    def evaluate(self, data, obs, action, ctx):
        """handle = obs[4:7]; e = |handle - goal|; open = tol(e, [0, 0.02], 0.2);
        s = (3, 3, 1); caging = tol(|(handle - obs[:3]) s|, [0, 0.01], |(goal + (0, 0.2, 0) - init_tcp) s|);
        r = 5 (caging + open); success e <= 0.03."""
        gripper, handle = obs[:3], obs[4:7]
        err = _norm(handle - ctx["goal"])
        opening = tolerance(err, (0.0, 0.02), self.max_dist, "long_tail")
        scale = jnp.array([3.0, 3.0, 1.0])
        init = (ctx["goal"] + jnp.array([0.0, self.max_dist, 0.0]) - ctx["init_tcp"]) * scale
        caging = tolerance(_norm((handle - gripper) * scale), (0.0, 0.01), _norm(init), "long_tail")
        return 5.0 * (caging + opening), err <= 0.03


class DrawerClose(_Drawer):
    """drawer-close-v2: push the drawer (pulled out 0.15 m at reset) closed."""

    name = "metaworld-drawer-close"
    pairs = (_pairs(FINGERS, ("drawer_link/g8",))
             + _pairs(("drawer_link/g3", "drawer_link/g6"), ("drawercase_link/g3", "RetainingWall/g1")))
    max_dist = 0.15

    def episode_init(self, rand):
        qpos, qvel = self._qpos_qvel()
        qpos = qpos.at[self._slide_qpos].set(-self.max_dist)
        return qpos, qvel, self._ctx(rand, rand + jnp.array([0.0, -0.16, 0.09]))

    def episode_context(self, data, ctx):
        return {**ctx, "obj_init_pos": self.objects(data)[:3]}

    def objects(self, data):
        return jnp.concatenate([data.xpos[self._drawer_link] + jnp.array([0.0, -0.16, 0.05]), jnp.zeros(11)])

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7]; d = |obj - goal|; in_place = tol(d, [0, 0.05], ||obj_init - goal| - 0.05|);
        reach = tol(|obj - tcp|, [0, 0.005], ||obj_init - init_tcp| - 0.005|, gaussian);
        reach = H(reach, clip(a_g, 0, 1)); r = 10 H(reach, in_place), 10 if d <= 0.065 (= success)."""
        obj, tcp = obs[4:7], self.tcp_center(data)
        d = _norm(obj - ctx["goal"])
        in_place = tolerance(d, (0.0, self.target_radius),
                             jnp.abs(_norm(ctx["obj_init_pos"] - ctx["goal"]) - self.target_radius), "long_tail")
        reach = tolerance(_norm(obj - tcp), (0.0, 0.005),
                          jnp.abs(_norm(ctx["obj_init_pos"] - ctx["init_tcp"]) - 0.005), "gaussian")
        reach = hamacher_product(reach, jnp.clip(action[-1], 0.0, 1.0))
        success = d <= self.target_radius + 0.015
        return 10.0 * jnp.where(success, 1.0, hamacher_product(reach, in_place)), success


class _Button(_BodyTask):
    """A button (slide joint qpos[9]) in a box moved to rand; the goal is the box's `hole` site, the button moves
    along `axis` (z: top-down, y: horizontal); obj_to_target_init = |goal - buttonStart| along that axis."""

    button = ("button/g3", "button/g4")
    box = tuple(f"buttonbox/g{k}" for k in (3, 4, 5, 6))
    wall = "body37/g1"
    """The wall of the *-wall variants (`wall.xml`'s collision box)."""
    episode_body = "box"
    hand_init_pos = (0.0, 0.4, 0.2)
    axis: int
    obj_offset: tuple[float, float, float]
    zero_button = False
    """Meta-World sets the button joint to 0 (qpos[9], qvel[9]) at reset (`_set_obj_xyz(0)`)."""

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        m = self.mj_model
        self._button = m.body("button").id
        self._hole, self._start = m.site("hole").id, m.site("buttonStart").id

    def episode_init(self, rand):
        qpos, qvel = self._qpos_qvel()
        if self.zero_button:
            qpos, qvel = qpos.at[9].set(0.0), qvel.at[9].set(0.0)
        return qpos, qvel, self._ctx(rand, jnp.zeros(3))

    def episode_context(self, data, ctx):
        goal = data.site_xpos[self._hole]
        return {**ctx, "goal": goal,
                "obj_to_target_init": jnp.abs(goal[self.axis] - data.site_xpos[self._start][self.axis])}

    def objects(self, data):
        return jnp.concatenate([data.xpos[self._button] + jnp.asarray(self.obj_offset), data.xquat[self._button],
                                jnp.zeros(7)])


class ButtonPressTopdown(_Button):
    """button-press-topdown-v2: press a button down from above."""

    name = "metaworld-button-press-topdown"
    xml = "sawyer_xyz/sawyer_button_press_topdown.xml"
    pairs = (_pairs(FINGERS, _Button.button + ("buttonbox/g3",)) + _pairs(_Button.button, _Button.box))
    rand_low, rand_high = (-0.1, 0.8, 0.115), (0.1, 0.9, 0.115)
    axis = 2
    obj_offset = (0.0, 0.0, 0.193)

    def closed(self, obs):
        """The reward's "tcp_closed" term."""
        return 1.0 - obs[3]

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7]; near = tol(|obj - tcp|, [0, 0.01], |obj - init_tcp|); d = |goal_z - obj_z|;
        pressed = tol(d, [0, 0.005], obj_to_target_init); r = 5 H(closed, near) + [|obj - tcp| <= 0.03]
        5 pressed with closed = 1 - obs[3]; success d <= 0.024."""
        obj, tcp = obs[4:7], self.tcp_center(data)
        tcp_to_obj = _norm(obj - tcp)
        d = jnp.abs(ctx["goal"][2] - obj[2])
        near = tolerance(tcp_to_obj, (0.0, 0.01), _norm(obj - ctx["init_tcp"]), "long_tail")
        pressed = tolerance(d, (0.0, 0.005), ctx["obj_to_target_init"], "long_tail")
        r = 5.0 * hamacher_product(self.closed(obs), near) + jnp.where(tcp_to_obj <= 0.03, 5.0 * pressed, 0.0)
        return r, d <= 0.024


class ButtonPressTopdownWall(ButtonPressTopdown):
    """button-press-topdown-wall-v2: button-press-topdown behind a wall (body `wall` at (0.1, 0.7, 0)); its
    reward differs in one term: closed = max(obs[3], 0) (the gripper opening, not 1 - it)."""

    name = "metaworld-button-press-topdown-wall"
    xml = "sawyer_xyz/sawyer_button_press_topdown_wall.xml"
    pairs = ButtonPressTopdown.pairs + _pairs(FINGERS + (HAND_MESH_GEOM,), (_Button.wall,))

    def closed(self, obs):
        return jnp.maximum(obs[3], 0.0)


class ButtonPress(_Button):
    """button-press-v2: press a horizontal button (pushed in along +y) with the gripper."""

    name = "metaworld-button-press"
    xml = "sawyer_xyz/sawyer_button_press.xml"
    pairs = (_pairs(FINGERS, _Button.button + _Button.box[:2] + (TABLE_GEOM,))
             + _pairs((HAND_MESH_GEOM,), ("button/g2",) + _Button.button + _Button.box)
             + _pairs(_Button.button, _Button.box))
    rand_low, rand_high = (-0.1, 0.85, 0.115), (0.1, 0.9, 0.115)
    axis = 1
    obj_offset = (0.0, -0.193, 0.0)
    zero_button = True

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7]; near = tol(|obj - tcp|, [0, 0.05], |obj - init_tcp|); d = |goal_y - obj_y|;
        pressed = tol(d, [0, 0.005], obj_to_target_init); r = 2 H(max(obs[3], 0), near) + [|obj - tcp| <= 0.05]
        8 pressed; success d <= 0.02."""
        obj, tcp = obs[4:7], self.tcp_center(data)
        tcp_to_obj = _norm(obj - tcp)
        d = jnp.abs(ctx["goal"][1] - obj[1])
        near = tolerance(tcp_to_obj, (0.0, 0.05), _norm(obj - ctx["init_tcp"]), "long_tail")
        pressed = tolerance(d, (0.0, 0.005), ctx["obj_to_target_init"], "long_tail")
        r = 2.0 * hamacher_product(jnp.maximum(obs[3], 0.0), near)
        return r + jnp.where(tcp_to_obj <= 0.05, 8.0 * pressed, 0.0), d <= 0.02


class ButtonPressWall(ButtonPress):
    """button-press-wall-v2: button-press behind a wall (body `wall` at (0.1, 0.6, 0)), with its own reward."""

    name = "metaworld-button-press-wall"
    xml = "sawyer_xyz/sawyer_button_press_wall.xml"
    pairs = ButtonPress.pairs + _pairs(FINGERS + (HAND_MESH_GEOM,), (_Button.wall,))
    rand_low, rand_high = (-0.05, 0.85, 0.1149), (0.05, 0.9, 0.1151)

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7]; near = tol(|obj - tcp|, [0, 0.01], |obj - init_tcp|); d = |goal_y - obj_y|;
        pressed = tol(d, [0, 0.005], obj_to_target_init); r = 2 H((1 - obs[3]) / 2, near) if |obj - tcp| > 0.07
        else 2 + 2 (1 + obs[3]) + 4 pressed^2; success d <= 0.03."""
        obj, tcp = obs[4:7], self.tcp_center(data)
        tcp_to_obj = _norm(obj - tcp)
        d = jnp.abs(ctx["goal"][1] - obj[1])
        near = tolerance(tcp_to_obj, (0.0, 0.01), _norm(obj - ctx["init_tcp"]), "long_tail")
        pressed = tolerance(d, (0.0, 0.005), ctx["obj_to_target_init"], "long_tail")
        far = 2.0 * hamacher_product((1.0 - obs[3]) / 2.0, near)
        close = 2.0 + 2.0 * (1.0 + obs[3]) + 4.0 * pressed ** 2
        return jnp.where(tcp_to_obj > 0.07, far, close), d <= 0.03


class _PlateSlide(SawyerTask):
    """A plate (the box geom `puck`, 0.1 x 0.1 x 0.03 m, on slide joints x/y = qpos[9:11], set to `plate_start` at
    reset, its qvel kept) to slide into a cabinet (body `puck_goal`); rand = (obj_init_pos, goal), both fixed
    per task except the goal. Contacts: gripper with the plate and the table top, hand and plate with the
    cabinet's panels and bars."""

    xml = "sawyer_xyz/sawyer_plate_slide.xml"
    cabinet = tuple(f"body36/g{k}" for k in (2, 3, 4, 5, 6, 7, 8, 9, 10, 11))
    pairs = (_pairs(FINGERS, ("puck", TABLE_GEOM)) + _pairs((HAND_MESH_GEOM,), cabinet[:3] + cabinet[8:9])
             + _pairs(("puck",), (cabinet[0], cabinet[4], cabinet[5], cabinet[9])))
    plate_start = (0.0, 0.0)

    def episode_init(self, rand):
        qpos = jnp.asarray(self.hand_reset.qpos, jnp.float32).at[9:11].set(jnp.asarray(self.plate_start))
        qvel = jnp.asarray(self.hand_reset.qvel, jnp.float32)
        ctx = {"goal": rand[3:6], "obj_init_pos": rand[:3], "init_tcp": jnp.asarray(self.hand_reset.tcp, jnp.float32)}
        if self.episode_body is not None:
            ctx["body_pos"] = self.cabinet_pos(rand)
        return qpos, qvel, ctx

    def objects(self, data):
        pos, rot = self.geom_frame(data, "puck")
        return jnp.concatenate([pos, mat_to_quat_xyzw(rot), jnp.zeros(7)])

    def _terms(self, data, obs, ctx, margin_offset):
        obj, tcp = obs[4:7], self.tcp_center(data)
        d, tcp_to_obj = _norm(obj - ctx["goal"]), _norm(tcp - obj)
        in_place = tolerance(d, (0.0, self.target_radius),
                             _norm(ctx["obj_init_pos"] - ctx["goal"]) - margin_offset, "long_tail")
        grasped = tolerance(tcp_to_obj, (0.0, self.target_radius),
                            _norm(ctx["init_tcp"] - ctx["obj_init_pos"]) - margin_offset, "long_tail")
        return d, tcp, tcp_to_obj, in_place, grasped


class PlateSlide(_PlateSlide):
    """plate-slide-v2: slide the plate forward into the cabinet, which Meta-World moves to the goal."""

    name = "metaworld-plate-slide"
    episode_body = "puck_goal"
    rand_low, rand_high = (0.0, 0.6, 0.0, -0.1, 0.85, 0.0), (0.0, 0.6, 0.0, 0.1, 0.9, 0.0)
    goal_low, goal_high = (-0.1, 0.85, 0.0), (0.1, 0.9, 0.0)

    def cabinet_pos(self, rand):
        return rand[3:6]

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7], d = |obj - goal|; in_place = tol(d, [0, 0.05], |obj_init - goal|);
        grasped = tol(|tcp - obj|, [0, 0.05], |init_tcp - obj_init|); r = 8 H(grasped, in_place), 10 if d < 0.05;
        success d <= 0.07."""
        d, _, _, in_place, grasped = self._terms(data, obs, ctx, 0.0)
        return jnp.where(d < self.target_radius, 10.0, 8.0 * hamacher_product(grasped, in_place)), d <= 0.07


class _PlateSlideOther(_PlateSlide):
    """The reward of plate-slide-side, -back and -back-side."""

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7], d = |obj - goal|; in_place = tol(d, [0, 0.05], |obj_init - goal| - 0.05);
        grasped = tol(|tcp - obj|, [0, 0.05], |init_tcp - obj_init| - 0.05); r = 1.5 grasped, or
        2 + 7 in_place if tcp_z <= 0.03 and |tcp - obj| < 0.07; 10 if d < 0.05; success d <= 0.07."""
        d, tcp, tcp_to_obj, in_place, grasped = self._terms(data, obs, ctx, self.target_radius)
        r = jnp.where((tcp[2] <= 0.03) & (tcp_to_obj < 0.07), 2.0 + 7.0 * in_place, 1.5 * grasped)
        return jnp.where(d < self.target_radius, 10.0, r), d <= 0.07


class PlateSlideSide(_PlateSlideOther):
    """plate-slide-side-v2: slide the plate sideways (-x) into the cabinet. Meta-World writes the goal into the
    cabinet's `data.xpos`, which the next forward overwrites: the cabinet stays at its XML pose."""

    name = "metaworld-plate-slide-side"
    xml = "sawyer_xyz/sawyer_plate_slide_sideway.xml"
    rand_low, rand_high = (0.0, 0.6, 0.0, -0.3, 0.54, 0.0), (0.0, 0.6, 0.0, -0.25, 0.66, 0.0)
    goal_low, goal_high = (-0.3, 0.54, 0.0), (-0.25, 0.66, 0.0)


class PlateSlideBack(_PlateSlideOther):
    """plate-slide-back-v2: slide the plate (starting in the cabinet, qpos y = 0.15) back out to the goal; the
    cabinet stays at its XML pose (as in plate-slide-side)."""

    name = "metaworld-plate-slide-back"
    rand_low, rand_high = (0.0, 0.85, 0.0, -0.1, 0.6, 0.015), (0.0, 0.85, 0.0, 0.1, 0.6, 0.015)
    goal_low, goal_high = (-0.1, 0.6, 0.015), (0.1, 0.6, 0.015)
    plate_start = (0.0, 0.15)


class PlateSlideBackSide(_PlateSlideOther):
    """plate-slide-back-side-v2: slide the plate (starting in the cabinet, qpos x = -0.15) sideways out to the
    goal; Meta-World moves the cabinet to obj_init_pos."""

    name = "metaworld-plate-slide-back-side"
    xml = "sawyer_xyz/sawyer_plate_slide_sideway.xml"
    episode_body = "puck_goal"
    rand_low, rand_high = (-0.25, 0.6, 0.0, -0.05, 0.6, 0.015), (-0.25, 0.6, 0.0, 0.15, 0.6, 0.015)
    goal_low, goal_high = (-0.05, 0.6, 0.015), (0.15, 0.6, 0.015)
    plate_start = (-0.15, 0.0)

    def cabinet_pos(self, rand):
        return rand[:3]


class _Handle(_BodyTask):
    """A handle on a hinge (qpos[9], set to `handle_start` with qvel 0 at reset) in a box moved to rand; the goal
    is a site of the box (after the reset's forward); the object is a site on the handle (quat zeros)."""

    xml = "sawyer_xyz/sawyer_handle_press.xml"
    pairs = _pairs(FINGERS, ("handle_link/g2", "handle_link/g3", TABLE_GEOM))
    episode_body = "box"
    handle_start: float
    obj_site: str
    goal_site: str

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        m = self.mj_model
        self._obj_site, self._goal_site = m.site(self.obj_site).id, m.site(self.goal_site).id

    def episode_init(self, rand):
        qpos, qvel = self._qpos_qvel()
        qpos, qvel = qpos.at[9].set(self.handle_start), qvel.at[9].set(0.0)
        return qpos, qvel, self._ctx(rand, jnp.zeros(3))

    def episode_context(self, data, ctx):
        return {**ctx, "goal": data.site_xpos[self._goal_site]}

    def objects(self, data):
        return jnp.concatenate([data.site_xpos[self._obj_site], jnp.zeros(11)])


class HandlePress(_Handle):
    """handle-press-v2: press the handle (at the front of the box) down to the goalPress site."""

    name = "metaworld-handle-press"
    rand_low, rand_high = (-0.1, 0.8, -0.001), (0.1, 0.9, 0.001)
    goal_low, goal_high = (-0.1, 0.55, 0.04), (0.1, 0.70, 0.08)
    target_radius = 0.02  # the class's TARGET_RADIUS
    handle_start, obj_site, goal_site = -0.001, "handleStart", "goalPress"

    def episode_context(self, data, ctx):
        return {**super().episode_context(data, ctx), "handle_init_pos": data.site_xpos[self._obj_site]}

    def evaluate(self, data, obs, action, ctx):
        """obj = handleStart site, d = |obj_z - goal_z|; in_place = tol(d, [0, 0.02], ||handle_init_z - goal_z| -
        0.02|); reach = tol(|obj - tcp|, [0, 0.02], ||handle_init - init_tcp| - 0.02|); r = 10 H(reach, in_place),
        10 if d <= 0.02 (= success)."""
        obj, tcp, goal, init = obs[4:7], self.tcp_center(data), ctx["goal"], ctx["handle_init_pos"]
        d = jnp.abs(obj[2] - goal[2])
        in_place = tolerance(d, (0.0, self.target_radius), jnp.abs(jnp.abs(init[2] - goal[2]) - self.target_radius),
                             "long_tail")
        reach = tolerance(_norm(obj - tcp), (0.0, 0.02), jnp.abs(_norm(init - ctx["init_tcp"]) - 0.02), "long_tail")
        success = d <= self.target_radius
        return 10.0 * jnp.where(success, 1.0, hamacher_product(reach, in_place)), success


class HandlePressSide(HandlePress):
    """handle-press-side-v2: handle-press with the box turned sideways (at the left of the table)."""

    name = "metaworld-handle-press-side"
    xml = "sawyer_xyz/sawyer_handle_press_sideways.xml"
    rand_low, rand_high = (-0.35, 0.65, -0.001), (-0.25, 0.75, 0.001)
    goal_low = goal_high = None


class HandlePull(_Handle):
    """handle-pull-v2: pull the handle (pressed down at reset, qpos -0.1) up to the goalPull site."""

    name = "metaworld-handle-pull"
    rand_low, rand_high = (-0.1, 0.8, -0.001), (0.1, 0.9, 0.001)
    goal_low, goal_high = (-0.1, 0.55, 0.04), (0.1, 0.70, 0.18)
    handle_start, obj_site, goal_site = -0.1, "handleRight", "goalPull"

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7] (handleRight site), d = |goal_z - obj_z|; in_place = tol(d, [0, 0.05], |goal_z -
        obj_init_z|) with obj_init = the box position; g = caging(obj radius 0.022, pad thresh 0.05, xz 0.01, high
        density); r = H(g, in_place) (+ 1 + 5 in_place if |obj - tcp| < 0.035, opened > 0 and
        obj_y - 0.01 > obj_init_z: Meta-World compares y with z); r = 10 if d < 0.05; success d <= 0.05."""
        obj, opened, tcp, init = obs[4:7], obs[3], self.tcp_center(data), ctx["obj_init_pos"]
        d = jnp.abs(ctx["goal"][2] - obj[2])
        in_place = tolerance(d, (0.0, self.target_radius), jnp.abs(ctx["goal"][2] - init[2]), "long_tail")
        lp, rp = self.pads(data)
        grasped = gripper_caging(action, obj, tcp, lp, rp, init, ctx["init_tcp"], obj_radius=0.022,
                                 pad_success_thresh=0.05, object_reach_radius=0.01, xz_thresh=0.01,
                                 high_density=True)
        r = hamacher_product(grasped, in_place)
        r = jnp.where((_norm(obj - tcp) < 0.035) & (opened > 0) & (obj[1] - 0.01 > init[2]),
                      r + 1.0 + 5.0 * in_place, r)
        return jnp.where(d < self.target_radius, 10.0, r), d <= self.target_radius


class HandlePullSide(_Handle):
    """handle-pull-side-v2: pull the handle of the sideways box up; obj_init_pos is the handleCenter site after
    the reset (not the box position)."""

    name = "metaworld-handle-pull-side"
    xml = "sawyer_xyz/sawyer_handle_press_sideways.xml"
    rand_low, rand_high = (-0.35, 0.65, 0.0), (-0.25, 0.75, 0.0)
    handle_start, obj_site, goal_site = -0.1, "handleCenter", "goalPull"

    def episode_context(self, data, ctx):
        return {**super().episode_context(data, ctx), "obj_init_pos": data.site_xpos[self._obj_site]}

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7] (handleCenter site), d = |obj - goal|; in_place = tol(d, [0, 0.05], |obj_init - goal|);
        g = caging(obj radius 0.032, pad thresh 0.06, xz 0.01, high density); r = H(g, in_place) (+ 1 + 5 in_place
        if |obj - tcp| < 0.035, opened > 0 and obj_z - 0.01 > obj_init_z); r = 10 if d < 0.05;
        success d <= 0.08."""
        obj, opened, tcp, init = obs[4:7], obs[3], self.tcp_center(data), ctx["obj_init_pos"]
        d = _norm(obj - ctx["goal"])
        in_place = tolerance(d, (0.0, self.target_radius), _norm(init - ctx["goal"]), "long_tail")
        lp, rp = self.pads(data)
        grasped = gripper_caging(action, obj, tcp, lp, rp, init, ctx["init_tcp"], obj_radius=0.032,
                                 pad_success_thresh=0.06, object_reach_radius=0.01, xz_thresh=0.01,
                                 high_density=True)
        r = hamacher_product(grasped, in_place)
        r = jnp.where((_norm(obj - tcp) < 0.035) & (opened > 0) & (obj[2] - 0.01 > init[2]),
                      r + 1.0 + 5.0 * in_place, r)
        return jnp.where(d < self.target_radius, 10.0, r), d <= 0.08


class _Faucet(_BodyTask):
    """A faucet (base body `faucetBase` moved to rand, its hinge not reset) whose handle is turned by 90 degrees;
    goal = rand + (+-0.175, 0, 0.125); the object is a handle site - (0, 0, 0.01) with the base's quaternion.
    Meta-World moves the base without a forward in faucet-open, so its first observation is stale (the base
    where the previous episode had it); ours is the true one (rewards are unaffected)."""

    xml = "sawyer_xyz/sawyer_faucet.xml"
    pairs = (_pairs(FINGERS + (HAND_MESH_GEOM,), ("faucet_link2/g4",)) + _pairs(FINGERS, (TABLE_GEOM,))
             + (("faucet_link2/g4", "RetainingWall/g1"),))
    episode_body = "faucetBase"
    hand_low = (-0.5, 0.40, -0.15)
    hand_init_pos = (0.0, 0.4, 0.2)
    target_radius = 0.07  # the class's _target_radius
    handle_site: str
    goal_dx: float
    obj_offset: tuple[float, float, float]
    """Added to obs[4:7] in the reward."""

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        m = self.mj_model
        self._handle, self._base = m.site(self.handle_site).id, m.body("faucetBase").id

    def episode_init(self, rand):
        qpos, qvel = self._qpos_qvel()
        return qpos, qvel, self._ctx(rand, rand + jnp.array([self.goal_dx, 0.0, 0.125]))

    def objects(self, data):
        return jnp.concatenate([data.site_xpos[self._handle] + jnp.array([0.0, 0.0, -0.01]), data.xquat[self._base],
                                jnp.zeros(7)])

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7] + obj_offset, d = |obj - goal|; in_place = tol(d, [0, 0.07], ||obj_init - goal| - 0.07|);
        reach = tol(|obj - tcp|, [0, 0.01], ||obj_init - init_tcp| - 0.01|, gaussian);
        r = 2 (2 reach + 3 in_place), 10 if d <= 0.07 (= success)."""
        obj, tcp = obs[4:7] + jnp.asarray(self.obj_offset), self.tcp_center(data)
        d = _norm(obj - ctx["goal"])
        in_place = tolerance(d, (0.0, self.target_radius),
                             jnp.abs(_norm(ctx["obj_init_pos"] - ctx["goal"]) - self.target_radius), "long_tail")
        reach = tolerance(_norm(obj - tcp), (0.0, 0.01), jnp.abs(_norm(ctx["obj_init_pos"] - ctx["init_tcp"]) - 0.01),
                          "gaussian")
        success = d <= self.target_radius
        return jnp.where(success, 10.0, 2.0 * (2.0 * reach + 3.0 * in_place)), success


class FaucetOpen(_Faucet):
    """faucet-open-v2: turn the faucet handle to the right (+x)."""

    name = "metaworld-faucet-open"
    rand_low, rand_high = (-0.05, 0.8, 0.0), (0.05, 0.85, 0.0)
    handle_site, goal_dx, obj_offset = "handleStartOpen", 0.175, (-0.04, 0.0, 0.03)


class FaucetClose(_Faucet):
    """faucet-close-v2: turn the faucet handle to the left (-x)."""

    name = "metaworld-faucet-close"
    rand_low, rand_high = (-0.1, 0.8, 0.0), (0.1, 0.85, 0.0)
    handle_site, goal_dx, obj_offset = "handleStartClose", -0.175, (0.0, 0.0, 0.0)


class CoffeeButton(_BodyTask):
    """coffee-button-v2: press the button of a coffee machine (moved to rand) in along +y. At reset Meta-World puts
    the mug (free joint qpos[0:7]) at rand + (0, -0.22, 0) and zeroes qvel[9:15] (arm joints 4..7 and the
    gripper, not the mug: the mug keeps its velocity); reproduced."""

    name = "metaworld-coffee-button"
    xml = "sawyer_xyz/sawyer_coffee.xml"
    pairs = (_pairs(FINGERS, ("cm_link/g9", "cmbutton/g1")) + _pairs((HAND_MESH_GEOM,), ("cmbutton/g1", "cm_link/g7"))
             + (("cm_link/g13", "cmbutton/g1"), ("mug/g2", TABLE_GEOM)))
    episode_body = "coffee_machine"
    hand_init_pos = (0.0, 0.4, 0.2)
    rand_low, rand_high = (-0.1, 0.8, -0.001), (0.1, 0.9, 0.001)
    goal_low, goal_high = (-0.101, 0.61, 0.298), (0.101, 0.71, 0.302)
    max_dist = 0.03

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        self._button_start = self.mj_model.site("buttonStart").id

    def episode_init(self, rand):
        qpos, qvel = self._qpos_qvel()
        qpos, qvel = qpos.at[0:3].set(rand + jnp.array([0.0, -0.22, 0.0])), qvel.at[9:15].set(0.0)
        return qpos, qvel, self._ctx(rand, rand + jnp.array([0.0, -0.22 + self.max_dist, 0.3]))

    def objects(self, data):
        return jnp.concatenate([data.site_xpos[self._button_start], jnp.array([1.0, 0.0, 0.0, 0.0]), jnp.zeros(7)])

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7] (buttonStart site); near = tol(|obj - tcp|, [0, 0.05], |obj - init_tcp|);
        d = |goal_y - obj_y|; pressed = tol(d, [0, 0.005], 0.03); r = 2 H(max(obs[3], 0), near) +
        [|obj - tcp| <= 0.05] 8 pressed; success d <= 0.02."""
        obj, tcp = obs[4:7], self.tcp_center(data)
        tcp_to_obj = _norm(obj - tcp)
        d = jnp.abs(ctx["goal"][1] - obj[1])
        near = tolerance(tcp_to_obj, (0.0, 0.05), _norm(obj - ctx["init_tcp"]), "long_tail")
        pressed = tolerance(d, (0.0, 0.005), self.max_dist, "long_tail")
        r = 2.0 * hamacher_product(jnp.maximum(obs[3], 0.0), near)
        return r + jnp.where(tcp_to_obj <= 0.05, 8.0 * pressed, 0.0), d <= 0.02


class _Lock(_BodyTask):
    """The lock (hinge qpos[9], range [0, pi/2]) on a fixed door whose base body `door` is moved to rand; the
    goal is the lock body's position (its hinge axis, so it does not move with the lock) + goal_offset. Meta-World
    keeps obj_init_pos as a live view of that body position: the same constant here."""

    xml = "sawyer_xyz/sawyer_door_lock.xml"
    episode_body = "door"
    hand_low = (-0.5, 0.40, -0.15)
    rand_low, rand_high = (-0.1, 0.8, 0.15), (0.1, 0.85, 0.15)
    lock_length = 0.1
    obj_site: str
    goal_offset: tuple[float, float, float]

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        m = self.mj_model
        self._lock, self._door_link = m.body("lock_link").id, m.body("door_link").id
        self._obj_site = m.site(self.obj_site).id

    def episode_init(self, rand):
        qpos, qvel = self._qpos_qvel()
        return qpos, qvel, self._ctx(rand, jnp.zeros(3))

    def episode_context(self, data, ctx):
        lock = data.xpos[self._lock]
        return {**ctx, "obj_init_pos": lock, "goal": lock + jnp.asarray(self.goal_offset)}

    def objects(self, data):
        return jnp.concatenate([data.site_xpos[self._obj_site], data.xquat[self._door_link], jnp.zeros(7)])


class DoorLock(_Lock):
    """door-lock-v2: turn the lock down by 90 degrees. Meta-World's reset runs 5 more physics steps after the hand
    reset (after moving the door; the hand does not touch it), so the start state is the one 55 steps after
    qpos0 while init_tcp and the pads stay the 50-step readings; simulated once like the hand reset."""

    name = "metaworld-door-lock"
    lock = ("lock_link/g1", "door_link/g6")
    pairs = _pairs(FINGERS + (HAND_MESH_GEOM,), lock)
    obj_site = "lockStartLock"
    goal_offset = (0.0, -0.04, -0.1)

    def _simulate_hand_reset(self, steps: int = 50):
        return _settled(self, super()._simulate_hand_reset(steps))

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7], pad = left pad body, s = (0.25, 1, 0.5); x = |(obj - pad) s|; near = tol(x, [0, 0.01], x)
        (Meta-World's margin uses init_left_pad, a live view of the current left pad); d = |goal_z - obj_z|;
        pressed = tol(d, [0, 0.005], 0.1); r = 2 H(max(obs[3], 0), near) + 8 pressed; success d <= 0.02."""
        obj, pad = obs[4:7], self.pads(data)[0]
        x = _norm((obj - pad) * jnp.array([0.25, 1.0, 0.5]))
        near = tolerance(x, (0.0, 0.01), x, "long_tail")
        d = jnp.abs(ctx["goal"][2] - obj[2])
        pressed = tolerance(d, (0.0, 0.005), self.lock_length, "long_tail")
        return 2.0 * hamacher_product(jnp.maximum(obs[3], 0.0), near) + 8.0 * pressed, d <= 0.02


class DoorUnlock(_Lock):
    """door-unlock-v2: turn the lock (down, qpos pi/2 at reset) back up."""

    name = "metaworld-door-unlock"
    pairs = (_pairs(FINGERS, ("lock_link/g1", "door_link/g8", TABLE_GEOM))
             + _pairs((HAND_MESH_GEOM,), ("lock_link/g1",) + tuple(f"door_link/g{k}" for k in (6, 7, 8, 9, 11))))
    goal_low, goal_high = (0.0, 0.64, 0.21), (0.2, 0.7, 0.2111)
    obj_site = "lockStartUnlock"
    goal_offset = (0.1, -0.04, 0.0)

    def episode_init(self, rand):
        qpos, qvel, ctx = super().episode_init(rand)
        return qpos.at[9].set(1.5708), qvel.at[9].set(0.0), ctx

    def evaluate(self, data, obs, action, ctx):
        """lock = obs[4:7], o = (0, 0.055, 0.07), s = (0.25, 1, 0.5); ready = tol(|(obs[:3] + o - lock) s|,
        [0, 0.02], |(init_tcp + o - obj_init) s|); d = |goal_x - lock_x|; pushed = tol(d, [0, 0.005], 0.1);
        r = 2 ready + 8 pushed; success d <= 0.02."""
        lock, offset, scale = obs[4:7], jnp.array([0.0, 0.055, 0.07]), jnp.array([0.25, 1.0, 0.5])
        ready = tolerance(_norm((obs[:3] + offset - lock) * scale), (0.0, 0.02),
                          _norm((ctx["init_tcp"] + offset - ctx["obj_init_pos"]) * scale), "long_tail")
        d = jnp.abs(ctx["goal"][0] - lock[0])
        pushed = tolerance(d, (0.0, 0.005), self.lock_length, "long_tail")
        return 2.0 * ready + 8.0 * pushed, d <= 0.02


class PegInsertSide(SawyerTask):
    """peg-insert-side-v2: pick up the peg and insert it sideways into the hole of a box."""

    name = "metaworld-peg-insert-side"
    xml = "sawyer_xyz/sawyer_peg_insertion_side.xml"
    box_geoms = tuple(f"body35/g{k}" for k in (2, 3, 5, 6))
    pairs = (_pairs(FINGERS, ("peg", TABLE_GEOM) + box_geoms) + _pairs((HAND_MESH_GEOM,), box_geoms)
             + _pairs(("peg",), (TABLE_GEOM,) + box_geoms))
    episode_body = "box"
    target_radius = 0.07  # the class's TARGET_RADIUS
    rand_low = (0.0, 0.5, 0.02, -0.35, 0.4, -0.001)
    rand_high = (0.2, 0.7, 0.02, -0.25, 0.7, 0.001)
    goal_low, goal_high = (-0.32, 0.4, 0.129), (-0.22, 0.7, 0.131)
    min_obj_goal_xy = 0.1

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        m = self.mj_model
        self._grasp, self._head = m.site("pegGrasp").id, m.site("pegHead").id
        names = ("bottom_right_corner_collision_box_1", "top_left_corner_collision_box_1",
                 "bottom_right_corner_collision_box_2", "top_left_corner_collision_box_2")
        self._boxes = tuple(m.site(n).id for n in names)
        self._peg_head_init = self.hand_reset.data.site_xpos[self._head].copy()

    def episode_init(self, rand):
        peg, box = rand[:3], rand[3:6]
        qpos, qvel = _object_at(self, peg)
        return qpos, qvel, {"goal": box + jnp.array([0.03, 0.0, 0.13]), "obj_init_pos": peg, "body_pos": box,
                            "init_tcp": jnp.asarray(self.hand_reset.tcp, jnp.float32),
                            "peg_head_pos_init": jnp.asarray(self._peg_head_init, jnp.float32)}

    def objects(self, data):
        return jnp.concatenate([data.site_xpos[self._grasp], mat_to_quat_xyzw(data.site_xmat[self._grasp]),
                                jnp.zeros(7)])

    def evaluate(self, data, obs, action, ctx):
        """head = pegHead site; s = (1, 2, 2); d = |(head - goal) s|; in_place = tol(d, [0, 0.07],
        |(peg_head_init - goal) s|) H-multiplied by the two collision-box prisms of the head; g = caging(obj
        radius 0.0075, pad thresh 0.03, xz 0.005, high density), 1 if lifted (|obj - tcp| < 0.08, opened > 0,
        obj_z - 0.01 > obj_init_z); r = H(g, in_place) (+ 1 + 5 in_place if lifted); 10 if d <= 0.07
        (= success)."""
        tcp, obj, opened = self.tcp_center(data), obs[4:7], obs[3]
        head = data.site_xpos[self._head]
        scale = jnp.array([1.0, 2.0, 2.0])
        tcp_to_obj = _norm(obj - tcp)
        d = _norm((head - ctx["goal"]) * scale)
        in_place = tolerance(d, (0.0, self.target_radius), _norm((ctx["peg_head_pos_init"] - ctx["goal"]) * scale),
                             "long_tail")
        b = [data.site_xpos[i] for i in self._boxes]
        boxes = hamacher_product(rect_prism_tolerance(head, b[2], b[3]), rect_prism_tolerance(head, b[0], b[1]))
        in_place = hamacher_product(in_place, boxes)
        lp, rp = self.pads(data)
        grasped = gripper_caging(action, obj, tcp, lp, rp, ctx["obj_init_pos"], ctx["init_tcp"],
                                 obj_radius=0.0075, pad_success_thresh=0.03, object_reach_radius=0.01,
                                 xz_thresh=0.005, high_density=True)
        lifted = (tcp_to_obj < 0.08) & (opened > 0) & (obj[2] - 0.01 > ctx["obj_init_pos"][2])
        grasped = jnp.where(lifted, 1.0, grasped)
        r = hamacher_product(grasped, in_place)
        r = jnp.where(lifted, r + 1.0 + 5.0 * in_place, r)
        return jnp.where(d <= 0.07, 10.0, r), d <= 0.07


class _Window(_BodyTask):
    xml = "sawyer_xyz/sawyer_window_horizontal.xml"
    episode_body = "window"
    hand_init_pos = (0.0, 0.4, 0.2)
    handle_site: str
    slide_start: float
    reach_sigmoid: str

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        m = self.mj_model
        self._handle = m.site(self.handle_site).id
        self._slide_qpos = int(m.jnt_qposadr[m.joint("window_slide").id])
        d = self.hand_reset.data  # window slide at 0: site offset from the window body
        self._handle_offset = d.site_xpos[self._handle] - d.xpos[m.body("window").id]

    def objects(self, data):
        return jnp.concatenate([data.site_xpos[self._handle], jnp.zeros(11)])

    def reset(self, key):
        """As SawyerTask.reset, plus Meta-World's stale `window_handle_pos_init`: it is read before a forward,
        i.e. with the window still where the previous reset drew it (an independent draw of the same range)."""
        key, sub, stale = jax.random.split(key, 3)
        state = self.reset_to(self.sample_rand_vec(sub), key)
        prev = self.sample_rand_vec(stale)
        return state.replace(info={**state.info, "window_handle_pos_init": self._stale_handle(prev)})

    def _stale_handle(self, prev_body_pos):
        return prev_body_pos + jnp.asarray(self._handle_offset, jnp.float32)

    def episode_init(self, rand):
        qpos, qvel = self._qpos_qvel()
        qpos = qpos.at[self._slide_qpos].set(self.slide_start)
        ctx = self._ctx(rand, self.goal_of(rand))
        return qpos, qvel, {**ctx, "window_handle_pos_init": self._stale_handle(rand)}

    def evaluate(self, data, obs, action, ctx):
        """obj = handle site; d = |obj_x - goal_x|; in_place = tol(d, [0, 0.05], |d_init - 0.05|);
        reach = tol(|obj - tcp|, [0, 0.02], ||window_handle_pos_init - init_tcp| - 0.02|);
        r = 10 H(reach, in_place); success d <= 0.05."""
        obj, tcp = data.site_xpos[self._handle], self.tcp_center(data)
        d = jnp.abs(obj[0] - ctx["goal"][0])
        in_place = tolerance(d, (0.0, self.target_radius), jnp.abs(self.init_x_dist(ctx) - self.target_radius),
                             "long_tail")
        reach = tolerance(_norm(obj - tcp), (0.0, 0.02),
                          jnp.abs(_norm(ctx["window_handle_pos_init"] - ctx["init_tcp"]) - 0.02), self.reach_sigmoid)
        return 10.0 * hamacher_product(reach, in_place), d <= self.target_radius


class WindowOpen(_Window):
    """window-open-v2: slide the window open by 0.2 m (handle to goal = start + (0.2, 0, 0))."""

    name = "metaworld-window-open"
    handle_site = "handleOpenStart"
    slide_start = 0.0
    reach_sigmoid = "long_tail"
    frame, sash = ("body34/g4",), tuple(f"windowb_a/g{k}" for k in (9, 10, 11, 12))
    pairs = (_pairs(FINGERS + (HAND_MESH_GEOM,), sash[:3]) + _pairs(frame, sash[3:]))
    rand_low, rand_high = (-0.1, 0.7, 0.16), (0.1, 0.9, 0.16)

    def goal_of(self, rand):
        return rand + jnp.array([0.2, 0.0, 0.0])

    def init_x_dist(self, ctx):
        return jnp.abs(ctx["obj_init_pos"][0] - ctx["goal"][0])


class WindowClose(_Window):
    """window-close-v2: slide the window (open by 0.2 m at reset) closed."""

    name = "metaworld-window-close"
    handle_site = "handleCloseStart"
    slide_start = 0.2
    reach_sigmoid = "gaussian"
    frame, sash = ("body34/g2",), tuple(f"windowb_a/g{k}" for k in (9, 10, 11, 13))
    pairs = (_pairs(FINGERS + (HAND_MESH_GEOM,), sash[:3]) + _pairs(frame, sash[3:]))
    rand_low, rand_high = (0.0, 0.75, 0.2), (0.0, 0.9, 0.2)

    def goal_of(self, rand):
        return rand

    def _stale_handle(self, prev_body_pos):
        return prev_body_pos + jnp.asarray(self._handle_offset, jnp.float32) + jnp.array([0.2, 0.0, 0.0])

    def init_x_dist(self, ctx):
        return jnp.abs(ctx["window_handle_pos_init"][0] - ctx["goal"][0])


# -- the remaining MT50 tasks ------------------------------------------------------------------------------
class DialTurn(_BodyTask):
    """dial-turn-v2: turn a dial (base body `dial` moved to rand, hinge `knob_Joint_1` not reset) to the goal
    rand + (0, 0.03, 0.03). The object is a point on the dial's rim: dial body + 0.05 (sin q, -cos q, 0), with
    the dial body's quaternion. Meta-World reads the push position `dial_push_position` = object + (0.05, 0.02,
    0.09) at reset before a forward, i.e. with the dial where the previous reset had drawn it, and its first
    observation is stale the same way (as window-open/close: our `reset` draws that position independently from
    the same range; `reset_to(rand)` uses rand itself)."""

    name = "metaworld-dial-turn"
    xml = "sawyer_xyz/sawyer_dial.xml"
    pairs = _pairs(FINGERS, ("body34/g3", "body34/g4"))
    episode_body = "dial"
    rand_low, rand_high = (-0.1, 0.7, 0.0), (0.1, 0.8, 0.0)
    goal_low, goal_high = (-0.1, 0.73, 0.0299), (0.1, 0.83, 0.0301)
    target_radius = 0.07  # the class's TARGET_RADIUS
    push_offset = (0.05, 0.02, 0.09)

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        m = self.mj_model
        self._dial = m.body("dial").id
        self._knob_qpos = int(m.jnt_qposadr[m.joint("knob_Joint_1").id])
        self._knob0 = float(self.hand_reset.qpos[self._knob_qpos])

    def _push_position(self, dial_pos, angle):
        rim = 0.05 * jnp.stack([jnp.sin(angle), -jnp.cos(angle), jnp.zeros_like(angle)])
        return dial_pos + rim + jnp.asarray(self.push_offset)

    def reset(self, key):
        """As SawyerTask.reset, plus the stale `dial_push_position` (class docstring)."""
        key, sub, stale = jax.random.split(key, 3)
        state = self.reset_to(self.sample_rand_vec(sub), key)
        prev = self.sample_rand_vec(stale)
        return state.replace(info={**state.info, "dial_push_position": self._push_position(prev, self._knob0)})

    def episode_init(self, rand):
        qpos, qvel = self._qpos_qvel()
        ctx = self._ctx(rand, rand + jnp.array([0.0, 0.03, 0.03]))
        return qpos, qvel, {**ctx, "dial_push_position": self._push_position(rand, jnp.float32(self._knob0))}

    def dial_point(self, data):
        return self._push_position(data.xpos[self._dial], data.qpos[self._knob_qpos]) - jnp.asarray(self.push_offset)

    def objects(self, data):
        return jnp.concatenate([self.dial_point(data), data.xquat[self._dial], jnp.zeros(7)])

    def evaluate(self, data, obs, action, ctx):
        """obj = dial rim point, push = obj + (0.05, 0.02, 0.09), push0 = dial_push_position; d = |obj - goal|;
        in_place = tol(d, [0, 0.07], ||push0 - goal| - 0.07|); reach = tol(|push - tcp|, [0, 0.005],
        ||push0 - init_tcp| - 0.005|, gaussian); r = 10 H(H(reach, clip(a_g, 0, 1)), in_place); success d <= 0.07."""
        obj, tcp, push0 = self.dial_point(data), self.tcp_center(data), ctx["dial_push_position"]
        d = _norm(obj - ctx["goal"])
        in_place = tolerance(d, (0.0, self.target_radius), jnp.abs(_norm(push0 - ctx["goal"]) - self.target_radius),
                             "long_tail")
        reach = tolerance(_norm(obj + jnp.asarray(self.push_offset) - tcp), (0.0, 0.005),
                          jnp.abs(_norm(push0 - ctx["init_tcp"]) - 0.005), "gaussian")
        reach = hamacher_product(reach, jnp.clip(action[-1], 0.0, 1.0))
        return 10.0 * hamacher_product(reach, in_place), d <= self.target_radius


class LeverPull(_BodyTask):
    """lever-pull-v2: lift a lever (hinge `LeverAxis`, body `lever` moved to rand) from horizontal to upright;
    the object is the `leverStart` site at its tip with the handle geom's orientation. Meta-World moves the lever
    without a forward, so its first observation is stale (the lever where the previous reset had it)."""

    name = "metaworld-lever-pull"
    xml = "sawyer_xyz/sawyer_lever_pull.xml"
    lever = ("lever_link1/g5", "lever_link1/g6")
    pairs = _pairs(FINGERS, lever + (TABLE_GEOM,)) + _pairs((HAND_MESH_GEOM,), lever)
    episode_body = "lever"
    hand_low = (-0.5, 0.40, -0.15)
    hand_init_pos = (0.0, 0.4, 0.2)
    rand_low, rand_high = (-0.1, 0.7, 0.0), (0.1, 0.8, 0.0)
    lever_radius = 0.2
    mesh_geom_quat = (("objGeom", (0.662500038723091, 0.662500038723091, -0.24717139537556432, 0.24717139537556432)),)

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        m = self.mj_model
        self._tip = m.site("leverStart").id
        self._lever_qpos = int(m.jnt_qposadr[m.joint("LeverAxis").id])

    def episode_init(self, rand):
        qpos, qvel = self._qpos_qvel()
        return qpos, qvel, self._ctx(rand, rand + jnp.array([0.12, 0.0, 0.25 + self.lever_radius]))

    def objects(self, data):
        _, rot = self.geom_frame(data, "objGeom")
        return jnp.concatenate([data.site_xpos[self._tip], mat_to_quat_xyzw(rot), jnp.zeros(7)])

    def evaluate(self, data, obs, action, ctx):
        """lever = obs[4:7], lever0 = obj_init + (0.12, -0.2, 0.25), o = (0, 0.055, 0.07), s = (4, 1, 4);
        ready = tol(|(obs[:3] + o - lever) s|, [0, 0.02], |(init_tcp + o - lever0) s|);
        in_place = tol(|lever - goal|, [0, 0.04], |lever0 - goal|); r = 10 H(ready, in_place);
        success |-q - pi/2| <= pi/24 (q: the lever's joint angle)."""
        lever, offset, scale = obs[4:7], jnp.array([0.0, 0.055, 0.07]), jnp.array([4.0, 1.0, 4.0])
        lever0 = ctx["obj_init_pos"] + jnp.array([0.12, -self.lever_radius, 0.25])
        ready = tolerance(_norm((obs[:3] + offset - lever) * scale), (0.0, 0.02),
                          _norm((ctx["init_tcp"] + offset - lever0) * scale), "long_tail")
        in_place = tolerance(_norm(lever - ctx["goal"]), (0.0, 0.04), _norm(lever0 - ctx["goal"]), "long_tail")
        error = jnp.abs(-data.qpos[self._lever_qpos] - jnp.pi / 2.0)
        return 10.0 * hamacher_product(ready, in_place), error <= jnp.pi / 24.0


class _CoffeeMug(_BodyTask):
    """A mug (free joint qpos[0:7], body `obj`) to move on the table to a goal in front of (push: towards) or away
    from (pull) the coffee machine, which Meta-World moves to `machine_of(rand)` + (0, 0.22, 0); rand = (mug xyz,
    goal xyz), redrawn while their xy are closer than 0.15. At reset Meta-World puts the mug at rand[:3] and zeroes
    qvel[9:15] (not the mug's velocity, as in coffee-button); reproduced."""

    xml = "sawyer_xyz/sawyer_coffee.xml"
    pairs = _pairs(FINGERS, ("mug/g2", TABLE_GEOM)) + (("mug/g2", TABLE_GEOM),)
    episode_body = "coffee_machine"
    hand_init_pos = (0.0, 0.4, 0.2)
    min_obj_goal_xy = 0.15

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        self._mug = self.mj_model.body("obj").id

    def episode_init(self, rand):
        qpos, qvel = self._qpos_qvel()
        qpos, qvel = qpos.at[0:3].set(rand[:3]), qvel.at[9:15].set(0.0)
        ctx = self._ctx(rand[:3], rand[3:6])
        return qpos, qvel, {**ctx, "body_pos": self.machine_of(rand) + jnp.array([0.0, 0.22, 0.0])}

    def objects(self, data):
        _, rot = self.geom_frame(data, "mug")
        return jnp.concatenate([data.xpos[self._mug], mat_to_quat_xyzw(rot), jnp.zeros(7)])

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7], s = (2, 2, 1); in_place = tol(|(obj - goal) s|, [0, 0.05], |(obj_init - goal) s|);
        g = caging(obj radius 0.02, pad thresh 0.05, reach radius 0.04, xz 0.05, effort 0.7, medium density);
        r = H(g, in_place) (+ 1 + 5 in_place if |obj - tcp| < 0.04 and opened > 0); 10 if |(obj - goal) s| < 0.05;
        success |obj - goal| <= 0.07."""
        obj, opened, tcp, goal = obs[4:7], obs[3], self.tcp_center(data), ctx["goal"]
        scale = jnp.array([2.0, 2.0, 1.0])
        d = _norm((obj - goal) * scale)
        in_place = tolerance(d, (0.0, 0.05), _norm((ctx["obj_init_pos"] - goal) * scale), "long_tail")
        lp, rp = self.pads(data)
        grasped = gripper_caging(action, obj, tcp, lp, rp, ctx["obj_init_pos"], ctx["init_tcp"], obj_radius=0.02,
                                 pad_success_thresh=0.05, object_reach_radius=0.04, xz_thresh=0.05,
                                 desired_gripper_effort=0.7, medium_density=True)
        r = hamacher_product(grasped, in_place)
        r = jnp.where((_norm(obj - tcp) < 0.04) & (opened > 0), r + 1.0 + 5.0 * in_place, r)
        return jnp.where(d < 0.05, 10.0, r), _norm(obj - goal) <= 0.07


class CoffeePush(_CoffeeMug):
    """coffee-push-v2: push the mug forward to the goal under the machine's spout (machine at goal + (0, 0.22, 0))."""

    name = "metaworld-coffee-push"
    rand_low, rand_high = (-0.1, 0.55, -0.001, -0.05, 0.7, -0.001), (0.1, 0.65, 0.001, 0.05, 0.75, 0.001)
    goal_low, goal_high = (-0.05, 0.7, -0.001), (0.05, 0.75, 0.001)

    def machine_of(self, rand):
        return rand[3:6]


class CoffeePull(_CoffeeMug):
    """coffee-pull-v2: pull the mug from under the spout (machine at mug + (0, 0.22, 0)) back to the goal."""

    name = "metaworld-coffee-pull"
    rand_low, rand_high = (-0.05, 0.7, -0.001, -0.1, 0.55, -0.001), (0.05, 0.75, 0.001, 0.1, 0.65, 0.001)
    goal_low, goal_high = (-0.1, 0.55, -0.001), (0.1, 0.65, 0.001)

    def machine_of(self, rand):
        return rand[:3]


class BoxClose(_BodyTask):
    """box-close-v2: put the lid (free body `boxbodytop`, qpos[9:16]; object: its child `top_link`) on the box.
    rand = (lid xy, -, goal xyz), redrawn while the lid and goal xy are closer than 0.25; the box body is moved to
    (goal xy, 0). Meta-World's reset runs 5 more physics steps after the hand reset (simulated once, as door-lock)
    and then puts the lid's free joint at (rand xy, 0.02) with qvel[9:15] = 0, keeping its orientation, so the lid
    drops ~2 cm onto the table at the start. Contacts: the gripper with the handle bar (the capsule; the coinciding
    handle mesh is left out), the lid's boxes with the table top, the box walls and the back retaining wall."""

    name = "metaworld-box-close"
    xml = "sawyer_xyz/sawyer_box.xml"
    lid = tuple(f"top_link/g{k}" for k in (2, 3, 4, 5, 6))
    walls = tuple(f"box/g{k}" for k in (1, 2, 3, 4))
    pairs = (_pairs(FINGERS, ("top_link/g7",)) + _pairs(lid, (TABLE_GEOM, "RetainingWall/g1") + walls))
    episode_body = "boxbody"
    rand_low, rand_high = (-0.05, 0.5, 0.02, -0.1, 0.7, 0.133), (0.05, 0.55, 0.02, 0.1, 0.8, 0.133)
    goal_low, goal_high = (-0.1, 0.7, 0.133), (0.1, 0.8, 0.133)
    min_obj_goal_xy = 0.25

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        self._top = self.mj_model.body("top_link").id

    def _simulate_hand_reset(self, steps: int = 50):
        return _settled(self, super()._simulate_hand_reset(steps))

    def episode_init(self, rand):
        qpos, qvel = self._qpos_qvel()
        lid = jnp.stack([rand[0], rand[1], jnp.float32(0.02)])
        qpos, qvel = qpos.at[9:12].set(lid), qvel.at[9:15].set(0.0)
        ctx = self._ctx(lid, rand[3:6])
        return qpos, qvel, {**ctx, "body_pos": jnp.stack([rand[3], rand[4], jnp.float32(0.0)])}

    def objects(self, data):
        return jnp.concatenate([data.xpos[self._top], data.xquat[self._top], jnp.zeros(7)])

    def evaluate(self, data, obs, action, ctx):
        """hand = obs[:3], lid = obs[4:7] + (0, 0, 0.02); grab = (clip(a_g) + 1) / 2; radius = |hand_xy - lid_xy|,
        floor = 0 if radius <= 0.02 else 0.04 ln(radius - 0.02) + 0.4; above = 1 if hand_z >= floor else
        tol(floor - hand_z, [0, 0.01], floor / 2); ready = H(above, tol(|hand - lid|, [0, 0.02], 0.5));
        lifted = 0.2 [lid_z > 0.04] + 0.8 tol(|(goal - lid) (1, 1, 3)|, [0, 0.05], 0.25);
        r = 2 H(grab, ready) + 8 lifted, 10 if |obs[4:7] - goal| < 0.08 (= success);
        r *= max(1 - |obs[7:11] - (0.707, 0, 0, 0.707)| / 0.2, 0) (the lid upright)."""
        hand, lid = obs[:3], obs[4:7] + jnp.array([0.0, 0.0, 0.02])
        grab = (jnp.clip(action[3], -1.0, 1.0) + 1.0) / 2.0
        radius = _norm(hand[:2] - lid[:2])
        floor = jnp.where(radius <= 0.02, 0.0, 0.04 * jnp.log(jnp.maximum(radius - 0.02, 1e-30)) + 0.4)
        above = jnp.where(hand[2] >= floor, 1.0, tolerance(floor - hand[2], (0.0, 0.01), floor / 2.0, "long_tail"))
        ready = hamacher_product(above, tolerance(_norm(hand - lid), (0.0, 0.02), 0.5, "long_tail"))
        placed = tolerance(_norm((ctx["goal"] - lid) * jnp.array([1.0, 1.0, 3.0])), (0.0, 0.05), 0.25, "long_tail")
        lifted = 0.2 * (lid[2] > 0.04) + 0.8 * placed
        success = _norm(obs[4:7] - ctx["goal"]) < 0.08
        r = jnp.where(success, 10.0, 2.0 * hamacher_product(grab, ready) + 8.0 * lifted)
        upright = jnp.maximum(1.0 - _norm(obs[7:11] - jnp.array([0.707, 0.0, 0.0, 0.707])) / 0.2, 0.0)
        return r * upright, success


class PegUnplugSide(_BodyTask):
    """peg-unplug-side-v2: pull the plug (free body `plug1`, qpos[9:16]) sideways (+x) out of its socket (body `box`,
    moved to rand). At reset Meta-World puts the plug at rand + (0.044, 0, 0.131) with identity orientation and
    zeroes only its linear velocity (qvel[9:12]); obj_init_pos is then the `pegEnd` site; goal = plug + (0.15, 0, 0).
    The object is the `pegEnd` site with the plug body's quaternion."""

    name = "metaworld-peg-unplug-side"
    xml = "sawyer_xyz/sawyer_peg_unplug_side.xml"
    socket = tuple(f"plug_wall/g{k}" for k in (2, 3, 4, 5, 6))
    pairs = (_pairs(FINGERS, ("plug/g6", "plug/g7")) + _pairs(("plug/g4", "plug/g5"), socket)
             + _pairs(("plug/g5", "plug/g7"), (TABLE_GEOM, HAND_MESH_GEOM)))
    episode_body = "box"
    rand_low, rand_high = (-0.25, 0.6, -0.001), (-0.15, 0.8, 0.001)
    goal_low, goal_high = (-0.056, 0.6, 0.13), (0.044, 0.8, 0.132)

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        m = self.mj_model
        self._end, self._plug = m.site("pegEnd").id, m.body("plug1").id

    def episode_init(self, rand):
        qpos, qvel = self._qpos_qvel()
        plug = rand + jnp.array([0.044, 0.0, 0.131])
        qpos = qpos.at[9:12].set(plug).at[12:16].set(jnp.array([1.0, 0.0, 0.0, 0.0]))
        ctx = self._ctx(rand, plug + jnp.array([0.15, 0.0, 0.0]))
        return qpos, qvel.at[9:12].set(0.0), ctx

    def episode_context(self, data, ctx):
        return {**ctx, "obj_init_pos": data.site_xpos[self._end]}

    def objects(self, data):
        return jnp.concatenate([data.site_xpos[self._end], data.xquat[self._plug], jnp.zeros(7)])

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7], d = |obj - goal|; g = caging(obj radius 0.025, pad thresh 0.05, xz 0.005, effort 0.8, high
        density); in_place = tol(d, [0, 0.05], |obj_init - goal|); r = 2g, or 1 + 2g + 5 in_place if opened > 0.5,
        obj_x - obj_init_x > 0.015 and |obj - tcp| < 0.035; 10 if d <= 0.05; success d <= 0.07."""
        obj, opened, tcp, init = obs[4:7], obs[3], self.tcp_center(data), ctx["obj_init_pos"]
        d = _norm(obj - ctx["goal"])
        lp, rp = self.pads(data)
        grasped = gripper_caging(action, obj, tcp, lp, rp, init, ctx["init_tcp"], obj_radius=0.025,
                                 pad_success_thresh=0.05, object_reach_radius=0.01, xz_thresh=0.005,
                                 desired_gripper_effort=0.8, high_density=True)
        in_place = tolerance(d, (0.0, 0.05), _norm(init - ctx["goal"]), "long_tail")
        pulled = (opened > 0.5) & (obj[0] - init[0] > 0.015) & (_norm(obj - tcp) < 0.035)
        r = jnp.where(pulled, 1.0 + 2.0 * grasped + 5.0 * in_place, 2.0 * grasped)
        return jnp.where(d <= 0.05, 10.0, r), d <= 0.07


class _Block(SawyerTask):
    """A block (free body `obj`, qpos[9:16]) that Meta-World puts at a rand-derived obj_init_pos at reset
    (qpos[9:12], qvel[9:15] = 0). Where its z is the block's resting height after the hand reset, it is read one
    physics step stale, as Meta-World does (`hand_reset.data`)."""

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        m = self.mj_model
        self._obj = m.body("obj").id
        self._geom = m.geom("objGeom").id

    def _place(self, obj_init, goal):
        qpos, qvel = _object_at(self, obj_init)
        return qpos, qvel, {"goal": goal, "obj_init_pos": obj_init,
                            "init_tcp": jnp.asarray(self.hand_reset.tcp, jnp.float32)}

    def _geom_objects(self, data):
        _, rot = self.geom_frame(data, "objGeom")
        return jnp.concatenate([data.geom_xpos[self._geom], mat_to_quat_xyzw(rot), jnp.zeros(7)])


class PushBack(_Block):
    """push-back-v2: push the block back (-y) to a goal on the table; rand = (block xy, -, goal xy, -), redrawn while
    their xy are closer than 0.15; block and goal z = objGeom's z after the hand reset. Object: the objGeom box."""

    name = "metaworld-push-back"
    xml = "sawyer_xyz/sawyer_push_back_v3.xml"
    pairs = _pairs(FINGERS, ("objGeom", TABLE_GEOM)) + (("objGeom", TABLE_GEOM),)
    rand_low, rand_high = (-0.1, 0.8, 0.02, -0.1, 0.6, 0.0199), (0.1, 0.85, 0.02, 0.1, 0.7, 0.0201)
    goal_low, goal_high = (-0.1, 0.6, 0.0199), (0.1, 0.7, 0.0201)
    obj_radius = 0.007

    min_obj_goal_xy = 0.15

    def episode_init(self, rand):
        z = jnp.float32(self.hand_reset.data.geom_xpos[self._geom][2])
        return self._place(jnp.stack([rand[0], rand[1], z]), jnp.stack([rand[3], rand[4], z]))

    def objects(self, data):
        return self._geom_objects(data)

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7], d = |obj - goal|, d0 = |obj_init - goal|; in_place = tol(d, [0, 0.05], d0);
        g = gripping caging(obj radius 0.007, grip margin 0.003, xz 0.01); r = H(g, in_place)
        (+ 1 + 5 in_place if |obj - tcp| < 0.01, 0 < opened < 0.55 and d0 - d > 0.01); 10 if d < 0.05;
        success d <= 0.07."""
        obj, opened, tcp = obs[4:7], obs[3], self.tcp_center(data)
        d, d0 = _norm(obj - ctx["goal"]), _norm(ctx["obj_init_pos"] - ctx["goal"])
        in_place = tolerance(d, (0.0, self.target_radius), d0, "long_tail")
        lp, rp = self.pads(data)
        grasped = _gripping_caging(obj, tcp, lp, rp, ctx["obj_init_pos"], ctx["init_tcp"], obj_radius=self.obj_radius,
                                   grip_margin=0.003, xz_margin=0.01)
        r = hamacher_product(grasped, in_place)
        pushing = (_norm(obj - tcp) < 0.01) & (opened > 0) & (opened < 0.55) & (d0 - d > 0.01)
        r = jnp.where(pushing, r + 1.0 + 5.0 * in_place, r)
        return jnp.where(d < self.target_radius, 10.0, r), d <= 0.07


class _Sweep(_Block):
    """The reward of sweep and sweep-into."""

    grip_margin: float
    xz_margin: float

    def target(self, obj, ctx):
        return ctx["goal"]

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7], target = goal (sweep-into: (goal_xy, obj_z)); d = |obj - target|;
        in_place = tol(d, [0, 0.05], |obj_init - target|); g = gripping caging(obj radius 0.02, grip margin, xz margin);
        r = 2 g + 6 H(g, in_place), 10 if d < 0.05; success d <= 0.05."""
        obj, tcp = obs[4:7], self.tcp_center(data)
        target = self.target(obj, ctx)
        d = _norm(obj - target)
        in_place = tolerance(d, (0.0, self.target_radius), _norm(ctx["obj_init_pos"] - target), "long_tail")
        lp, rp = self.pads(data)
        grasped = _gripping_caging(obj, tcp, lp, rp, ctx["obj_init_pos"], ctx["init_tcp"], obj_radius=0.02,
                                   grip_margin=self.grip_margin, xz_margin=self.xz_margin)
        r = 2.0 * grasped + 6.0 * hamacher_product(grasped, in_place)
        return jnp.where(d < self.target_radius, 10.0, r), d <= self.target_radius


class Sweep(_Sweep):
    """sweep-v2: sweep the block sideways (+x) to the goal (0.5, block y, 0.01); block at (rand xy, 0.02). Object:
    the block body."""

    name = "metaworld-sweep"
    xml = "sawyer_xyz/sawyer_sweep_v3.xml"
    pairs = _pairs(FINGERS, ("objGeom", TABLE_GEOM)) + (("objGeom", TABLE_GEOM),)
    rand_low, rand_high = (-0.1, 0.6, 0.02), (0.1, 0.7, 0.02)
    goal_low, goal_high = (0.49, 0.6, 0.0), (0.51, 0.7, 0.02)
    grip_margin, xz_margin = 0.01, 0.005

    def episode_init(self, rand):
        return self._place(jnp.stack([rand[0], rand[1], jnp.float32(0.02)]),
                           jnp.stack([jnp.float32(0.5), rand[1], jnp.float32(0.01)]))

    def objects(self, data):
        return jnp.concatenate([data.xpos[self._obj], data.xquat[self._obj], jnp.zeros(7)])



class SweepInto(_Sweep):
    """sweep-into-v2: sweep the block into the hole of the table (scene `basic_scene_b`: its top is four 5 cm slabs,
    surface at z = 0.05, around a hole at (0, 0.76..0.92), whose floor is the base box's top at z = 0). The goal is
    fixed at (0, 0.84, 0.02) (rand[3:6] is drawn and unused); rand = (block xy, -, ...), redrawn while the block's xy
    is closer than 0.15 to the goal's; block z = its resting height after the hand reset. The table collides as its
    boxes here (not as the plane of the other tasks)."""

    name = "metaworld-sweep-into"
    xml = "sawyer_xyz/sawyer_table_with_hole.xml"
    slabs = tuple(f"tablelink/g{k}" for k in (8, 9, 10, 11))
    pairs = _pairs(FINGERS, ("objGeom",) + slabs) + _pairs(("objGeom",), ("tablelink/g6",) + slabs)
    rand_low, rand_high = (-0.1, 0.6, 0.02, -0.001, 0.8399, 0.0199), (0.1, 0.7, 0.02, 0.001, 0.8401, 0.0201)
    goal_low, goal_high = (-0.001, 0.8399, 0.0199), (0.001, 0.8401, 0.0201)
    goal = (0.0, 0.84, 0.02)
    grip_margin, xz_margin = 0.005, 0.01

    def sample_rand_vec(self, key):
        return self._redraw_until(key, lambda v: _norm(v[:2] - jnp.asarray(self.goal[:2])) >= 0.15)

    def episode_init(self, rand):
        z = jnp.float32(self.hand_reset.data.xpos[self._obj][2])
        return self._place(jnp.stack([rand[0], rand[1], z]), jnp.asarray(self.goal, jnp.float32))

    def target(self, obj, ctx):
        return jnp.stack([ctx["goal"][0], ctx["goal"][1], obj[2]])

    def objects(self, data):
        _, rot = self.geom_frame(data, "objGeom")
        return jnp.concatenate([data.xpos[self._obj], mat_to_quat_xyzw(rot), jnp.zeros(7)])


class Soccer(SawyerTask):
    """soccer-v2: push the ball (free body `soccer_ball`, sphere r 0.026) into the goal (body `goal_whole`, moved to
    the goal); rand = (ball xy, -, goal xyz), redrawn while their xy are closer than 0.15; ball at (rand xy, 0.03).
    Object: the ball body (quaternion from its rotation matrix)."""

    name = "metaworld-soccer"
    xml = "sawyer_xyz/sawyer_soccer.xml"
    frame = tuple(f"soccer_goal/g{k}" for k in (2, 3, 4, 5))
    pairs = (_pairs(FINGERS, ("objGeom", TABLE_GEOM, "soccer_goal/g2"))
             + _pairs(("objGeom",), (TABLE_GEOM, "RetainingWall/g3", HAND_MESH_GEOM) + frame)
             + _pairs((HAND_MESH_GEOM,), ("soccer_goal/g2", "soccer_goal/g3", "soccer_goal/g5")))
    episode_body = "goal_whole"
    rand_low, rand_high = (-0.1, 0.6, 0.03, -0.1, 0.8, 0.0), (0.1, 0.7, 0.03, 0.1, 0.9, 0.0)
    goal_low, goal_high = (-0.1, 0.8, 0.0), (0.1, 0.9, 0.0)
    target_radius = 0.07  # the class's TARGET_RADIUS
    min_obj_goal_xy = 0.15

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        self._ball = self.mj_model.body("soccer_ball").id

    def episode_init(self, rand):
        ball = jnp.stack([rand[0], rand[1], jnp.float32(0.03)])
        qpos, qvel = _object_at(self, ball)
        return qpos, qvel, {"goal": rand[3:6], "obj_init_pos": ball, "body_pos": rand[3:6],
                            "init_tcp": jnp.asarray(self.hand_reset.tcp, jnp.float32)}

    def objects(self, data):
        return jnp.concatenate([data.xpos[self._ball], mat_to_quat_xyzw(data.xmat[self._ball]), jnp.zeros(7)])

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7], s = (3, 1, 1); d = |(obj - goal) s|; in_place = tol(d, [0, 0.07], |(obj - obj_init) s|)
        (Meta-World's margin is the CURRENT ball's distance from its start); past the goal line (obj_y > goal_y - 0.1)
        and |obj_x - goal_x| > 0.1: in_place = clip(in_place - 2 (obj_y - line) / (1 - line), 0, 1);
        g = gripping caging(obj radius 0.013, grip margin 0.01, xz 0.005); r = 3 g + 6.5 in_place, 10 if d < 0.07;
        success |obj - goal| <= 0.07."""
        obj, tcp, goal = obs[4:7], self.tcp_center(data), ctx["goal"]
        scale = jnp.array([3.0, 1.0, 1.0])
        d = _norm((obj - goal) * scale)
        in_place = tolerance(d, (0.0, self.target_radius), _norm((obj - ctx["obj_init_pos"]) * scale), "long_tail")
        line = goal[1] - 0.1
        wide = (obj[1] > line) & (jnp.abs(obj[0] - goal[0]) > 0.1)
        in_place = jnp.where(wide, jnp.clip(in_place - 2.0 * (obj[1] - line) / (1.0 - line), 0.0, 1.0), in_place)
        lp, rp = self.pads(data)
        grasped = _gripping_caging(obj, tcp, lp, rp, ctx["obj_init_pos"], ctx["init_tcp"], obj_radius=0.013,
                                   grip_margin=0.01, xz_margin=0.005)
        r = jnp.where(d < self.target_radius, 10.0, 3.0 * grasped + 6.5 * in_place)
        return r, _norm(obj - goal) <= self.target_radius


class PickOutOfHole(SawyerTask):
    """pick-out-of-hole-v2: lift a cylinder (free body `obj`, r 0.02, half-height 0.02) out of a hole in a raised
    table (body34: four 5.4 cm slabs around a hole at x in [-0.15, 0.15], y in [0.65, 0.95]; the hole's floor is the
    table top) to a goal in the air; rand = (obj xyz (fixed), goal xyz). Contacts: the gripper and the cylinder with
    the table top and the hole's front slab."""

    name = "metaworld-pick-out-of-hole"
    xml = "sawyer_xyz/sawyer_pick_out_of_hole.xml"
    pairs = _pairs(FINGERS, ("objGeom", TABLE_GEOM, "body34/g4")) + _pairs(("objGeom",), (TABLE_GEOM, "body34/g4"))
    hand_low = (-0.5, 0.40, -0.05)
    rand_low, rand_high = (0.0, 0.75, 0.02, -0.1, 0.5, 0.15), (0.0, 0.75, 0.02, 0.1, 0.6, 0.3)
    goal_low, goal_high = (-0.1, 0.5, 0.15), (0.1, 0.6, 0.3)
    min_obj_goal_xy = 0.15

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        self._obj = self.mj_model.body("obj").id

    def episode_init(self, rand):
        qpos, qvel = _object_at(self, rand[:3])
        return qpos, qvel, {"goal": rand[3:6], "obj_init_pos": rand[:3],
                            "init_tcp": jnp.asarray(self.hand_reset.tcp, jnp.float32)}

    def objects(self, data):
        return jnp.concatenate([data.xpos[self._obj], data.xquat[self._obj], jnp.zeros(7)])

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7], d = |obj - goal|; radius = |tcp_xy - obj_init_xy|, floor = 0 if radius <= 0.03 else
        0.015 ln(radius - 0.03) + 0.15; above = 1 if tcp_z >= floor else tol(floor - tcp_z, [0, 0.01], 0.02);
        g = caging(obj radius 0.015, pad thresh 0.02, xz 0.03, effort 0.1, high density); in_place = tol(d, [0, 0.02],
        |obj_init - goal|); r = H(g, in_place) (+ 1 + 5 H(in_place, above) if |obj - tcp| < 0.04, obs[3] >= 0.33 and
        obj_z - 0.02 > obj_init_z); 10 if d < 0.05 (the base class's TARGET_RADIUS); success d <= 0.07."""
        obj, tcp, init = obs[4:7], self.tcp_center(data), ctx["obj_init_pos"]
        d = _norm(obj - ctx["goal"])
        radius = _norm(tcp[:2] - init[:2])
        floor = jnp.where(radius <= 0.03, 0.0, 0.015 * jnp.log(jnp.maximum(radius - 0.03, 1e-30)) + 0.15)
        above = jnp.where(tcp[2] >= floor, 1.0,
                          tolerance(jnp.maximum(floor - tcp[2], 0.0), (0.0, 0.01), 0.02, "long_tail"))
        lp, rp = self.pads(data)
        grasped = gripper_caging(action, obj, tcp, lp, rp, init, ctx["init_tcp"], obj_radius=0.015,
                                 pad_success_thresh=0.02, object_reach_radius=0.01, xz_thresh=0.03,
                                 desired_gripper_effort=0.1, high_density=True)
        in_place = tolerance(d, (0.0, 0.02), _norm(init - ctx["goal"]), "long_tail")
        r = hamacher_product(grasped, in_place)
        lifted = (_norm(obj - tcp) < 0.04) & (obs[3] >= 0.33) & (obj[2] - 0.02 > init[2])
        r = jnp.where(lifted, r + 1.0 + 5.0 * hamacher_product(in_place, above), r)
        return jnp.where(d < self.target_radius, 10.0, r), d <= 0.07


class ShelfPlace(_Block):
    """shelf-place-v2: put the block on the shelf's board (body `shelf` moved to the goal - (0, 0, 0.3), so the goal
    is its `goal` site); rand = (block xy, -, goal xyz), redrawn while their xy are closer than 0.1; block z = its
    resting height after the hand reset. Object: the block body with objGeom's orientation."""

    name = "metaworld-shelf-place"
    xml = "sawyer_xyz/sawyer_shelf_placing.xml"
    boards = ("body35/g5", "body35/g6", "body35/g8")
    pairs = (_pairs(FINGERS, ("objGeom", TABLE_GEOM, "body35/g5"))
             + _pairs(("objGeom",), (TABLE_GEOM, "body35/g2", "body35/g3") + boards)
             + _pairs((HAND_MESH_GEOM,), ("body35/g4", "body35/g7")))
    episode_body = "shelf"
    rand_low, rand_high = (-0.1, 0.5, 0.019, -0.1, 0.8, 0.299), (0.1, 0.6, 0.021, 0.1, 0.9, 0.301)
    goal_low, goal_high = (-0.1, 0.8, 0.299), (0.1, 0.9, 0.301)

    min_obj_goal_xy = 0.1

    def episode_init(self, rand):
        z = jnp.float32(self.hand_reset.data.xpos[self._obj][2])
        shelf = rand[3:6] - jnp.array([0.0, 0.0, 0.3])
        qpos, qvel, ctx = self._place(jnp.stack([rand[0], rand[1], z]), shelf + jnp.array([0.0, 0.0, 0.3]))
        return qpos, qvel, {**ctx, "body_pos": shelf}

    def objects(self, data):
        _, rot = self.geom_frame(data, "objGeom")
        return jnp.concatenate([data.xpos[self._obj], mat_to_quat_xyzw(rot), jnp.zeros(7)])

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7], d = |obj - goal|; in_place = tol(d, [0, 0.05], |obj_init - goal|); g = caging(obj radius
        0.02, pad thresh 0.05, xz 0.01: H(caging, gripping)); r = H(g, in_place); for the bonus, in_place is cut below
        the shelf: if 0 < obj_z < 0.24 and |obj_x - goal_x| < 0.15: in front of it (goal_y - 0.15 < obj_y < goal_y)
        in_place = clip(in_place - H((obj_y - goal_y + 0.15) / 0.15, (0.24 - obj_z) / 0.24), 0, 1), behind it
        (obj_y > goal_y) in_place = 0; r += 1 + 5 in_place if |obj - tcp| < 0.025, opened > 0 and
        obj_z - 0.01 > obj_init_z; 10 if d < 0.05; success d <= 0.07."""
        obj, opened, tcp, goal, init = obs[4:7], obs[3], self.tcp_center(data), ctx["goal"], ctx["obj_init_pos"]
        d = _norm(obj - goal)
        in_place = tolerance(d, (0.0, 0.05), _norm(init - goal), "long_tail")
        lp, rp = self.pads(data)
        grasped = gripper_caging(action, obj, tcp, lp, rp, init, ctx["init_tcp"], obj_radius=0.02,
                                 pad_success_thresh=0.05, object_reach_radius=0.01, xz_thresh=0.01)
        r = hamacher_product(grasped, in_place)
        band = (obj[2] > 0.0) & (obj[2] < 0.24) & (obj[0] > goal[0] - 0.15) & (obj[0] < goal[0] + 0.15)
        front = band & (obj[1] > goal[1] - 0.15) & (obj[1] < goal[1])
        y_s = jnp.clip((obj[1] - (goal[1] - 0.15)) / 0.15, 0.0, 1.0)
        z_s = jnp.clip((0.24 - obj[2]) / 0.24, 0.0, 1.0)
        in_place = jnp.where(front, jnp.clip(in_place - hamacher_product(y_s, z_s), 0.0, 1.0), in_place)
        in_place = jnp.where(band & (obj[1] > goal[1]), 0.0, in_place)
        lifted = (_norm(obj - tcp) < 0.025) & (opened > 0) & (obj[2] - 0.01 > init[2])
        r = jnp.where(lifted, r + 1.0 + 5.0 * in_place, r)
        return jnp.where(d < 0.05, 10.0, r), d <= 0.07


class Basketball(SawyerTask):
    """basketball-v2: pick up the ball (free body `bsktball`, sphere r 0.03) and dunk it: the goal is the hoop
    (`goal` site, basket + (0, -0.083, 0.25)), the reward's target is at z = 0.3; rand = (ball xy, -, basket xyz),
    redrawn while their xy are closer than 0.15; the ball at (rand xy, 0.03) (Meta-World's z: 0.03 in float32).
    Contacts: the gripper with the ball, the backboard and the table, the ball with the table, the backboard and the
    rim's box and capsules."""

    name = "metaworld-basketball"
    xml = "sawyer_xyz/sawyer_basketball.xml"
    rim = tuple(f"hooplink/g{k}" for k in range(1, 10))
    pairs = (_pairs(FINGERS, ("objGeom", "backboardlink/g4", TABLE_GEOM))
             + _pairs(("objGeom",), (TABLE_GEOM, "backboardlink/g4") + rim)
             + (("backboardlink/g4", HAND_MESH_GEOM),))
    episode_body = "basket_goal"
    rand_low, rand_high = (-0.1, 0.6, 0.0299, -0.1, 0.85, 0.0), (0.1, 0.7, 0.0301, 0.1, 0.9 + 1e-7, 0.0)
    goal_low, goal_high = (-0.1, 0.85 - 0.083, 0.2499), (0.1, 0.9 + 1e-7 - 0.083, 0.2501)
    target_radius = 0.08  # the class's TARGET_RADIUS
    ball_z = float(np.float32(0.03))
    min_obj_goal_xy = 0.15

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        self._ball = self.mj_model.body("bsktball").id

    def episode_init(self, rand):
        ball = jnp.stack([rand[0], rand[1], jnp.float32(self.ball_z)])
        qpos, qvel = _object_at(self, ball)
        return qpos, qvel, {"goal": rand[3:6] + jnp.array([0.0, -0.083, 0.25]), "obj_init_pos": ball,
                            "body_pos": rand[3:6], "init_tcp": jnp.asarray(self.hand_reset.tcp, jnp.float32)}

    def objects(self, data):
        return jnp.concatenate([data.xpos[self._ball], data.xquat[self._ball], jnp.zeros(7)])

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7], target = (goal_xy, 0.3), s = (1, 1, 2); d = |(obj - target) s|; in_place = tol(d, [0, 0.08],
        |(obj_init - target) s|); g = caging(obj radius 0.025, pad thresh 0.06, xz 0.005, high density), 1 if lifted
        (|obj - tcp| < 0.035, opened > 0, obj_z - 0.01 > obj_init_z); r = H(g, in_place) (+ 1 + 5 in_place if lifted);
        10 if d < 0.08; success d <= 0.08."""
        obj, opened, tcp, init = obs[4:7], obs[3], self.tcp_center(data), ctx["obj_init_pos"]
        target = ctx["goal"].at[2].set(0.3)
        scale = jnp.array([1.0, 1.0, 2.0])
        d = _norm((obj - target) * scale)
        in_place = tolerance(d, (0.0, self.target_radius), _norm((init - target) * scale), "long_tail")
        lp, rp = self.pads(data)
        grasped = gripper_caging(action, obj, tcp, lp, rp, init, ctx["init_tcp"], obj_radius=0.025,
                                 pad_success_thresh=0.06, object_reach_radius=0.01, xz_thresh=0.005,
                                 high_density=True)
        lifted = (_norm(obj - tcp) < 0.035) & (opened > 0) & (obj[2] - 0.01 > init[2])
        grasped = jnp.where(lifted, 1.0, grasped)
        r = hamacher_product(grasped, in_place)
        r = jnp.where(lifted, r + 1.0 + 5.0 * in_place, r)
        return jnp.where(d < self.target_radius, 10.0, r), d <= self.target_radius


class BinPicking(SawyerTask):
    """bin-picking-v2: carry the block (free body `obj`, a 4 cm cube) from the left bin into the right one (body
    `bin_goal`, whose position is the goal: rand[3:6] is drawn and unused); block at (rand xy, its resting height
    after the hand reset). Meta-World fixes the in-place margin `target_to_obj_init` at the episode's FIRST reward
    evaluation (the block-goal distance after the first step): `advance_context` does the same (-1 until then)."""

    name = "metaworld-bin-picking"
    xml = "sawyer_xyz/sawyer_bin_picking.xml"
    bins = tuple(f"{b}/g{k}" for b in ("binA", "binB") for k in (1, 2, 3, 4, 5))
    pairs = _pairs(FINGERS, ("objA/g1",)) + _pairs(("objA/g1",), (TABLE_GEOM,) + bins)
    hand_low = (-0.5, 0.40, 0.07)
    rand_low, rand_high = (-0.21, 0.65, 0.02, 0.1199, 0.699, -0.001), (-0.03, 0.75, 0.02, 0.1201, 0.701, 0.001)
    goal_low, goal_high = (0.1199, 0.699, -0.001), (0.1201, 0.701, 0.001)

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        m = self.mj_model
        self._obj = m.body("obj").id
        self._goal = jnp.asarray(self.hand_reset.data.xpos[m.body("bin_goal").id], jnp.float32)

    def episode_init(self, rand):
        obj = jnp.stack([rand[0], rand[1], jnp.float32(self.hand_reset.data.xpos[self._obj][2])])
        qpos, qvel = _object_at(self, obj)
        return qpos, qvel, {"goal": self._goal, "obj_init_pos": obj, "target_to_obj_init": jnp.float32(-1.0),
                            "init_tcp": jnp.asarray(self.hand_reset.tcp, jnp.float32)}

    def advance_context(self, data, obs, ctx):
        init = ctx["target_to_obj_init"]
        return {**ctx, "target_to_obj_init": jnp.where(init < 0, _norm(obs[4:7] - ctx["goal"]), init)}

    def objects(self, data):
        return jnp.concatenate([data.xpos[self._obj], data.xquat[self._obj], jnp.zeros(7)])

    def evaluate(self, data, obs, action, ctx):
        """hand = obs[:3], obj = obs[4:7], d = |obj - goal|; in_place = tol(d, [0, 0.05], target_to_obj_init);
        floor = min over r in (|hand_xy - obj_init_xy|, |hand_xy - goal_xy|) of (0 if r <= 0.03 else
        0.02 ln(r - 0.03) + 0.2); above = 1 if hand_z >= floor else tol(floor - hand_z, [0, 0.01], 0.05);
        g = caging(obj radius 0.015, pad thresh 0.05, xz 0.01, effort 0.7, high density); r = H(g, in_place)
        (+ 1 + 5 H(above, in_place) if |obj - hand| < 0.04, obs[3] >= 0.43 and obj_z - 0.02 > obj_init_z);
        10 if d < 0.05; success d <= 0.05."""
        hand, obj, goal, init = obs[:3], obs[4:7], ctx["goal"], ctx["obj_init_pos"]
        d = _norm(obj - goal)
        margin = jnp.where(ctx["target_to_obj_init"] < 0, d, ctx["target_to_obj_init"])
        in_place = tolerance(d, (0.0, self.target_radius), margin, "long_tail")
        radii = jnp.stack([_norm(hand[:2] - init[:2]), _norm(hand[:2] - goal[:2])])
        floor = jnp.min(jnp.where(radii > 0.03, 0.02 * jnp.log(jnp.maximum(radii - 0.03, 1e-30)) + 0.2, 0.0))
        above = jnp.where(hand[2] >= floor, 1.0,
                          tolerance(jnp.maximum(floor - hand[2], 0.0), (0.0, 0.01), 0.05, "long_tail"))
        lp, rp = self.pads(data)
        grasped = gripper_caging(action, obj, self.tcp_center(data), lp, rp, init, ctx["init_tcp"], obj_radius=0.015,
                                 pad_success_thresh=0.05, object_reach_radius=0.01, xz_thresh=0.01,
                                 desired_gripper_effort=0.7, high_density=True)
        r = hamacher_product(grasped, in_place)
        lifted = (_norm(obj - hand) < 0.04) & (obs[3] >= 0.43) & (obj[2] - 0.02 > init[2])
        r = jnp.where(lifted, r + 1.0 + 5.0 * hamacher_product(above, in_place), r)
        return jnp.where(d < self.target_radius, 10.0, r), d <= self.target_radius


class HandInsert(SawyerTask):
    """hand-insert-v2: push/carry the block (free body `obj`, a 4 cm cube) into the hole of the table (the scene of
    sweep-into, surface at z = 0.05) to a goal below the surface; rand = (block xy, -, goal xyz), redrawn while their
    xy are closer than 0.15; the block is put at (rand xy, 0.05) (half inside the top slab; it pops up). The table
    collides as its boxes, as in sweep-into."""

    name = "metaworld-hand-insert"
    xml = "sawyer_xyz/sawyer_table_with_hole.xml"
    slabs = SweepInto.slabs
    pairs = _pairs(FINGERS, ("objGeom", "tablelink/g6") + slabs) + _pairs(("objGeom",), ("tablelink/g6",) + slabs)
    hand_low = (-0.5, 0.40, -0.15)
    rand_low, rand_high = (-0.1, 0.6, 0.05, -0.04, 0.8, -0.0201), (0.1, 0.7, 0.05, 0.04, 0.88, -0.0199)
    goal_low, goal_high = (-0.04, 0.8, -0.0201), (0.04, 0.88, -0.0199)
    min_obj_goal_xy = 0.15

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        self._obj = self.mj_model.body("obj").id

    def episode_init(self, rand):
        obj = jnp.stack([rand[0], rand[1], jnp.float32(0.05)])
        qpos, qvel = _object_at(self, obj)
        return qpos, qvel, {"goal": rand[3:6], "obj_init_pos": obj,
                            "init_tcp": jnp.asarray(self.hand_reset.tcp, jnp.float32)}

    def objects(self, data):
        return jnp.concatenate([data.xpos[self._obj], data.xquat[self._obj], jnp.zeros(7)])

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7], d = |obj - goal|; in_place = tol(d, [0, 0.05], |obj_init - goal|); g = caging(obj radius
        0.015, pad thresh 0.05, xz 0.005, high density); r = H(g, in_place) (+ 1 + 7 in_place if |obj - tcp| < 0.02
        and opened > 0); 10 if d < 0.05; success d <= 0.05."""
        obj, tcp, init = obs[4:7], self.tcp_center(data), ctx["obj_init_pos"]
        d = _norm(obj - ctx["goal"])
        in_place = tolerance(d, (0.0, self.target_radius), _norm(init - ctx["goal"]), "long_tail")
        lp, rp = self.pads(data)
        grasped = gripper_caging(action, obj, tcp, lp, rp, init, ctx["init_tcp"], obj_radius=0.015,
                                 pad_success_thresh=0.05, object_reach_radius=0.01, xz_thresh=0.005,
                                 high_density=True)
        r = hamacher_product(grasped, in_place)
        r = jnp.where((_norm(obj - tcp) < 0.02) & (obs[3] > 0), r + 1.0 + 7.0 * in_place, r)
        return jnp.where(d < self.target_radius, 10.0, r), d <= self.target_radius


class Hammer(SawyerTask):
    """hammer-v2: grasp the hammer (free body `hammerbody`, qpos[9:16], put at rand with qvel[9:15] = 0) and drive
    the nail (slide joint `NailSlideJoint`) into the block (fixed at (0.24, 0.85, 0)); goal = the block's `goal`
    site. Objects: the hammer and the nail link (positions, body quaternions). Contacts: the gripper with the
    handle capsule, the hammer's head faces with the nail head, the nail head with the block's boxes (which hold it),
    the hammer's geoms with the table."""

    name = "metaworld-hammer"
    xml = "sawyer_xyz/sawyer_hammer.xml"
    hammer = tuple(f"hammer/g{k}" for k in (6, 7, 8, 9, 10, 11))
    pairs = (_pairs(FINGERS, ("hammer/g6",)) + _pairs(("hammer/g9", "hammer/g7"), ("nail_link/g2",))
             + _pairs(tuple(f"hammerblock/g{k}" for k in (1, 2, 3, 4)), ("nail_link/g2",))
             + _pairs(hammer, (TABLE_GEOM,)))
    hand_init_pos = (0.0, 0.4, 0.2)
    rand_low, rand_high = (-0.1, 0.4, 0.0), (0.1, 0.5, 0.0)
    goal_low, goal_high = (0.2399, 0.7399, 0.109), (0.2401, 0.7401, 0.111)
    handle_length = 0.14

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        m = self.mj_model
        self._hammer, self._nail = m.body("hammer").id, m.body("nail_link").id
        self._nail_qpos = int(m.jnt_qposadr[m.joint("NailSlideJoint").id])
        self._goal = jnp.asarray(self.hand_reset.data.site_xpos[m.site("goal").id], jnp.float32)

    def episode_init(self, rand):
        qpos, qvel = _object_at(self, rand)
        return qpos, qvel, {"goal": self._goal, "obj_init_pos": rand,
                            "init_tcp": jnp.asarray(self.hand_reset.tcp, jnp.float32)}

    def objects(self, data):
        return jnp.concatenate([data.xpos[self._hammer], data.xquat[self._hammer], data.xpos[self._nail],
                                data.xquat[self._nail]])

    def evaluate(self, data, obs, action, ctx):
        """hand = obs[:3], hammer = obs[4:7], head = hammer + (0.16, 0.06, 0); grip point = hammer with x = hand_x
        if |hammer_x - hand_x| < 0.07; grab = caging(grip point, obj radius 0.015, pad thresh 0.02, xz 0.01, high
        density); in_place = 0.1 [head_z > 0.02] + 0.9 tol(|goal - head|, [0, 0.02], 0.2);
        upright = max(1 - |obs[7:11] - (1, 0, 0, 0)| / 0.4, 0); r = (2 grab + 6 in_place) upright;
        success: nail joint > 0.09; r = 10 if success and r > 5."""
        hand, hammer = obs[:3], obs[4:7]
        head = hammer + jnp.array([0.16, 0.06, 0.0])
        grip = hammer.at[0].set(jnp.where(jnp.abs(hammer[0] - hand[0]) < self.handle_length / 2, hand[0], hammer[0]))
        lp, rp = self.pads(data)
        grab = gripper_caging(action, grip, self.tcp_center(data), lp, rp, ctx["obj_init_pos"], ctx["init_tcp"],
                              obj_radius=0.015, pad_success_thresh=0.02, object_reach_radius=0.01, xz_thresh=0.01,
                              high_density=True)
        in_place = 0.1 * (head[2] > 0.02) + 0.9 * tolerance(_norm(ctx["goal"] - head), (0.0, 0.02), 0.2, "long_tail")
        upright = jnp.maximum(1.0 - _norm(obs[7:11] - jnp.array([1.0, 0.0, 0.0, 0.0])) / 0.4, 0.0)
        r = (2.0 * grab + 6.0 * in_place) * upright
        success = data.qpos[self._nail_qpos] > 0.09
        return jnp.where(success & (r > 5.0), 10.0, r), success


class _Stick(SawyerTask):
    """A stick (free body `stick`, qpos[9:16]: a 10 x 4 x 4 cm box) and a thermos (body `object` on slide joints x, y,
    qpos[16:18]); rand = (stick xy, -, target xy, -), redrawn while their xy are closer than 0.1. At reset Meta-World
    puts the stick at (rand xy, 0.02) (qvel[9:15] = 0) and the thermos joints at `thermos_qpos` (qvel[16:18] = 0);
    obj_init_pos = the thermos body after that, stick_init_pos = the stick's. Objects: the stick (body position,
    quaternion from its rotation matrix) and the thermos' `insertion` site + `insertion_offset` (quaternion zeros).
    Caging: the generic one around the stick, its margins from `caging_init` (stick-push overrides it to use the
    stick's start; stick-pull keeps the base class's, i.e. the thermos' start)."""

    xml = "sawyer_xyz/sawyer_stick_obj.xml"
    thermos_qpos: tuple[float, float]
    insertion_offset = (0.0, 0.0, 0.0)
    caging_init: str
    min_obj_goal_xy = 0.1

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        m = self.mj_model
        self._stick, self._thermos = m.body("stick").id, m.body("object").id
        self._insertion, self._stick_end = m.site("insertion").id, m.site("stick_end").id

    def episode_init(self, rand):
        stick = jnp.stack([rand[0], rand[1], jnp.float32(0.02)])
        qpos = jnp.asarray(self.hand_reset.qpos, jnp.float32).at[9:12].set(stick)
        qpos = qpos.at[16:18].set(jnp.asarray(self.thermos_qpos, jnp.float32))
        qvel = jnp.asarray(self.hand_reset.qvel, jnp.float32).at[9:15].set(0.0).at[16:18].set(0.0)
        return qpos, qvel, {"goal": self.target_of(rand), "stick_init_pos": stick, "obj_init_pos": jnp.zeros(3),
                            "init_tcp": jnp.asarray(self.hand_reset.tcp, jnp.float32)}

    def episode_context(self, data, ctx):
        return {**ctx, "obj_init_pos": data.xpos[self._thermos]}

    def objects(self, data):
        return jnp.concatenate([data.xpos[self._stick], mat_to_quat_xyzw(data.xmat[self._stick]),
                                data.site_xpos[self._insertion] + jnp.asarray(self.insertion_offset), jnp.zeros(4)])

    def _caging(self, action, stick, data, ctx, obj_radius):
        lp, rp = self.pads(data)
        return gripper_caging(action, stick, self.tcp_center(data), lp, rp, ctx[self.caging_init], ctx["init_tcp"],
                              obj_radius=obj_radius, pad_success_thresh=0.05, object_reach_radius=0.01,
                              xz_thresh=0.01, high_density=True)


class StickPush(_Stick):
    """stick-push-v2: grasp the stick and push the thermos with it to the target (rand xy, the insertion site's
    height). Success needs Meta-World's `touching_main_object`: both pads in contact with the stick with a positive
    normal force in the forward pass after the step; so this task's kinematics pass is a full `mjx.forward` (contacts
    and constraint forces at the final state, as Meta-World's `mj_forward`)."""

    name = "metaworld-stick-push"
    thermos = tuple(f"body36/g{k}" for k in (7, 8))
    pairs = (_pairs(FINGERS, ("objGeom", "body36/g7", TABLE_GEOM)) + _pairs(("objGeom",), (TABLE_GEOM,) + thermos)
             + _pairs((HAND_MESH_GEOM,), ("body36/g7",)))
    rand_low, rand_high = (-0.08, 0.58, 0.0, 0.399, 0.55, 0.1319), (-0.03, 0.62, 0.001, 0.401, 0.6, 0.1321)
    goal_low, goal_high = (0.399, 0.55, 0.1319), (0.401, 0.6, 0.1321)
    thermos_qpos = (0.0, 0.0)
    insertion_offset = (0.0, 0.09, 0.0)
    caging_init = "stick_init_pos"

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        m = self.mj_model
        self._touch = tuple(collision_geom(m, g) for g in ("leftpad_geom", "rightpad_geom", "objGeom"))
        self._insertion_z = float(self.hand_reset.data.site_xpos[self._insertion][2])

    def target_of(self, rand):
        return jnp.stack([rand[3], rand[4], jnp.float32(self._insertion_z)])

    def kinematics(self, model, data):
        return mjx.forward(model, data)

    def touching(self, data):
        """Both pads touch the stick with a positive normal force (Meta-World's `touching_main_object`)."""
        lpad, rpad, obj = self._touch
        if self.physics_impl == "warp":
            geom, normal, first = warp_contacts(data)
            normal = jnp.where(first, normal, 0.0)
        else:
            con, force = data._impl.contact, data._impl.efc_force
            geom = con.geom
            normal = jnp.where(con.efc_address >= 0, force[jnp.maximum(con.efc_address, 0)], 0.0)

        def pushed(pad):
            g0, g1 = geom[:, 0], geom[:, 1]
            hit = ((g0 == pad) & (g1 == obj)) | ((g0 == obj) & (g1 == pad))
            return jnp.sum(jnp.where(hit, normal, 0.0)) > 0

        return pushed(lpad) & pushed(rpad)

    def evaluate(self, data, obs, action, ctx):
        """stick = obs[4:7] + (0.015, 0, 0), container = obs[11:14]; stick_in = tol(|stick - goal|, [0, 0.12],
        |stick_init - goal| - 0.12); container_in = tol(|container - goal|, [0, 0.12], |obj_init - goal| - 0.12);
        g = caging(stick, obj radius 0.04, pad thresh 0.05, xz 0.01, high density); r = g, or, if |stick - tcp| < 0.02,
        opened > 0 and stick_z - 0.01 > stick_init_z: 2 + 5 stick_in + 3 container_in, 10 if |container - goal| <=
        0.12; success: touching, opened > 0, obs[6] - 0.01 > stick_init_z and |container - goal| <= 0.12."""
        stick, container, opened, tcp, goal = obs[4:7] + jnp.array([0.015, 0.0, 0.0]), obs[11:14], obs[3], \
            self.tcp_center(data), ctx["goal"]
        init = ctx["stick_init_pos"]
        stick_in = tolerance(_norm(stick - goal), (0.0, 0.12), _norm(init - goal) - 0.12, "long_tail")
        c2t = _norm(container - goal)
        container_in = tolerance(c2t, (0.0, 0.12), _norm(ctx["obj_init_pos"] - goal) - 0.12, "long_tail")
        grasped = self._caging(action, stick, data, ctx, 0.04)
        lifted = (_norm(stick - tcp) < 0.02) & (opened > 0) & (stick[2] - 0.01 > init[2])
        r = jnp.where(lifted, jnp.where(c2t <= 0.12, 10.0, 2.0 + 5.0 * stick_in + 3.0 * container_in), grasped)
        success = self.touching(data) & (opened > 0) & (obs[6] - 0.01 > init[2]) & (c2t <= 0.12)
        return r, success


class StickPull(_Stick):
    """stick-pull-v2: hook the stick into the thermos' handle and pull the thermos to the target (rand xy, 0.02);
    the thermos starts at joint y = 0.09."""

    name = "metaworld-stick-pull"
    handle = tuple(f"body36/g{k}" for k in (9, 10, 11))
    pairs = (_pairs(FINGERS, ("objGeom", "body36/g7", "body36/g8") + handle)
             + _pairs(("objGeom",), (TABLE_GEOM, HAND_MESH_GEOM) + handle)
             + _pairs((HAND_MESH_GEOM,), ("body36/g7",) + handle[:2]))
    hand_low = (-0.5, 0.35, 0.05)
    rand_low, rand_high = (-0.1, 0.55, 0.0, 0.35, 0.45, 0.0199), (0.0, 0.65, 0.001, 0.45, 0.55, 0.0201)
    goal_low, goal_high = (0.35, 0.45, 0.0199), (0.45, 0.55, 0.0201)
    thermos_qpos = (0.0, 0.09)
    caging_init = "obj_init_pos"

    def target_of(self, rand):
        return jnp.stack([rand[3], rand[4], jnp.float32(0.02)])

    def evaluate(self, data, obs, action, ctx):
        """stick = obs[4:7], handle = obs[11:14], container = handle + (0.05, 0, 0), end = stick_end site,
        s = (1, 1, 2); stick_in = tol(|(stick - container) s|, [0, 0.05], |(stick_init - obj_init - (0.05, 0, 0)) s|);
        stick_in2 = tol(|stick - goal|, [0, 0.05], |stick_init - goal|); container_in = tol(|container - goal|,
        [0, 0.05], |obj_init - goal|); g = caging(stick, margins from obj_init (the thermos), obj radius 0.014, pad
        thresh 0.05, xz 0.01, high density),
        1 if grasped (|stick - tcp| < 0.02, opened > 0, stick_z - 0.01 > stick_init_z); r = H(g, stick_in), if grasped
        1 + H(g, stick_in) + 5 stick_in, if also inserted (end_x >= handle_x, |end_y - handle_y| <= 0.04,
        |end_z - handle_z| <= 0.06) 1 + H(g, stick_in) + 5 + 2 stick_in2 + container_in, 10 if also
        |handle - goal| <= 0.12; success: inserted and |handle - goal| <= 0.12."""
        stick, handle, opened, tcp, goal = obs[4:7], obs[11:14], obs[3], self.tcp_center(data), ctx["goal"]
        init, offset, scale = ctx["stick_init_pos"], jnp.array([0.05, 0.0, 0.0]), jnp.array([1.0, 1.0, 2.0])
        container = handle + offset
        end = data.site_xpos[self._stick_end]
        stick_in = tolerance(_norm((stick - container) * scale), (0.0, 0.05),
                             _norm((init - ctx["obj_init_pos"] - offset) * scale), "long_tail")
        stick_in2 = tolerance(_norm(stick - goal), (0.0, 0.05), _norm(init - goal), "long_tail")
        container_in = tolerance(_norm(container - goal), (0.0, 0.05), _norm(ctx["obj_init_pos"] - goal), "long_tail")
        grasp = (_norm(stick - tcp) < 0.02) & (opened > 0) & (stick[2] - 0.01 > init[2])
        grasped = jnp.where(grasp, 1.0, self._caging(action, stick, data, ctx, 0.014))
        both = hamacher_product(grasped, stick_in)
        inserted = (end[0] >= handle[0]) & (jnp.abs(end[1] - handle[1]) <= 0.04) & (jnp.abs(end[2] - handle[2]) <= 0.06)
        near = _norm(handle - goal) <= 0.12
        r = jnp.where(grasp, 1.0 + both + 5.0 * stick_in, both)
        r = jnp.where(grasp & inserted, 1.0 + both + 5.0 + 2.0 * stick_in2 + container_in, r)
        r = jnp.where(grasp & inserted & near, 10.0, r)
        return r, inserted & near


class _Nut(SawyerTask):
    """A ring nut with a handle (free body `RoundNut`, qpos[9:16], put at obj_init_pos with qvel[9:15] = 0) and a
    peg (body `peg`, moved per episode); rand = (nut xyz, goal xyz), redrawn while their xy are closer than 0.1.
    Object: the `RoundNut-8` site (on the handle) with the nut body's quaternion. Contacts: the gripper with the
    handle box and the table, the ring's capsules with the peg and the table, the handle with the table."""

    xml = "sawyer_xyz/sawyer_assembly_peg.xml"
    ring = tuple(f"asmbly_peg/g{k}" for k in range(3, 11))
    pairs = (_pairs(FINGERS, ("asmbly_peg/g11", TABLE_GEOM)) + _pairs(ring, ("peg/g0", TABLE_GEOM))
             + _pairs(("asmbly_peg/g11", "asmbly_peg/g12"), (TABLE_GEOM,)))
    episode_body = "peg"
    handle_length = 0.02
    caging_density: str
    min_obj_goal_xy = 0.1

    def __init__(self, episode_length: int | None = None, physics_impl: str = "jax", warp_worlds: int = 1):
        super().__init__(episode_length, physics_impl, warp_worlds)
        m = self.mj_model
        self._nut, self._handle, self._center = m.body("RoundNut").id, m.site("RoundNut-8").id, m.site("RoundNut").id

    def episode_init(self, rand):
        qpos, qvel = _object_at(self, rand[:3])
        goal, peg = self.goal_and_peg(rand)
        return qpos, qvel, {"goal": goal, "obj_init_pos": rand[:3], "body_pos": peg,
                            "init_tcp": jnp.asarray(self.hand_reset.tcp, jnp.float32)}

    def objects(self, data):
        return jnp.concatenate([data.site_xpos[self._handle], data.xquat[self._nut], jnp.zeros(7)])

    def _terms(self, data, obs, action, ctx):
        """(nut centre, grab, upright): grab = caging(the handle site with x = hand_x if |handle_x - hand_x| < 0.01,
        obj radius 0.015, pad thresh 0.02, xz 0.01, `caging_density`); upright = max(1 - |obs[7:11] - (0.707, 0, 0,
        0.707)| / 0.4, 0)."""
        hand, wrench = obs[:3], obs[4:7]
        grip = wrench.at[0].set(jnp.where(jnp.abs(wrench[0] - hand[0]) < self.handle_length / 2, hand[0], wrench[0]))
        lp, rp = self.pads(data)
        grab = gripper_caging(action, grip, self.tcp_center(data), lp, rp, ctx["obj_init_pos"], ctx["init_tcp"],
                              obj_radius=0.015, pad_success_thresh=0.02, object_reach_radius=0.01, xz_thresh=0.01,
                              **{self.caging_density: True})
        upright = jnp.maximum(1.0 - _norm(obs[7:11] - jnp.array([0.707, 0.0, 0.0, 0.707])) / 0.4, 0.0)
        return data.site_xpos[self._center], grab, upright


class Assembly(_Nut):
    """assembly-v2: put the nut's ring over the peg (peg body at goal - (0, 0, 0.05); the goal is its top)."""

    name = "metaworld-assembly"
    rand_low, rand_high = (0.0, 0.6, 0.02, -0.1, 0.75, 0.1), (0.0, 0.6, 0.02, 0.1, 0.85, 0.1)
    goal_low, goal_high = (-0.1, 0.75, 0.1), (0.1, 0.85, 0.1)
    caging_density = "medium_density"

    def goal_and_peg(self, rand):
        return rand[3:6], rand[3:6] - jnp.array([0.0, 0.0, 0.05])

    def evaluate(self, data, obs, action, ctx):
        """centre = the nut's `RoundNut` site, e = goal - centre, radius = |e_xy|; success: radius < 0.02 and e_z > 0;
        t = 0.02 if success else 0.01; height = 0.02 ln(radius - t) + 0.2 if radius > t else 0; in_place = 0.1 [centre_z
        > 0.02 or radius < t] + 0.9 tol(|(e_x, e_y, height - centre_z) (1, 1, 3)|, [0, 0.02], 0.4);
        r = (2 grab + 6 in_place) upright (grab: medium density), 10 on success."""
        center, grab, upright = self._terms(data, obs, action, ctx)
        err = ctx["goal"] - center
        radius = _norm(err[:2])
        success = (radius < 0.02) & (err[2] > 0.0)
        t = jnp.where(success, 0.02, 0.01)
        height = jnp.where(radius > t, 0.02 * jnp.log(jnp.maximum(radius - t, 1e-30)) + 0.2, 0.0)
        err = err.at[2].set(height - center[2])
        lifted = (center[2] > 0.02) | (radius < t)
        in_place = 0.1 * lifted + 0.9 * tolerance(_norm(err * jnp.array([1.0, 1.0, 3.0])), (0.0, 0.02), 0.4,
                                                  "long_tail")
        return jnp.where(success, 10.0, (2.0 * grab + 6.0 * in_place) * upright), success


class Disassemble(_Nut):
    """disassemble-v2: lift the nut (starting on the peg: peg body at nut + (0, 0, 0.03)) off the peg; goal = nut +
    (0, 0, 0.15) (rand[3:6] only enters the rejection rule); `hand_init_pos` (0, 0.4, 0.2)."""

    name = "metaworld-disassemble"
    hand_init_pos = (0.0, 0.4, 0.2)
    rand_low, rand_high = (0.0, 0.6, 0.025, -0.1, 0.6, 0.1699), (0.1, 0.75, 0.02501, 0.1, 0.75, 0.1701)
    goal_low, goal_high = (-0.1, 0.6, 0.1749), (0.1, 0.75, 0.1751)
    caging_density = "high_density"

    def goal_and_peg(self, rand):
        return rand[:3] + jnp.array([0.0, 0.0, 0.15]), rand[:3] + jnp.array([0.0, 0.0, 0.03])

    def evaluate(self, data, obs, action, ctx):
        """centre = the nut's `RoundNut` site; in_place = 0.1 [centre_z > 0.02] + 0.9 tol(|goal + (0, 0, 0.1) -
        centre|, [0, 0.02], 0.2); r = (2 grab + 6 in_place) upright (grab: high density); success obs[6] > goal_z,
        then r = 10."""
        center, grab, upright = self._terms(data, obs, action, ctx)
        in_place = 0.1 * (center[2] > 0.02) + 0.9 * tolerance(
            _norm(ctx["goal"] + jnp.array([0.0, 0.0, 0.1]) - center), (0.0, 0.02), 0.2, "long_tail")
        success = obs[6] > ctx["goal"][2]
        return jnp.where(success, 10.0, (2.0 * grab + 6.0 * in_place) * upright), success

TASKS = {cls.name: cls for cls in (Reach, Push, PickPlace, DoorOpen, DrawerOpen, DrawerClose, ButtonPressTopdown,
                                   PegInsertSide, WindowOpen, WindowClose,
                                   DoorClose, ButtonPress, ButtonPressWall, ButtonPressTopdownWall, ReachWall, PushWall,
                                   PickPlaceWall, PlateSlide, PlateSlideSide, PlateSlideBack, PlateSlideBackSide,
                                   HandlePress, HandlePressSide, HandlePull, HandlePullSide, FaucetOpen, FaucetClose,
                                   CoffeeButton, DoorLock, DoorUnlock,
                                   DialTurn, LeverPull, CoffeePush, CoffeePull,
                                   BoxClose, PegUnplugSide, PushBack, Sweep, SweepInto, Soccer,
                                   PickOutOfHole, ShelfPlace, Basketball, BinPicking, HandInsert, Hammer,
                                   StickPush, StickPull, Assembly, Disassemble)}
"""Registry name -> class of the ported Meta-World tasks."""

__all__ = ["TASKS"] + [c.__name__ for c in TASKS.values()]
