"""Meta-World tasks: MT10 and 20 further MT50 tasks (v2 reward functions as kept in Meta-World 3.x's `*_v3`
environments).

Each class states Meta-World's numbers (ranges, offsets, thresholds) and its reward in a few lines; the
formulas are in the `evaluate` docstrings. Constants an episode fixes at reset live in `ctx` (EnvState.info):
"goal" (Meta-World's `_target_pos`), "obj_init_pos", "init_tcp", ... so that a state plus its ctx determine
reward and success (tests/test_metaworld.py checks them against Meta-World on recorded states).

Contacts (`pairs`): the geom pairs that Meta-World's scripted policies touch in the original simulation
(counted over 5 episodes per task with MuJoCo 3.3, docs/metaworld.md), plus the gripper against the table
and the task objects against the table where an object can rest on it; in the *-wall tasks, the wall against
the gripper, the hand and the object.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import mujoco

from toperl_jax.envs.metaworld.assets import HAND_MESH_GEOM, TABLE_GEOM
from toperl_jax.envs.metaworld.rewards import gripper_caging, hamacher_product, rect_prism_tolerance, tolerance
from toperl_jax.envs.metaworld.sawyer import FINGERS, SawyerTask, mat_to_quat_xyzw


def _pairs(a, b) -> tuple[tuple[str, str], ...]:
    return tuple((x, y) for x in a for y in b)


def _norm(x):
    return jnp.linalg.norm(x)


# -- puck tasks: reach, push, pick-place ------------------------------------------------------------------
class _PuckTask(SawyerTask):
    """A puck (cylinder r 0.02, half-height 0.02, free joint qpos[9:16]) on the table; rand = (puck xyz, goal
    xyz), redrawn while their xy are closer than 0.15."""

    pairs = _pairs(FINGERS, ("objGeom", TABLE_GEOM)) + (("objGeom", TABLE_GEOM),)
    rand_low = (-0.1, 0.6, 0.02, -0.1, 0.8, 0.05)
    rand_high = (0.1, 0.7, 0.02, 0.1, 0.9, 0.3)
    goal_low, goal_high = (-0.1, 0.8, 0.05), (0.1, 0.9, 0.3)
    min_obj_goal_xy = 0.15

    def __init__(self, episode_length: int | None = None):
        super().__init__(episode_length)
        m = self.mj_model
        self._obj_body = m.body("obj").id

    def sample_rand_vec(self, key):
        return self._redraw_until(key, lambda v: _norm(v[:2] - v[3:5]) >= self.min_obj_goal_xy)

    def _place_puck(self, obj_pos):
        qpos = jnp.asarray(self.hand_reset.qpos, jnp.float32).at[9:12].set(obj_pos)
        qvel = jnp.asarray(self.hand_reset.qvel, jnp.float32).at[9:15].set(0.0)
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

    def __init__(self, episode_length: int | None = None):
        super().__init__(episode_length)
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

    def __init__(self, episode_length: int | None = None):
        super().__init__(episode_length)
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

    def __init__(self, episode_length: int | None = None):
        super().__init__(episode_length)
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

    def __init__(self, episode_length: int | None = None):
        super().__init__(episode_length)
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

    def __init__(self, episode_length: int | None = None):
        super().__init__(episode_length)
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

    def __init__(self, episode_length: int | None = None):
        super().__init__(episode_length)
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

    def __init__(self, episode_length: int | None = None):
        super().__init__(episode_length)
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
        hr = super()._simulate_hand_reset(steps)
        d = hr.data
        mujoco.mj_step(self.mj_model, d, nstep=self.frame_skip)  # mocap and ctrl as the hand reset left them
        return dataclasses.replace(hr, qpos=d.qpos.copy(), qvel=d.qvel.copy(), mocap_pos=d.mocap_pos[0].copy())

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

    def __init__(self, episode_length: int | None = None):
        super().__init__(episode_length)
        m = self.mj_model
        self._grasp, self._head = m.site("pegGrasp").id, m.site("pegHead").id
        names = ("bottom_right_corner_collision_box_1", "top_left_corner_collision_box_1",
                 "bottom_right_corner_collision_box_2", "top_left_corner_collision_box_2")
        self._boxes = tuple(m.site(n).id for n in names)
        self._peg_head_init = self.hand_reset.data.site_xpos[self._head].copy()

    def sample_rand_vec(self, key):
        return self._redraw_until(key, lambda v: _norm(v[:2] - v[3:5]) >= 0.1)

    def episode_init(self, rand):
        peg, box = rand[:3], rand[3:6]
        qpos = jnp.asarray(self.hand_reset.qpos, jnp.float32).at[9:12].set(peg)
        qvel = jnp.asarray(self.hand_reset.qvel, jnp.float32).at[9:15].set(0.0)
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

    def __init__(self, episode_length: int | None = None):
        super().__init__(episode_length)
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


TASKS = {cls.name: cls for cls in (Reach, Push, PickPlace, DoorOpen, DrawerOpen, DrawerClose, ButtonPressTopdown,
                                   PegInsertSide, WindowOpen, WindowClose,
                                   DoorClose, ButtonPress, ButtonPressWall, ButtonPressTopdownWall, ReachWall, PushWall,
                                   PickPlaceWall, PlateSlide, PlateSlideSide, PlateSlideBack, PlateSlideBackSide,
                                   HandlePress, HandlePressSide, HandlePull, HandlePullSide, FaucetOpen, FaucetClose,
                                   CoffeeButton, DoorLock, DoorUnlock)}
"""Registry name -> class of the ported Meta-World tasks."""

__all__ = ["TASKS"] + [c.__name__ for c in TASKS.values()]
