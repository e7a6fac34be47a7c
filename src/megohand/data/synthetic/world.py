"""One synthetic episode: scene + task + instruction + camera + exact hand parameters, and its
rendering (RGB, metric depth, instance masks) with ``megohand.render``.

Two worlds, chosen by ``SynthConfig.world``: "grounded" (``grounded``: landmark destinations, same-shape and
same-colour distractors, text that never says where) and "classic" (``scene``, ``plan``, ``tasks``: the first
world, kept unchanged for the numbers published with it).

``generate_episode(cfg, index, hand)`` is a pure function of ``(cfg.seed, index)`` (and the hand
model's rest joints): the same seed gives the same episode on any machine and in any worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from megohand.data.synthetic import grounded
from megohand.data.synthetic.motion import GripGeometry, carry_objects, sample_keys
from megohand.data.synthetic.plan import plan_task
from megohand.data.synthetic.scene import (
    HAND_COLOR,
    TABLE_COLOR,
    SceneObject,
    head_trajectory,
    intrinsics,
    sample_scene,
)
from megohand.data.synthetic.shapes import plane
from megohand.data.synthetic.tasks import PUSH_DIRECTIONS, combo_split, instruction, phase_text
from megohand.geometry.camera import hand_to_camera
from megohand.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle

DATASET = "synthetic"
GROUNDED_EGO_MOTION = 0.35  # head motion of the grounded world, relative to the classic one (future head motion shows in no input)
TABLE_EXTENT = ((-1.0, 1.0), (-0.3, 1.5))  # table quad x, y range [m]
BACKGROUND_COLOR = (196, 200, 208)  # RGB 0..255 where no surface is hit
WORLDS = ("grounded", "classic")


@dataclass
class SynthConfig:
    """How the synthetic world is drawn (everything that changes the data)."""

    world: str = "grounded"
    """Which world: "grounded" (what only the image shows decides the motion: landmark destinations,
    same-shape distractors, text that never says where) or "classic" (the first world: destinations at
    offsets the text names, e.g. "left of the blue cube"; the published benchmark and the shipped demo use it)."""
    seed: int = 0
    """Master seed: episode ``i`` is drawn from ``numpy.random.default_rng([seed, i])``."""
    width: int = 128
    """Image width [px]."""
    height: int = 128
    """Image height [px]."""
    fps: float = 30.0
    """Frame rate [Hz]."""
    min_frames: int = 40
    """Shortest episode [frames] (slower scripts are stretched)."""
    max_frames: int = 80
    """Longest episode [frames] (longer scripts are sped up)."""
    min_objects: int = 3
    """Fewest objects on the table."""
    max_objects: int = 5
    """Most objects on the table."""
    split_seed: int = 0
    """Seed of the held-out (shape, colour, task) combos of the test split."""
    holdout_fraction: float = 0.2
    """Fraction of the combos held out for test."""
    test_fraction: float = 0.15
    """Fraction of episodes drawn from held-out combos (split "test")."""
    val_fraction: float = 0.05
    """Fraction of episodes drawn from train combos but kept for validation (split "val")."""
    hfov_deg: float = 60.0
    """Horizontal field of view of the head camera [deg]."""


@dataclass
class SyntheticEpisode:
    """Everything about one episode; arrays per frame t = 0..T-1.

    ``hands``: the right hand in the CAMERA frame of each frame, store layout
    (global_orient (T, 3), hand_pose (T, 15, 3), betas (T, 10), transl (T, 3) [m], valid (T,)),
    float32. ``hand_world``: the same hand in the world (table) frame, float64.
    ``T_cam_from_world`` (T, 4, 4); ``object_poses`` (T, N, 4, 4) world-from-object;
    ``attach`` (T,) index of the object carried at t (-1 none); ``K`` (3, 3).
    ``objects[target]`` is the object named in ``instruction``; ``landmarks``: flat mats on the table (grounded
    world; static, poses from their ``xy`` / ``yaw``). ``contact_frame``: first frame at which the hand holds or
    pushes the target (None: never); ``destination`` (3,) world [m]: where the target's base centre ends up
    (None for tasks without one: lift, rotate). ``phases``: (start, end, name) frame ranges of the motion phases
    ("idle", "reach", "grasp", ...; end exclusive), what ``segments`` says in words.
    """

    world: str
    episode: str
    split: str
    task: str
    instruction: str
    segments: list
    params: dict
    objects: list[SceneObject]
    target: int
    K: np.ndarray
    width: int
    height: int
    fps: float
    T_cam_from_world: np.ndarray
    object_poses: np.ndarray
    attach: np.ndarray
    hands: dict
    hand_world: dict
    landmarks: list[SceneObject] = field(default_factory=list)
    destination: np.ndarray | None = None
    phases: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return len(self.T_cam_from_world)

    @property
    def contact_frame(self) -> int | None:
        touching = np.nonzero(self.attach == self.target)[0]
        return int(touching[0]) if len(touching) else None

    @property
    def combo(self) -> tuple[str, str, str]:
        t = self.objects[self.target]
        return (t.shape, t.color, self.task)

    def meta_extra(self) -> dict:
        """JSON-able description of the world (objects, landmarks, per-frame object poses, task, target,
        contact frame, destination) for the store's ``EpisodeMeta.extra``: enough to rebuild and view the scene
        and to score a rollout (docs/data_format.md, "The synthetic world's extra")."""
        T, N = self.object_poses.shape[:2]
        R = torch.as_tensor(self.object_poses[..., :3, :3])
        rotvec = matrix_to_axis_angle(R).numpy()
        poses = np.concatenate([self.object_poses[..., :3, 3], rotvec], axis=-1)  # (T, N, 6)
        return {
            "world": self.world, "task": self.task, "params": self.params, "target": self.target,
            "contact_frame": self.contact_frame,
            "destination": None if self.destination is None else [round(float(v), 6) for v in self.destination],
            "combo": list(self.combo), "objects": [o.to_dict() for o in self.objects],
            "landmarks": [o.to_dict() for o in self.landmarks],
            "phases": [list(p) for p in self.phases],
            "object_poses": np.round(poses, 6).tolist(),
            "object_pose_format": "per frame, per object: world-from-object [x, y, z, rx, ry, rz] (m, axis-angle rad)",
            "attach": self.attach.tolist(),
            "world_frame": "z up, table top at z = 0",
        }


def episode_split(cfg: SynthConfig, rng: np.random.Generator) -> str:
    u = rng.uniform()
    if u < cfg.test_fraction:
        return "test"
    return "val" if u < cfg.test_fraction + cfg.val_fraction else "train"


def generate_episode(cfg: SynthConfig, index: int, hand) -> SyntheticEpisode:
    """Draw episode ``index`` of the dataset of ``cfg`` for the hand model ``hand``
    (``megohand.hand.HandModel``, right side)."""
    if cfg.world not in WORLDS:
        raise ValueError(f"unknown synthetic world {cfg.world!r}; expected one of {WORLDS}")
    rng = np.random.default_rng([cfg.seed, index])
    split = episode_split(cfg, rng)
    train_combos, test_combos = combo_split(cfg.split_seed, cfg.holdout_fraction)
    combos = test_combos if split == "test" else train_combos
    shape, color, task = combos[int(rng.integers(len(combos)))]
    betas = np.clip(rng.normal(0.0, 0.5, size=10), -1.5, 1.5)
    with torch.no_grad():
        rest = hand.rest_joints(torch.as_tensor(betas, dtype=torch.float32)[None])[0].double().numpy()
    geom = GripGeometry.from_rest_joints(rest, side="right")
    n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    mats: list[SceneObject] = []
    for _ in range(100):
        if cfg.world == "classic":
            objects = sample_scene(rng, shape, color, n_obj)
            planned = None if objects is None else plan_task(rng, task, objects, geom)
        else:
            layout = grounded.sample_layout(rng, shape, color, task, n_obj)
            if layout is None:
                continue
            objects, mats, landmark = layout
            planned = grounded.plan_task(rng, task, objects, mats, landmark, geom)
        if planned is not None:
            break
    else:
        raise RuntimeError(f"episode {index}: no feasible scene for {task} {color} {shape} in 100 draws")
    keys, params = planned
    spread = rng.uniform(0.9, 1.1, size=5)
    duration = keys[-1].t
    scale = np.clip(duration, (cfg.min_frames - 1) / cfg.fps, (cfg.max_frames - 1) / cfg.fps) / duration
    for k in keys:
        k.t *= scale
    traj = sample_keys(keys, geom, cfg.fps)
    lift_above_table(traj, geom, hand, betas, spread)
    T = len(traj.G)
    hand_pose = np.stack([geom.finger_pose(c, spread) for c in traj.closure])
    transl_w = np.stack([geom.transl(R, G) for R, G in zip(traj.R, traj.G)])
    T_cw = head_trajectory(rng, T, cfg.fps, amplitude=1.0 if cfg.world == "classic" else GROUNDED_EGO_MOTION)
    R_cam, transl_cam = hand_to_camera(
        torch.as_tensor(traj.R), torch.as_tensor(transl_w), torch.as_tensor(geom.J0).expand(T, 3),
        torch.as_tensor(T_cw),
    )
    f32 = lambda x: np.ascontiguousarray(x, dtype=np.float32)  # noqa: E731
    hands = {
        "global_orient": f32(matrix_to_axis_angle(R_cam).numpy()),
        "hand_pose": f32(hand_pose),
        "betas": f32(np.tile(betas, (T, 1))),
        "transl": f32(transl_cam.numpy()),
        "valid": np.ones(T, dtype=bool),
    }
    hand_world = {"global_orient": matrix_to_axis_angle(torch.as_tensor(traj.R)).numpy(), "hand_pose": hand_pose,
                  "betas": np.tile(betas, (T, 1)), "transl": transl_w}
    rest_poses = np.stack([o.pose() for o in objects])
    target_name = objects[0].name
    if cfg.world == "classic":
        instr_params = {k: v for k, v in params.items() if k in ("relation", "reference", "direction", "rotation")}
        text = instruction(task, target_name, rng, **instr_params)
        segments = _segments(traj.phases, target_name, T, params, phase_text)
    else:
        text = grounded.instruction(task, target_name, rng, params.get("landmark"))
        segments = _segments(traj.phases, target_name, T, params, grounded.phase_text)
    return SyntheticEpisode(
        world=cfg.world, episode=f"{index:06d}", split=split, task=task, instruction=text, segments=segments,
        params=params, objects=objects, target=0, K=intrinsics(cfg.width, cfg.height, cfg.hfov_deg),
        width=cfg.width, height=cfg.height, fps=cfg.fps, T_cam_from_world=T_cw,
        object_poses=carry_objects(traj, rest_poses), attach=traj.attach.astype(np.int64), hands=hands,
        hand_world=hand_world, landmarks=mats, destination=task_destination(task, params, objects[0]),
        phases=_segments(traj.phases, target_name, T, params, lambda name, *_: name),
    )


def task_destination(task: str, params: dict, target: SceneObject) -> np.ndarray | None:
    """(3,) world [m]: where the script puts the target's base centre; None for lift and rotate."""
    if "destination" in params:
        return np.array([*params["destination"], 0.0])
    if task == "push":  # classic: a named direction and a distance
        return np.array([*(np.asarray(target.xy) + np.asarray(PUSH_DIRECTIONS[params["direction"]]) * params["distance"]),
                         0.0])
    return None


def lift_above_table(traj, geom: GripGeometry, hand, betas: np.ndarray, spread: np.ndarray,
                     clearance: float = 0.004) -> float:
    """Raise the whole grip trajectory (``traj.G``, in place) by the height that keeps every hand
    vertex at least ``clearance`` [m] above the table in every frame. One shift for all frames
    keeps carried objects on the table at pick-up and put-down. Returns the shift [m]."""
    transl = np.stack([geom.transl(r, g) for r, g in zip(traj.R, traj.G)])
    pose = np.stack([geom.finger_pose(c, spread) for c in traj.closure])
    with torch.no_grad():
        v = hand(matrix_to_axis_angle(torch.as_tensor(traj.R)).float(), torch.as_tensor(pose).float(),
                 torch.as_tensor(betas).float().expand(len(pose), 10), torch.as_tensor(transl).float()).vertices
    shift = max(0.0, clearance - float(v[..., 2].min()))
    traj.G[:, 2] += shift
    return shift


def _segments(phases: list, target: str, T: int, params: dict, phase_text) -> list:
    """Merge consecutive phases of the same name into (start, end, text) frame ranges (``phase_text`` of the
    world with the task's ``params``)."""
    out: list = []
    for start, end, name in phases:
        if end <= start:
            continue
        text = phase_text(name, target, params)
        if out and out[-1][2] == text:
            out[-1] = (out[-1][0], end, text)
        else:
            out.append((start, end, text))
    if out:
        out[-1] = (out[-1][0], T, out[-1][2])
    return out


# ----------------------------------------------------------------------------- rendering


def scene_meshes_camera(ep: SyntheticEpisode, t: int, object_meshes: list, hand_vertices: np.ndarray | None,
                        hand_faces: np.ndarray | None) -> list:
    """``megohand.render.Mesh`` list of frame ``t`` in the camera frame:
    [table, objects..., hand, landmarks...]; the renderer's instance id of ``meshes[i]`` is ``i + 1``
    (``mask_ids``). ``object_meshes``: those of ``ep.objects`` then ``ep.landmarks``."""
    from megohand.render import Mesh
    from megohand.render.overlay import hand_mesh

    T_cw = ep.T_cam_from_world[t]
    tv, tf = plane(*TABLE_EXTENT)
    meshes = [Mesh(_apply(T_cw, tv), tf, np.array(TABLE_COLOR))]
    for obj, (v, f), P in zip(ep.objects, object_meshes, ep.object_poses[t]):
        meshes.append(Mesh(_apply(T_cw @ P, v), f, np.array(obj.rgb), smooth=obj.shape == "sphere"))
    if hand_vertices is not None:
        meshes.append(hand_mesh(hand_vertices, hand_faces, HAND_COLOR))
    for obj, (v, f) in zip(ep.landmarks, object_meshes[len(ep.objects):]):
        meshes.append(Mesh(_apply(T_cw @ obj.pose(), v), f, np.array(obj.rgb)))
    return meshes


def mask_ids(ep: SyntheticEpisode) -> dict:
    """Instance ids of ``render_episode``'s masks: ``{"table": 1, "objects": [2..N+1], "hand": N+2,
    "landmarks": [N+3..]}`` (0 = background); ``objects[ep.target]`` is the instructed object."""
    n = len(ep.objects)
    return {"table": 1, "objects": list(range(2, n + 2)), "hand": n + 2,
            "landmarks": list(range(n + 3, n + 3 + len(ep.landmarks)))}


def make_renderer(width: int, height: int):
    """The renderer of the synthetic world (background = a pale wall, depth background 2 m)."""
    from megohand.render import Renderer

    return Renderer(width, height, background_depth=2.0, background_color=BACKGROUND_COLOR)


def _apply(T: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (v @ T[:3, :3].T + T[:3, 3]).astype(np.float32)


def hand_vertices_camera(ep: SyntheticEpisode, hand) -> np.ndarray:
    """(T, V, 3) hand vertices in the camera frame from the stored (camera-frame) parameters."""
    h = {k: torch.as_tensor(v) for k, v in ep.hands.items() if k != "valid"}
    with torch.no_grad():
        out = hand(h["global_orient"], h["hand_pose"], h["betas"], h["transl"])
    return out.vertices.numpy()


def render_episode(ep: SyntheticEpisode, hand, renderer) -> dict:
    """Render every frame: ``{"rgb": (T, H, W, 3) uint8, "depth": (T, H, W) float32 m,
    "mask": (T, H, W) int32}`` with the ids of ``mask_ids``: 1 = table, 2..N+1 = objects, N+2 = hand,
    N+3.. = landmarks."""
    object_meshes = [o.mesh() for o in ep.objects + ep.landmarks]
    verts = hand_vertices_camera(ep, hand)
    faces = hand.faces.numpy() if torch.is_tensor(hand.faces) else np.asarray(hand.faces)
    frames = [scene_meshes_camera(ep, t, object_meshes, verts[t], faces) for t in range(ep.num_frames)]
    out = renderer.render_batch(ep.K.astype(np.float32), frames)
    return {"rgb": np.asarray(out.rgb), "depth": np.asarray(out.depth), "mask": np.asarray(out.mask)}




def objects_from_extra(extra: dict) -> list[dict]:
    """Rebuild the objects and landmarks (mats) of a stored synthetic episode from ``EpisodeMeta.extra``:
    list of ``{"name", "vertices" (V, 3) object frame, "faces" (F, 3), "rgb" (3,),
    "poses" (T, 4, 4) world-from-object}``, the objects first; empty when ``extra`` has no objects."""
    if not extra.get("objects"):
        return []
    poses = np.asarray(extra["object_poses"], dtype=np.float64)  # (T, N, 6)
    R = axis_angle_to_matrix(torch.as_tensor(poses[..., 3:])).numpy()
    out = []
    for i, o in enumerate(extra["objects"] + extra.get("landmarks", [])):
        obj = SceneObject(o["shape"], o["color"], tuple(o["dims"]), tuple(o["xy"]), o["yaw"])
        v, f = obj.mesh()
        if i < poses.shape[1]:
            T = np.tile(np.eye(4), (len(poses), 1, 1))
            T[:, :3, :3], T[:, :3, 3] = R[:, i], poses[:, i, :3]
        else:  # landmarks do not move
            T = np.tile(obj.pose(), (len(poses), 1, 1))
        out.append({"name": obj.name, "vertices": v, "faces": f, "rgb": np.asarray(o["rgb"]), "poses": T})
    return out
