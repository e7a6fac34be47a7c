"""The "grounded" world: a table-top layout and task scripts in which what only the image shows decides the motion.

* Destinations are visible landmarks: a coloured mat lying flat on the table (pick_place: "put the red cube on
  the blue mat", push: "push the red cube to the blue mat") or another object (move: "bring the red cube to the
  green cone", put down on its side facing the target).
* Distractors share the target's shape (in other colours) and its colour (on other shapes), so the instructed
  object is found only by grounding colour AND shape in the picture.
* The text names *what*, never *where*: no direction, side, sense of rotation or position (``FORBIDDEN_WORDS``).
* The hand starts from, and goes back to, a rest pose near the person that does not depend on the layout; what
  no input shows (speed, heights, hand angles) varies little.

Pure functions of the ``numpy.random.Generator`` passed in, like ``scene`` and ``plan`` (the "classic" world).
"""

from __future__ import annotations

import numpy as np

from megohand.data.synthetic.motion import GripGeometry, Key
from megohand.data.synthetic.plan import heading_yaw
from megohand.data.synthetic.scene import COLORS, SceneObject, sample_dims
from megohand.data.synthetic.shapes import SHAPES

REGION_X = (-0.17, 0.17)  # where objects and mats lie [m] (world frame of ``scene``)
REGION_Y = (0.02, 0.34)
MAT_RADIUS = (0.04, 0.046)  # round pads [m]
MAT_THICKNESS = 0.003
NUM_MATS = 2
REST = np.array([0.13, -0.10, 0.13])  # the hand's rest grip point [m], where every episode starts and ends
REST_JITTER = 0.01  # +- [m] per axis
QUARTER_TURN = np.pi / 2  # rotate: counter-clockwise seen from above, always the same sense

# Words that say where (directions, sides, senses of rotation, places, numbers): never in a grounded text.
FORBIDDEN_WORDS = ("left", "right", "forward", "forwards", "front", "behind", "back", "backward", "toward",
                   "towards", "away", "clockwise", "counterclockwise", "anticlockwise", "near", "nearest", "far",
                   "farther", "closer", "beside", "next", "centre", "center", "middle", "corner", "edge", "side",
                   "up", "down", "above", "below", "north", "south", "east", "west", "cm", "degrees")


# ----------------------------------------------------------------------------- layout


def _fits(xy, radius: float, placed: list[SceneObject], margin: float) -> bool:
    x, y = xy
    if not (REGION_X[0] + radius <= x <= REGION_X[1] - radius and REGION_Y[0] + radius <= y <= REGION_Y[1] - radius):
        return False
    return all(np.hypot(x - o.xy[0], y - o.xy[1]) >= radius + o.radius + margin for o in placed)


def _place(rng: np.random.Generator, obj: SceneObject, placed: list[SceneObject], margin: float = 0.02,
           tries: int = 40) -> SceneObject | None:
    for _ in range(tries):
        xy = (float(rng.uniform(*REGION_X)), float(rng.uniform(*REGION_Y)))
        if _fits(xy, obj.radius, placed, margin):
            obj.xy = xy
            return obj
    return None


def object_names(rng: np.random.Generator, shape: str, color: str, num_objects: int) -> list[tuple[str, str]]:
    """(shape, colour) of ``num_objects`` >= 3 objects, all names distinct; index 0 is the target. Then
    ``max(1, n - 3)`` more of the target's shape in other colours (index 1..), one of its colour in another
    shape, and the rest random."""
    other_colors = [c for c in COLORS if c != color]
    other_shapes = [s for s in SHAPES if s != shape]
    n_same_shape = max(1, min(2, num_objects - 2))
    out = [(shape, color)] + [(shape, str(c)) for c in rng.choice(other_colors, n_same_shape, replace=False)]
    out.append((str(rng.choice(other_shapes)), color))
    while len(out) < num_objects:
        name = (str(rng.choice(SHAPES)), str(rng.choice(list(COLORS))))
        if name not in out:
            out.append(name)
    return out


def sample_layout(
    rng: np.random.Generator, shape: str, color: str, task: str, num_objects: int
) -> tuple[list[SceneObject], list[SceneObject], int] | None:
    """(objects, mats, landmark): objects[0] is the target; ``landmark`` indexes ``mats`` for pick_place / push
    (the destination mat), ``objects`` for move (the reference object), -1 for lift / rotate. None when the
    draw does not fit (the caller draws again). Nothing starts on a mat; a pushed object's path is clear."""
    names = object_names(rng, shape, color, num_objects)
    objects = [SceneObject(s, c, sample_dims(s, rng), (0.0, 0.0), float(rng.uniform(-np.pi, np.pi))) for s, c in names]
    mat_colors = rng.choice(list(COLORS), NUM_MATS, replace=False)
    mats = []
    for c in mat_colors:
        mats.append(SceneObject("mat", str(c), (float(rng.uniform(*MAT_RADIUS)), MAT_THICKNESS), (0.0, 0.0), 0.0))
    target = objects[0]
    if _place(rng, target, []) is None:
        return None
    placed = [target]
    landmark = -1
    if task in ("pick_place", "push"):
        landmark = 0
        lo, hi = (0.12, 0.26) if task == "pick_place" else (0.10, 0.18)
        for _ in range(40):
            ang = rng.uniform(-np.pi, np.pi)
            if task == "push" and np.sin(ang) < -0.3:  # the hand pushes from the person's side, not toward them
                continue
            d = rng.uniform(lo, hi)
            xy = (target.xy[0] + d * np.cos(ang), target.xy[1] + d * np.sin(ang))
            # the pushing hand (fingers to wrist) starts behind the target, seen by the camera
            wrist_xy = np.asarray(target.xy) - (target.radius + 0.15) * np.array([np.cos(ang), np.sin(ang)])
            if task == "push" and not (abs(wrist_xy[0]) <= 0.19 and wrist_xy[1] >= -0.08):
                continue
            if _fits(xy, mats[0].radius, placed, 0.01):
                mats[0].xy = (float(xy[0]), float(xy[1]))
                break
        else:
            return None
        placed.append(mats[0])
    path = _push_path(target, mats[0]) if task == "push" else None
    for obj in [m for m in mats if m is not mats[0] or landmark < 0] + objects[1:]:
        for _ in range(40):
            if _place(rng, obj, placed, margin=0.01 if obj.shape == "mat" else 0.015, tries=1) is not None and (
                    path is None or _clear_of(path, obj)):
                break
        else:
            return None
        placed.append(obj)
    if task == "move":
        fits = [i for i in rng.permutation(np.arange(1, len(objects)))
                if move_destination(target, objects[i], objects, mats) is not None]
        if not fits:
            return None
        landmark = int(fits[0])
    return objects, mats, landmark


def _push_path(target: SceneObject, mat: SceneObject) -> tuple[np.ndarray, np.ndarray, float]:
    """Segment swept by a pushed target (start, end, radius incl. the hand's width)."""
    return np.asarray(target.xy), np.asarray(mat.xy), target.radius + 0.03


def _clear_of(path, obj: SceneObject, margin: float = 0.01) -> bool:
    a, b, r = path
    ab = b - a
    s = np.clip((np.asarray(obj.xy) - a) @ ab / (ab @ ab), 0.0, 1.0)
    # the hand comes from behind the start point: extend the swept segment by 6 cm there
    start = a - ab / np.linalg.norm(ab) * 0.06
    s2 = np.clip((np.asarray(obj.xy) - start) @ (b - start) / ((b - start) @ (b - start)), 0.0, 1.0)
    d = min(np.linalg.norm(a + s * ab - obj.xy), np.linalg.norm(start + s2 * (b - start) - obj.xy))
    return bool(d >= r + obj.radius + margin)


def move_destination(target: SceneObject, ref: SceneObject, objects: list[SceneObject],
                     mats: list[SceneObject]) -> np.ndarray | None:
    """Where "bring the target to ``ref``" puts the target's base centre: by ``ref`` on its side facing the
    target, 3 cm apart. None if that spot is taken, off the table, or less than 8 cm from the target."""
    v = np.asarray(target.xy) - np.asarray(ref.xy)
    dist = float(np.linalg.norm(v))
    gap = ref.radius + target.radius + 0.03
    if dist - gap < 0.08:
        return None
    dest = np.asarray(ref.xy) + v / dist * gap
    others = [o for o in objects if o is not target] + mats
    if not _fits(dest, target.radius, others, 0.01):
        return None
    return dest


# ----------------------------------------------------------------------------- script


def plan_task(
    rng: np.random.Generator, task: str, objects: list[SceneObject], mats: list[SceneObject], landmark: int,
    geom: GripGeometry,
) -> tuple[list[Key], dict]:
    """Keyframes of ``task`` on ``objects[0]`` from the rest pose and back, and the task parameters
    (JSON-able: ``landmark``, ``landmark_kind`` "mat" | "object", ``landmark_index``, ``destination`` [x, y]
    for pick_place / move / push; ``height`` for lift; ``angle`` for rotate)."""
    target, others = objects[0], objects[1:]
    speed = rng.uniform(0.95, 1.05)
    keys: list[Key] = []

    def add(dt: float, G, yaw: float, pitch: float, closure: float, phase: str, attach: int = -1):
        t = keys[-1].t + dt * speed if keys else 0.0
        keys.append(Key(t, np.asarray(G, dtype=np.float64), float(yaw), float(pitch), float(closure), phase, attach))

    G0 = REST + rng.uniform(-REST_JITTER, REST_JITTER, size=3)
    rest_yaw, rest_pitch, rest_closure = 0.3 + rng.uniform(-0.05, 0.05), 0.35 + rng.uniform(-0.03, 0.03), 0.15
    add(0.0, G0, rest_yaw, rest_pitch, rest_closure, "idle")
    add(0.15, G0, rest_yaw, rest_pitch, rest_closure, "idle")
    c = np.array([target.xy[0], target.xy[1], 0.0])
    top = target.height
    pitch = 0.35 + rng.uniform(-0.03, 0.03)
    # fingers along the reach (seen from above), within what a right hand does comfortably
    reach_yaw = float(np.clip(heading_yaw(c[:2] - G0[:2]), -0.3, 0.7)) + rng.uniform(-0.05, 0.05)
    params: dict = {}

    def reach_and_grasp(yaw: float) -> None:
        pre = c + [0.0, 0.0, top + 0.06]
        add(0.3 + 0.6 * np.linalg.norm(pre - keys[-1].G), pre, yaw, pitch, 0.0, "reach")
        add(0.2, c + [0.0, 0.0, top + 0.004], yaw, pitch, 0.0, "reach")
        closure = float(np.clip(0.95 - 8.0 * target.half_width, 0.5, 0.8))
        add(0.2, keys[-1].G, yaw, pitch, closure, "grasp", attach=0)

    def retract(release: bool = True) -> None:
        last = keys[-1]
        keys[-1].attach = -1
        if release:
            add(0.15, last.G, last.yaw, last.pitch, 0.05, "release")
        add(0.3 + 0.6 * np.linalg.norm(G0 - last.G), G0, rest_yaw, rest_pitch, rest_closure, "retract")

    def landmark_params(kind: str, index: int, dest) -> dict:
        lm = mats[index] if kind == "mat" else objects[index]
        return {"landmark": lm.name, "landmark_kind": kind, "landmark_index": index,
                "destination": [float(dest[0]), float(dest[1])]}

    if task in ("pick_place", "move"):
        if task == "pick_place":
            dest = np.asarray(mats[landmark].xy) + rng.uniform(-0.005, 0.005, size=2)
            params = landmark_params("mat", landmark, dest)
        else:
            dest = move_destination(target, objects[landmark], objects, mats)
            params = landmark_params("object", landmark, dest)
        carry_h = max([0.07] + [o.height + 0.025 for o in others])
        reach_and_grasp(reach_yaw)
        g, cl = keys[-1].G, keys[-1].closure
        add(0.3, g + [0, 0, carry_h], reach_yaw, pitch, cl, "lift", attach=0)
        moved = np.array([dest[0], dest[1], g[2] + carry_h])
        add(0.3 + 0.8 * np.linalg.norm(moved - keys[-1].G), moved, reach_yaw, pitch, cl, "move", attach=0)
        add(0.25, [dest[0], dest[1], g[2]], reach_yaw, pitch, cl, "place", attach=0)
        retract()
    elif task == "lift":
        reach_and_grasp(reach_yaw)
        g, cl = keys[-1].G, keys[-1].closure
        h = 0.10 + rng.uniform(-0.01, 0.01)
        params = {"height": float(h)}
        add(0.35, g + [0, 0, h], reach_yaw, pitch, cl, "lift", attach=0)
        add(0.2, g + [0, 0, h], reach_yaw, pitch, cl, "hold", attach=0)
        add(0.3, g, reach_yaw, pitch, cl, "place", attach=0)
        retract()
    elif task == "rotate":
        angle = QUARTER_TURN + rng.uniform(-0.05, 0.05)
        params = {"angle": float(angle)}
        yaw = reach_yaw - 0.5 * angle
        reach_and_grasp(yaw)
        add(0.45, keys[-1].G, yaw + angle, pitch, keys[-1].closure, "rotate", attach=0)
        retract()
    elif task == "push":
        v = np.asarray(mats[landmark].xy) - c[:2]
        dist = float(np.linalg.norm(v))
        u = np.array([v[0] / dist, v[1] / dist, 0.0])
        params = landmark_params("mat", landmark, c[:2] + u[:2] * dist)
        yaw, p_push, cl = heading_yaw(u), 0.6 + rng.uniform(-0.03, 0.03), 0.47
        contact = c - u * (target.radius + 0.05) + [0, 0, min(0.5 * top, 0.035) + 0.035]
        pre = contact - u * 0.05 + [0, 0, 0.05]
        add(0.3 + 0.6 * np.linalg.norm(pre - keys[-1].G), pre, yaw, p_push, cl, "reach")
        add(0.2, contact, yaw, p_push, cl, "approach", attach=0)
        add(0.35 + 1.5 * dist, contact + u * dist, yaw, p_push, cl, "push", attach=0)
        retract(release=False)
    else:
        raise ValueError(f"unknown task {task!r}")
    return keys, params


# ----------------------------------------------------------------------------- text


def instruction(task: str, target: str, rng: np.random.Generator, landmark: str | None = None) -> str:
    """One phrasing of ``task`` on ``target`` (e.g. "red cube"), naming the ``landmark`` (e.g. "blue mat") of
    pick_place / move / push; never a direction or a position."""
    t, m = f"the {target}", f"the {landmark}"
    options = {
        "pick_place": [f"put {t} on {m}", f"place {t} on {m}", f"take {t} and put it on {m}"],
        "move": [f"bring {t} to {m}", f"move {t} to {m}", f"carry {t} over to {m}"],
        "push": [f"push {t} to {m}", f"slide {t} onto {m}", f"push {t} onto {m}"],
        "lift": [f"lift {t}", f"raise {t} and lower it again", f"lift {t} and set it on the table again"],
        "rotate": [f"rotate {t} a quarter turn", f"turn {t} a quarter turn", f"give {t} a quarter turn"],
    }
    if task not in options:
        raise ValueError(f"unknown task {task!r}")
    opts = options[task]
    return str(opts[int(rng.integers(len(opts)))])


def phase_text(phase: str, target: str, params: dict | None = None) -> str:
    """Segment text of one motion phase: what, never where ("carry the red cube to the blue mat")."""
    lm = (params or {}).get("landmark")
    to = f" to the {lm}" if lm else ""
    return {
        "idle": "rest", "reach": f"reach for the {target}", "grasp": f"grasp the {target}",
        "lift": f"lift the {target}", "hold": f"hold the {target}", "move": f"carry the {target}{to}",
        "place": f"put the {target} on the {lm}" if (params or {}).get("landmark_kind") == "mat"
        else f"lower the {target}", "release": f"release the {target}", "retract": "return the hand to rest",
        "approach": f"put the fingers against the {target}", "push": f"push the {target}{to}",
        "rotate": f"rotate the {target} a quarter turn",
    }[phase]
