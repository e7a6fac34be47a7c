"""Scene facts of a stored synthetic episode, read from its ``EpisodeMeta.extra``: where the instructed object and
its destination are in every frame's camera frame, and when the hand touches and releases the object.

These are the facts that only the picture shows (the text names *what*, never *where*). They serve the task
metrics of ``megohand eval`` (target accuracy, distance to the destination) and the grounding supervision of
training (``megohand.data.windows``: the instructed object and the destination projected into the model's
image).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SceneFacts:
    """Per frame t = 0..T-1, camera frame [m].

    ``centers`` (T, N, 3): centre of each object (its base centre raised by half its height); ``target``: index
    of the instructed object; ``destination`` (T, 3) where the instructed object's centre should end up (the
    meta's destination, a base centre on the table, raised by half the object's height), or None (tasks without
    one); ``contact_frame``: first frame at which the hand touches the instructed object
    (None: never); ``release_frame``: last frame the object is carried (None: never carried); ``names``: each
    object's name as the instructions say it ("red cube"; empty when unknown); ``destination_name``: the landmark
    the destination is named by ("blue mat", "red cube"; empty when unknown); ``task``: the script's name
    ("pick_place", "push", "move", "lift", "rotate"; empty when unknown).
    """

    centers: np.ndarray
    target: int
    destination: np.ndarray | None
    contact_frame: int | None
    release_frame: int | None
    names: tuple[str, ...] = ()
    destination_name: str = ""
    task: str = ""

    @property
    def num_objects(self) -> int:
        return self.centers.shape[1]


def scene_objects(objects: list[dict]) -> list:
    """The stored objects (``SceneObject.to_dict`` entries) as ``SceneObject``s."""
    from megohand.data.synthetic.scene import SceneObject

    return [SceneObject(o["shape"], o["color"], tuple(o["dims"]), tuple(o["xy"]), o["yaw"]) for o in objects]


def scene_facts(extra: dict, T_cam_from_world: np.ndarray | None) -> SceneFacts | None:
    """The facts of one episode from its meta ``extra`` and (T, 4, 4) world->camera transforms; None when the
    episode does not describe its objects (not a synthetic episode, or no camera poses)."""
    if not extra or not extra.get("objects") or "object_poses" not in extra or T_cam_from_world is None:
        return None
    from megohand.geometry.rotations import axis_angle_to_matrix

    import torch

    poses = np.asarray(extra["object_poses"], dtype=np.float64)  # (T, N, 6) world-from-object xyz + rotvec
    T = len(T_cam_from_world)
    if poses.ndim != 3 or poses.shape[0] != T:
        return None
    R = axis_angle_to_matrix(torch.as_tensor(poses[..., 3:])).numpy()  # (T, N, 3, 3)
    objects = scene_objects(extra["objects"])
    up = np.zeros((len(objects), 3))
    up[:, 2] = np.array([o.height for o in objects], dtype=np.float64) / 2
    centers_w = poses[..., :3] + np.einsum("tnij,nj->tni", R, up)
    centers = to_camera(T_cam_from_world, centers_w)
    target = int(extra.get("target", 0))
    dest = extra.get("destination")
    destination = None
    if dest is not None:  # the base centre on the table -> the object's centre there
        dest_center = np.asarray(dest, np.float64) + up[target]
        destination = to_camera(T_cam_from_world, np.tile(dest_center, (T, 1, 1)))[:, 0]
    attach = np.asarray(extra.get("attach", []), dtype=np.int64)
    carried = np.flatnonzero(attach == target) if len(attach) == T else np.zeros(0, np.int64)
    contact = extra.get("contact_frame")
    if contact is None and len(carried):
        contact = int(carried[0])
    return SceneFacts(centers=centers, target=target, destination=destination,
                      contact_frame=None if contact is None else int(contact),
                      release_frame=int(carried[-1]) if len(carried) else None,
                      names=tuple(o.name for o in objects),
                      destination_name=str((extra.get("params") or {}).get("landmark", "")),
                      task=str(extra.get("task") or ""))


def to_camera(T_cam_from_world: np.ndarray, X_world: np.ndarray) -> np.ndarray:
    """Points (T, N, 3) in the world -> camera frame with the per-frame (T, 4, 4) transforms."""
    import torch

    from megohand.geometry.camera import transform_points

    return transform_points(torch.tensor(np.asarray(T_cam_from_world), dtype=torch.float64),
                            torch.tensor(np.asarray(X_world), dtype=torch.float64)).numpy()


def project(K: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Camera-frame points (N, 3) [m] -> pixels (N, 2) with (3, 3) K; NaN for points behind the camera."""
    from megohand.geometry.camera import project_points

    X = np.asarray(X, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # behind the camera: NaN below
        uv = project_points(X, np.asarray(K, dtype=np.float64))
    return np.where(X[..., 2:3] > 1e-6, uv, np.nan)


def image_targets(facts: SceneFacts | None, k: int, K: np.ndarray, size: int,
                  text: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Where the instructed object and its destination are in frame ``k``'s model image (``size`` x ``size``, pinhole
    ``K``): uv (2, 2) float32 in [0, 1] (pixel-edge coordinates divided by ``size``) and valid (2,) bool (inside
    the picture and in front of the camera; False without facts or without a destination). With ``text`` (the
    window's instruction), the destination is valid only where the text names its landmark: most phase texts
    ("reach for the red cube", "return the hand to rest") do not, and nothing else says which mat is meant."""
    uv = np.zeros((2, 2), np.float32)
    valid = np.zeros(2, bool)
    if facts is None:
        return uv, valid
    named = text is None or (bool(facts.destination_name) and facts.destination_name in text)
    points = [facts.centers[k, facts.target]] + ([facts.destination[k]] if facts.destination is not None
                                                 and named else [])
    px = project(K, np.stack(points))  # (n, 2), pixel centres at integers
    for i, p in enumerate(px):
        q = (p + 0.5) / size
        if np.all(np.isfinite(q)) and np.all((q >= 0) & (q <= 1)):
            uv[i], valid[i] = q, True
    return uv, valid


def referring_target(facts: SceneFacts | None, k: int, K: np.ndarray, size: int,
                     rng: np.random.Generator) -> tuple[str, np.ndarray, bool]:
    """A question only colour and shape can answer: one object in frame ``k``'s picture drawn at random (any of
    them, the instructed one included), its reference "the <name>" and where it is, uv (2,) float32 in [0, 1] as in
    ``image_targets``; ("", zeros, False) without facts, names, or a visible object."""
    none = ("", np.zeros(2, np.float32), False)
    if facts is None or len(facts.names) != facts.num_objects:
        return none
    q = (project(K, facts.centers[k]) + 0.5) / size  # (N, 2)
    seen = np.flatnonzero(np.all(np.isfinite(q) & (q >= 0) & (q <= 1), axis=-1))
    if not len(seen):
        return none
    j = int(rng.choice(seen))
    return f"the {facts.names[j]}", q[j].astype(np.float32), True


MAX_OBJECTS = 16
"""Objects a sample carries for scene parsing (``objects_in_image``); the synthetic worlds draw 3 to 5 by default."""


def objects_in_image(facts: SceneFacts | None, k: int, K: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The objects of frame ``k`` inside the model image, for scene parsing, in their scene order: uv (MAX_OBJECTS, 2)
    float32 in [0, 1] as in ``image_targets`` and attributes (MAX_OBJECTS, 2) int64, the index of its colour in
    ``scene.COLORS`` and of its shape in ``shapes.SHAPES``; the remaining rows have attributes -1. Objects outside
    the picture, behind the camera, with unknown names, or beyond the first MAX_OBJECTS in view are left out."""
    from megohand.data.synthetic.scene import COLORS
    from megohand.data.synthetic.shapes import SHAPES

    uv = np.zeros((MAX_OBJECTS, 2), np.float32)
    attr = np.full((MAX_OBJECTS, 2), -1, np.int64)
    if facts is None or len(facts.names) != facts.num_objects:
        return uv, attr
    colours, shapes = list(COLORS), list(SHAPES)
    q = (project(K, facts.centers[k]) + 0.5) / size  # (N, 2)
    row = 0
    for name, p in zip(facts.names, q):
        colour, _, shape = name.partition(" ")
        if row < MAX_OBJECTS and np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1)) and colour in colours \
                and shape in shapes:
            uv[row], attr[row] = p, (colours.index(colour), shapes.index(shape))
            row += 1
    return uv, attr
